//! CSV reader. The first byte is the harness's mode: bit 0 names the label column `y` instead
//! of the default `label`. The rest is the training file, then the test file after the first
//! `CSV|` (the training file again when there is none); the test file is also read for
//! prediction with the training file's feature columns.
#![no_main]

use libfuzzer_sys::fuzz_target;
use picodense::data::csv::{MAX_CLASSES, read_features, read_train_test, standardize_stats};
use picodense_fuzz::{CSV_SEPARATOR, assert_names, scratch_file};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let (train, test) = match body
        .windows(CSV_SEPARATOR.len())
        .position(|w| w == CSV_SEPARATOR)
    {
        Some(at) => (&body[..at], &body[at + CSV_SEPARATOR.len()..]),
        None => (body, body),
    };
    let label = (mode & 1 != 0).then_some("y");
    let train_path = scratch_file("train.csv", train);
    let test_path = scratch_file("test.csv", test);
    match read_train_test(&train_path, &test_path, label) {
        Ok(data) => {
            assert_eq!(data.train.len(), data.train_labels.len() * data.width);
            assert_eq!(data.test.len(), data.test_labels.len() * data.width);
            assert_eq!(data.feature_names.len(), data.width);
            assert!((2..=MAX_CLASSES).contains(&data.classes));
            if let Some(names) = &data.class_names {
                assert_eq!(names.len(), data.classes);
            }
            let labels = data.train_labels.iter().chain(&data.test_labels);
            assert!(labels.into_iter().all(|&l| usize::from(l) < data.classes));
            assert!(data.train.iter().chain(&data.test).all(|x| x.is_finite()));
            let (mean, std) = standardize_stats(&data.train, data.width);
            assert!(mean.iter().all(|m| m.is_finite()));
            assert!(std.iter().all(|s| s.is_normal() && *s > 0.0));
            match read_features(&test_path, &data.feature_names, label) {
                Ok(rows) => assert_eq!(rows, data.test),
                Err(e) => panic!("the test file was read, but not for prediction: {e}"),
            }
        }
        Err(e) => {
            let message = e.to_string();
            if !message.contains(&*train_path.to_string_lossy()) {
                assert_names(&message, &test_path);
            }
        }
    }
});
