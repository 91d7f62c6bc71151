//! Checkpoints end to end: a run killed (SIGKILL) or interrupted (SIGINT, SIGTERM, SIGHUP) and
//! then resumed saves exactly the bytes an uninterrupted run with the same seed saves;
//! divergence is caught and leaves the last good checkpoint intact.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use picodense::model::load_network;
use picodense::train::Trainer;
use picodense_core::Kernel;
use picodense_core::format::ModelView;

/// Training rows: 47 steps of 128 per epoch after the 10% validation split.
const TRAIN_ROWS: usize = 6600;

/// A dataset folder with enough rows that a run takes many steps.
fn dataset(dir: &Path) -> PathBuf {
    write_dataset(
        dir,
        "data",
        block_images(TRAIN_ROWS, 11),
        block_images(300, 12),
    )
}

/// Settings every run here shares; a resumed run takes them from its checkpoint instead.
const RUN: [&str; 10] = [
    "--epochs",
    "3",
    "--seed",
    "5",
    "--validation-split",
    "0.1",
    "--batch-size",
    "128",
    "--threads",
    "2",
];

/// The data folder and the model an uninterrupted run saves, made once for every test (in
/// cargo's per-target scratch folder: a static is never dropped, so a TempDir would leak).
fn reference() -> &'static (PathBuf, Vec<u8>) {
    static REF: OnceLock<(PathBuf, Vec<u8>)> = OnceLock::new();
    REF.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("checkpoint-reference");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let data = dataset(&dir);
        let model = dir.join("reference.pdn");
        // Checkpoints on, so that writing them is shown not to change the result.
        let ckpt = dir.join("reference.ckpt");
        let out = bin()
            .args(["train", "--data", s(&data), "--quiet"])
            .args(RUN)
            .args(["--save", s(&model), "--checkpoint", s(&ckpt)])
            .args(["--checkpoint-every", "7"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let bytes = std::fs::read(&model).unwrap();
        (data, bytes)
    })
}

/// Starts `train` on the reference data with `extra` arguments.
fn start(extra: &[&str]) -> Child {
    let (data, _) = reference();
    bin()
        .args(["train", "--data", s(data), "--quiet"])
        .args(RUN)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A run that checkpoints to `dir/run.ckpt` every 5 steps (and would save `dir/never.pdn`),
/// once its first checkpoint is on disk.
fn start_checkpointing(dir: &Path) -> (Child, PathBuf) {
    let ckpt = dir.join("run.ckpt");
    let never = dir.join("never.pdn");
    let mut child = start(&[
        "--save",
        s(&never),
        "--checkpoint",
        s(&ckpt),
        "--checkpoint-every",
        "5",
    ]);
    wait_for(&mut child, &ckpt);
    (child, ckpt)
}

/// Polls until `path` exists (a bounded wait: the run has hundreds of steps to go). Panics if
/// the run ends first.
fn wait_for(child: &mut Child, path: &Path) {
    for _ in 0..60_000 {
        if path.exists() {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the run ended ({status}) before {} appeared",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{} did not appear", path.display());
}

fn sigint(child: &Child) {
    signal(child, "INT");
}

/// Sends the signal named `name` (as `kill -NAME` spells it) to `child`.
fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Resumes from `checkpoint`, saving to `save`; returns the saved bytes.
fn resume(checkpoint: &Path, save: &Path) -> Vec<u8> {
    let (data, _) = reference();
    let out = bin()
        .args(["train", "--data", s(data), "--threads", "2"])
        .args(["--validation-split", "0.1"])
        .args(["--resume", s(checkpoint), "--save", s(save)])
        .output()
        .unwrap();
    let printed = text(&out);
    assert!(out.status.success(), "{printed}");
    assert!(printed.contains("resuming"), "{printed}");
    std::fs::read(save).unwrap()
}

/// The checkpoint parses (magic, sizes, CRC), holds finite weights and resumes (which also
/// checks its record, and the RMSprop state when the record names RMSprop).
fn assert_valid_checkpoint(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    ModelView::parse(&bytes).expect("checkpoint passes its checks");
    let network = load_network(path).unwrap();
    assert!(network.is_finite(), "checkpoint weights are not finite");
    Trainer::resume(path, 1, Kernel::PORTABLE).expect("checkpoint resumes");
}

fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".tmp-"))
        .collect()
}

#[test]
fn killed_run_resumes_to_the_same_bytes() {
    let (_, expected) = reference();
    let dir = tempfile::tempdir().unwrap();
    let (mut child, ckpt) = start_checkpointing(dir.path());
    child.kill().unwrap(); // SIGKILL: no handler runs
    let status = child.wait().unwrap();
    assert!(!status.success(), "the run ended before it was killed");
    assert!(!dir.path().join("never.pdn").exists());
    // The rename is atomic, so the checkpoint is whole whenever the kill landed. A temporary
    // file of the killed process may remain if the kill landed inside a write.
    assert_valid_checkpoint(&ckpt);
    let stale = format!(".tmp-{}", child.id());
    assert!(temp_files(dir.path()).iter().all(|t| t.ends_with(&stale)));

    let saved = resume(&ckpt, &dir.path().join("resumed.pdn"));
    assert!(saved == *expected, "the resumed run saved other bytes");
}

#[test]
fn interrupted_run_writes_a_checkpoint_exits_130_and_resumes_to_the_same_bytes() {
    let (_, expected) = reference();
    let dir = tempfile::tempdir().unwrap();
    let (child, ckpt) = start_checkpointing(dir.path());
    sigint(&child);
    let out = child.wait_with_output().unwrap();
    let printed = text(&out);
    assert_eq!(out.status.code(), Some(130), "{printed}");
    assert!(printed.contains("interrupted at epoch"), "{printed}");
    assert!(
        printed.contains(&format!("--resume {}", s(&ckpt))),
        "{printed}"
    );
    assert!(!printed.contains("panicked"), "{printed}");
    assert!(!dir.path().join("never.pdn").exists());
    assert_valid_checkpoint(&ckpt);
    assert_eq!(temp_files(dir.path()), Vec::<String>::new());

    let saved = resume(&ckpt, &dir.path().join("resumed.pdn"));
    assert!(saved == *expected, "the resumed run saved other bytes");
    assert_eq!(temp_files(dir.path()), Vec::<String>::new());
}

/// A second Ctrl-C leaves at once, still with status 130; whatever it interrupted, the
/// checkpoint on disk is whole (old or new).
#[test]
fn second_interrupt_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (child, ckpt) = start_checkpointing(dir.path());
    sigint(&child);
    sigint(&child);
    let out = child.wait_with_output().unwrap();
    let printed = text(&out);
    assert_eq!(out.status.code(), Some(130), "{printed}");
    assert!(!printed.contains("panicked"), "{printed}");
    assert!(!dir.path().join("never.pdn").exists());
    assert_valid_checkpoint(&ckpt);
}

/// SIGTERM (a service manager, `kill`) and SIGHUP (a closed terminal) stop a run as Ctrl-C
/// does: a checkpoint that resumes, the resume hint, status 130.
#[test]
fn sigterm_and_sighup_checkpoint_like_ctrl_c() {
    for name in ["TERM", "HUP"] {
        let dir = tempfile::tempdir().unwrap();
        let (child, ckpt) = start_checkpointing(dir.path());
        signal(&child, name);
        let out = child.wait_with_output().unwrap();
        let printed = text(&out);
        assert_eq!(out.status.code(), Some(130), "SIG{name}: {printed}");
        assert!(
            printed.contains("interrupted at epoch"),
            "SIG{name}: {printed}"
        );
        assert!(
            printed.contains(&format!("--resume {}", s(&ckpt))),
            "SIG{name}: {printed}"
        );
        assert!(!dir.path().join("never.pdn").exists());
        assert_valid_checkpoint(&ckpt);
        assert_eq!(temp_files(dir.path()), Vec::<String>::new());
    }
}

/// Without --checkpoint an interrupt still saves the run, next to --save.
#[test]
fn interrupt_without_checkpoint_flag_writes_save_ckpt_pdn() {
    let (_, expected) = reference();
    let dir = tempfile::tempdir().unwrap();
    let save = dir.path().join("model.pdn");
    let log = dir.path().join("log.jsonl");
    let mut child = start(&["--save", s(&save), "--log-json", s(&log)]);
    // The first epoch's line in the log says training is under way.
    for _ in 0..60_000 {
        if std::fs::read_to_string(&log).is_ok_and(|t| t.contains("\"epoch\"")) {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "the run ended first");
        std::thread::sleep(Duration::from_millis(10));
    }
    sigint(&child);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    let ckpt = dir.path().join("model.ckpt.pdn");
    assert_valid_checkpoint(&ckpt);
    assert!(!save.exists());
    assert_eq!(temp_files(dir.path()), Vec::<String>::new());
    let saved = resume(&ckpt, &save);
    assert!(saved == *expected, "the resumed run saved other bytes");
}

/// Any epoch count is accepted (nothing is sized by it), and such a run stops on Ctrl-C.
#[test]
fn huge_epoch_count_runs_until_interrupted() {
    let (data, _) = reference();
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("run.ckpt");
    let model = dir.path().join("m.pdn");
    let mut child = bin()
        .args(train_args(
            data,
            &["--quiet", "--epochs", &usize::MAX.to_string()],
        ))
        .args(["--save", s(&model), "--checkpoint", s(&ckpt)])
        .args(["--checkpoint-every", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&mut child, &ckpt);
    sigint(&child);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    assert_valid_checkpoint(&ckpt);
}

#[test]
fn divergence_is_caught_and_the_last_good_checkpoint_survives() {
    let (data, _) = reference();
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("run.ckpt");
    let save = dir.path().join("model.pdn");
    // A good checkpoint and model from a sane run first.
    let out = bin()
        .args(["train", "--data", s(data), "--quiet", "--epochs", "1"])
        .args(["--optimizer", "sgd", "--learning-rate", "0.01"])
        .args(["--save", s(&save), "--checkpoint", s(&ckpt)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let good_model = std::fs::read(&save).unwrap();
    // Then one that explodes, checkpointing every step.
    let out = bin()
        .args(["train", "--data", s(data), "--quiet", "--epochs", "2"])
        .args(["--optimizer", "sgd", "--learning-rate", "1e6"])
        .args(["--save", s(&save), "--checkpoint", s(&ckpt)])
        .args(["--checkpoint-every", "1"])
        .output()
        .unwrap();
    let printed = text(&out);
    assert!(!out.status.success(), "{printed}");
    assert!(!printed.contains("panicked"), "{printed}");
    assert!(printed.contains("diverged at epoch 1, step "), "{printed}");
    assert!(printed.contains("try a smaller learning rate"), "{printed}");
    assert!(printed.contains("1000000"), "{printed}");
    assert_valid_checkpoint(&ckpt);
    assert!(std::fs::read(&save).unwrap() == good_model, "model changed");
    assert_eq!(temp_files(dir.path()), Vec::<String>::new());
}

/// A checkpoint file around `record` (any bytes), with valid sizes and CRC.
fn checkpoint_with_record(record: &[u8]) -> Vec<u8> {
    let shape = picodense_core::MnistMlp::shape();
    let params = vec![0.0f32; shape.parameters()];
    let layers = picodense_core::Layers::split(shape, &params).unwrap();
    let sections = picodense_core::format::Sections {
        extra: Some(record),
        ..Default::default()
    };
    picodense::model::encode_file(&layers, &sections)
}

/// Records that passed the CRC but no run could have written. Found by review while fuzzing:
/// a row count near u32::MAX overflowed the epoch's running totals (a panic in debug builds)
/// and the others would skip or repeat work silently.
#[test]
fn impossible_training_records_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let record = |epoch: usize,
                  step: usize,
                  correct: u32,
                  rows: u32,
                  epochs: &str,
                  batch: usize,
                  lr: &str| {
        format!(
            r#"{{"position":{{"epoch":{epoch},"step":{step},"stats":{{"loss_sum":1.0,"correct":{correct},"rows":{rows}}}}},"seed":0,"epochs":{epochs},"batch_size":{batch},"optimizer":"sgd","learning_rate":{lr},"train_rows":300}}"#
        )
    };
    for (name, text, problem) in [
        (
            "rows",
            record(0, 1, 0, u32::MAX, "2", 128, "0.001"),
            "outside a run",
        ),
        (
            "correct",
            record(0, 1, 129, 128, "2", 128, "0.001"),
            "outside a run",
        ),
        (
            "step",
            record(0, 4, 0, 0, "2", 128, "0.001"),
            "outside a run",
        ),
        (
            "epoch",
            record(3, 0, 0, 0, "2", 128, "0.001"),
            "outside a run",
        ),
        ("batch", record(0, 0, 0, 0, "2", 0, "0.001"), "batch size"),
        ("epochs", record(0, 0, 0, 0, "0", 128, "0.001"), "epochs"),
        ("lr", record(0, 0, 0, 0, "2", 128, "-1.0"), "learning rate"),
        ("json", "{\"position\":".to_owned(), "EOF"),
        (
            "history",
            record(0, 0, 0, 0, "2", 128, "0.001").replace(
                "}}",
                r#"}},"history":[{"epoch":1,"loss":0.5,"accuracy":0.8,"seconds":1.0}]"#,
            ),
            "1 epoch reports for a run at epoch 0",
        ),
    ] {
        let path = dir.path().join(format!("{name}.ckpt"));
        std::fs::write(&path, checkpoint_with_record(text.as_bytes())).unwrap();
        let err = Trainer::resume(&path, 1, Kernel::PORTABLE)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains(s(&path)), "{name}: {err}");
        assert!(err.contains("bad training record"), "{name}: {err}");
        assert!(err.contains(problem), "{name}: {err}");
    }
    // The same through the binary, before any data is read.
    let path = dir.path().join("rows.ckpt");
    let nowhere = dir.path().join("nowhere");
    let printed = fails(&train_args(&nowhere, &["--resume", s(&path)]));
    assert!(printed.contains("bad training record"), "{printed}");
    // A record the run could have written is accepted, also without epoch reports (as
    // checkpoints of earlier versions are).
    let good = dir.path().join("good.ckpt");
    let text = record(1, 2, 100, 256, "2", 128, "0.001");
    std::fs::write(&good, checkpoint_with_record(text.as_bytes())).unwrap();
    let (resumed, _) = Trainer::resume(&good, 1, Kernel::PORTABLE).expect("a possible record");
    assert!(resumed.history().is_empty());
}

/// A run stopped in its second epoch and resumed reports every epoch from the first, so that
/// `--plot` after `--resume` draws the whole run.
#[test]
fn resumed_run_keeps_the_reports_of_earlier_epochs() {
    use picodense::train::{Outcome, RunControl, TrainConfig};

    let (pixels, labels) = block_images(400, 11);
    let data = picodense::data::Dataset::from_images(784, pixels, labels);
    let config = TrainConfig {
        epochs: 3,
        batch_size: 100,
        ..TrainConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("run.ckpt");
    let shape = picodense_core::Shape::new(784, &config.hidden, 10).unwrap();
    let meta = picodense::model::ModelMeta::default();
    let mut first = Trainer::new(&config, shape, meta).unwrap();
    fit_first_epoch(&mut first, &config, &data, &ckpt);
    assert_eq!(first.history().len(), 1);

    let (mut resumed, config) = Trainer::resume(&ckpt, 1, Kernel::PORTABLE).unwrap();
    assert_eq!(resumed.history(), first.history());
    let outcome = resumed
        .fit(&config, &data, None, &RunControl::none(), &mut |_| {})
        .unwrap();
    let Outcome::Finished(ran) = outcome else {
        panic!("the resumed run stopped early")
    };
    assert_eq!(ran.len(), 2);
    let epochs: Vec<usize> = resumed.history().iter().map(|r| r.epoch).collect();
    assert_eq!(epochs, [1, 2, 3]);
    assert_eq!(resumed.history()[1..], ran[..]);
}
