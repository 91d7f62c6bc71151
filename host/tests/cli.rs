//! End-to-end runs of the `picodense` binary on generated IDX data.

mod common;
use common::*;

use std::path::{Path, PathBuf};

/// A dataset folder: training files gzipped, test files raw, to cover both.
fn dataset(dir: &Path, train: usize, test: usize) -> PathBuf {
    write_dataset(
        dir,
        "synthetic",
        block_images(train, 1),
        block_images(test, 2),
    )
}

fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn trains_evaluates_predicts_and_inspects_a_generated_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 3000, 500);
    let model = dir.path().join("m.pdn");
    let log = dir.path().join("log.jsonl");
    let printed = ok(&train_args(
        &data,
        &[
            "--epochs",
            "2",
            "--validation-split",
            "0.1",
            "--save",
            s(&model),
            "--log-json",
            s(&log),
        ],
    ));
    assert!(printed.contains("Epoch 2/2"), "{printed}");
    // 2700 training rows after the split: 22 steps of 128, the last one partial.
    assert!(printed.contains("22/22 [="), "{printed}");
    let lines = json_lines(&log);
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["epoch"], 1);
    for key in ["loss", "accuracy", "val_loss", "val_accuracy", "seconds"] {
        assert!(lines[1][key].is_number(), "{key} missing in {}", lines[1]);
    }
    let test_accuracy = lines[2]["test_accuracy"].as_f64().unwrap();
    assert!(test_accuracy >= 0.9, "test accuracy {test_accuracy}");
    assert!(lines[2]["train_seconds"].is_number());
    assert!(
        lines[1]["loss"].as_f64().unwrap() < lines[0]["loss"].as_f64().unwrap(),
        "loss should fall"
    );

    let eval = ok_json(&model_args("evaluate", &model, &data, &["--json"]));
    assert_eq!(eval["test_accuracy"].as_f64().unwrap(), test_accuracy);

    let printed = ok(&model_args("predict", &model, &data, &["--index", "3"]));
    assert!(printed.contains("predicted:"), "{printed}");

    let printed = ok(&["inspect", s(&model)]);
    assert!(printed.contains("Total params: 407050"), "{printed}");
    assert!(printed.contains("checksum:      ok"), "{printed}");
    assert!(printed.contains("checkpoint:    no"), "{printed}");

    // Options for CSV data are refused on images, not ignored.
    for (option, needle) in [
        (["--normalize", "none"], "holds images"),
        (["--label-column", "y"], "is not CSV data"),
    ] {
        let extra = [&option[..], &["--save", s(&model)]].concat();
        let printed = fails(&train_args(&data, &extra));
        assert!(printed.contains(needle), "{printed}");
    }
}

#[test]
fn same_seed_gives_the_same_model_for_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 700, 100);
    let mut files = Vec::new();
    for threads in ["1", "2", "3"] {
        let model = dir.path().join(format!("t{threads}.pdn"));
        train_epoch(&data, &model, &["--threads", threads, "--seed", "42"]);
        files.push(std::fs::read(&model).unwrap());
    }
    assert!(
        files[0] == files[1] && files[1] == files[2],
        "models differ"
    );
    let other = dir.path().join("other.pdn");
    train_epoch(&data, &other, &["--seed", "43"]);
    assert_ne!(std::fs::read(&other).unwrap(), files[0]);
}

#[test]
fn corrupted_model_files_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 300, 50);
    let model = dir.path().join("m.pdn");
    train_epoch(&data, &model, &[]);
    let good = std::fs::read(&model).unwrap();

    let flipped = dir.path().join("flipped.pdn");
    let mut bytes = good.clone();
    bytes[1000] ^= 0x10;
    std::fs::write(&flipped, &bytes).unwrap();
    let truncated = dir.path().join("truncated.pdn");
    std::fs::write(&truncated, &good[..good.len() / 2]).unwrap();

    let longer = dir.path().join("longer.pdn");
    std::fs::write(&longer, [&good[..], b"junk"].concat()).unwrap();

    for (path, reason) in [
        (&flipped, "checksum mismatch"),
        (&truncated, "truncated"),
        (&longer, "4 bytes follow the checksum"),
    ] {
        for args in [
            vec!["inspect", s(path)],
            model_args("evaluate", path, &data, &[]),
        ] {
            let printed = fails(&args);
            assert!(printed.contains(s(path)), "{printed}");
            assert!(printed.contains(reason), "{printed}");
        }
    }
}

#[test]
fn bad_arguments_fail_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    for (args, needle) in [
        (vec!["--batch-size", "0"], "batch size"),
        (vec!["--epochs", "0"], "epochs"),
        (vec!["--learning-rate", "-1"], "learning rate"),
        (vec!["--learning-rate", "NaN"], "learning rate"),
        (vec!["--threads", "0"], "threads"),
        (vec!["--validation-split", "1.0"], "validation-split"),
        (vec!["--validation-split", "-0.1"], "validation-split"),
        (vec!["--dataset", "cifar"], "cifar"),
    ] {
        let printed = fails(&train_args(&missing, &args));
        assert!(printed.contains(needle), "{args:?}: {printed}");
    }
    // Options that would do nothing without another are refused, not ignored.
    for (args, needle) in [
        (vec!["--test-data", "test.csv"], "--data <DATA>"),
        (vec!["--checkpoint-every", "2"], "--checkpoint <CHECKPOINT>"),
    ] {
        let printed = fails(&[&["train", "--dataset", "mnist"], &args[..]].concat());
        assert!(printed.contains(needle), "{args:?}: {printed}");
    }
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let csv = dir.path().join("nowhere.csv");
    for (data, needles) in [
        (&empty, ["not a dataset", "train.csv and test.csv"]),
        (&csv, ["nowhere.csv", "No such file"]),
    ] {
        let printed = fails(&train_args(data, &["--epochs", "1"]));
        for needle in needles {
            assert!(printed.contains(needle), "{data:?}: {printed}");
        }
    }
}

#[test]
fn exported_f32_and_int8_files_evaluate_like_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2000, 400);
    let model = dir.path().join("m.pdn");
    train_epoch(&data, &model, &[]);
    let accuracy = |path: &Path| {
        let v = ok_json(&model_args("evaluate", path, &data, &["--json"]));
        v["test_accuracy"].as_f64().unwrap()
    };
    let original = accuracy(&model);
    for (format, size) in [("f32", 1_628_236u64), ("int8", 414_940)] {
        let exported = dir.path().join(format!("{format}.pdn"));
        let export = ["--format", format, "--out", s(&exported)];
        let printed = ok(&model_args("export", &model, &data, &export));
        assert!(printed.contains("f32 test accuracy"), "{printed}");
        assert_eq!(std::fs::metadata(&exported).unwrap().len(), size);
        let got = accuracy(&exported);
        match format {
            "f32" => assert_eq!(got, original),
            _ => assert!(
                (got - original).abs() <= 0.01,
                "int8 {got} vs f32 {original}"
            ),
        }
        let printed = ok(&["inspect", s(&exported)]);
        let dtype = format!("dtype:         {format}");
        assert!(printed.contains(&dtype), "{printed}");
    }
    // Only `evaluate` reads an int8 export; the others say so and name it.
    let int8 = dir.path().join("int8.pdn");
    let again = dir.path().join("again.pdn");
    for args in [
        model_args("predict", &int8, &data, &["--index", "0"]),
        model_args(
            "export",
            &int8,
            &data,
            &["--format", "f32", "--out", s(&again)],
        ),
        model_args("evaluate", &int8, &data, &["--confusion"]),
    ] {
        let printed = fails(&args);
        assert!(
            printed.contains(&format!("{}: an int8 export", s(&int8))),
            "{printed}"
        );
        assert!(printed.contains("f32 model"), "{printed}");
    }
    assert!(!again.exists());
}
