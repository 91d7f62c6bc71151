use super::*;
use crate::data::idx::tests::pixels;
use crate::data::load;
use picodense_support::{npy, put as write, zip_archive};

/// Writes an `.npz` of `members`, mixing stored and deflated ones as real archives do.
fn write_npz(path: &Path, members: &[(&str, Vec<u8>)]) {
    std::fs::write(path, zip_archive(members, |i| i % 2 == 1)).unwrap();
}

/// Twelve f32 values, the sixth NaN.
fn nan_at_5() -> Vec<u8> {
    (0..12)
        .flat_map(|i| if i == 5 { f32::NAN } else { i as f32 }.to_le_bytes())
        .collect()
}

#[test]
fn npz_float_features_of_any_shape() {
    let dir = tempfile::tempdir().unwrap();
    let floats = |n: usize| -> Vec<u8> {
        (0..n * 6)
            .flat_map(|i| (i as f32 * 0.5).to_le_bytes())
            .collect()
    };
    let members = replace(
        replace(
            good_members(3, 2, false),
            "x_train.npy",
            npy("<f4", false, "(3, 6)", &floats(3)),
        ),
        "x_test.npy",
        npy("<f4", false, "(2, 3, 2)", &floats(2)),
    );
    let p = dir.path().join("f.npz");
    write_npz(&p, &members);
    let splits = load(&p).unwrap();
    assert_eq!(splits.width(), 6);
    assert!(!splits.train.is_images());
    assert_eq!(splits.train.row_values(1), &[3.0, 3.5, 4.0, 4.5, 5.0, 5.5]);
    assert_eq!(splits.test.len(), 2);
    assert_eq!(splits.image, None);
    // Float features beside uint8 images in the other split are refused.
    let mixed = replace(
        good_members(3, 2, false),
        "x_train.npy",
        npy("<f4", false, "(3, 28, 28)", &[0; 3 * 784 * 4]),
    );
    let p = dir.path().join("mixed.npz");
    write_npz(&p, &mixed);
    let e = load(&p).unwrap_err().to_string();
    assert!(e.contains("x_test.npy") && e.contains("float"), "{e}");
}

fn labels_i8(labels: &[i64]) -> Vec<u8> {
    labels.iter().flat_map(|l| l.to_le_bytes()).collect()
}

fn good_members(train: usize, test: usize, i8_labels: bool) -> Members {
    let y = |n: usize| -> Vec<u8> {
        let l: Vec<i64> = (0..n as i64).map(|i| (i * 7) % 10).collect();
        if i8_labels {
            npy("<i8", false, &format!("({n},)"), &labels_i8(&l))
        } else {
            let b: Vec<u8> = l.iter().map(|&x| x as u8).collect();
            npy("|u1", false, &format!("({n},)"), &b)
        }
    };
    vec![
        (
            "x_train.npy",
            npy(
                "|u1",
                false,
                &format!("({train}, 28, 28)"),
                &pixels(train, 1),
            ),
        ),
        ("y_train.npy", y(train)),
        (
            "x_test.npy",
            npy("|u1", false, &format!("({test}, 28, 28)"), &pixels(test, 2)),
        ),
        ("y_test.npy", y(test)),
    ]
}

#[test]
fn npz_round_trip_u1_and_i8_labels() {
    let dir = tempfile::tempdir().unwrap();
    for i8_labels in [false, true] {
        let p = dir.path().join(format!("m{i8_labels}.npz"));
        write_npz(&p, &good_members(6, 4, i8_labels));
        let s = load(&p).unwrap();
        assert_eq!(s.train.images, pixels(6, 1));
        assert_eq!(s.test.images, pixels(4, 2));
        assert_eq!(s.train.labels, vec![0, 7, 4, 1, 8, 5]);
        assert_eq!(s.test.labels, vec![0, 7, 4, 1]);
        assert_eq!(s.image, Some(ImageSize { rows: 28, cols: 28 }));
    }
}

#[test]
fn only_samples_of_rows_and_columns_are_pictures() {
    let dir = tempfile::tempdir().unwrap();
    for sample in ["784", "28, 28, 1", "14, 14, 4"] {
        let p = dir.path().join("flat.npz");
        let x = |n: usize, seed| npy("|u1", false, &format!("({n}, {sample})"), &pixels(n, seed));
        let mut members = good_members(6, 4, false);
        members[0].1 = x(6, 1);
        members[2].1 = x(4, 2);
        write_npz(&p, &members);
        let s = load(&p).unwrap();
        assert_eq!(s.train.images, pixels(6, 1), "{sample}");
        assert_eq!(s.width(), 784, "{sample}");
        assert_eq!(s.image, None, "{sample}");
    }
}

#[test]
fn npy_header_variants() {
    // Python 2 long integers, version 2 headers, big-endian and narrow label types.
    let mut v2 = npy("<i4", false, "(3L,)", &[1, 0, 0, 0, 2, 0, 0, 0, 9, 0, 0, 0]);
    v2[6] = 2;
    let dict_len = u16::from_le_bytes([v2[8], v2[9]]);
    v2.splice(8..10, (u32::from(dict_len)).to_le_bytes());
    let h = parse_npy_header(&mut v2.as_slice(), Path::new("v2")).unwrap();
    assert_eq!(h.shape, vec![3]);
    assert_eq!(h.len, 12 + u64::from(dict_len));
    let be = IntDtype::parse(">u2").unwrap();
    assert_eq!(be.value(&[0x01, 0x02]), 0x0102);
    let le = IntDtype::parse("<i2").unwrap();
    assert_eq!(le.value(&[0xff, 0xff]), -1);
    assert_eq!(
        IntDtype::parse("<i8")
            .unwrap()
            .value(&(-5i64).to_le_bytes()),
        -5
    );
    assert!(IntDtype::parse("|i2").is_none());
    assert!(IntDtype::parse("<f4").is_some_and(|d| d.float && d.size == 4));
    assert!(IntDtype::parse("<f2").is_none());
    assert!(IntDtype::parse("").is_none());
}

fn npz_error(members: &[(&str, Vec<u8>)]) -> DataError {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.npz");
    write_npz(&p, members);
    load_npz(&p).unwrap_err()
}

/// Members of a test `.npz`: name and bytes.
type Members = Vec<(&'static str, Vec<u8>)>;

fn replace(mut members: Members, name: &str, bytes: Vec<u8>) -> Members {
    for m in &mut members {
        if m.0 == name {
            m.1 = bytes.clone();
        }
    }
    members
}

#[test]
fn npz_errors() {
    let good = || good_members(3, 2, false);
    let cases: Vec<(Members, &str)> = vec![
        (good()[1..].to_vec(), "no x_train.npy in the archive"),
        (
            replace(good(), "x_test.npy", b"NUMPY not really".to_vec()),
            "bad magic",
        ),
        (
            replace(good(), "y_test.npy", npy("|u1", true, "(2,)", &[1, 2])),
            "fortran_order",
        ),
        (
            replace(
                good(),
                "x_train.npy",
                npy("<f4", false, "(3, 2, 2)", &nan_at_5()),
            ),
            "value at index 5 (row 1) is not a finite f32",
        ),
        (
            replace(
                good(),
                "x_train.npy",
                npy("<f2", false, "(3, 28, 28)", &[0; 6]),
            ),
            "unsupported dtype '<f2'",
        ),
        (
            replace(
                good(),
                "x_train.npy",
                npy("<i8", false, "(3, 28, 28)", &[0; 3 * 784 * 8]),
            ),
            "features must be uint8 ('|u1') or float",
        ),
        (
            replace(
                good(),
                "x_train.npy",
                npy("|u1", false, "(3, 27, 28)", &[0; 3 * 27 * 28]),
            ),
            "the training images are 27x28",
        ),
        (
            replace(good(), "y_train.npy", npy("|u1", false, "(3, 2)", &[0; 6])),
            "labels have shape (3, 2)",
        ),
        (
            replace(good(), "y_train.npy", npy("|u1", false, "(3,)", &[0, 1])),
            "truncated",
        ),
        (
            replace(
                good(),
                "y_train.npy",
                npy("|u1", false, "(3,)", &[0, 1, 2, 3]),
            ),
            "trailing data",
        ),
        (
            replace(good(), "y_train.npy", npy("|u1", false, "(2,)", &[0, 1])),
            "3 images, but",
        ),
        (
            replace(
                good(),
                "y_test.npy",
                npy("<i8", false, "(2,)", &labels_i8(&[0, 300])),
            ),
            "label 300 at index 1",
        ),
        (
            replace(
                good(),
                "y_train.npy",
                npy("<i8", false, "(3,)", &labels_i8(&[1, -1, 2])),
            ),
            "label -1 at index 1",
        ),
        (
            replace(
                good(),
                "y_train.npy",
                npy("<i8", false, "(3,)", &labels_i8(&[1, 2, 300])),
            ),
            "label 300 at index 2",
        ),
        (
            replace(good(), "y_train.npy", {
                let mut v = npy("|u1", false, "(3,)", &[0, 1, 2]);
                v[6] = 9;
                v
            }),
            "unsupported .npy format version 9",
        ),
        (
            replace(good(), "y_train.npy", {
                let mut v = b"\x93NUMPY\x01\x00".to_vec();
                let d = b"{'descr': '|u1', 'shape': (3,)}\n";
                v.extend_from_slice(&(d.len() as u16).to_le_bytes());
                v.extend_from_slice(d);
                v.extend_from_slice(&[0, 1, 2]);
                v
            }),
            "lacks one of",
        ),
        (
            replace(good(), "y_train.npy", {
                let mut v = b"\x93NUMPY\x01\x00".to_vec();
                let d = b"{'descr': '|u1', 'fortran_order': False, 'shape': (3,\n";
                v.extend_from_slice(&(d.len() as u16).to_le_bytes());
                v.extend_from_slice(d);
                v
            }),
            "malformed .npy header",
        ),
        (
            replace(
                good(),
                "x_train.npy",
                npy("|u1", false, "(4000000000, 28, 28)", &[0; 10]),
            ),
            "truncated",
        ),
    ];
    for (members, want) in cases {
        let e = npz_error(&members);
        let msg = e.to_string();
        assert!(msg.contains(want), "wanted '{want}' in: {msg}");
        assert!(msg.contains("bad.npz"), "{msg}");
    }
}

#[test]
fn npz_file_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "junk.npz", b"this is not a zip archive at all");
    assert!(matches!(load_npz(&p), Err(DataError::Zip { .. })));
    let p = write(dir.path(), "empty.npz", b"");
    assert!(matches!(load(&p), Err(DataError::Zip { .. })));
    assert!(matches!(
        load_npz(dir.path()),
        Err(DataError::IsDirectory { .. })
    ));
    let p = write(dir.path(), "data.csv", b"1,2,3");
    let e = load(&p).unwrap_err();
    assert!(matches!(e, DataError::NotADataset { .. }), "{e}");
    assert!(matches!(
        load(&dir.path().join("absent.npz")),
        Err(DataError::Io { .. })
    ));
}
