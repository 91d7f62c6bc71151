//! Unit tests of the CSV reader on small files written to a temporary folder: valid files
//! (names, integers, quotes, CRLF, a BOM), then one test per hostile input, each checking that
//! the message names the file, the line and the column.

use super::*;
use picodense_support::put;
use rand_core::{Rng, SeedableRng};
use rand_xorshift::XorShiftRng;
use std::path::PathBuf;
use tempfile::TempDir;

const TRAIN: &str = "a,b,label\n1,2,cat\n3,4,dog\n5,6,cat\n";
const TEST: &str = "a,b,label\n7,8,dog\n";

fn read(train: impl AsRef<[u8]>, test: impl AsRef<[u8]>) -> Result<Tabular, CsvError> {
    let dir = TempDir::new().expect("temp dir");
    read_train_test(
        &put(dir.path(), "train.csv", train),
        &put(dir.path(), "test.csv", test),
        None,
    )
}

/// The message of a hostile training file (with a valid test file), and the training path.
fn train_error(train: impl AsRef<[u8]>, test: &str, label: Option<&str>) -> (String, PathBuf) {
    let dir = TempDir::new().expect("temp dir");
    let path = put(dir.path(), "train.csv", train);
    let result = read_train_test(&path, &put(dir.path(), "test.csv", test), label);
    (result.expect_err("hostile input refused").to_string(), path)
}

/// The message of a hostile test file (with the valid training file), and the test path.
fn test_error(test: impl AsRef<[u8]>) -> (String, PathBuf) {
    let dir = TempDir::new().expect("temp dir");
    let path = put(dir.path(), "test.csv", test);
    let result = read_train_test(&put(dir.path(), "train.csv", TRAIN), &path, None);
    (result.expect_err("hostile input refused").to_string(), path)
}

/// Asserts the message names the file, the line and the column (as it appears in the text).
fn assert_names(message: &str, path: &Path, line: &str, column: &str) {
    for part in [&*path.display().to_string(), line, column] {
        assert!(message.contains(part), "'{part}' missing from: {message}");
    }
}

#[test]
fn names_quotes_crlf_and_bom() {
    let train = "\u{feff}\"x 1\",label,\"y, 2\"\r\n\
                 1.5,\"setosa, wild\",-2\r\n\
                 \"3e2\",versicolor, 4 \r\n\
                 0,\"say \"\"hi\"\"\",\"5\"\r\n\
                 -0.25,versicolor,6\r\n";
    let test = "\u{feff}x 1,label,\"y, 2\"\r\n9,\"setosa, wild\",10\r\n";
    let data = read(train, test).unwrap();
    assert_eq!(data.width, 2);
    assert_eq!(data.feature_names, ["x 1", "y, 2"]);
    assert_eq!(data.train, [1.5, -2.0, 300.0, 4.0, 0.0, 5.0, -0.25, 6.0]);
    let names = ["say \"hi\"", "setosa, wild", "versicolor"];
    assert_eq!(
        data.class_names.as_deref(),
        Some(&names.map(String::from)[..])
    );
    assert_eq!(data.classes, 3);
    assert_eq!(data.train_labels, [1, 2, 0, 2]);
    assert_eq!(data.test, [9.0, 10.0]);
    assert_eq!(data.test_labels, [1]);
    assert_eq!((data.train_rows(), data.test_rows()), (4, 1));
}

#[test]
fn integer_labels_give_k_from_both_files() {
    let data = read("f,label\n0.5,0\n1,2\n2,0\n", "f,label\n3,4\n4,1\n").unwrap();
    assert_eq!(data.class_names, None);
    assert_eq!(data.classes, 5, "K = largest label over train and test + 1");
    assert_eq!(data.train_labels, [0, 2, 0]);
    assert_eq!(data.test_labels, [4, 1]);
    // Leading zeros are still integers; 255 is the largest.
    let data = read("f,label\n1,007\n2,255\n", "f,label\n3,7\n").unwrap();
    assert_eq!((data.classes, data.train_labels), (256, vec![7, 255]));
}

#[test]
fn labels_that_are_not_all_small_integers_are_names() {
    // A sign, a point, or a value past 255 makes every label a name, sorted as text.
    let data = read("f,label\n1,-1\n2,1\n", "f,label\n3,1\n").unwrap();
    assert_eq!(data.class_names.unwrap(), ["-1", "1"]);
    let data = read("f,label\n1,10\n2,2\n3,300\n", "f,label\n3,2\n").unwrap();
    assert_eq!(data.class_names.unwrap(), ["10", "2", "300"]);
    assert_eq!(
        (data.train_labels, data.test_labels),
        (vec![0, 1, 2], vec![1])
    );
    let data = read("f,label\n1,1.0\n2,2\n", "f,label\n3,1.0\n").unwrap();
    assert_eq!(data.class_names.unwrap(), ["1.0", "2"]);
}

#[test]
fn label_column_by_name_blank_lines_and_spaces() {
    let train = "species,w,h\n\n a ,1, 2\t\nb,3,4\n\n";
    let test = "species,w,h\nb,5,6\n";
    let dir = TempDir::new().unwrap();
    let data = read_train_test(
        &put(dir.path(), "train.csv", train),
        &put(dir.path(), "test.csv", test),
        Some("species"),
    )
    .unwrap();
    assert_eq!(data.feature_names, ["w", "h"]);
    assert_eq!(data.train, [1.0, 2.0, 3.0, 4.0]);
    assert_eq!(data.class_names.unwrap(), ["a", "b"]);
    assert_eq!(data.test_labels, [1]);
}

#[test]
fn lines_count_from_one_past_quoted_newlines() {
    // The quoted label spans lines 2-3, so the bad cell is on line 5 as an editor shows it.
    let train = "f,label\n1,\"two\nlines\"\n2,b\n3,x\n";
    let dir = TempDir::new().unwrap();
    let path = put(dir.path(), "train.csv", train);
    let test = put(dir.path(), "test.csv", "f,label\noops,b\n");
    let e = read_train_test(&path, &test, None).unwrap_err().to_string();
    assert_names(&e, &test, "line 2", "'f'");
    let train_bad = put(
        dir.path(),
        "bad.csv",
        "f,label\n1,\"two\nlines\"\n2,b\nx,x\n",
    );
    let e = read_train_test(&train_bad, &test, None)
        .unwrap_err()
        .to_string();
    assert_names(&e, &train_bad, "line 5", "'f'");
}

#[test]
fn read_features_takes_the_model_columns_with_or_without_labels() {
    let dir = TempDir::new().unwrap();
    let names = ["a".to_owned(), "b".to_owned()];
    let with = put(dir.path(), "with.csv", "label,a,b\ncat,1,2\n,3,4\n");
    assert_eq!(
        read_features(&with, &names, None).unwrap(),
        [1.0, 2.0, 3.0, 4.0]
    );
    let without = put(dir.path(), "without.csv", "a,b\r\n5,6\r\n");
    assert_eq!(read_features(&without, &names, None).unwrap(), [5.0, 6.0]);
    for (text, column) in [
        ("b,a\n1,2\n", "column 1"),
        ("a\n1\n", "column 2"),
        ("a,b,c\n1,2,3\n", "column 3"),
    ] {
        let path = put(dir.path(), "bad.csv", text);
        let e = read_features(&path, &names, None).unwrap_err().to_string();
        assert_names(&e, &path, "line 1", column);
    }
    let path = put(dir.path(), "nan.csv", "a,b\n1,2\n1,nan\n");
    let e = read_features(&path, &names, None).unwrap_err().to_string();
    assert_names(&e, &path, "line 3", "'b'");
}

#[test]
fn standardize_stats_population_std_and_constant_columns() {
    let rows = [1.0, 5.0, 7.0, 3.0, 5.0, 7.0];
    let (mean, std) = standardize_stats(&rows, 3);
    assert_eq!(mean, [2.0, 5.0, 7.0]);
    assert_eq!(
        std,
        [1.0, 1.0, 1.0],
        "population std of 1,3 is 1; constants get 1"
    );
    let (mean, std) = standardize_stats(&[0.0, 4.0, 0.0, 4.0], 1);
    assert_eq!((mean, std), (vec![2.0], vec![2.0]));
    // f64 sums: a large offset does not swamp a small spread.
    let (mean, std) = standardize_stats(&[1e7 + 1.0, 1e7 - 1.0], 1);
    assert_eq!((mean, std), (vec![1e7], vec![1.0]));
    assert_eq!(standardize_stats(&[], 2), (vec![0.0; 2], vec![1.0; 2]));
    assert_eq!(standardize_stats(&[1.0], 0), (vec![], vec![]));
}

// Hostile inputs: one test each, message names file, line and column.

#[test]
fn non_numeric_feature() {
    let (e, path) = train_error("a,b,label\n1,2,x\n3,abc,y\n", TEST, None);
    assert_names(&e, &path, "line 3", "column 'b'");
    assert!(e.contains("'abc' is not a number"), "{e}");
    let (e, path) = train_error("a,b,label\n1,?,x\n", TEST, None);
    assert_names(&e, &path, "line 2", "column 'b'");
}

#[test]
fn empty_cell() {
    let (e, path) = train_error("a,b,label\n1, ,x\n", TEST, None);
    assert_names(&e, &path, "line 2", "column 'b'");
    assert!(e.contains("empty cell"), "{e}");
}

#[test]
fn nan_feature() {
    for nan in ["NaN", "nan", "-NaN"] {
        let (e, path) = test_error(format!("a,b,label\n1,2,cat\n{nan},4,dog\n"));
        assert_names(&e, &path, "line 3", "column 'a'");
        assert!(e.contains("is NaN"), "{e}");
    }
}

#[test]
fn infinite_feature() {
    for inf in ["inf", "-inf", "Infinity", "+INF"] {
        let (e, path) = train_error(format!("a,b,label\n1,{inf},x\n"), TEST, None);
        assert_names(&e, &path, "line 2", "column 'b'");
        assert!(e.contains("is infinite"), "{e}");
    }
}

#[test]
fn number_out_of_f32_range() {
    for big in [
        "1e39",
        "-1e39",
        "3.5e38",
        "1000000000000000000000000000000000000000",
    ] {
        let (e, path) = train_error(format!("a,b,label\n1,2,x\n{big},3,y\n"), TEST, None);
        assert_names(&e, &path, "line 3", "column 'a'");
        assert!(e.contains("out of f32 range"), "{e}");
    }
    // The largest f32 and underflow to zero are fine.
    let data = read("a,label\n3.4028235e38,x\n1e-50,y\n", "a,label\n0,x\n").unwrap();
    assert_eq!(data.train, [f32::MAX, 0.0]);
}

#[test]
fn non_utf8_cells() {
    let (e, path) = train_error(b"a,b,label\n1,\xff,x\n", TEST, None);
    assert_names(&e, &path, "line 2", "column 'b'");
    let (e, path) = train_error(b"a,b,label\n1,2,\xff\xfe\n", TEST, None);
    assert_names(&e, &path, "line 2", "column 'label'");
    let (e, path) = train_error(b"a,\xc3\x28,label\n1,2,x\n", TEST, None);
    assert_names(&e, &path, "line 1", "column 2");
}

#[test]
fn ragged_rows() {
    let (e, path) = train_error("a,b,label\n1,2,x\n3,y\n", TEST, None);
    assert_names(&e, &path, "line 3", "column 'label'");
    assert!(
        e.contains("ragged row: 2 fields, the header has 3 columns"),
        "{e}"
    );
    let (e, path) = test_error("a,b,label\n1,2,cat,9\n");
    assert_names(&e, &path, "line 2", "column 4");
}

#[test]
fn test_header_that_differs() {
    let (e, path) = test_error("a,label\n1,cat\n");
    assert_names(&e, &path, "line 1", "column 2");
    assert!(e.contains("'label', the training file"), "{e}");
    let (e, path) = test_error("a,b,label,c\n1,2,cat,3\n");
    assert_names(&e, &path, "line 1", "column 4");
    assert!(e.contains("the header has 4 columns"), "{e}");
    let (e, path) = test_error("b,a,label\n1,2,cat\n");
    assert_names(&e, &path, "line 1", "column 1");
}

#[test]
fn missing_label_column() {
    let (e, path) = train_error("a,b,class\n1,2,x\n", TEST, None);
    assert_names(&e, &path, "line 1", "'label'");
    assert!(e.contains("'a', 'b', 'class'"), "{e}");
    let (e, path) = train_error(TRAIN, TEST, Some("species"));
    assert_names(&e, &path, "line 1", "'species'");
    // The test file is checked against the training header, label column included.
    let (e, path) = test_error("a,b,class\n1,2,cat\n");
    assert_names(&e, &path, "line 1", "column 3");
}

#[test]
fn label_column_alone_has_no_features() {
    let (e, path) = train_error("label\nx\ny\n", "label\nx\n", None);
    assert_names(&e, &path, "line 1", "column 'label'");
    assert!(e.contains("no features"), "{e}");
}

#[test]
fn bad_header_names() {
    let (e, path) = train_error("a,,label\n1,2,x\n", TEST, None);
    assert_names(&e, &path, "line 1", "column 2");
    assert!(e.contains("no name"), "{e}");
    let (e, path) = train_error("a,b,a,label\n1,2,3,x\n", TEST, None);
    assert_names(&e, &path, "line 1", "column 3");
    assert!(e.contains("'a' is named twice"), "{e}");
}

#[test]
fn test_label_never_seen_in_training() {
    let (e, path) = test_error("a,b,label\n1,2,cat\n3,4,bird\n");
    assert_names(&e, &path, "line 3", "column 'label'");
    assert!(
        e.contains("'bird' never appears in the training file"),
        "{e}"
    );
    assert!(e.contains("'cat', 'dog'"), "{e}");
}

#[test]
fn test_label_not_an_integer_when_training_labels_are() {
    let dir = TempDir::new().unwrap();
    let train = put(dir.path(), "train.csv", "f,label\n1,0\n2,1\n");
    for bad in ["cat", "-1", "256", "1.0"] {
        let test = put(dir.path(), "test.csv", format!("f,label\n1,1\n2,{bad}\n"));
        let e = read_train_test(&train, &test, None)
            .unwrap_err()
            .to_string();
        assert_names(&e, &test, "line 3", "column 'label'");
        assert!(e.contains("not an integer 0..=255"), "{e}");
    }
}

#[test]
fn empty_label() {
    let (e, path) = train_error("a,b,label\n1,2,x\n1,2,\n", TEST, None);
    assert_names(&e, &path, "line 3", "column 'label'");
    assert!(e.contains("empty label"), "{e}");
}

#[test]
fn fewer_than_two_classes() {
    let (e, path) = train_error("a,b,label\n1,2,cat\n3,4,cat\n\n5,6,cat\n", TEST, None);
    assert_names(&e, &path, "lines 2-5", "column 'label'");
    assert!(e.contains("every label is 'cat'"), "{e}");
    // Integers that are one class written two ways.
    let (e, path) = train_error("a,label\n1,1\n2,01\n", "a,label\n1,1\n", None);
    assert_names(&e, &path, "lines 2-3", "column 'label'");
}

#[test]
fn more_than_256_classes() {
    let mut train = String::from("a,label\n");
    for i in 0..257 {
        train.push_str(&format!("{i},c{i}\n"));
    }
    let (e, path) = train_error(&train, "a,label\n1,c1\n", None);
    assert_names(&e, &path, "line 258", "column 'label'");
    assert!(e.contains("'c256' is the 257th distinct label"), "{e}");
    // 256 names are fine.
    let names: Vec<&str> = train.lines().take(257).collect();
    let data = read(names.join("\n"), "a,label\n1,c9\n").unwrap();
    assert_eq!(data.classes, 256);
}

#[test]
fn more_columns_than_max_columns() {
    let header: Vec<String> = (0..MAX_COLUMNS).map(|i| format!("f{i}")).collect();
    let train = format!("{},label\n", header.join(","));
    let (e, path) = train_error(&train, TEST, None);
    assert_names(&e, &path, "line 1", &format!("{} columns", MAX_COLUMNS + 1));
    // Exactly MAX_COLUMNS (label included) is accepted.
    let header = header[..MAX_COLUMNS - 1].join(",");
    let row = vec!["1"; MAX_COLUMNS - 1].join(",");
    let text = format!("{header},label\n{row},a\n{row},b\n");
    let data = read(&text, &text).unwrap();
    assert_eq!(data.width, MAX_COLUMNS - 1);
}

#[test]
fn empty_files_and_files_without_rows() {
    for empty in ["", "\u{feff}", "\n\n", "\r\n"] {
        let (e, path) = train_error(empty, TEST, None);
        assert!(
            e.starts_with(&format!("{}: file is empty", path.display())),
            "{e}"
        );
        let (e, path) = test_error(empty);
        assert!(
            e.starts_with(&format!("{}: file is empty", path.display())),
            "{e}"
        );
    }
    let (e, path) = train_error("a,b,label\n", TEST, None);
    assert_names(&e, &path, "line 1", "no data rows");
    let (e, path) = test_error("\u{feff}a,b,label\r\n\r\n");
    assert_names(&e, &path, "line 1", "no data rows");
}

#[test]
fn missing_file_and_directory() {
    let dir = TempDir::new().unwrap();
    let test = put(dir.path(), "test.csv", TEST);
    let missing = dir.path().join("nope.csv");
    let e = read_train_test(&missing, &test, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!("{}: cannot read", missing.display())),
        "{e}"
    );
    let e = read_train_test(dir.path(), &test, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("is a directory"), "{e}");
}

#[test]
fn unterminated_quote_is_read_to_the_end() {
    // The csv parser takes an unclosed quote to the end of the file; the row is then ragged.
    let (e, path) = train_error("a,b,label\n1,\"2,x\n3,4,y\n", TEST, None);
    assert_names(&e, &path, "line 2", "column 'label'");
}

#[test]
fn long_names_and_values_are_cut_in_messages() {
    let long = "x".repeat(5000);
    let (e, _) = train_error(format!("a,label\n{long},y\n"), TEST, None);
    assert!(e.len() < 300, "{e}");
    assert!(
        e.contains(&format!("'{}...'", "x".repeat(SHOWN_CHARS))),
        "{e}"
    );
}

/// Random files built from valid and hostile cells, separators and line ends, with an
/// occasional stray byte, never panic; every error names the file it is about, and whatever is
/// accepted keeps the invariants.
#[test]
fn random_inputs_never_panic() {
    let cells: [&[u8]; 10] = [
        b"1", b"-2.5", b"0", b"\"3\"", b" 4 ", b"1e39", b"nan", b"", b"x", b"\xff",
    ];
    let labels: [&[u8]; 8] = [b"cat", b"dog", b"0", b"1", b"2", b"\"cat\"", b"", b"-1"];
    let stray: [&[u8]; 8] = [
        b",",
        b"\n",
        b"\r",
        b"\"",
        b"\xef\xbb\xbf",
        b"label",
        b"\xff",
        b"a",
    ];
    let mut rng = XorShiftRng::seed_from_u64(7);
    let mut pick = |n: usize| rng.next_u32() as usize % n;
    let (train_path, test_path) = (Path::new("train.csv"), Path::new("test.csv"));
    let mut accepted = 0;
    for _ in 0..2000 {
        let mut files = [Vec::new(), Vec::new()];
        for file in &mut files {
            file.extend_from_slice(b"a,label");
            let end: &[u8] = if pick(2) == 0 { b"\n" } else { b"\r\n" };
            for _ in 0..pick(6) {
                file.extend_from_slice(end);
                // Mostly valid cells, so that some files are accepted.
                let cell = if pick(3) == 0 {
                    pick(cells.len())
                } else {
                    pick(3)
                };
                file.extend_from_slice(cells[cell]);
                file.push(b',');
                let label = if pick(3) == 0 {
                    pick(labels.len())
                } else {
                    pick(2)
                };
                file.extend_from_slice(labels[label]);
                if pick(12) == 0 {
                    let at = pick(file.len() + 1);
                    let piece = stray[pick(stray.len())];
                    file.splice(at..at, piece.iter().copied());
                }
            }
        }
        // In memory: the same parser as read_train_test without a disk write per file.
        match parse_train_test(train_path, &files[0], test_path, &files[1], None) {
            Ok(data) => {
                accepted += 1;
                assert_eq!(data.train.len(), data.train_rows() * data.width);
                assert_eq!(data.test.len(), data.test_rows() * data.width);
                assert!((2..=MAX_CLASSES).contains(&data.classes));
                let labels = data.train_labels.iter().chain(&data.test_labels);
                assert!(labels.into_iter().all(|&l| usize::from(l) < data.classes));
                assert!(data.train.iter().chain(&data.test).all(|x| x.is_finite()));
                let (mean, std) = standardize_stats(&data.train, data.width);
                assert!(mean.iter().chain(&std).all(|x| x.is_finite()));
            }
            Err(e) => {
                let e = e.to_string();
                let names_one = [train_path, test_path]
                    .iter()
                    .any(|p| e.starts_with(&format!("{}: ", p.display())));
                assert!(names_one, "error names no file: {e}");
            }
        }
    }
    assert!(accepted > 50, "only {accepted} random files were valid");
}
