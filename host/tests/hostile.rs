//! Hostile inputs, end to end: each test runs the `picodense` binary on one bad file or path
//! from docs/hostile-inputs.md and checks that it fails with a non-zero exit code, a message
//! that names the path and the problem, no panic, and that the model and checkpoint it was
//! told to write over are byte for byte what they were, with no temporary file left behind.

mod common;
use common::*;

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use picodense::compute::zeroed_box;
use picodense_core::format::{self, FormatError, ModelView};
use picodense_core::{Mlp, RmsProp};

const TRAIN_IMAGES: &str = IDX_NAMES[0];
const TRAIN_LABELS: &str = IDX_NAMES[1];
const TEST_IMAGES: &str = IDX_NAMES[2];
const TEST_LABELS: &str = IDX_NAMES[3];

/// A good dataset folder of raw IDX files: 200 training and 50 test images.
fn dataset(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let (x, y) = random_images(200, 1);
    write_idx_split(&data, "train", (28, 28), (&x, &y), false);
    let (x, y) = random_images(50, 2);
    write_idx_split(&data, "t10k", (28, 28), (&x, &y), false);
    data
}

/// A model and a checkpoint written by the binary itself, made once and shared.
fn good_files() -> &'static (Vec<u8>, Vec<u8>) {
    static FILES: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    FILES.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let data = dataset(dir.path());
        trained_files(dir.path(), &data)
    })
}

/// A folder holding a good model and a good checkpoint that a failing run must not touch.
struct Guard {
    dir: tempfile::TempDir,
    model: PathBuf,
    checkpoint: PathBuf,
}

impl Guard {
    fn new() -> Guard {
        let dir = tempfile::tempdir().unwrap();
        let (model, checkpoint) = (dir.path().join("model.pdn"), dir.path().join("ckpt.pdn"));
        let (m, c) = good_files();
        std::fs::write(&model, m).unwrap();
        std::fs::write(&checkpoint, c).unwrap();
        Guard {
            dir,
            model,
            checkpoint,
        }
    }

    /// `train` on `data`, saving over the guarded files.
    fn train(&self, data: &Path, extra: &[&str]) -> Output {
        bin()
            .args(["train", "--data", s(data), "--epochs", "1", "--quiet"])
            .args([
                "--save",
                s(&self.model),
                "--checkpoint",
                s(&self.checkpoint),
            ])
            .args(["--checkpoint-every", "1"])
            .args(extra)
            .output()
            .unwrap()
    }

    fn assert_intact(&self) {
        let (m, c) = good_files();
        assert!(std::fs::read(&self.model).unwrap() == *m, "model changed");
        assert!(
            std::fs::read(&self.checkpoint).unwrap() == *c,
            "checkpoint changed"
        );
        assert_no_temp_files(self.dir.path());
    }
}

/// `write_atomic` names its temporary files `.<name>.tmp-<pid>`.
fn assert_no_temp_files(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name();
        let name = name.to_string_lossy();
        assert!(!name.contains(".tmp-"), "temporary file left: {name}");
    }
}

/// Asserts a clean failure whose message contains every needle; returns the message.
fn assert_fails(out: &Output, needles: &[&str]) -> String {
    let printed = text(out);
    assert!(!out.status.success(), "accepted: {printed}");
    assert_ne!(out.status.code(), Some(0));
    assert!(out.status.code().is_some(), "killed by a signal: {printed}");
    assert!(!printed.contains("panicked"), "{printed}");
    for needle in needles {
        assert!(printed.contains(needle), "no {needle:?} in: {printed}");
    }
    // Each cause once: an error that both prints its cause and names it as its `source` shows
    // it twice in the `{:#}` chain.
    for cause in ["(os error", "checksum mismatch"] {
        assert!(
            printed.matches(cause).count() <= 1,
            "repeated cause: {printed}"
        );
    }
    printed
}

/// Breaks one file of a good dataset with `damage`, trains on it and checks the failure names
/// that file and `problem`.
fn refused(file: &str, damage: impl FnOnce(&Path), problem: &str) {
    let guard = Guard::new();
    let data = dataset(guard.dir.path());
    let path = data.join(file);
    damage(&path);
    assert_fails(&guard.train(&data, &[]), &[s(&path), problem]);
    guard.assert_intact();
}

fn rewrite(path: &Path, edit: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(path).unwrap();
    edit(&mut bytes);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn empty_file() {
    refused(TRAIN_IMAGES, |p| rewrite(p, Vec::clear), "file is empty");
}

#[test]
fn truncated_header() {
    refused(
        TRAIN_LABELS,
        |p| rewrite(p, |b| b.truncate(6)),
        "truncated header",
    );
}

#[test]
fn truncated_body() {
    refused(
        TEST_IMAGES,
        |p| rewrite(p, |b| b.truncate(b.len() - 100)),
        "truncated: the header declares 50 items",
    );
}

#[test]
fn wrong_magic() {
    refused(
        TRAIN_IMAGES,
        |p| rewrite(p, |b| b[3] = 4),
        "bad magic 0x00000804",
    );
}

#[test]
fn test_images_of_another_size() {
    refused(
        TEST_IMAGES,
        |p| {
            let bytes = std::fs::read(p).unwrap();
            let count = u32::from_be_bytes(bytes[4..8].try_into().unwrap());
            let pixels = vec![0; count as usize * 27 * 28];
            std::fs::write(p, idx_images(count, 27, 28, &pixels)).unwrap()
        },
        "images of 27x28, but the training images are 28x28",
    );
}

#[test]
fn counts_disagree_between_images_and_labels() {
    let guard = Guard::new();
    let data = dataset(guard.dir.path());
    let labels = data.join(TRAIN_LABELS);
    std::fs::write(&labels, idx_labels(&[1; 199])).unwrap();
    let images = data.join(TRAIN_IMAGES);
    assert_fails(
        &guard.train(&data, &[]),
        &[s(&images), s(&labels), "200 images, but", "has 199 labels"],
    );
    guard.assert_intact();
}

/// Labels set the classes; a checkpoint of 10 classes does not resume on data of more.
#[test]
fn label_10_or_255_on_resume() {
    for bad in [10u8, 255] {
        let guard = Guard::new();
        let data = dataset(guard.dir.path());
        rewrite(&data.join(TEST_LABELS), |b| b[8 + 7] = bad);
        let checkpoint = s(&guard.checkpoint).to_owned();
        let classes = format!("{} classes", usize::from(bad) + 1);
        assert_fails(
            &guard.train(&data, &["--resume", &checkpoint]),
            &[&checkpoint, "the checkpoint is 784-512-10", &classes],
        );
        guard.assert_intact();
    }
}

#[test]
fn corrupted_gzip() {
    // A flipped byte in the CRC trailer, and the stream cut in half.
    for cut in [false, true] {
        let guard = Guard::new();
        let data = dataset(guard.dir.path());
        let raw = data.join(TRAIN_IMAGES);
        let mut gz = gzip(&std::fs::read(&raw).unwrap());
        if cut {
            gz.truncate(gz.len() / 2);
        } else {
            let n = gz.len();
            gz[n - 8] ^= 0xff;
        }
        std::fs::remove_file(&raw).unwrap();
        let path = data.join(format!("{TRAIN_IMAGES}.gz"));
        std::fs::write(&path, gz).unwrap();
        let printed = assert_fails(&guard.train(&data, &[]), &[s(&path)]);
        assert!(
            printed.contains("corrupt or truncated gzip") || printed.contains("truncated"),
            "{printed}"
        );
        guard.assert_intact();
    }
}

#[test]
fn trailing_garbage() {
    refused(
        TRAIN_LABELS,
        |p| rewrite(p, |b| b.extend(b"junk")),
        "trailing data after the 200 items",
    );
}

#[test]
fn directory_where_a_file_is_expected() {
    refused(
        TRAIN_IMAGES,
        |p| {
            std::fs::remove_file(p).unwrap();
            std::fs::create_dir(p).unwrap();
        },
        "is a directory, expected a file",
    );
    // A directory given as the model.
    let guard = Guard::new();
    let out = bin()
        .args(["evaluate", "--model", s(guard.dir.path())])
        .args(["--data", s(&dataset(guard.dir.path()))])
        .output()
        .unwrap();
    assert_fails(&out, &[s(guard.dir.path()), "directory"]);
}

#[test]
fn missing_file() {
    let guard = Guard::new();
    let data = dataset(guard.dir.path());
    std::fs::remove_file(data.join(TEST_LABELS)).unwrap();
    assert_fails(
        &guard.train(&data, &[]),
        &[s(&data), "no test labels file", TEST_LABELS],
    );
    guard.assert_intact();
    // A missing --data path, model and checkpoint.
    let nowhere = guard.dir.path().join("nowhere");
    assert_fails(&guard.train(&nowhere, &[]), &[s(&nowhere), "cannot read"]);
    let out = bin()
        .args(["evaluate", "--model", s(&nowhere), "--data", s(&data)])
        .output()
        .unwrap();
    assert_fails(&out, &[s(&nowhere), "No such file"]);
    let out = guard.train(&data, &["--resume", s(&nowhere)]);
    assert_fails(&out, &[s(&nowhere), "No such file"]);
    guard.assert_intact();
}

/// Root reads any file whatever its mode, so a loop of symbolic links stands in for an
/// unreadable file: opening it fails for every user (ELOOP).
#[test]
fn unreadable_file_symlink_loop() {
    refused(
        TRAIN_LABELS,
        |p| {
            std::fs::remove_file(p).unwrap();
            symlink(p, p).unwrap();
        },
        "Too many levels of symbolic links",
    );
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A file with mode 000. As root the binary runs as uid/gid 65534 (nobody), for whom the mode
/// really does refuse the read.
#[test]
fn unreadable_file_permission_denied() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dataset(dir.path());
    let secret = data.join(TRAIN_IMAGES);
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
    // Outputs are checked before the data is read, so the model goes where nobody may write.
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    std::fs::set_permissions(&out_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut cmd = bin();
    cmd.args(["train", "--data", s(&data), "--epochs", "1", "--quiet"])
        .args(["--save", s(&out_dir.join("m.pdn"))]);
    if running_as_root() {
        cmd.uid(65534).gid(65534);
    }
    let out = cmd.output().unwrap();
    assert_fails(&out, &[s(&secret), "cannot read", "Permission denied"]);
}

/// Writes `bytes` as a model next to a good dataset and checks `evaluate`, `predict` and
/// `train --resume` refuse it with `problem`, leaving the guarded files alone.
fn model_refused(bytes: &[u8], problem: &str, resume_problem: &str) {
    let guard = Guard::new();
    let data = dataset(guard.dir.path());
    let bad = guard.dir.path().join("bad.pdn");
    std::fs::write(&bad, bytes).unwrap();
    for args in [
        model_args("evaluate", &bad, &data, &[]),
        model_args("predict", &bad, &data, &["--index", "0"]),
    ] {
        let out = run(&args);
        assert_fails(&out, &[s(&bad), problem]);
    }
    assert_fails(
        &guard.train(&data, &["--resume", s(&bad)]),
        &[s(&bad), resume_problem],
    );
    std::fs::remove_file(&bad).unwrap();
    guard.assert_intact();
}

#[test]
fn model_file_with_a_flipped_bit() {
    let (model, checkpoint) = good_files();
    for bytes in [model, checkpoint] {
        let mut bad = bytes.clone();
        bad[5000] ^= 0x08;
        model_refused(&bad, "checksum mismatch", "checksum mismatch");
    }
}

#[test]
fn model_of_other_sizes() {
    let small: Box<Mlp<2, 3, 2>> = zeroed_box();
    let sections = format::Sections {
        dataset: 1,
        ..Default::default()
    };
    let bytes = picodense::model::encode_file(&small.layers(), &sections);
    // A valid file (inspect describes it) that is not the 784-512-10 network.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.pdn");
    std::fs::write(&path, &bytes).unwrap();
    let out = bin().args(["inspect", s(&path)]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    model_refused(
        &bytes,
        "the model (2-3-2) takes 2 inputs, the data has 784 values a row",
        "not a checkpoint",
    );
}

#[test]
fn empty_and_truncated_model_files() {
    let (model, checkpoint) = good_files();
    model_refused(&[], "truncated: 0 bytes", "truncated: 0 bytes");
    model_refused(&model[..100], "truncated", "truncated");
    model_refused(
        &checkpoint[..checkpoint.len() - 1],
        "truncated",
        "truncated",
    );
    model_refused(
        b"PK\x03\x04 not a model at all, but long enough",
        "not a picodense model",
        "not a picodense model",
    );
}

#[test]
fn plain_model_given_to_resume() {
    let guard = Guard::new();
    let data = dataset(guard.dir.path());
    let plain = guard.dir.path().join("plain.pdn");
    std::fs::write(&plain, &good_files().0).unwrap();
    assert_fails(
        &guard.train(&data, &["--resume", s(&plain)]),
        &[s(&plain), "not a checkpoint"],
    );
    guard.assert_intact();
}

/// A checkpoint made for other data (other row count) is refused before training.
#[test]
fn checkpoint_for_other_data() {
    let guard = Guard::new();
    let data = dataset(guard.dir.path());
    let fewer = write_dataset(
        guard.dir.path(),
        "fewer",
        block_images(100, 3),
        block_images(20, 4),
    );
    assert_fails(
        &guard.train(&fewer, &["--resume", s(&guard.checkpoint)]),
        &[
            s(&guard.checkpoint),
            "trained on 200 rows, this data has 100",
        ],
    );
    // A validation split other than the run's is a setting that contradicts the checkpoint.
    assert_fails(
        &guard.train(
            &data,
            &[
                "--resume",
                s(&guard.checkpoint),
                "--validation-split",
                "0.5",
            ],
        ),
        &[
            s(&guard.checkpoint),
            "--validation-split 0.5 differs from the checkpoint's 0",
        ],
    );
    guard.assert_intact();
}

#[test]
fn unwritable_output_path() {
    let guard = Guard::new();
    let data = dataset(guard.dir.path());
    // Root may write anywhere the mode bits forbid, so the paths below fail for everyone: a
    // folder that does not exist, and a "folder" that is a regular file.
    let missing_dir = guard.dir.path().join("no-such-dir").join("m.pdn");
    let under_file = guard.model.join("m.pdn");
    for save in [&missing_dir, &under_file] {
        let out = bin()
            .args(["train", "--data", s(&data), "--epochs", "1", "--quiet"])
            .args(["--save", s(save)])
            .output()
            .unwrap();
        assert_fails(&out, &[s(save)]);
    }
    // The checkpoint is refused at its first write, with its own path.
    for ckpt in [&missing_dir, &under_file] {
        let out = bin()
            .args(["train", "--data", s(&data), "--epochs", "1", "--quiet"])
            .args(["--save", s(&guard.model), "--checkpoint", s(ckpt)])
            .args(["--checkpoint-every", "1"])
            .output()
            .unwrap();
        assert_fails(&out, &[s(ckpt)]);
    }
    // The JSON log is checked before any data is read.
    let out = guard.train(&data, &["--log-json", s(&under_file)]);
    assert_fails(&out, &[s(&under_file), "cannot write --log-json"]);
    // A directory standing where the model goes.
    let out = bin()
        .args(["train", "--data", s(&data), "--epochs", "1", "--quiet"])
        .args(["--save", s(&data)])
        .output()
        .unwrap();
    assert_fails(&out, &[s(&data)]);
    assert!(data.join(TRAIN_IMAGES).exists(), "the folder was replaced");
    assert_no_temp_files(guard.dir.path());
    guard.assert_intact();
}

/// A full disk simulated with a file-size limit (`ulimit -f`, SIGXFSZ ignored so the write
/// fails with EFBIG instead of killing the process): works without root or mounts. The
/// model (1.6 MB) and the checkpoint (3.2 MB) are far over the limit.
#[test]
fn full_disk_file_size_limit() {
    let guard = Guard::new();
    let data = dataset(guard.dir.path());
    let limited = |extra: &[&str]| {
        Command::new("sh")
            .arg("-c")
            .arg("trap '' XFSZ; ulimit -f 256 && exec \"$0\" \"$@\"")
            .arg(env!("CARGO_BIN_EXE_picodense"))
            .args(["train", "--data", s(&data), "--epochs", "1", "--quiet"])
            .args(["--save", s(&guard.model)])
            .args(extra)
            .output()
            .unwrap()
    };
    assert_fails(&limited(&[]), &[s(&guard.model), "File too large"]);
    guard.assert_intact();
    let out = limited(&[
        "--checkpoint",
        s(&guard.checkpoint),
        "--checkpoint-every",
        "1",
    ]);
    assert_fails(&out, &[s(&guard.checkpoint), "File too large"]);
    guard.assert_intact();
}

/// Unmounts a tmpfs when the test ends, even when it fails.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A real full disk (ENOSPC): a 2 MB tmpfs that holds the old model (1.6 MB) but not a second
/// copy. Needs the right to mount; skipped, with the reason printed, without it.
#[test]
fn full_disk_tmpfs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let disk = dir.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs", s(&disk)])
        .output();
    match mounted {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            eprintln!("skipped: cannot mount a tmpfs: {}", text(&out).trim());
            return;
        }
        Err(e) => {
            eprintln!("skipped: cannot run mount: {e}");
            return;
        }
    }
    let _mount = Mount(disk.clone());
    let model = disk.join("model.pdn");
    let good = &good_files().0;
    std::fs::write(&model, good).unwrap();
    let out = bin()
        .args(["train", "--data", s(&data), "--epochs", "1", "--quiet"])
        .args(["--save", s(&model)])
        .output()
        .unwrap();
    assert_fails(&out, &[s(&model), "No space left on device"]);
    assert!(std::fs::read(&model).unwrap() == *good, "model changed");
    assert_no_temp_files(&disk);
}

/// Arguments not covered by cli.rs `bad_arguments_fail_before_any_work`; the data path does
/// not exist, so an error about the argument proves it came before any data was read.
#[test]
fn more_bad_arguments_fail_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    for (args, needle) in [
        (vec!["--checkpoint-every", "0"], "at least 1"),
        (vec!["--checkpoint-every", "0epoch"], "at least 1"),
        (
            vec!["--checkpoint-every", "often"],
            "expected N (steps) or Nepoch",
        ),
        (
            vec!["--batch-size", "1025"],
            "batch size must be between 1 and 1024",
        ),
        (vec!["--learning-rate", "0"], "learning rate"),
        (vec!["--learning-rate", "inf"], "learning rate"),
        (vec!["--validation-split", "NaN"], "validation-split"),
        (vec!["--epochs=-1"], "--epochs"),
        (vec!["--optimizer", "adam"], "adam"),
        (vec!["--kernel", "cuda"], "cuda"),
    ] {
        let printed = assert_fails(&run(&train_args(&missing, &args)), &[needle]);
        assert!(
            !printed.contains("nowhere"),
            "{args:?} read data first: {printed}"
        );
    }
}

/// Fuzzing found an int8 file with the optimizer flag set made `load_optimizer` slice out of
/// bounds: only f32 files have an f32 layout. The file is the fuzzer's input as written.
#[test]
fn fuzz_regression_int8_file_with_optimizer_flag() {
    let bytes = std::fs::read(fixture("pdn-int8-with-optimizer-flag.pdn")).unwrap();
    let view = ModelView::parse(&bytes).expect("the header and CRC are valid");
    let mut opt: Box<RmsProp<2, 3, 2>> = zeroed_box();
    assert!(matches!(
        view.load_optimizer(&mut opt.velocity.layers_mut()),
        Err(FormatError::WrongDtype(_))
    ));
    let mut model: Box<Mlp<2, 3, 2>> = zeroed_box();
    assert!(view.load_into(&mut model.layers_mut()).is_err());
    assert_eq!(view.extra(), Ok(None));
}

/// Layer sizes whose weights end 4 bytes short of `usize::MAX`, with a record flag: the record
/// offset overflowed (a panic, even in release builds, on a 36-byte file with a valid CRC).
/// Found by reading the layout code while writing the fuzz targets, not by the fuzzer.
#[test]
fn regression_record_offset_overflow() {
    let path = fixture("pdn-record-offset-overflow.pdn");
    let bytes = std::fs::read(&path).unwrap();
    assert!(matches!(
        ModelView::parse(&bytes).unwrap_err(),
        FormatError::BadShape(_)
    ));
    let out = bin().args(["inspect", s(&path)]).output().unwrap();
    assert_fails(&out, &[s(&path), "bad layer list"]);
    let out = bin()
        .args(["train", "--resume", s(&path)])
        .output()
        .unwrap();
    assert_fails(&out, &[s(&path), "bad layer list"]);
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name)
}
