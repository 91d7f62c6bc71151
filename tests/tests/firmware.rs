//! The Cortex-M4 firmware (`core/firmware`) under QEMU must predict exactly what the host
//! predicts from the same model file: int8 logits bit for bit, f32 classes (and logit bits).
//!
//! One model is trained here through the core API (Fashion-MNIST from
//! /usr/share/datasets/fashion-mnist when present, else a generated task), exported as f32 and
//! int8, and the firmware is built with each file and 100 test images embedded, then run on
//! mps2-an386 (f32, int8) and netduinoplus2 (int8). A firmware that reports one wrong class
//! must be caught (the negative control).
//!
//! Needs `qemu-system-arm` and the `thumbv7em-none-eabihf` target; without them the tests are
//! skipped with the reason printed, or fail when PICODENSE_REQUIRE_QEMU=1 (as `.ci/run` sets).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use picodense_core::gemm::{Kernel, Scratch, Serial};
use picodense_core::quant::{self, Calibration};
use picodense_core::{Compute, MnistWorkspace};
use picodense_tests::{
    INPUTS, OUTPUTS, Prediction, Run, Trained, assert_run_matches, datasets, f32_predictions,
    int8_predictions, mismatches, run_qemu, runs, target_installed, trained,
    without_outer_build_env, zeroed,
};

/// Everything the firmware runs share, made once.
struct Fixture {
    dir: PathBuf,
    f32_model: PathBuf,
    int8_model: PathBuf,
    images: PathBuf,
    f32_expected: Vec<Prediction>,
    int8_expected: Vec<Prediction>,
    /// Classes of `Mlp::forward` with the naive and the portable kernel (the same bits).
    forward_naive: Vec<usize>,
    forward_portable: Vec<usize>,
    labels: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let Trained {
            model,
            test,
            f32_bytes,
            int8_bytes,
            ..
        } = trained();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("firmware-fixture");
        fs::create_dir_all(&dir).unwrap();

        let mut images = test.images.concat();
        images.extend_from_slice(&test.labels);
        let paths = [
            ("model-f32.pdn", &f32_bytes),
            ("model-int8.pdn", &int8_bytes),
            ("images.bin", &images),
        ]
        .map(|(name, bytes)| {
            let path = dir.join(name);
            fs::write(&path, bytes).unwrap();
            path
        });

        let f32_expected = f32_predictions(&f32_bytes, &test.images);
        let int8_expected = int8_predictions(&int8_bytes, &test.images);
        let forward = |kernel: Kernel| -> Vec<usize> {
            let mut ws = zeroed::<MnistWorkspace>();
            let mut scratch = zeroed::<Scratch>();
            let mut compute = Compute::new(kernel, &Serial, std::slice::from_mut(&mut *scratch));
            let x: Vec<[f32; INPUTS]> = test
                .images
                .iter()
                .map(|im| im.map(quant::unit_pixel))
                .collect();
            let logits = model.forward(&x, &mut ws, &mut compute);
            logits
                .iter()
                .map(|z| picodense_core::loss::argmax(z))
                .collect()
        };
        let [f32_model, int8_model, images] = paths;
        Fixture {
            dir,
            f32_model,
            int8_model,
            images,
            f32_expected,
            int8_expected,
            forward_naive: forward(Kernel::NAIVE),
            forward_portable: forward(Kernel::PORTABLE),
            labels: test.labels,
        }
    })
}

/// The fixture, when the tools the test needs are present (else the test is skipped).
fn ready() -> Option<&'static Fixture> {
    tools_present().then(fixture)
}

/// Whether QEMU and the thumbv7em target are here (else skipped, or failed in CI).
fn tools_present() -> bool {
    tools_present_for("thumbv7em-none-eabihf")
}

/// [`tools_present`] for the Rust target `triple`.
fn tools_present_for(triple: &str) -> bool {
    let target = format!("the {triple} target");
    picodense_tests::tools_present(
        &[
            (runs("qemu-system-arm"), "qemu-system-arm"),
            (target_installed(triple), &target),
        ],
        &format!("apt-get install qemu-system-arm; rustup target add {triple}"),
        "firmware test",
    )
}

#[derive(Clone, Copy, Debug)]
enum Board {
    An386,
    Netduino,
    /// BBC micro:bit: a Cortex-M0 (thumbv6m, no DSP instructions).
    Microbit,
}

impl Board {
    /// The Rust target of the board's CPU.
    fn target(self) -> &'static str {
        match self {
            Board::Microbit => "thumbv6m-none-eabi",
            _ => "thumbv7em-none-eabihf",
        }
    }

    fn feature(self) -> &'static str {
        match self {
            Board::An386 => "board-an386",
            Board::Netduino => "board-netduino",
            Board::Microbit => "board-microbit",
        }
    }

    fn qemu_machine(self) -> &'static [&'static str] {
        match self {
            Board::An386 => &["-cpu", "cortex-m4", "-machine", "mps2-an386"],
            Board::Netduino => &["-machine", "netduinoplus2"],
            Board::Microbit => &["-machine", "microbit"],
        }
    }
}

/// Builds the firmware with `model` and the test images embedded (and the expected classes, for
/// its own verdict), copies the ELF to a name of its own and returns that path.
fn build(board: Board, model: &Path, expected: &[Prediction], extra_features: &[&str]) -> PathBuf {
    // One target dir for every build (dependencies compile once); builds take turns so an ELF
    // is copied before the next build overwrites it.
    static BUILD: Mutex<()> = Mutex::new(());
    let _turn = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let fx = fixture();
    let name = format!(
        "{}-{}{}",
        model.file_stem().unwrap().to_string_lossy(),
        board.feature(),
        extra_features
            .iter()
            .map(|f| format!("-{f}"))
            .collect::<String>()
    );
    let expected_path = fx.dir.join(format!("{name}.expected"));
    let classes: Vec<u8> = expected.iter().map(|p| p.class as u8).collect();
    fs::write(&expected_path, classes).unwrap();
    let firmware = Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/firmware");
    let target_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("firmware-target");
    let mut features = vec![board.feature()];
    // The default `dsp` kernel needs a Cortex-M4's DSP instructions.
    if !matches!(board, Board::Microbit) {
        features.push("dsp");
    }
    features.extend_from_slice(extra_features);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&firmware)
        .args(["build", "--release", "--target", board.target()])
        .arg("--no-default-features")
        .arg("--features")
        .arg(features.join(","))
        .arg("--target-dir")
        .arg(&target_dir)
        .env("PICODENSE_FW_MODEL", model)
        .env("PICODENSE_FW_IMAGES", &fx.images)
        .env("PICODENSE_FW_EXPECTED", &expected_path);
    without_outer_build_env(&mut cmd);
    let start = Instant::now();
    let out = cmd.output().expect("run cargo");
    assert!(
        out.status.success(),
        "firmware build {name} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("built firmware {name} in {:.1?}", start.elapsed());
    let elf = target_dir
        .join(board.target())
        .join("release/picodense-firmware");
    let copy = fx.dir.join(format!("{name}.elf"));
    fs::copy(elf, &copy).unwrap();
    copy
}

fn run(board: Board, elf: &Path) -> Run {
    run_qemu(board.qemu_machine(), elf)
}

fn check_matches(board: Board, model: &Path, expected: &[Prediction], bits: bool) -> Run {
    let elf = build(board, model, expected, &[]);
    let run = run(board, &elf);
    let what = format!("firmware {} on {board:?}", model.display());
    assert_run_matches(&what, &run, expected, bits, &fixture().labels);
    run
}

#[test]
fn firmware_int8_on_an386_matches_host_bit_for_bit() {
    let Some(fx) = ready() else { return };
    let run = check_matches(Board::An386, &fx.int8_model, &fx.int8_expected, true);
    // Negative control of the host-side comparison: the same report against expectations with
    // image 3's class altered is a mismatch there.
    let mut altered = fx.int8_expected.clone();
    altered[3].class = (altered[3].class + 1) % OUTPUTS;
    assert_eq!(mismatches(&run, &altered, true), vec![3]);
}

#[test]
fn firmware_int8_on_netduinoplus2_matches_host_bit_for_bit() {
    let Some(fx) = ready() else { return };
    check_matches(Board::Netduino, &fx.int8_model, &fx.int8_expected, true);
}

#[test]
fn firmware_f32_on_an386_matches_host() {
    let Some(fx) = ready() else { return };
    // The logits are bit-exact with the host's F32View (same order of operations, IEEE f32 on
    // both; `check_matches` compares them with `f32_expected`). The products of the forward
    // pass fuse each multiply-add, every kernel alike, so theirs may differ in the last bits
    // from F32View's separate multiplies and adds: a class at most, on a near tie.
    check_matches(Board::An386, &fx.f32_model, &fx.f32_expected, true);
    assert_eq!(
        fx.forward_naive, fx.forward_portable,
        "naive and portable kernels differ"
    );
    let firmware: Vec<usize> = fx.f32_expected.iter().map(|p| p.class).collect();
    let differ = firmware
        .iter()
        .zip(&fx.forward_naive)
        .filter(|(a, b)| a != b)
        .count();
    assert!(
        differ <= 1,
        "{differ} classes differ from the forward pass's kernels"
    );
}

#[test]
fn firmware_negative_control_is_caught() {
    let Some(fx) = ready() else { return };
    // A firmware that reports one wrong class: both its own check against the embedded expected
    // classes (exit code) and the host-side comparison must fail.
    let elf = build(
        Board::An386,
        &fx.int8_model,
        &fx.int8_expected,
        &["flip-first"],
    );
    let run = run(Board::An386, &elf);
    assert_eq!(run.exit_code, Some(1), "{}", run.stdout);
    assert_eq!(mismatches(&run, &fx.int8_expected, true), vec![0]);
    assert!(run.stdout.contains("mismatches 1/100"), "{}", run.stdout);
}

/// Networks for parts with little flash, trained by the host's run-time-shaped trainer and
/// quantised with the run-time encoder: their int8 images fit in 64 KiB, and on netduinoplus2
/// (the firmware reads the layers from the file) the predictions equal the host's bit for bit.
fn small_int8_matches_host(board: Board, hidden: &[usize]) {
    use picodense::model::ModelMeta;
    use picodense::train::{RunControl, TrainConfig, Trainer};
    use picodense_core::{Layers, Shape};

    if !tools_present_for(board.target()) {
        return;
    }
    let fx = fixture();
    let (train_data, test, _) = datasets();
    let config = TrainConfig {
        epochs: 3,
        hidden: hidden.to_vec(),
        ..TrainConfig::default()
    };
    let shape = Shape::new(INPUTS, hidden, OUTPUTS).unwrap();
    let mut trainer = Trainer::new(&config, shape, ModelMeta::default()).unwrap();
    let data = picodense::data::Dataset::from_images(
        INPUTS,
        train_data.images.concat(),
        train_data.labels.clone(),
    );
    trainer
        .fit(&config, &data, None, &RunControl::none(), &mut |_| {})
        .unwrap();
    let layers: Layers<&[f32]> = trainer.network.layers();
    let mut calibration = Calibration::new();
    let widest = shape.widest_hidden();
    let (mut a, mut b, mut logits) = (vec![0.0; widest], vec![0.0; widest], [0.0f32; OUTPUTS]);
    for image in &train_data.images[..500] {
        calibration.observe_into(&layers, image, [&mut a, &mut b], &mut logits);
    }
    let len = quant::encoded_len_of(shape).unwrap();
    assert!(len <= 64 * 1024, "{shape} int8 is {len} bytes");
    let mut bytes = vec![0u8; len];
    quant::encode_layers(&layers, &calibration, 2, &mut bytes).unwrap();
    let path = fx.dir.join(format!("model-{shape}-int8.pdn"));
    fs::write(&path, &bytes).unwrap();

    let expected = int8_predictions(&bytes, &test.images);
    check_matches(board, &path, &expected, true);
}

#[test]
fn firmware_int8_784_64_10_on_netduinoplus2_matches_host_bit_for_bit() {
    small_int8_matches_host(Board::Netduino, &[64]);
}

#[test]
fn firmware_int8_784_64_32_10_on_netduinoplus2_matches_host_bit_for_bit() {
    small_int8_matches_host(Board::Netduino, &[64, 32]);
}

/// A Cortex-M0 (micro:bit: 256 KiB flash, 16 KiB RAM, no DSP instructions, no atomic
/// read-modify-write) runs the 784-64-10 int8 model with the portable kernel, bit for bit as the
/// host.
#[test]
fn firmware_int8_784_64_10_on_microbit_cortex_m0_matches_host_bit_for_bit() {
    small_int8_matches_host(Board::Microbit, &[64]);
}
