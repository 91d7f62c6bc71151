//! Helpers shared by the fuzz targets and the seed generator.

use std::io::Write;
use std::path::{Path, PathBuf};

use picodense_core::crc32;
use picodense_core::format::HEADER_LEN;

/// A file private to this process for readers that take a path. Under /dev/shm when it exists,
/// so each execution costs a memory copy rather than a disk write.
pub fn scratch_path(name: &str) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    dir.join(format!("picodense-fuzz-{}-{name}", std::process::id()))
}

/// Writes `bytes` to the scratch file `name` and returns its path.
pub fn scratch_file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch_path(name);
    std::fs::write(&path, bytes).expect("the scratch file is writable");
    path
}

/// Gzip of `bytes`.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("writing to a Vec");
    enc.finish().expect("writing to a Vec")
}

/// Makes a `.pdn` file self-consistent: the payload length field matches the file length and
/// the CRC matches the bytes, so the fuzzer reaches the checks behind the checksum.
pub fn fix_pdn(bytes: &mut [u8]) {
    if bytes.len() < HEADER_LEN + 4 {
        return;
    }
    let end = bytes.len() - 4;
    let payload = (end - HEADER_LEN) as u32;
    bytes[24..28].copy_from_slice(&payload.to_le_bytes());
    let crc = crc32(&bytes[..end]);
    bytes[end..].copy_from_slice(&crc.to_le_bytes());
}

/// Separates the four `.npy` members in the structured `npz` fuzz input.
pub const NPZ_SEPARATOR: &[u8] = b"NPZ|";

/// Separates the training and test files in the `csv` fuzz input.
pub const CSV_SEPARATOR: &[u8] = b"CSV|";

/// Names of Keras's `mnist.npz` members, in the order the structured input lists them.
pub const NPZ_MEMBERS: [&str; 4] = ["x_train.npy", "y_train.npy", "x_test.npy", "y_test.npy"];

/// A zip archive holding `members`, stored or deflated.
pub fn zip_archive(members: &[(&str, &[u8])], deflate: bool) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let mut out = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut out);
    let method = if deflate {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    let options = SimpleFileOptions::default().compression_method(method);
    for (name, bytes) in members {
        zip.start_file(*name, options).expect("writing to a Vec");
        zip.write_all(bytes).expect("writing to a Vec");
    }
    zip.finish().expect("writing to a Vec");
    out.into_inner()
}

/// A `.npy` (version 1.0) array of the given dtype, shape text and raw data.
pub fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
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

/// IDX image file bytes: `count` images of `rows x cols` pixels from `pixels`.
pub fn idx_images(count: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 8, 3];
    for word in [count, rows, cols] {
        out.extend(word.to_be_bytes());
    }
    out.extend(pixels);
    out
}

/// IDX label file bytes.
pub fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 8, 1];
    out.extend((labels.len() as u32).to_be_bytes());
    out.extend(labels);
    out
}

/// Asserts an error message names the file it is about.
pub fn assert_names(message: &str, path: &Path) {
    let name = path.to_string_lossy();
    assert!(
        message.contains(&*name),
        "error does not name {name}: {message}"
    );
}
