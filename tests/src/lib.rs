//! Support for the firmware tests in `tests/` (the Rust firmware and the C example): the data
//! they classify, the model they train, the host's predictions they must equal, a QEMU run and
//! its report, and the check for the tools they need.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use picodense::data::{DataError, read_idx_images, read_idx_labels};
use picodense_core::format;
use picodense_core::gemm::{Kernel, Scratch, Serial};
use picodense_core::quant::{self, Calibration, F32View, Int8View};
use picodense_core::{Batch, Compute, MnistMlp, MnistWorkspace, RmsProp};
use picodense_support::{FASHION_FILES, block_images};
use rand_core::SeedableRng;
use rand_xorshift::XorShiftRng;

/// Pixels of an image.
pub const INPUTS: usize = 784;
/// Hidden units of the model the tests train.
pub const HIDDEN: usize = 512;
/// Classes.
pub const OUTPUTS: usize = 10;
/// Images each firmware classifies.
pub const TEST_IMAGES: usize = 100;
/// Images the model is trained on.
pub const TRAIN_IMAGES: usize = 6000;

pub use picodense::compute::zeroed_box as zeroed;
pub use picodense_support::FASHION;

/// Images (u8 pixels) and labels.
pub struct Data {
    /// The images.
    pub images: Vec<[u8; INPUTS]>,
    /// One label per image.
    pub labels: Vec<u8>,
}

impl Data {
    /// The first `n` of 28 x 28 `pixels` and their `labels`.
    fn first(n: usize, pixels: &[u8], labels: &[u8]) -> Data {
        let n = n.min(labels.len());
        Data {
            images: pixels[..n * INPUTS]
                .chunks_exact(INPUTS)
                .map(|c| c.try_into().expect("chunks of INPUTS"))
                .collect(),
            labels: labels[..n].to_vec(),
        }
    }
}

/// The first `n` images and labels of an IDX pair (raw or gzip), read by the host's reader.
pub fn read_idx(images: &Path, labels: &Path, n: usize) -> Result<Data, DataError> {
    let (pixels, _) = read_idx_images(images)?;
    Ok(Data::first(n, &pixels, &read_idx_labels(labels)?))
}

/// Training and test images (Fashion-MNIST when installed, else a generated task), and where
/// they came from.
pub fn datasets() -> (Data, Data, &'static str) {
    let file = |name: &str| Path::new(FASHION).join(name);
    if file("train-images-idx3-ubyte.gz").exists() {
        let [train_images, train_labels, test_images, test_labels] = FASHION_FILES.map(file);
        let train = read_idx(&train_images, &train_labels, TRAIN_IMAGES)
            .expect("read Fashion-MNIST training set");
        let test =
            read_idx(&test_images, &test_labels, TEST_IMAGES).expect("read Fashion-MNIST test set");
        (train, test, "Fashion-MNIST")
    } else {
        let generated = |n, seed| {
            let (pixels, labels) = block_images(n, seed);
            Data::first(n, &pixels, &labels)
        };
        (
            generated(TRAIN_IMAGES, 1),
            generated(TEST_IMAGES, 2),
            "generated",
        )
    }
}

/// A 784-512-10 model after three quick epochs through the core API.
pub fn train(data: &Data) -> Box<MnistMlp> {
    let mut model = zeroed::<MnistMlp>();
    model.init_glorot(&mut XorShiftRng::seed_from_u64(7));
    let mut optimizer = zeroed::<RmsProp<INPUTS, HIDDEN, OUTPUTS>>();
    optimizer.reset(1e-3);
    let mut ws = zeroed::<MnistWorkspace>();
    let mut scratch = zeroed::<Scratch>();
    let mut compute = Compute::new(
        Kernel::PORTABLE,
        &Serial,
        std::slice::from_mut(&mut *scratch),
    );
    let images: Vec<[f32; INPUTS]> = data
        .images
        .iter()
        .map(|im| im.map(quant::unit_pixel))
        .collect();
    let mut learner = model.learner(&mut *optimizer, None, &mut ws);
    for _epoch in 0..3 {
        for (x, y) in images.chunks(128).zip(data.labels.chunks(128)) {
            learner.train_step(Batch::new(x.as_flattened(), y), &mut compute);
        }
    }
    drop(learner);
    model
}

/// A model trained on [`datasets`] and its f32 and int8 model files: where every firmware
/// fixture starts.
pub struct Trained {
    /// The trained model.
    pub model: Box<MnistMlp>,
    /// The training images (the int8 export is calibrated on their first 500).
    pub train: Data,
    /// The test images the firmware classifies.
    pub test: Data,
    /// Where the images came from.
    pub source: &'static str,
    /// The f32 model file.
    pub f32_bytes: Vec<u8>,
    /// The int8 model file.
    pub int8_bytes: Vec<u8>,
}

/// Trains on [`datasets`] (saying how long it took) and exports the model as f32 and int8.
pub fn trained() -> Trained {
    let (train_data, test, source) = datasets();
    let start = Instant::now();
    let model = train(&train_data);
    eprintln!(
        "trained 784-512-10 on {TRAIN_IMAGES} {source} images in {:.1?}",
        start.elapsed()
    );
    let sections = format::Sections {
        dataset: 2,
        ..Default::default()
    };
    let mut f32_bytes = vec![0u8; format::encoded_len(MnistMlp::shape(), &sections)];
    format::encode(&model.layers(), &sections, &mut f32_bytes).unwrap();
    let calibration = Calibration::from_images(&*model, &train_data.images[..500]);
    let mut int8_bytes = vec![0u8; quant::encoded_len::<INPUTS, HIDDEN, OUTPUTS>()];
    quant::encode(&*model, &calibration, 2, &mut int8_bytes).unwrap();
    Trained {
        model,
        train: train_data,
        test,
        source,
        f32_bytes,
        int8_bytes,
    }
}

/// One image's class and logits as exact bits (int8 logits as i32, f32 bits for f32).
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    /// The class.
    pub class: usize,
    /// The logits' bits.
    pub logits: Vec<u32>,
}

/// The host's int8 predictions of the int8 model file `bytes` for `images`.
pub fn int8_predictions(bytes: &[u8], images: &[[u8; INPUTS]]) -> Vec<Prediction> {
    let view = Int8View::parse(bytes).unwrap();
    let mut scratch = vec![0u32; view.scratch_words()];
    let mut logits = vec![0i32; view.shape().classes()];
    images
        .iter()
        .map(|image| Prediction {
            class: view.predict(image, &mut scratch, &mut logits),
            logits: logits.iter().map(|&v| v as u32).collect(),
        })
        .collect()
}

/// The host's f32 predictions (in place, as the firmware computes them) of the f32 model file
/// `bytes` for `images`.
pub fn f32_predictions(bytes: &[u8], images: &[[u8; INPUTS]]) -> Vec<Prediction> {
    let view = F32View::parse(bytes).unwrap();
    let [_, hidden, outputs] = view.sizes();
    let (mut h, mut z) = (vec![0.0f32; hidden], vec![0.0f32; outputs]);
    images
        .iter()
        .map(|image| Prediction {
            class: view.predict(&image.map(quant::unit_pixel), &mut h, &mut z),
            logits: z.iter().map(|v| v.to_bits()).collect(),
        })
        .collect()
}

/// What a firmware run reported.
pub struct Run {
    /// QEMU's exit code: the firmware's verdict.
    pub exit_code: Option<i32>,
    /// Everything it printed.
    pub stdout: String,
    /// One per `img` line.
    pub predictions: Vec<Prediction>,
    /// The `accuracy` line: correct, images.
    pub accuracy: Option<(usize, usize)>,
}

/// Runs `elf` on QEMU's `machine` (semihosting on) and reads its report: `img I class C label L
/// logits HEX...` lines and `accuracy A/N`. A firmware that hangs fails the test after 120 s.
pub fn run_qemu(machine: &[&str], elf: &Path) -> Run {
    let mut child = Command::new("qemu-system-arm")
        .args(machine)
        .args([
            "-nographic",
            "-semihosting-config",
            "enable=on,target=native",
        ])
        .arg("-kernel")
        .arg(elf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start qemu-system-arm");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s)
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("{} did not exit within 120 s", elf.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = reader.join().unwrap().unwrap();
    let mut predictions = Vec::new();
    let mut accuracy = None;
    for line in stdout.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["img", i, "class", class, "label", _, "logits", logits @ ..] => {
                assert_eq!(i.parse::<usize>().unwrap(), predictions.len(), "{line}");
                predictions.push(Prediction {
                    class: class.parse().unwrap(),
                    logits: logits
                        .iter()
                        .map(|h| u32::from_str_radix(h, 16).unwrap())
                        .collect(),
                });
            }
            ["accuracy", fraction] => {
                let (a, b) = fraction.split_once('/').unwrap();
                accuracy = Some((a.parse().unwrap(), b.parse().unwrap()));
            }
            _ => {}
        }
    }
    Run {
        exit_code: status.code(),
        stdout,
        predictions,
        accuracy,
    }
}

/// Indices where the firmware's report differs from the host's, comparing classes and, when
/// `bits` is set, the logits' bits too; and every extra report.
pub fn mismatches(run: &Run, expected: &[Prediction], bits: bool) -> Vec<usize> {
    let mut bad: Vec<usize> = (0..expected.len())
        .filter(|&i| match run.predictions.get(i) {
            None => true,
            Some(p) => p.class != expected[i].class || (bits && p.logits != expected[i].logits),
        })
        .collect();
    bad.extend(expected.len()..run.predictions.len());
    bad
}

/// Asserts that `run` exited 0 and reported `expected` (classes, and the logits' bits when
/// `bits`) and the host's accuracy on `labels`; `what` names the run in messages.
pub fn assert_run_matches(
    what: &str,
    run: &Run,
    expected: &[Prediction],
    bits: bool,
    labels: &[u8],
) {
    let bad = mismatches(run, expected, bits);
    assert!(
        bad.is_empty() && run.exit_code == Some(0),
        "{what}: exit {:?}, {} mismatches (first {:?}):\n{}",
        run.exit_code,
        bad.len(),
        bad.first(),
        run.stdout
    );
    let host_correct = correct(expected, labels);
    assert_eq!(run.accuracy, Some((host_correct, expected.len())));
    let same = if bits { "bit-identical" } else { "identical" };
    eprintln!(
        "{what}: {} predictions {same} to the host, accuracy {host_correct}/{}",
        expected.len(),
        expected.len()
    );
}

/// `cmd`, a nested cargo or make build for another target, without the outer build's
/// settings: they must not leak in (a firmware's `.cargo/config.toml` supplies the linker
/// script through rustflags, which `RUSTFLAGS` would replace).
pub fn without_outer_build_env(cmd: &mut Command) -> &mut Command {
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Images of `expected` whose class is their label.
pub fn correct(expected: &[Prediction], labels: &[u8]) -> usize {
    expected
        .iter()
        .zip(labels)
        .filter(|(p, l)| p.class == usize::from(**l))
        .count()
}

/// Whether `program --version` runs.
pub fn runs(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether the Rust target `triple` is installed.
pub fn target_installed(triple: &str) -> bool {
    Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .args(["--print", "target-libdir", "--target", triple])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .is_some_and(|o| Path::new(String::from_utf8_lossy(&o.stdout).trim()).is_dir())
}

/// True when every `(present, name)` tool is present; otherwise skips `test` with the missing
/// ones and `install` printed (false), or fails when PICODENSE_REQUIRE_QEMU=1, so CI cannot
/// pass by skipping.
pub fn tools_present(tools: &[(bool, &str)], install: &str, test: &str) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(present, _)| !present)
        .map(|&(_, name)| name)
        .collect();
    if missing.is_empty() {
        return true;
    }
    let missing = missing.join(", ");
    assert!(
        std::env::var_os("PICODENSE_REQUIRE_QEMU").is_none_or(|v| v != "1"),
        "PICODENSE_REQUIRE_QEMU=1 but {missing} is missing ({install})"
    );
    eprintln!("skipped: the {test} needs {missing} ({install})");
    false
}
