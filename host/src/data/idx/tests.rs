use super::*;
use crate::data::locate::find_in;
use crate::data::{IMAGE_PIXELS, load};
use picodense_support::{IDX_NAMES as DASH_NAMES, gzip as gz, idx, idx_images, put as write};
use std::fs::{self, File};

/// An IDX label file declaring `count` labels, followed by `data`.
fn idx_labels(count: u32, data: &[u8]) -> Vec<u8> {
    idx(&[count], data)
}

/// `n` images whose pixels encode their index, so order mistakes show.
pub(in crate::data) fn pixels(n: usize, seed: u8) -> Vec<u8> {
    (0..n * IMAGE_PIXELS)
        .map(|i| ((i / IMAGE_PIXELS) as u8).wrapping_mul(31) ^ (i as u8) ^ seed)
        .collect()
}

fn good_images(n: usize) -> Vec<u8> {
    idx_images(n as u32, 28, 28, &pixels(n, 0))
}

fn good_labels(n: usize) -> Vec<u8> {
    let l: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    idx_labels(n as u32, &l)
}

/// Writes a complete dataset directory with `train` and `test` images.
pub(in crate::data) fn write_dir(
    dir: &Path,
    names: [&str; 4],
    train: usize,
    test: usize,
    compress: bool,
) {
    let contents = [
        good_images(train),
        good_labels(train),
        good_images(test),
        good_labels(test),
    ];
    for (name, bytes) in names.iter().zip(contents) {
        let bytes = if compress { gz(&bytes) } else { bytes };
        write(dir, name, &bytes);
    }
}

#[test]
fn reads_raw_and_gzip_images_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [("raw", good_images(3)), ("z.gz", gz(&good_images(3)))] {
        let p = write(dir.path(), name, &bytes);
        let size = ImageSize { rows: 28, cols: 28 };
        assert_eq!(read_idx_images(&p).unwrap(), (pixels(3, 0), size));
    }
    // Gzip is detected by content, not by the name.
    let p = write(dir.path(), "labels-no-suffix", gz(&good_labels(12)));
    assert_eq!(read_idx_labels(&p).unwrap()[11], 1);
}

#[test]
fn zero_items_is_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "i", idx_images(0, 28, 28, &[]));
    assert!(read_idx_images(&p).unwrap().0.is_empty());
}

#[test]
fn empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "i", []);
    let e = read_idx_images(&p).unwrap_err();
    assert!(matches!(e, DataError::Empty { .. }), "{e}");
    assert!(e.to_string().contains("file is empty"));
    assert!(e.to_string().contains(&*p.to_string_lossy()));
}

#[test]
fn truncated_header() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "a", [0, 0]);
    assert!(matches!(
        read_idx_labels(&p),
        Err(DataError::TruncatedHeader { len: 2, .. })
    ));
    let p = write(dir.path(), "b", &good_images(1)[..10]);
    let e = read_idx_images(&p).unwrap_err();
    assert!(
        matches!(
            e,
            DataError::TruncatedHeader {
                len: 10,
                needed: 16,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("truncated header"), "{e}");
    // Same inside gzip.
    let p = write(dir.path(), "c.gz", gz(&good_images(1)[..10]));
    assert!(matches!(
        read_idx_images(&p),
        Err(DataError::TruncatedHeader { len: 10, .. })
    ));
}

#[test]
fn truncated_body() {
    let dir = tempfile::tempdir().unwrap();
    let full = good_images(2);
    let p = write(dir.path(), "a", &full[..full.len() - 1]);
    let e = read_idx_images(&p).unwrap_err();
    assert!(
        matches!(
            e,
            DataError::Truncated {
                count: 2,
                expected: 1568,
                actual: 1567,
                ..
            }
        ),
        "{e}"
    );
    let p = write(dir.path(), "b.gz", gz(&full[..full.len() - 1]));
    assert!(matches!(
        read_idx_images(&p),
        Err(DataError::Truncated { actual: 1567, .. })
    ));
    let p = write(dir.path(), "c", idx_labels(5, &[1, 2]));
    assert!(matches!(
        read_idx_labels(&p),
        Err(DataError::Truncated {
            expected: 5,
            actual: 2,
            ..
        })
    ));
}

#[test]
fn wrong_magic() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = good_images(1);
    bytes[3] = 0x04;
    let p = write(dir.path(), "a", &bytes);
    let e = read_idx_images(&p).unwrap_err();
    assert!(matches!(e, DataError::BadMagic { found: 0x804, .. }), "{e}");
    assert!(
        e.to_string()
            .contains("bad magic 0x00000804 (expected 0x00000803, an IDX image file)"),
        "{e}"
    );
    // A labels file passed as images says what it is.
    let p = write(dir.path(), "b", good_labels(3));
    let e = read_idx_images(&p).unwrap_err();
    assert!(e.to_string().contains("this is an IDX label file"), "{e}");
    // A short file with the wrong magic reports the magic, not the length.
    let p = write(dir.path(), "c", b"hello");
    assert!(matches!(
        read_idx_labels(&p),
        Err(DataError::BadMagic { .. })
    ));
}

#[test]
fn images_of_any_size_but_none_empty_or_too_wide() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "a", idx_images(2, 27, 3, &[5; 2 * 27 * 3]));
    let (pixels, size) = read_idx_images(&p).unwrap();
    assert_eq!((pixels.len(), size), (162, ImageSize { rows: 27, cols: 3 }));
    for (rows, cols) in [(0, 28), (28, 0), (2048, 1024)] {
        let p = write(dir.path(), "b", idx_images(0, rows, cols, &[]));
        let e = read_idx_images(&p).unwrap_err();
        assert!(
            matches!(e, DataError::BadDimensions { rows: r, cols: c, .. } if (r, c) == (rows, cols)),
            "{e}"
        );
        let shown = format!("images are {rows}x{cols}, expected 1 to {MAX_INPUTS} pixels");
        assert!(e.to_string().contains(&shown), "{e}");
    }
}

#[test]
fn test_images_of_another_size_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let write_named = |name: &str, bytes: Vec<u8>| write(dir.path(), name, &bytes);
    write_named("train-images-idx3-ubyte", idx_images(2, 4, 5, &[1; 40]));
    write_named("train-labels-idx1-ubyte", idx_labels(2, &[0, 1]));
    write_named("t10k-images-idx3-ubyte", idx_images(1, 5, 4, &[1; 20]));
    write_named("t10k-labels-idx1-ubyte", idx_labels(1, &[1]));
    let e = load_dir(dir.path()).unwrap_err().to_string();
    assert!(e.contains("t10k-images-idx3-ubyte"), "{e}");
    assert!(
        e.contains("images of 5x4, but the training images are 4x5"),
        "{e}"
    );
}

#[test]
fn labels_are_any_byte_and_classes_come_from_both_sets() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "l", idx_labels(4, &[0, 9, 255, 3]));
    assert_eq!(read_idx_labels(&p).unwrap(), [0, 9, 255, 3]);
    let set = |labels: Vec<u8>| Dataset::from_images(1, vec![0; labels.len()], labels);
    let splits = Splits::images(
        set(vec![0, 2]),
        set(vec![4]),
        ImageSize { rows: 1, cols: 1 },
    );
    assert_eq!(splits.classes(), 5);
}

#[test]
fn corrupted_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let good = gz(&good_images(4));
    // A flipped CRC trailer.
    let mut bad_crc = good.clone();
    let n = bad_crc.len();
    bad_crc[n - 8] ^= 0xff;
    // The compressed stream cut in half.
    let cut = good[..good.len() / 2].to_vec();
    // Garbage in the middle of the deflate data.
    let mut mangled = good.clone();
    for b in &mut mangled[12..40] {
        *b = 0xff;
    }
    for (name, bytes) in [
        ("crc.gz", bad_crc),
        ("cut.gz", cut),
        ("mangled.gz", mangled),
    ] {
        let p = write(dir.path(), name, &bytes);
        let e = read_idx_images(&p).unwrap_err();
        assert!(
            matches!(e, DataError::Gzip { .. } | DataError::Truncated { .. }),
            "{name}: {e}"
        );
    }
    // A header-only gzip start.
    let p = write(dir.path(), "stub.gz", [0x1f, 0x8b, 8]);
    assert!(matches!(read_idx_images(&p), Err(DataError::Gzip { .. })));
}

#[test]
fn trailing_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let mut raw = good_images(2);
    raw.push(7);
    let p = write(dir.path(), "raw", &raw);
    let e = read_idx_images(&p).unwrap_err();
    assert!(matches!(e, DataError::TrailingData { count: 2, .. }), "{e}");
    // Extra data inside the gzip stream.
    let p = write(dir.path(), "in.gz", gz(&raw));
    assert!(matches!(
        read_idx_images(&p),
        Err(DataError::TrailingData { .. })
    ));
    // Garbage after the gzip stream.
    let mut after = gz(&good_labels(3));
    after.extend_from_slice(b"garbage!");
    let p = write(dir.path(), "after.gz", &after);
    let e = read_idx_labels(&p).unwrap_err();
    assert!(matches!(e, DataError::Gzip { .. }), "{e}");
}

#[test]
fn huge_count_is_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    // Raw: checked against the file length.
    let p = write(dir.path(), "raw", idx_images(u32::MAX, 28, 28, &[0; 100]));
    let e = read_idx_images(&p).unwrap_err();
    assert!(
        matches!(
            e,
            DataError::Truncated {
                count: 4_294_967_295,
                actual: 100,
                ..
            }
        ),
        "{e}"
    );
    let p = write(dir.path(), "rawl", idx_labels(u32::MAX, &[0; 100]));
    assert!(matches!(
        read_idx_labels(&p),
        Err(DataError::Truncated { .. })
    ));
    // Gzip: checked against what the compressed size can possibly expand to.
    let p = write(
        dir.path(),
        "z.gz",
        gz(&idx_images(u32::MAX, 28, 28, &[0; 100])),
    );
    let e = read_idx_images(&p).unwrap_err();
    assert!(matches!(e, DataError::ImplausibleSize { .. }), "{e}");
    let p = write(dir.path(), "zl.gz", gz(&idx_labels(4_000_000_000, &[])));
    assert!(matches!(
        read_idx_labels(&p),
        Err(DataError::ImplausibleSize { .. })
    ));
}

#[test]
fn directory_where_a_file_is_expected() {
    let dir = tempfile::tempdir().unwrap();
    let e = read_idx_images(dir.path()).unwrap_err();
    assert!(matches!(e, DataError::IsDirectory { .. }), "{e}");
    assert!(e.to_string().contains("is a directory"));
    // Inside a dataset directory too.
    write_dir(dir.path(), DASH_NAMES, 2, 1, false);
    fs::remove_file(dir.path().join(DASH_NAMES[1])).unwrap();
    fs::create_dir(dir.path().join(DASH_NAMES[1])).unwrap();
    assert!(matches!(
        load_dir(dir.path()),
        Err(DataError::IsDirectory { path, .. }) if path.ends_with(DASH_NAMES[1])
    ));
}

#[test]
fn missing_file_lists_names_tried() {
    let dir = tempfile::tempdir().unwrap();
    write_dir(dir.path(), DASH_NAMES, 2, 1, false);
    fs::remove_file(dir.path().join("t10k-labels-idx1-ubyte")).unwrap();
    let e = load_dir(dir.path()).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(
            e,
            DataError::MissingFile {
                role: "test labels",
                ..
            }
        ),
        "{msg}"
    );
    for name in [
        "t10k-labels-idx1-ubyte",
        "t10k-labels-idx1-ubyte.gz",
        "t10k-labels.idx1-ubyte",
    ] {
        assert!(msg.contains(name), "{msg}");
    }
    // A missing file read directly.
    let e = read_idx_images(&dir.path().join("nope")).unwrap_err();
    assert!(matches!(e, DataError::Io { .. }), "{e}");
    assert!(e.to_string().contains("nope: cannot read"), "{e}");
    // A missing or non-directory dataset directory.
    assert!(matches!(
        load_dir(&dir.path().join("absent")),
        Err(DataError::Io { .. })
    ));
    let f = write(dir.path(), "plain", b"x");
    assert!(matches!(load_dir(&f), Err(DataError::NotADirectory { .. })));
}

#[cfg(unix)]
#[test]
fn unreadable_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "secret", good_labels(2));
    fs::set_permissions(&p, fs::Permissions::from_mode(0o000)).unwrap();
    // Root reads anything; only check the error when the OS really refuses.
    if File::open(&p).is_err() {
        let e = read_idx_labels(&p).unwrap_err();
        assert!(matches!(e, DataError::Io { .. }), "{e}");
        assert!(e.to_string().contains("cannot read"), "{e}");
    }
}

#[test]
fn count_mismatch_between_images_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    write_dir(dir.path(), DASH_NAMES, 3, 2, false);
    write(dir.path(), DASH_NAMES[1], good_labels(4));
    let e = load_dir(dir.path()).unwrap_err();
    assert!(
        matches!(
            e,
            DataError::CountMismatch {
                image_count: 3,
                label_count: 4,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("3 images, but"), "{e}");
}

#[test]
fn loads_both_spellings_raw_and_gz() {
    let dotted = [
        "train-images.idx3-ubyte",
        "train-labels.idx1-ubyte",
        "t10k-images.idx3-ubyte",
        "t10k-labels.idx1-ubyte",
    ];
    let gz_names = DASH_NAMES.map(|n| format!("{n}.gz"));
    let gz_names = [
        gz_names[0].as_str(),
        gz_names[1].as_str(),
        gz_names[2].as_str(),
        gz_names[3].as_str(),
    ];
    for (names, compress) in [(DASH_NAMES, false), (dotted, false), (gz_names, true)] {
        let dir = tempfile::tempdir().unwrap();
        write_dir(dir.path(), names, 5, 3, compress);
        let s = load_dir(dir.path()).unwrap();
        assert_eq!(s.train.len(), 5);
        assert_eq!(s.test.len(), 3);
        assert_eq!(s.train.images, pixels(5, 0));
        assert_eq!(s.test.labels, vec![0, 1, 2]);
        assert_eq!(
            find_in(&[dir.path().to_path_buf()]),
            Some(dir.path().into())
        );
        // load() dispatches a directory to load_dir.
        assert_eq!(load(dir.path()).unwrap(), s);
    }
}
