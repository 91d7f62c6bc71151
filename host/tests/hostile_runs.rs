//! Hostile runs, end to end: arguments, empty sets, files that are not files, models that hold
//! no usable numbers, outputs aimed at inputs, closed pipes and full disks on stdout. Each test
//! runs the `picodense` binary and checks the exit status, the message, that nothing panics, and
//! that files the run was not meant to change are unchanged (docs/hostile-inputs.md).

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use picodense::model::{Network, encode_file, load_network};
use picodense_core::Layers;
use picodense_core::format::{ModelView, Sections};

/// A dataset folder of 200 training and 50 test images (IDX, training files gzipped).
fn dataset(dir: &Path) -> PathBuf {
    write_dataset(dir, "data", block_images(200, 1), block_images(50, 2))
}

/// A model and a checkpoint of one epoch on [`dataset`], made once and shared: (data folder
/// kept alive, model bytes, checkpoint bytes).
fn good_files() -> &'static (tempfile::TempDir, Vec<u8>, Vec<u8>) {
    static FILES: OnceLock<(tempfile::TempDir, Vec<u8>, Vec<u8>)> = OnceLock::new();
    FILES.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let data = dataset(dir.path());
        let (m, c) = trained_files(dir.path(), &data);
        (dir, m, c)
    })
}

/// Asserts a clean failure (exit 1, no panic, no signal) whose output holds every needle;
/// returns the output.
fn assert_fails(out: &Output, needles: &[&str]) -> String {
    let printed = text(out);
    assert_eq!(out.status.code(), Some(1), "{printed}");
    assert!(!printed.contains("panicked"), "{printed}");
    for needle in needles {
        assert!(printed.contains(needle), "no {needle:?} in: {printed}");
    }
    printed
}

/// Runs `cmd` with a deadline: a run that blocks (on a FIFO, say) is killed and fails the test.
fn run_within(cmd: &mut Command, seconds: u64) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("still running after {seconds} s: {cmd:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success());
}

#[test]
fn thread_counts_past_four_a_core_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    for threads in ["1000", "100000", "18446744073709551615"] {
        for command in ["train", "evaluate", "bench"] {
            let mut args = vec![command, "--data", s(&missing), "--threads", threads];
            if command == "evaluate" {
                args.extend(["--model", s(&missing)]);
            }
            let out = run(&args);
            let printed = assert_fails(&out, &[&format!("--threads {threads} is too many")]);
            assert!(printed.contains("a core) are allowed"), "{printed}");
            assert!(!printed.contains("nowhere"), "read data first: {printed}");
        }
    }
    // Four a core is allowed.
    let cores = std::thread::available_parallelism().unwrap().get();
    let (data_dir, ..) = good_files();
    let (data, model) = (data_dir.path().join("data"), dir.path().join("m.pdn"));
    let threads = (4 * cores).to_string();
    ok(&train_args(
        &data,
        &[
            "--quiet",
            "--epochs",
            "1",
            "--threads",
            &threads,
            "--save",
            s(&model),
        ],
    ));
}

#[test]
fn empty_sets_are_refused_naming_the_file_or_the_option() {
    let dir = tempfile::tempdir().unwrap();
    let empty_test = write_dataset(
        dir.path(),
        "empty-test",
        block_images(200, 1),
        (Vec::new(), Vec::new()),
    );
    let test_images = empty_test.join("t10k-images-idx3-ubyte");
    let model = dir.path().join("m.pdn");
    let out = run(&train_args(
        &empty_test,
        &["--epochs", "1", "--save", s(&model)],
    ));
    assert_fails(&out, &[s(&test_images), "holds 0 images"]);
    assert!(!model.exists());
    // evaluate (text and JSON) and export of a good model on that data.
    let good = dir.path().join("good.pdn");
    std::fs::write(&good, &good_files().1).unwrap();
    for extra in [&[][..], &["--json"][..]] {
        let out = run(&model_args("evaluate", &good, &empty_test, extra));
        let printed = assert_fails(&out, &[s(&test_images), "holds 0 images"]);
        assert!(!printed.contains("test accuracy"), "{printed}");
    }
    // A training set of 0 images: export would calibrate int8 on nothing.
    let empty_train = write_dataset(
        dir.path(),
        "empty-train",
        (Vec::new(), Vec::new()),
        block_images(50, 2),
    );
    let out_file = dir.path().join("flash.bin");
    let out = bin()
        .args(["export", "--model", s(&good), "--format", "int8"])
        .args(["--out", s(&out_file), "--data", s(&empty_train)])
        .output()
        .unwrap();
    assert_fails(
        &out,
        &[
            s(&empty_train.join("train-images-idx3-ubyte.gz")),
            "holds 0 images",
        ],
    );
    assert!(!out_file.exists());
    // A validation split that rounds to no rows.
    let data = good_files().0.path().join("data");
    let split = |fraction| {
        let extra = ["--epochs", "1", "--quiet", "--validation-split", fraction];
        run(&[&train_args(&data, &extra)[..], &["--save", s(&model)]].concat())
    };
    assert_fails(
        &split("0.0001"),
        &["--validation-split 0.0001 holds out 0 of the 200 training rows"],
    );
    assert!(!model.exists());
    // The smallest split that holds out a row is accepted.
    let out = split("0.005");
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn dataset_files_that_are_fifos_are_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let labels = data.join("t10k-labels-idx1-ubyte");
    std::fs::remove_file(&labels).unwrap();
    mkfifo(&labels);
    let out = run_within(
        bin()
            .args(["train", "--data", s(&data), "--epochs", "1"])
            .args(["--save", s(&dir.path().join("m.pdn"))]),
        60,
    );
    assert_fails(&out, &[s(&labels), "not a regular file (a FIFO)"]);
    // A CSV pair whose test file is a FIFO.
    let train = dir.path().join("train.csv");
    std::fs::write(&train, "a,b,label\n1,2,0\n3,4,1\n").unwrap();
    let test = dir.path().join("test.csv");
    mkfifo(&test);
    let out = run_within(
        bin()
            .args(["train", "--data", s(&train), "--test-data", s(&test)])
            .args(["--epochs", "1", "--save", s(&dir.path().join("m.pdn"))]),
        60,
    );
    assert_fails(&out, &[s(&test), "not a regular file (a FIFO)"]);
}

/// Runs the binary with `args` under an address-space limit of 1 GiB, so that a reader that
/// loads a whole 2 GB file fails (or aborts) where a bounded one does not.
fn limited(args: &[&str]) -> Output {
    run_within(
        Command::new("sh")
            .arg("-c")
            .arg("ulimit -v 1048576 && exec \"$0\" \"$@\"")
            .arg(env!("CARGO_BIN_EXE_picodense"))
            .args(args),
        120,
    )
}

#[test]
fn model_readers_check_the_header_and_length_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let data = good_files().0.path().join("data");
    let fifo = dir.path().join("fifo.pdn");
    mkfifo(&fifo);
    for (path, problem) in [
        (
            Path::new("/dev/zero"),
            "not a regular file (a character device)",
        ),
        (&fifo, "not a regular file (a FIFO)"),
    ] {
        for args in [
            vec!["inspect", s(path)],
            vec!["evaluate", "--model", s(path), "--data", s(&data)],
            vec!["predict", "--model", s(path), "--index", "0"],
            vec!["train", "--data", s(&data), "--resume", s(path)],
        ] {
            assert_fails(&limited(&args), &[s(path), problem]);
        }
    }
    // 2 GB (sparse) that are not a model: refused by their first bytes.
    let big = dir.path().join("big.pdn");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    assert_fails(
        &limited(&["inspect", s(&big)]),
        &[s(&big), "not a picodense model"],
    );
    // A good model followed by 2 GB: refused by its length, unread.
    let model = &good_files().1;
    let file = std::fs::File::create(&big).unwrap();
    std::io::Write::write_all(&mut &file, model).unwrap();
    file.set_len(model.len() as u64 + (2 << 30)).unwrap();
    for args in [
        vec!["inspect", s(&big)],
        vec!["evaluate", "--model", s(&big), "--data", s(&data)],
    ] {
        assert_fails(
            &limited(&args),
            &[s(&big), "2147483648 bytes follow the checksum"],
        );
    }
    // A header that declares more than the file holds.
    let short = dir.path().join("short.pdn");
    std::fs::write(&short, &model[..model.len() - 1]).unwrap();
    assert_fails(&limited(&["inspect", s(&short)]), &[s(&short), "truncated"]);
}

/// `bytes` with one f32 value of the network replaced by `value`, under a valid checksum.
fn with_param(bytes: &[u8], index: usize, value: f32) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.pdn");
    std::fs::write(&path, bytes).unwrap();
    let mut network: Network = load_network(&path).unwrap();
    network.params[index] = value;
    network.file_bytes()
}

/// The checkpoint `bytes` with its RMSprop state (rule, velocity) and parameters changed by
/// `edit`, under a valid checksum.
fn with_state(
    bytes: &[u8],
    edit: impl FnOnce(&mut picodense_core::RmsPropRule, &mut [f32], &mut [f32]),
) -> Vec<u8> {
    let view = ModelView::parse(bytes).unwrap();
    let shape = view.header().shape;
    let mut params = vec![0.0; shape.parameters()];
    view.load_into(&mut Layers::split_mut(shape, &mut params).unwrap())
        .unwrap();
    let mut velocity = vec![0.0; shape.parameters()];
    let mut rule = view
        .load_optimizer(&mut Layers::split_mut(shape, &mut velocity).unwrap())
        .unwrap();
    edit(&mut rule, &mut velocity, &mut params);
    let v = Layers::split(shape, &velocity[..]).unwrap();
    let sections = Sections {
        optimizer: Some((rule, &v)),
        extra: view.extra().unwrap(),
        meta: view.meta().unwrap(),
        dataset: view.header().dataset,
    };
    encode_file(&Layers::split(shape, &params[..]).unwrap(), &sections)
}

#[test]
fn non_finite_models_and_impossible_optimizer_state_are_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let data = good_files().0.path().join("data");
    let (model, ckpt) = (&good_files().1, &good_files().2);
    let params = 784 * 512 + 512 + 512 * 10 + 10;
    for (index, value, place) in [
        (17, f32::NAN, "layer 1 weights, value 17 (NaN)"),
        (784 * 512 + 3, f32::INFINITY, "layer 1 bias, value 3 (inf)"),
        (
            params - 1,
            f32::NEG_INFINITY,
            "layer 2 bias, value 9 (-inf)",
        ),
    ] {
        let path = dir.path().join("nan.pdn");
        std::fs::write(&path, with_param(model, index, value)).unwrap();
        let out_file = dir.path().join("flash.bin");
        for args in [
            vec!["inspect", s(&path)],
            model_args("evaluate", &path, &data, &[]),
            model_args("evaluate", &path, &data, &["--json"]),
            model_args("predict", &path, &data, &["--index", "0"]),
            model_args(
                "export",
                &path,
                &data,
                &["--format", "f32", "--out", s(&out_file)],
            ),
        ] {
            let out = run(&args);
            let printed = assert_fails(&out, &[s(&path), place, "is not finite"]);
            assert!(!printed.contains("checksum:      ok"), "{printed}");
        }
        assert!(!out_file.exists());
    }
    // Checkpoints: non-finite weights, and optimizer state no run could write.
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            with_state(ckpt, |_, _, p| p[5] = f32::NAN),
            "layer 1 weights, value 5 (NaN) is not finite",
        ),
        (
            with_state(ckpt, |_, v, _| v[100] = -1.0),
            "RMSprop mean square -1 (value 100) is negative",
        ),
        (
            with_state(ckpt, |_, v, _| v[7] = f32::NAN),
            "RMSprop mean square of layer 1 weights, value 7 (NaN) is not finite",
        ),
        (
            with_state(ckpt, |r, _, _| r.rho = 1.0),
            "rho 1 is outside [0, 1)",
        ),
        (
            with_state(ckpt, |r, _, _| r.rho = -0.5),
            "rho -0.5 is outside",
        ),
        (
            with_state(ckpt, |r, _, _| r.epsilon = 0.0),
            "epsilon 0 is not a positive",
        ),
        (
            with_state(ckpt, |r, _, _| r.epsilon = f32::NAN),
            "epsilon NaN",
        ),
        (
            with_state(ckpt, |r, _, _| r.learning_rate = 5.0),
            "learning rate 5 differs from the record's 0.001",
        ),
    ];
    for (bytes, problem) in cases {
        let path = dir.path().join("bad-ckpt.pdn");
        std::fs::write(&path, &bytes).unwrap();
        let save = dir.path().join("resumed.pdn");
        for args in [
            vec!["inspect", s(&path)],
            train_args(&data, &["--resume", s(&path), "--save", s(&save)]),
        ] {
            let out = run(&args);
            assert_fails(&out, &[s(&path), problem]);
        }
        assert!(!save.exists());
    }
}

/// `train` on `data` for one epoch with `extra` arguments, within 300 s.
fn train_within(data: &Path, extra: &[&str]) -> Output {
    let args = train_args(data, &["--epochs", "1", "--quiet"]);
    run_within(bin().args(args).args(extra), 300)
}

/// `train` on the shared dataset for one epoch with `extra` arguments.
fn train(extra: &[&str]) -> Output {
    train_within(&good_files().0.path().join("data"), extra)
}

/// Every file under `dir` and its bytes, to show that a refused run changed nothing.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn outputs_aimed_at_inputs_or_each_other_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let before = snapshot(&data);
    let images = data.join("train-images-idx3-ubyte.gz");
    let labels = data.join("t10k-labels-idx1-ubyte");
    let (link, hard) = (dir.path().join("link.pdn"), dir.path().join("hard.pdn"));
    std::os::unix::fs::symlink(&images, &link).unwrap();
    std::fs::hard_link(&labels, &hard).unwrap();
    let (model, svg) = (dir.path().join("m.pdn"), dir.path().join("m.svg"));
    let run = |extra: &[&str]| train_within(&data, extra);
    for (extra, needles) in [
        (
            vec!["--save", s(&images)],
            vec!["--save would overwrite", s(&images)],
        ),
        (
            vec!["--save", s(&model), "--log-json", s(&labels)],
            vec!["--log-json would overwrite", "an input of this run"],
        ),
        (
            vec!["--save", s(&link)],
            vec![s(&link), "--save would overwrite"],
        ),
        (
            vec!["--save", s(&hard)],
            vec![s(&hard), "--save would overwrite"],
        ),
        (
            vec!["--save", s(&svg), "--plot", s(&svg)],
            vec!["--plot and --save name the same file"],
        ),
        (
            vec!["--save", s(&model), "--checkpoint", s(&model)],
            vec!["--checkpoint and --save name the same file"],
        ),
        (
            vec![
                "--save",
                s(&model),
                "--checkpoint",
                "./x.pdn",
                "--log-json",
                "x.pdn",
            ],
            vec!["--log-json and --checkpoint name the same file"],
        ),
        (
            vec!["--save", "/dev/null"],
            vec!["/dev/null: --save is not a regular file (a character device)"],
        ),
        (
            vec!["--save", s(&model), "--log-json", "/dev/full"],
            vec!["/dev/full: --log-json is not a regular file (a character device)"],
        ),
        (
            vec!["--save", s(&data)],
            vec!["--save is not a regular file (a directory)"],
        ),
    ] {
        assert_fails(&run(&extra), &needles);
        assert_eq!(snapshot(&data), before, "{extra:?} changed the data");
        assert!(
            !model.exists() && !svg.exists(),
            "{extra:?} wrote the model"
        );
    }
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device()
    );
    // A FIFO as an output: refused, not waited on.
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    assert_fails(&run(&["--save", s(&fifo)]), &["(a FIFO)"]);
    // --resume read and --save written to the same file: the checkpoint would be lost.
    let ckpt = dir.path().join("c.pdn");
    std::fs::write(&ckpt, &good_files().2).unwrap();
    assert_fails(
        &run(&["--resume", s(&ckpt), "--save", s(&ckpt)]),
        &["--save would overwrite", "an input of this run"],
    );
    assert!(std::fs::read(&ckpt).unwrap() == good_files().2);
    // Checkpointing on to the checkpoint resumed from is the usual way, and allowed.
    let out = run(&[
        "--resume",
        s(&ckpt),
        "--checkpoint",
        s(&ckpt),
        "--save",
        s(&model),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    // export --out onto its own model.
    let good = dir.path().join("good.pdn");
    std::fs::write(&good, &good_files().1).unwrap();
    let export = ["--format", "f32", "--out", s(&good)];
    assert_fails(
        &common::run(&model_args("export", &good, &data, &export)),
        &["--out would overwrite"],
    );
    assert!(std::fs::read(&good).unwrap() == good_files().1);
}

#[test]
fn a_replaced_file_keeps_its_mode_and_a_symlink_stays_a_link() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.pdn");
    std::fs::write(&model, b"old").unwrap();
    std::fs::set_permissions(&model, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = train(&["--save", s(&model)]);
    assert!(out.status.success(), "{}", text(&out));
    let meta = std::fs::metadata(&model).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    assert!(meta.len() > 3);
    // Through a symlink: the file it points to is replaced, the link stays.
    let link = dir.path().join("link.pdn");
    std::os::unix::fs::symlink(&model, &link).unwrap();
    std::fs::write(&model, b"old").unwrap();
    let out = train(&["--save", s(&link)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(load_network(&model).is_ok());
}

#[test]
fn long_output_names_are_checked_before_training_and_written_after() {
    let dir = tempfile::tempdir().unwrap();
    // 255 bytes is the longest name; the temporary file's name is short whatever this one is.
    let longest = dir.path().join(format!("{}.pdn", "m".repeat(251)));
    let out = train(&["--save", s(&longest)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(load_network(&longest).is_ok());
    let log = dir.path().join(format!("{}.jsonl", "l".repeat(249)));
    let plot = dir.path().join(format!("{}.svg", "p".repeat(251)));
    let out = train(&[
        "--save",
        s(&longest),
        "--log-json",
        s(&log),
        "--plot",
        s(&plot),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(log.exists() && plot.exists());
    // One byte more: refused before training, nothing written.
    for flag in ["--save", "--checkpoint", "--log-json", "--plot"] {
        let too_long = dir.path().join(format!("{}.svg", "x".repeat(252)));
        let mut args = vec!["--save", s(&longest)];
        if flag == "--save" {
            args = vec![];
        }
        args.extend([flag, s(&too_long)]);
        let started = Instant::now();
        let out = train(&args);
        assert_fails(
            &out,
            &[&format!("cannot write {flag}"), "File name too long"],
        );
        assert!(started.elapsed() < Duration::from_secs(30));
    }
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");
}

/// A log that fails during training (a file-size limit the log is past and the model is not)
/// costs the log, never the model: the model is saved, the error printed, the exit status 1.
#[test]
fn a_failing_log_never_costs_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let data = good_files().0.path().join("data");
    let ckpt = dir.path().join("c.pdn");
    std::fs::write(&ckpt, &good_files().2).unwrap();
    // 3 MB of earlier log lines up to the checkpoint's epoch, which the resumed run keeps:
    // past a 2.5 MB limit that the 1.6 MB model is under.
    let log = dir.path().join("log.jsonl");
    let line = "{\"epoch\":0}\n";
    let earlier = line.repeat(3_000_000 / line.len()) + "{\"epoch\":1}\n";
    std::fs::write(&log, earlier).unwrap();
    let before = std::fs::read(&log).unwrap();
    let model = dir.path().join("m.pdn");
    let out = run_within(
        Command::new("sh")
            .arg("-c")
            .arg("trap '' XFSZ; ulimit -f 5000 && exec \"$0\" \"$@\"")
            .arg(env!("CARGO_BIN_EXE_picodense"))
            .args(train_args(&data, &["--epochs", "2", "--quiet"]))
            .args([
                "--resume",
                s(&ckpt),
                "--log-json",
                s(&log),
                "--save",
                s(&model),
            ]),
        300,
    );
    assert_fails(
        &out,
        &[
            s(&log),
            "cannot write the log",
            "File too large",
            &format!("the model was saved to {}", s(&model)),
        ],
    );
    assert!(load_network(&model).is_ok(), "no model: {}", text(&out));
    assert!(std::fs::read(&log).unwrap() == before);
}

/// Runs `args` with stdout on a pipe closed after its first `lines` lines (`| head -2`);
/// returns the exit status and stderr.
fn with_head(args: &[&str], lines: usize) -> (std::process::ExitStatus, String) {
    use std::io::{BufRead, Read};
    let mut child = bin()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    for _ in 0..lines {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
    }
    drop(reader);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (child.wait().unwrap(), stderr)
}

#[test]
fn a_closed_or_full_stdout_never_costs_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let data = good_files().0.path().join("data");
    let model = dir.path().join("m.pdn");
    // `| head -2`: the reader leaves, training goes on, the model is saved, exit 0.
    let (status, stderr) = with_head(
        &train_args(&data, &["--epochs", "3", "--save", s(&model)]),
        2,
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(status.success(), "{status:?}: {stderr}");
    assert!(load_network(&model).is_ok());
    for args in [
        model_args("evaluate", &model, &data, &[]),
        model_args("evaluate", &model, &data, &["--json"]),
        vec!["inspect", s(&model)],
        model_args("predict", &model, &data, &["--index", "0"]),
    ] {
        let (status, stderr) = with_head(&args, 0);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(status.success(), "{args:?}: {status:?}: {stderr}");
    }
    // `> /dev/full`: the figures asked for are lost, so exit 1 saying so; the model is saved.
    std::fs::remove_file(&model).unwrap();
    let full = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    let out = bin()
        .args(train_args(&data, &["--epochs", "1", "--save", s(&model)]))
        .stdout(full())
        .output()
        .unwrap();
    assert_fails(&out, &["cannot write to stdout: No space left on device"]);
    assert!(load_network(&model).is_ok());
    let out = bin()
        .args(model_args("evaluate", &model, &data, &["--json"]))
        .stdout(full())
        .output()
        .unwrap();
    let printed = assert_fails(&out, &["cannot write to stdout: No space left on device"]);
    assert_eq!(printed.matches("error:").count(), 1, "{printed}");
}

#[test]
fn the_dataset_kind_comes_from_dataset_never_from_the_folder_name() {
    let dir = tempfile::tempdir().unwrap();
    // MNIST-like files in a folder named "fashion".
    let data = write_dataset(
        dir.path(),
        "my-fashion-data",
        block_images(200, 1),
        block_images(50, 2),
    );
    let model = dir.path().join("m.pdn");
    let one_epoch = ["--epochs", "1", "--quiet", "--save", s(&model)];
    ok(&train_args(&data, &one_epoch));
    let printed = ok(&["inspect", s(&model)]);
    assert!(!printed.contains("fashion-mnist"), "{printed}");
    assert!(!printed.contains("T-shirt"), "{printed}");
    // An explicit --dataset names it.
    ok(&[
        &train_args(&data, &one_epoch)[..],
        &["--dataset", "fashion-mnist"],
    ]
    .concat());
    let printed = ok(&["inspect", s(&model)]);
    assert!(printed.contains("fashion-mnist"), "{printed}");
}

/// `evaluate --report` writes two figures into a folder: neither may replace the model, a data
/// file or something that is not a file, and a `--report` that is a file is refused, all
/// before the data is read.
#[test]
fn evaluate_report_figures_never_replace_an_input() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let model = dir.path().join("m.pdn");
    let out = bin()
        .args(["train", "--data", s(&data), "--epochs", "1", "--quiet"])
        .args(["--save", s(&model)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let model_bytes = std::fs::read(&model).unwrap();
    let before = snapshot(&data);
    let report = |folder: &Path| {
        run(&[
            "evaluate",
            "--model",
            s(&model),
            "--data",
            s(&data),
            "--report",
            s(folder),
        ])
    };
    let onto_model = dir.path().join("onto-model");
    std::fs::create_dir(&onto_model).unwrap();
    std::os::unix::fs::symlink(&model, onto_model.join("confusion.png")).unwrap();
    assert_fails(
        &report(&onto_model),
        &["--report's confusion.png would overwrite", s(&model)],
    );
    let onto_data = dir.path().join("onto-data");
    std::fs::create_dir(&onto_data).unwrap();
    let labels = data.join("t10k-labels-idx1-ubyte");
    std::fs::hard_link(&labels, onto_data.join("misclassified.png")).unwrap();
    assert_fails(
        &report(&onto_data),
        &[
            "--report's misclassified.png would overwrite",
            "an input of this run",
        ],
    );
    let folder_there = dir.path().join("folder-there");
    std::fs::create_dir_all(folder_there.join("confusion.png")).unwrap();
    assert_fails(
        &report(&folder_there),
        &["confusion.png: --report's confusion.png is not a regular file (a directory)"],
    );
    assert_fails(&report(&labels), &["--report is not a folder"]);
    // A folder that cannot be made is refused before the evaluation, not after it.
    let under_a_file = labels.join("report");
    let printed = assert_fails(
        &report(&under_a_file),
        &["cannot create the report folder", "Not a directory"],
    );
    assert!(!printed.contains("test accuracy"), "{printed}");
    assert_eq!(snapshot(&data), before, "the data changed");
    assert!(
        std::fs::read(&model).unwrap() == model_bytes,
        "the model changed"
    );
    // A new folder gets both figures.
    let fresh = dir.path().join("fresh");
    let out = report(&fresh);
    assert!(out.status.success(), "{}", text(&out));
    assert!(fresh.join("confusion.png").is_file() && fresh.join("misclassified.png").is_file());
}
