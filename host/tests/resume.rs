//! `train --resume` trusts the checkpoint, not the command line: it reads the checkpoint's own
//! data, refuses other data and settings that contradict the checkpoint, extends a run with a
//! larger `--epochs`, logs each epoch once, and the resume hint an interrupted run prints works
//! exactly as printed.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Rows of each synthetic dataset: enough steps that a run can be stopped half-way.
const ROWS: usize = 6600;

/// The settings of [`Datasets::one_epoch_checkpoint`]'s run but its epoch count and outputs.
const FASHION_SEED_7: [&str; 5] = ["--dataset", "fashion-mnist", "--seed", "7", "--quiet"];

/// A `PICODENSE_DATA` folder holding a "fashion-mnist", an "mnist" with the same rows and
/// other labels, an "inverted" with the same labels and other pixels, and `train` runs that
/// find their data there.
struct Datasets {
    dir: tempfile::TempDir,
}

impl Datasets {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        write_dataset(
            dir.path(),
            "fashion-mnist",
            block_images(ROWS, 31),
            block_images(200, 32),
        );
        let (pixels, labels) = block_images(ROWS, 31);
        let other: Vec<u8> = labels.iter().map(|l| (l + 1) % 10).collect();
        let inverted: Vec<u8> = pixels.iter().map(|p| 255 - p).collect();
        write_dataset(dir.path(), "mnist", (pixels, other), block_images(200, 33));
        write_dataset(
            dir.path(),
            "inverted",
            (inverted, labels),
            block_images(200, 32),
        );
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `picodense train` run in the folder, finding its datasets there.
    fn train(&self, args: &[&str]) -> Command {
        let mut cmd = bin();
        cmd.current_dir(self.dir.path())
            .env("PICODENSE_DATA", self.dir.path())
            .arg("train")
            .args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.train(args).output().unwrap()
    }

    /// Runs `train` with `args`, which must succeed.
    fn ok(&self, args: &[&str]) {
        let out = self.run(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
    }

    /// Trains one epoch of Fashion-MNIST with a checkpoint at its end; returns the checkpoint.
    fn one_epoch_checkpoint(&self) -> PathBuf {
        let ckpt = self.path("one.ckpt");
        let model = self.path("one.pdn");
        let outputs = [
            "--epochs",
            "1",
            "--save",
            s(&model),
            "--checkpoint",
            s(&ckpt),
        ];
        self.ok(&[&FASHION_SEED_7[..], &outputs].concat());
        ckpt
    }
}

fn assert_refused(out: &Output, expected: &[&str]) {
    let printed = text(out);
    assert_eq!(out.status.code(), Some(1), "{printed}");
    for part in expected {
        assert!(printed.contains(part), "expected {part:?} in: {printed}");
    }
    assert!(!printed.contains("panicked"), "{printed}");
}

/// The case: a `--dataset fashion-mnist` run, interrupted, continued by pasting the
/// command it printed (a name with a space, a checkpoint interval and a log included) into a
/// shell, saves exactly the bytes of the uninterrupted run: the same data, the same label.
#[test]
fn the_printed_resume_hint_works_as_printed() {
    let data = Datasets::new();
    let settings = ["--dataset", "fashion-mnist", "--epochs", "3", "--seed", "5"];
    let reference = data.path("reference.pdn");
    data.ok(&[&settings[..], &["--quiet", "--save", s(&reference)]].concat());

    let ckpt = data.path("run.ckpt");
    let mut child = data
        .train(&settings)
        .args(["--save", "my model.pdn", "--checkpoint", "run.ckpt"])
        .args(["--checkpoint-every", "5", "--log-json", "log.jsonl"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..60_000 {
        if ckpt.exists() || child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let printed = text(&out);
    assert_eq!(out.status.code(), Some(130), "{printed}");
    let hint = printed
        .split('`')
        .nth(1)
        .unwrap_or_else(|| panic!("no command in: {printed}"));
    assert!(
        hint.starts_with("picodense train --resume run.ckpt --save 'my model.pdn'"),
        "{hint}"
    );
    assert!(hint.contains("--checkpoint-every 5"), "{hint}");

    // The hint as a user runs it: a shell, `picodense` on the PATH, the same folder.
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_picodense")).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    let out = Command::new("sh")
        .args(["-c", hint])
        .current_dir(data.dir.path())
        .env("PICODENSE_DATA", data.dir.path())
        .env("PATH", path)
        .output()
        .unwrap();
    let printed = text(&out);
    assert!(out.status.success(), "{printed}");
    assert!(printed.contains("resuming run.ckpt"), "{printed}");
    let saved = std::fs::read(data.path("my model.pdn")).unwrap();
    assert!(
        saved == std::fs::read(&reference).unwrap(),
        "the resumed run saved other bytes"
    );
    assert_eq!(logged_epochs(&data.path("log.jsonl")), [1, 2, 3]);
}

/// The epoch numbers a JSON log holds, in order; its last line must be the test figures.
fn logged_epochs(path: &Path) -> Vec<u64> {
    let log = std::fs::read_to_string(path).unwrap();
    assert!(log.lines().last().unwrap().contains("test_loss"), "{log}");
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["epoch"].as_u64())
        .collect()
}

/// A resumed run's log holds each epoch once: the checkpoint's, then its own, although the
/// log it replaces went past the checkpoint.
#[test]
fn a_resumed_log_holds_each_epoch_once() {
    let data = Datasets::new();
    let (ckpt, log) = (data.path("every2.ckpt"), data.path("every2.jsonl"));
    let run = |extra: &[&str]| {
        let outputs = ["--save", "m.pdn", "--log-json", s(&log), "--epochs", "3"];
        data.ok(&[&FASHION_SEED_7[..], &outputs, extra].concat());
    };
    // Checkpoints after epoch 2 only: the log goes on to epoch 3.
    run(&["--checkpoint", s(&ckpt), "--checkpoint-every", "2epoch"]);
    assert_eq!(logged_epochs(&log), [1, 2, 3]);
    run(&["--resume", s(&ckpt)]);
    assert_eq!(logged_epochs(&log), [1, 2, 3]);
}

/// Data with the checkpoint's row count but other labels is another dataset: refused, naming
/// the checkpoint, before any training; nothing is saved.
#[test]
fn resuming_on_other_data_is_refused() {
    let data = Datasets::new();
    let ckpt = data.one_epoch_checkpoint();
    let save = data.path("other.pdn");
    let inverted = data.path("inverted");
    for (other, what) in [
        (vec!["--dataset", "mnist"], "other labels"),
        (vec!["--data", s(&data.path("mnist"))], "other labels"),
        (vec!["--data", s(&inverted)], "other values"),
    ] {
        let args = [
            &other[..],
            &["--resume", s(&ckpt), "--epochs", "2", "--save", s(&save)],
        ]
        .concat();
        assert_refused(
            &data.run(&args),
            &[s(&ckpt), "other data", what, "give the checkpoint's data"],
        );
        assert!(!save.exists());
    }
    // The same data named explicitly is the checkpoint's data, and the model says where it
    // is now.
    let fashion = data.path("fashion-mnist");
    data.ok(&[
        "--data",
        s(&fashion),
        "--resume",
        s(&ckpt),
        "--save",
        s(&save),
        "--quiet",
    ]);
    let inspected = ok(&["inspect", s(&save)]);
    let source = format!("data:          fashion-mnist, from {}\n", s(&fashion));
    assert!(inspected.contains(&source), "{inspected}");
}

/// A setting given with `--resume` that differs from the checkpoint's is an error naming both
/// values; the checkpoint's own values are accepted.
#[test]
fn settings_that_contradict_the_checkpoint_are_refused() {
    let data = Datasets::new();
    let ckpt = data.one_epoch_checkpoint();
    let save = data.path("resumed.pdn");
    for (flag, other, own) in [
        ("--batch-size", "64", "128"),
        ("--learning-rate", "0.01", "0.001"),
        ("--optimizer", "sgd", "rmsprop"),
        ("--seed", "0", "7"),
        ("--hidden", "256", "512"),
        ("--validation-split", "0.2", "0"),
    ] {
        let resume = |value| vec!["--resume", s(&ckpt), flag, value, "--save", s(&save)];
        assert_refused(
            &data.run(&resume(other)),
            &[&format!(
                "{flag} {other} differs from the checkpoint's {own}"
            )],
        );
        assert!(!save.exists(), "{flag}");
        data.ok(&resume(own));
        std::fs::remove_file(&save).unwrap();
    }
    assert_refused(
        &data.run(&["--resume", s(&ckpt), "--epochs", "0"]),
        &["epochs must be at least 1"],
    );
}

/// A larger `--epochs` continues the run: one epoch then resumed to two saves the bytes of a
/// two-epoch run (each epoch's shuffle depends only on the seed and the epoch).
#[test]
fn a_larger_epoch_count_extends_the_run() {
    let data = Datasets::new();
    let ckpt = data.one_epoch_checkpoint();
    // The checkpoint says where its run stands, and a resume of a finished run says so.
    let inspected = ok(&["inspect", s(&ckpt)]);
    for line in [
        "checkpoint:    1 of 1 epochs done; seed 7, rmsprop\n",
        "classes:       T-shirt/top, Trouser, Pullover,",
    ] {
        assert!(inspected.contains(line), "{inspected}");
    }
    let again = data.run(&["--resume", s(&ckpt), "--save", s(&data.path("again.pdn"))]);
    assert!(
        text(&again).contains("has finished its run of 1 epoch: nothing to train"),
        "{}",
        text(&again)
    );
    let extended = data.path("extended.pdn");
    data.ok(&[
        "--resume",
        s(&ckpt),
        "--epochs",
        "2",
        "--save",
        s(&extended),
        "--quiet",
    ]);
    let whole = data.path("whole.pdn");
    data.ok(&[&FASHION_SEED_7[..], &["--epochs", "2", "--save", s(&whole)]].concat());
    assert!(std::fs::read(&extended).unwrap() == std::fs::read(&whole).unwrap());
}
