//! Training on real Fashion-MNIST (Debian's `dataset-fashion-mnist`), through the binary.

use std::path::Path;
use std::process::Command;

const FASHION: &str = "/usr/share/datasets/fashion-mnist";

/// True when the data is there; otherwise skips with a reason, or fails when CI requires it.
fn have_fashion_mnist() -> bool {
    if Path::new(FASHION)
        .join("train-images-idx3-ubyte.gz")
        .exists()
    {
        return true;
    }
    let required = std::env::var_os("PICODENSE_REQUIRE_REAL_DATA").is_some_and(|v| v == "1");
    assert!(
        !required,
        "PICODENSE_REQUIRE_REAL_DATA=1 but {FASHION} is missing (apt-get install dataset-fashion-mnist)"
    );
    eprintln!("skipped: {FASHION} is missing (apt-get install dataset-fashion-mnist)");
    false
}

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
