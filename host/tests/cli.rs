//! End-to-end runs of the `picodense` binary on generated IDX data.

mod common;
use common::*;

use std::path::{Path, PathBuf};

/// `picodense train --data DATA --epochs 1 --quiet --save MODEL EXTRA...`, which must succeed.
fn train_epoch(data: &Path, model: &Path, extra: &[&str]) {
    let mut args = vec![
        "train",
        "--data",
        s(data),
        "--epochs",
        "1",
        "--quiet",
        "--save",
        s(model),
    ];
    args.extend(extra);
    let out = run(&args);
    assert!(out.status.success(), "{}", text(&out));
}

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
    let out = run(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--epochs",
        "2",
        "--validation-split",
        "0.1",
        "--save",
        model.to_str().unwrap(),
        "--log-json",
        log.to_str().unwrap(),
    ]);
    let printed = text(&out);
    assert!(out.status.success(), "{printed}");
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

    let out = run(&[
        "evaluate",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let eval: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(eval["test_accuracy"].as_f64().unwrap(), test_accuracy);

    let out = run(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--index",
        "3",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("predicted:"));

    let out = run(&["inspect", model.to_str().unwrap()]);
    let printed = text(&out);
    assert!(out.status.success(), "{printed}");
    assert!(printed.contains("Total params: 407050"), "{printed}");
    assert!(printed.contains("checksum:      ok"), "{printed}");
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

    for (path, reason) in [(&flipped, "checksum mismatch"), (&truncated, "truncated")] {
        for args in [
            vec!["inspect", path.to_str().unwrap()],
            vec![
                "evaluate",
                "--model",
                path.to_str().unwrap(),
                "--data",
                data.to_str().unwrap(),
            ],
        ] {
            let out = run(&args);
            let printed = text(&out);
            assert!(!out.status.success(), "{args:?} accepted a bad file");
            assert!(printed.contains(path.to_str().unwrap()), "{printed}");
            assert!(printed.contains(reason), "{printed}");
            assert!(!printed.contains("panicked"), "{printed}");
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
        let mut all = vec!["train", "--data", missing.to_str().unwrap()];
        all.extend(&args);
        let out = run(&all);
        let printed = text(&out);
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(printed.contains(needle), "{args:?}: {printed}");
        assert!(!printed.contains("panicked"), "{printed}");
    }
}

#[test]
fn exported_f32_and_int8_files_evaluate_like_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2000, 400);
    let model = dir.path().join("m.pdn");
    train_epoch(&data, &model, &[]);
    let data = data.to_str().unwrap();
    let accuracy = |path: &Path| {
        let out = run(&[
            "evaluate",
            "--model",
            path.to_str().unwrap(),
            "--data",
            data,
            "--json",
        ]);
        assert!(out.status.success(), "{}", text(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["test_accuracy"].as_f64().unwrap()
    };
    let original = accuracy(&model);
    for (format, size) in [("f32", 1_628_236u64), ("int8", 414_940)] {
        let exported = dir.path().join(format!("{format}.pdn"));
        let out = run(&[
            "export",
            "--model",
            model.to_str().unwrap(),
            "--format",
            format,
            "--out",
            exported.to_str().unwrap(),
            "--data",
            data,
        ]);
        let printed = text(&out);
        assert!(out.status.success(), "{printed}");
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
        let out = run(&["inspect", exported.to_str().unwrap()]);
        assert!(
            text(&out).contains(&format!("dtype:         {format}")),
            "{}",
            text(&out)
        );
    }
}
