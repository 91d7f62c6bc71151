//! The C example firmware (`core/capi/example`: C, built with arm-none-eabi-gcc, linked with the
//! `picodense-capi` staticlib) under QEMU must predict exactly what the host predicts from the
//! same model: int8 logits bit for bit, f32 logits bit for bit; and the C API must refuse damaged
//! model images with the code naming what failed.
//!
//! One 784-512-10 model is trained here through the core API (Fashion-MNIST from
//! /usr/share/datasets/fashion-mnist when present, else a generated task) and exported as int8
//! and f32 C headers (`picodense::export::c_header`, what `picodense export --out model.h`
//! writes); the firmware is built with each header and 100 test images by the example's
//! Makefile and run on mps2-an386.
//!
//! Needs qemu-system-arm, arm-none-eabi-gcc with newlib, make and the thumbv7em-none-eabihf
//! target; without them the tests are skipped with the reason printed, or fail when
//! PICODENSE_REQUIRE_QEMU=1 (as `.ci/run` sets).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use picodense::export::ExportFormat;
use picodense_core::MnistMlp;
use picodense_tests::{
    Data, FASHION, INPUTS, Prediction, Run, Trained, assert_run_matches, f32_predictions,
    int8_predictions, mismatches, read_idx, run_qemu, runs, target_installed, trained,
    without_outer_build_env,
};

/// A model exported as a C header, in a folder of its own beside the images.
struct Case {
    /// Holds `model.h` and `images.h`: the example's `DATA`.
    data: PathBuf,
    expected: Vec<Prediction>,
}

struct Fixture {
    int8: Case,
    f32: Case,
    labels: Vec<u8>,
}

/// `images.h` as `core/capi/example/tools/images-h.sh` writes it.
fn images_h(data: &Data, source: &str) -> String {
    let n = data.images.len();
    let mut out = format!(
        "/* {n} images of {INPUTS} pixels and their labels, from {source}. */\n\
         #ifndef PICODENSE_IMAGES_H\n#define PICODENSE_IMAGES_H\n\n\
         #define PICODENSE_IMAGES_COUNT {n}\n\n\
         static const unsigned char picodense_images[{n}][{INPUTS}] = {{\n"
    );
    let rows = |out: &mut String, bytes: &[u8]| {
        for line in bytes.chunks(16) {
            out.push_str("   ");
            for b in line {
                let _ = write!(out, " {b},");
            }
            out.push('\n');
        }
    };
    for image in &data.images {
        out.push_str("    {\n");
        rows(&mut out, image);
        out.push_str("    },\n");
    }
    let _ = write!(
        out,
        "}};\n\nstatic const unsigned char picodense_labels[{n}] = {{\n"
    );
    rows(&mut out, &data.labels);
    out.push_str("};\n\n#endif /* PICODENSE_IMAGES_H */\n");
    out
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let Trained {
            test,
            source,
            f32_bytes,
            int8_bytes,
            ..
        } = trained();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("capi-fixture");

        let images = images_h(&test, source);
        let case = |name: &str, bytes: &[u8], format, expected| {
            let data = dir.join(name);
            fs::create_dir_all(&data).unwrap();
            let header = picodense::export::c_header(bytes, MnistMlp::shape(), format);
            fs::write(data.join("model.h"), header).unwrap();
            fs::write(data.join("images.h"), &images).unwrap();
            Case { data, expected }
        };

        let int8_expected = int8_predictions(&int8_bytes, &test.images);
        let f32_expected = f32_predictions(&f32_bytes, &test.images);
        Fixture {
            int8: case("int8", &int8_bytes, ExportFormat::Int8, int8_expected),
            f32: case("f32", &f32_bytes, ExportFormat::F32, f32_expected),
            labels: test.labels,
        }
    })
}

/// The fixture, when the tools the test needs are present (else the test is skipped).
fn ready() -> Option<&'static Fixture> {
    tools_present().then(fixture)
}

/// Whether the tools the C example needs are here (else skipped, or failed in CI).
fn tools_present() -> bool {
    // newlib: the C library the example links (-specs=nano.specs).
    let newlib = Command::new("arm-none-eabi-gcc")
        .args(["-print-file-name=libc_nano.a"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .is_some_and(|o| Path::new(String::from_utf8_lossy(&o.stdout).trim()).is_absolute());
    picodense_tests::tools_present(
        &[
            (runs("qemu-system-arm"), "qemu-system-arm"),
            (runs("arm-none-eabi-gcc"), "arm-none-eabi-gcc"),
            (newlib, "newlib for arm-none-eabi"),
            (runs("make"), "make"),
            (
                target_installed("thumbv7em-none-eabihf"),
                "the thumbv7em-none-eabihf target",
            ),
        ],
        "apt-get install qemu-system-arm gcc-arm-none-eabi libnewlib-arm-none-eabi make; \
         rustup target add thumbv7em-none-eabihf",
        "C API firmware test",
    )
}

/// Builds the example with `case`'s model and images (the example's Makefile, which builds the
/// staticlib with cargo first) and returns the ELF.
fn build(case: &Case) -> PathBuf {
    // Builds take turns: they share the staticlib's target dir.
    static BUILD: Mutex<()> = Mutex::new(());
    let _turn = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/capi/example");
    let target_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("capi-target");
    let out = case.data.join("build");
    let mut cmd = Command::new("make");
    cmd.current_dir(&example)
        .arg(format!("DATA={}", case.data.display()))
        .arg(format!("BUILD={}", out.display()))
        .arg(format!("CARGO_TARGET_DIR={}", target_dir.display()))
        .arg(format!(
            "CARGO={}",
            std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
        ));
    without_outer_build_env(&mut cmd);
    let start = Instant::now();
    let result = cmd.output().expect("run make");
    assert!(
        result.status.success(),
        "C example build for {} failed:\n{}{}",
        case.data.display(),
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    eprintln!(
        "built the C example for {} in {:.1?}",
        case.data.display(),
        start.elapsed()
    );
    out.join("picodense-example.elf")
}

/// What a firmware run reported.
fn run(elf: &Path) -> Run {
    run_qemu(&["-cpu", "cortex-m4", "-machine", "mps2-an386"], elf)
}

fn check_matches(case: &Case) -> Run {
    let elf = build(case);
    let run = run(&elf);
    let what = format!("C example {}", case.data.display());
    assert_run_matches(&what, &run, &case.expected, true, &fixture().labels);
    run
}

#[test]
fn c_example_int8_matches_host_bit_for_bit() {
    let Some(fx) = ready() else { return };
    let run = check_matches(&fx.int8);
    // The damaged copies of the model were refused, each with the code naming its fault.
    for (what, code) in [
        ("one flipped bit", "status 7 "),
        ("truncated", "status 2 "),
        ("bad magic", "status 3 "),
        ("intact copy", "status 0 "),
    ] {
        let line = format!("check {what}: {code}");
        assert!(
            run.stdout.lines().any(|l| l.starts_with(&line)),
            "no `{line}` in:\n{}",
            run.stdout
        );
    }
    assert!(run.stdout.contains("scratch 648 words"), "{}", run.stdout);
    // Negative control of the comparison: one altered expectation is one mismatch.
    let mut altered = fx.int8.expected.clone();
    altered[5].logits[2] ^= 1;
    assert_eq!(mismatches(&run, &altered, true), vec![5]);
}

#[test]
fn c_example_f32_matches_host_bit_for_bit() {
    let Some(fx) = ready() else { return };
    check_matches(&fx.f32);
}

/// The example's own images.h writer gives the header this test writes, from the same files.
#[test]
fn images_script_matches_the_test_writer() {
    let (images, labels) = (
        Path::new(FASHION).join("t10k-images-idx3-ubyte.gz"),
        Path::new(FASHION).join("t10k-labels-idx1-ubyte.gz"),
    );
    if !images.exists() {
        eprintln!("skipped: no Fashion-MNIST test set in {FASHION}");
        return;
    }
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/capi/example/tools/images-h.sh");
    let out = Command::new("sh")
        .arg(script)
        .args([&images, &labels])
        .arg("7")
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data = read_idx(&images, &labels, 7).unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        images_h(&data, "t10k-images-idx3-ubyte.gz")
    );
}
