//! Training on real Fashion-MNIST (Debian's `dataset-fashion-mnist`), through the binary.

mod common;
use common::{have_fashion_mnist, skip_real_data};

use std::path::Path;
use std::process::Command;

#[test]
fn one_epoch_on_fashion_mnist_reaches_80_percent() {
    if !have_fashion_mnist() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_picodense"))
        .args([
            "train",
            "--dataset",
            "fashion-mnist",
            "--epochs",
            "1",
            "--quiet",
        ])
        .arg("--save")
        .arg(dir.path().join("m.pdn"))
        .arg("--log-json")
        .arg(&log)
        .env("PICODENSE_DATA", dir.path().join("empty-cache"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let accuracy = last["test_accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.80, "test accuracy {accuracy}");
}

/// UCI's Image Segmentation table as train.csv and test.csv, made by
/// `host/scripts/tabular_dataset.py` from Debian's `weka` package (downloaded, not installed);
/// `None` (skipped with the reason) when that cannot be done, unless CI requires real data.
fn segmentation_csvs() -> Option<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("segmentation");
    if dir.join("test.csv").exists() {
        return Some(dir);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/tabular_dataset.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&dir)
        .arg("--fetch")
        .output();
    let reason = match out {
        Ok(o) if o.status.success() => return Some(dir),
        Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
        Err(e) => format!("python3: {e}"),
    };
    skip_real_data(&format!(
        "the segmentation CSVs could not be made ({reason})"
    ))
}

/// A real table end to end: 19 features, 7 named classes, standardised by the training set.
/// Keras's Dense(64) -> Dense(7) reaches 0.957-0.962 in 100 epochs (docs/benchmarks.md, "A
/// table: UCI Image Segmentation").
#[test]
fn image_segmentation_csv_reaches_keras_accuracy() {
    let Some(data) = segmentation_csvs() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("segment.pdn");
    let picodense = || Command::new(env!("CARGO_BIN_EXE_picodense"));
    let out = picodense()
        .args(["train", "--hidden", "64", "--epochs", "100", "--data"])
        .arg(&data)
        .arg("--save")
        .arg(&model)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.contains("Model: 19-64-7"), "{printed}");
    let accuracy: f64 = printed
        .lines()
        .find_map(|l| l.strip_prefix("test accuracy: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(accuracy >= 0.95, "{printed}");
    let out = picodense()
        .args(["predict", "--model"])
        .arg(&model)
        .arg("--csv")
        .arg(data.join("test.csv"))
        .output()
        .unwrap();
    let names = [
        "brickface",
        "cement",
        "foliage",
        "grass",
        "path",
        "sky",
        "window",
    ];
    let predicted = String::from_utf8_lossy(&out.stdout);
    assert_eq!(predicted.lines().count(), 810);
    assert!(predicted.lines().all(|l| names.contains(&l)), "{predicted}");
}
