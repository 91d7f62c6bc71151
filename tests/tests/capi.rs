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
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use picodense_core::format;
use picodense_core::kernels::{Kernel, Scratch, Serial};
use picodense_core::quant::{self, Calibration, F32View, Int8View};
use picodense_core::{Batch, Compute, MnistMlp, MnistWorkspace, RmsProp, Zeroable};
use rand_core::{Rng, SeedableRng};
use rand_xorshift::XorShiftRng;

const INPUTS: usize = 784;
const HIDDEN: usize = 512;
const OUTPUTS: usize = 10;
const TEST_IMAGES: usize = 100;
const TRAIN_IMAGES: usize = 6000;
const FASHION: &str = "/usr/share/datasets/fashion-mnist";

fn zeroed<T: Zeroable>() -> Box<T> {
    // SAFETY: `Zeroable` promises that all-zero bytes are a valid `T`.
    unsafe { Box::<T>::new_zeroed().assume_init() }
}

/// Images (u8 pixels) and labels.
struct Data {
    images: Vec<[u8; INPUTS]>,
    labels: Vec<u8>,
}

/// The first `n` images and labels of an IDX pair (gzip).
fn read_idx(images: &Path, labels: &Path, n: usize) -> std::io::Result<Data> {
    let read = |path: &Path, header: usize, len: usize| -> std::io::Result<Vec<u8>> {
        let mut gz = flate2::read::GzDecoder::new(fs::File::open(path)?);
        let mut buf = vec![0u8; header + len];
        gz.read_exact(&mut buf)?;
        Ok(buf.split_off(header))
    };
    let pixels = read(images, 16, n * INPUTS)?;
    let labels = read(labels, 8, n)?;
    let images = pixels
        .chunks_exact(INPUTS)
        .map(|c| c.try_into().unwrap())
        .collect();
    Ok(Data { images, labels })
}

/// Ten classes, each a bright stroke through its own region of a 28x28 image, with noise.
fn generated(seed: u64, n: usize) -> Data {
    let mut rng = XorShiftRng::seed_from_u64(seed);
    let mut data = Data {
        images: Vec::new(),
        labels: Vec::new(),
    };
    for _ in 0..n {
        let label = (rng.next_u32() % 10) as usize;
        let mut image = [0u8; INPUTS];
        for (i, p) in image.iter_mut().enumerate() {
            let (r, c) = (i / 28, i % 28);
            let on = match label {
                0..=4 => r / 5 == label && c % 3 != 0,
                _ => c / 5 == label - 5 && r % 3 != 0,
            };
            let noise = (rng.next_u32() % 256) as u8;
            *p = if on {
                noise.saturating_add(60)
            } else if noise > 200 {
                noise - 60
            } else {
                0
            };
        }
        data.images.push(image);
        data.labels.push(label as u8);
    }
    data
}

/// Training and test images, and where they came from.
fn datasets() -> (Data, Data, &'static str) {
    let file = |name: &str| Path::new(FASHION).join(name);
    if file("train-images-idx3-ubyte.gz").exists() {
        let train = read_idx(
            &file("train-images-idx3-ubyte.gz"),
            &file("train-labels-idx1-ubyte.gz"),
            TRAIN_IMAGES,
        )
        .expect("read Fashion-MNIST training set");
        let test = read_idx(
            &file("t10k-images-idx3-ubyte.gz"),
            &file("t10k-labels-idx1-ubyte.gz"),
            TEST_IMAGES,
        )
        .expect("read Fashion-MNIST test set");
        (train, test, "Fashion-MNIST")
    } else {
        (
            generated(1, TRAIN_IMAGES),
            generated(2, TEST_IMAGES),
            "generated",
        )
    }
}

/// A 784-512-10 model after three quick epochs.
fn train(data: &Data) -> Box<MnistMlp> {
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
    for _epoch in 0..3 {
        for (x, y) in images.chunks(128).zip(data.labels.chunks(128)) {
            let batch = Batch::new(x.as_flattened(), y);
            model.train_step(&mut *optimizer, batch, None, &mut ws, &mut compute);
        }
    }
    model
}

/// One image's class and logits as exact bits (int32 for int8, f32 bits for f32).
#[derive(Clone, Debug, PartialEq)]
struct Prediction {
    class: usize,
    logits: Vec<u32>,
}

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
        let (train_data, test, source) = datasets();
        let start = Instant::now();
        let model = train(&train_data);
        eprintln!(
            "trained 784-512-10 on {TRAIN_IMAGES} {source} images in {:.1?}",
            start.elapsed()
        );
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("capi-fixture");

        let sections = format::Sections {
            dataset: 2,
            ..Default::default()
        };
        let mut f32_bytes = vec![0u8; format::encoded_len(MnistMlp::shape(), &sections)];
        format::encode(&model.layers(), &sections, &mut f32_bytes).unwrap();
        let calibration = Calibration::from_images(&*model, &train_data.images[..500]);
        let mut int8_bytes = vec![0u8; quant::encoded_len::<INPUTS, HIDDEN, OUTPUTS>()];
        quant::encode(&*model, &calibration, 2, &mut int8_bytes).unwrap();

        let images = images_h(&test, source);
        let case = |name: &str, bytes: &[u8], dtype: &str, expected| {
            let data = dir.join(name);
            fs::create_dir_all(&data).unwrap();
            let header = picodense::export::c_header(bytes, MnistMlp::shape(), dtype);
            fs::write(data.join("model.h"), header).unwrap();
            fs::write(data.join("images.h"), &images).unwrap();
            Case { data, expected }
        };

        let int8_view = Int8View::parse(&int8_bytes).unwrap();
        let mut scratch = vec![0u32; int8_view.scratch_words()];
        let int8_expected = test
            .images
            .iter()
            .map(|image| {
                let mut q = [0i32; OUTPUTS];
                let class = int8_view.predict(image, &mut scratch, &mut q);
                Prediction {
                    class,
                    logits: q.iter().map(|&v| v as u32).collect(),
                }
            })
            .collect();
        let f32_view = F32View::parse(&f32_bytes).unwrap();
        let f32_expected = test
            .images
            .iter()
            .map(|image| {
                let (mut h, mut z) = (vec![0.0f32; HIDDEN], [0.0f32; OUTPUTS]);
                let class = f32_view.predict(&image.map(quant::unit_pixel), &mut h, &mut z);
                Prediction {
                    class,
                    logits: z.iter().map(|v| v.to_bits()).collect(),
                }
            })
            .collect();
        Fixture {
            int8: case("int8", &int8_bytes, "int8", int8_expected),
            f32: case("f32", &f32_bytes, "f32", f32_expected),
            labels: test.labels,
        }
    })
}

/// Whether `program --version` runs.
fn runs(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Returns false (skip, with the reason printed) when a tool is missing; fails instead when
/// PICODENSE_REQUIRE_QEMU=1, so CI cannot pass by skipping.
fn tools_present() -> bool {
    let target = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .args([
            "--print",
            "target-libdir",
            "--target",
            "thumbv7em-none-eabihf",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .is_some_and(|o| Path::new(String::from_utf8_lossy(&o.stdout).trim()).is_dir());
    // newlib: the C library the example links (-specs=nano.specs).
    let newlib = Command::new("arm-none-eabi-gcc")
        .args(["-print-file-name=libc_nano.a"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .is_some_and(|o| Path::new(String::from_utf8_lossy(&o.stdout).trim()).is_absolute());
    let missing: Vec<&str> = [
        (runs("qemu-system-arm"), "qemu-system-arm"),
        (runs("arm-none-eabi-gcc"), "arm-none-eabi-gcc"),
        (newlib, "newlib for arm-none-eabi"),
        (runs("make"), "make"),
        (target, "the thumbv7em-none-eabihf target"),
    ]
    .into_iter()
    .filter(|(present, _)| !present)
    .map(|(_, name)| name)
    .collect();
    if missing.is_empty() {
        return true;
    }
    let missing = missing.join(", ");
    let install = "apt-get install qemu-system-arm gcc-arm-none-eabi libnewlib-arm-none-eabi \
                   make; rustup target add thumbv7em-none-eabihf";
    assert!(
        std::env::var_os("PICODENSE_REQUIRE_QEMU").is_none_or(|v| v != "1"),
        "PICODENSE_REQUIRE_QEMU=1 but {missing} is missing ({install})"
    );
    eprintln!("skipped: the C API firmware test needs {missing} ({install})");
    false
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
    // The outer build's settings must not leak into the staticlib's.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
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
struct Run {
    exit_code: Option<i32>,
    stdout: String,
    predictions: Vec<Prediction>,
    accuracy: Option<(usize, usize)>,
}

fn run(elf: &Path) -> Run {
    let mut child = Command::new("qemu-system-arm")
        .args(["-cpu", "cortex-m4", "-machine", "mps2-an386", "-nographic"])
        .args(["-semihosting-config", "enable=on,target=native", "-kernel"])
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
    // A firmware that hangs must not hang the test.
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

/// Indices where the firmware's report differs from the host's (class or logit bits), and
/// every extra report.
fn mismatches(run: &Run, expected: &[Prediction]) -> Vec<usize> {
    let mut bad: Vec<usize> = (0..expected.len())
        .filter(|&i| run.predictions.get(i) != Some(&expected[i]))
        .collect();
    bad.extend(expected.len()..run.predictions.len());
    bad
}

fn check_matches(case: &Case) -> Run {
    let elf = build(case);
    let run = run(&elf);
    let bad = mismatches(&run, &case.expected);
    assert!(
        bad.is_empty() && run.exit_code == Some(0),
        "C example {}: exit {:?}, {} mismatches (first {:?}):\n{}",
        case.data.display(),
        run.exit_code,
        bad.len(),
        bad.first(),
        run.stdout
    );
    let host_correct = case
        .expected
        .iter()
        .zip(&fixture().labels)
        .filter(|(p, l)| p.class == usize::from(**l))
        .count();
    assert_eq!(run.accuracy, Some((host_correct, TEST_IMAGES)));
    eprintln!(
        "C example {}: {TEST_IMAGES} of {TEST_IMAGES} predictions bit-identical to the host, \
         accuracy {host_correct}/{TEST_IMAGES}",
        case.data.display()
    );
    run
}

#[test]
fn c_example_int8_matches_host_bit_for_bit() {
    if !tools_present() {
        return;
    }
    let fx = fixture();
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
    assert_eq!(mismatches(&run, &altered), vec![5]);
}

#[test]
fn c_example_f32_matches_host_bit_for_bit() {
    if !tools_present() {
        return;
    }
    check_matches(&fixture().f32);
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
