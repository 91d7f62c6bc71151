//! Writers of the dataset files the host reads: IDX (raw or gzip), `.npy` arrays and the zip
//! archives (`.npz`) that hold them.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The raw IDX file names of a dataset folder: training images and labels, test images and
/// labels.
pub const IDX_NAMES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// `bytes` gzipped.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("writing to a Vec");
    enc.finish().expect("writing to a Vec")
}

/// An IDX file of unsigned bytes: the magic, one big-endian word a dimension, then `data`.
pub fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for dim in dims {
        out.extend(dim.to_be_bytes());
    }
    out.extend(data);
    out
}

/// An IDX image file declaring `count` images of `rows x cols` pixels, followed by `pixels`
/// (which need not match the declaration).
pub fn idx_images(count: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
    idx(&[count, rows, cols], pixels)
}

/// An IDX label file.
pub fn idx_labels(labels: &[u8]) -> Vec<u8> {
    idx(&[labels.len() as u32], labels)
}

/// Writes `bytes` to `dir/name` and returns the path.
pub fn put(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("the test folder is writable");
    path
}

/// Writes the images and labels of one split (`prefix` `train` or `t10k`) into `dir` as
/// `rows x cols` IDX files, gzipped (with a `.gz` name) when `gz` is set.
pub fn write_idx_split(
    dir: &Path,
    prefix: &str,
    (rows, cols): (u32, u32),
    (pixels, labels): (&[u8], &[u8]),
    gz: bool,
) {
    let count = labels.len() as u32;
    let files = [
        ("images-idx3", idx_images(count, rows, cols, pixels)),
        ("labels-idx1", idx_labels(labels)),
    ];
    for (what, bytes) in files {
        let name = format!("{prefix}-{what}-ubyte");
        if gz {
            put(dir, &format!("{name}.gz"), gzip(&bytes));
        } else {
            put(dir, &name, bytes);
        }
    }
}

/// Writes the dataset folder `dir/name` of `rows x cols` images from (pixels, labels) pairs:
/// the training files gzipped and the test files raw, so that every run reads both forms.
pub fn write_images_dataset(
    dir: &Path,
    name: &str,
    size: (u32, u32),
    train: (&[u8], &[u8]),
    test: (&[u8], &[u8]),
) -> PathBuf {
    let data = dir.join(name);
    std::fs::create_dir_all(&data).expect("the test folder is writable");
    write_idx_split(&data, "train", size, train, true);
    write_idx_split(&data, "t10k", size, test, false);
    data
}

/// [`write_images_dataset`] for 28 x 28 images.
pub fn write_dataset(
    dir: &Path,
    name: &str,
    train: (Vec<u8>, Vec<u8>),
    test: (Vec<u8>, Vec<u8>),
) -> PathBuf {
    write_images_dataset(
        dir,
        name,
        (28, 28),
        (&train.0, &train.1),
        (&test.0, &test.1),
    )
}

/// A `.npy` (version 1.0) array of the dtype `descr`, the shape text (`(3, 28, 28)`) and raw
/// data, padded as numpy pads it.
pub fn npy(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
    let fortran = if fortran { "True" } else { "False" };
    let mut dict =
        format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}");
    // numpy pads the header with spaces and a newline to a multiple of 64 bytes.
    while (10 + dict.len() + 1) % 64 != 0 {
        dict.push(' ');
    }
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((dict.len() as u16).to_le_bytes());
    out.extend(dict.as_bytes());
    out.extend(data);
    out
}

/// A zip archive holding `members`, member `i` deflated when `deflate(i)`, else stored.
pub fn zip_archive<B: AsRef<[u8]>>(
    members: &[(&str, B)],
    deflate: impl Fn(usize) -> bool,
) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let mut out = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut out);
    for (i, (name, bytes)) in members.iter().enumerate() {
        let method = if deflate(i) {
            zip::CompressionMethod::Deflated
        } else {
            zip::CompressionMethod::Stored
        };
        let options = SimpleFileOptions::default().compression_method(method);
        zip.start_file(*name, options).expect("writing to a Vec");
        zip.write_all(bytes.as_ref()).expect("writing to a Vec");
    }
    zip.finish().expect("writing to a Vec");
    out.into_inner()
}
