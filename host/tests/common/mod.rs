//! Helpers shared by the end-to-end tests: the binary and its output; the data to feed it comes
//! from `picodense-support`.
#![allow(dead_code, unused_imports)] // each test crate uses its own subset

use std::path::Path;
use std::process::{Command, Output};

pub use picodense_support::*;

/// The `picodense` binary under test.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_picodense"))
}

/// Runs the binary with `args` to the end.
pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("binary runs")
}

/// Everything the binary printed, stdout then stderr.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs the binary with `args`, asserts that it succeeded without a panic, and returns what
/// it printed.
pub fn ok(args: &[&str]) -> String {
    let out = run(args);
    let printed = text(&out);
    assert!(out.status.success(), "{args:?} failed: {printed}");
    assert!(!printed.contains("panicked"), "{printed}");
    printed
}

/// Runs the binary with `args`, asserts that it failed without a panic, and returns what it
/// printed.
pub fn fails(args: &[&str]) -> String {
    let out = run(args);
    let printed = text(&out);
    assert!(!out.status.success(), "{args:?} succeeded: {printed}");
    assert!(!printed.contains("panicked"), "{printed}");
    printed
}

/// Runs the binary with `args`, asserts that it succeeded, and parses its stdout as JSON.
pub fn ok_json(args: &[&str]) -> serde_json::Value {
    let out = run(args);
    assert!(out.status.success(), "{args:?} failed: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&out)))
}

/// `train --data DATA` followed by `extra`.
pub fn train_args<'a>(data: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    [&["train", "--data", s(data)], extra].concat()
}

/// `COMMAND --model MODEL --data DATA` (evaluate, predict, export) followed by `extra`.
pub fn model_args<'a>(
    command: &'a str,
    model: &'a Path,
    data: &'a Path,
    extra: &[&'a str],
) -> Vec<&'a str> {
    [&[command, "--model", s(model), "--data", s(data)], extra].concat()
}

/// `train --data DATA --epochs 1 --quiet --save MODEL EXTRA...`, which must succeed; returns
/// what it printed.
pub fn train_epoch(data: &Path, model: &Path, extra: &[&str]) -> String {
    let args = train_args(data, &["--epochs", "1", "--quiet", "--save", s(model)]);
    ok(&[&args[..], extra].concat())
}

/// A temporary path as an argument.
pub fn s(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// Trains `trainer` on `data` with checkpoints to `ckpt` and stops it when its first epoch
/// ends; asserts that it stopped there.
pub fn fit_first_epoch(
    trainer: &mut picodense::train::Trainer,
    config: &picodense::train::TrainConfig,
    data: &picodense::data::Dataset,
    ckpt: &Path,
) {
    use picodense::train::{Event, Outcome, RunControl};
    use std::sync::atomic::{AtomicBool, Ordering};

    let stop = AtomicBool::new(false);
    let control = RunControl {
        checkpoint: Some(ckpt.to_owned()),
        stop: Some(&stop),
        ..RunControl::none()
    };
    let outcome = trainer
        .fit(config, data, None, &control, &mut |event| {
            if let Event::EpochEnd(_) = event {
                stop.store(true, Ordering::Relaxed);
            }
        })
        .unwrap();
    assert!(
        matches!(outcome, Outcome::Interrupted { .. }),
        "{outcome:?}"
    );
}

/// A model and a checkpoint of one epoch on `data`, written in `dir`: their bytes.
pub fn trained_files(dir: &Path, data: &Path) -> (Vec<u8>, Vec<u8>) {
    let (model, ckpt) = (dir.join("m.pdn"), dir.join("c.pdn"));
    train_epoch(data, &model, &["--checkpoint", s(&ckpt)]);
    (std::fs::read(model).unwrap(), std::fs::read(ckpt).unwrap())
}
