//! `export --format tflite` run by TensorFlow Lite Micro's and LiteRT's own interpreters on the
//! whole Fashion-MNIST test set: their int8 outputs equal picodense's int8 inference bit for
//! bit, with each runtime's rounding (TFLite Micro's two roundings, picodense's default; LiteRT's
//! wheels are built with one, [`Rounding::Single`]). Needs Debian's `dataset-fashion-mnist` and a Python venv with the PyPI packages
//! `tflite-micro`, `ai-edge-litert` and `numpy` (made here on first use, about 170 MB, in
//! `$PICODENSE_VENV` or the target's temporary folder); skips with the reason when either is
//! missing, unless `PICODENSE_REQUIRE_REAL_DATA=1`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{FASHION, run, s, skip_real_data as skip, text};
use picodense::data::{read_idx_images, read_idx_labels};
use picodense_core::quant::{Int8View, Rounding};

/// The venv's python, made and filled on first use (by one test at a time: the tests run in
/// parallel, and two `venv` runs in one folder fail).
fn interpreters() -> Option<PathBuf> {
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = MAKING.lock().unwrap_or_else(|e| e.into_inner());
    let venv = std::env::var_os("PICODENSE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("tflite-venv"));
    let python = venv.join("bin/python");
    let ready = |python: &Path| {
        Command::new(python)
            .args([
                "-c",
                "import numpy, ai_edge_litert.interpreter; \
                 from tflite_micro.python.tflite_micro import runtime",
            ])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if ready(&python) {
        return Some(python);
    }
    let steps: [(&str, Vec<&str>); 2] = [
        ("python3", vec!["-m", "venv", s(&venv)]),
        (
            s(&python),
            vec![
                "-m",
                "pip",
                "install",
                "-q",
                "tflite-micro",
                "ai-edge-litert",
                "numpy",
            ],
        ),
    ];
    for (program, args) in steps {
        match Command::new(program).args(&args).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                let err = String::from_utf8_lossy(&o.stderr);
                let last = err.lines().last().unwrap_or("");
                return skip(&format!("`{program} {}` failed: {last}", args.join(" ")));
            }
            Err(e) => return skip(&format!("{program}: {e}")),
        }
    }
    if ready(&python) {
        Some(python)
    } else {
        skip("the venv's interpreters do not import")
    }
}

/// Trains a `hidden` network for one epoch, exports it as int8 and as tflite, writes
/// picodense's int8 logits for every test image and has the interpreters compare theirs.
fn bit_exact_on_the_test_set(hidden: &str) {
    if !Path::new(FASHION)
        .join("t10k-images-idx3-ubyte.gz")
        .exists()
    {
        skip::<()>(&format!(
            "{FASHION} is missing (apt-get install dataset-fashion-mnist)"
        ));
        return;
    }
    let Some(python) = interpreters() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let (model, int8, tflite) = (path("m.pdn"), path("m8.pdn"), path("m.tflite"));
    let out = run(&[
        "train",
        "--dataset",
        "fashion-mnist",
        "--hidden",
        hidden,
        "--epochs",
        "1",
        "--quiet",
        "--save",
        s(&model),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    for (format, file) in [("int8", &int8), ("tflite", &tflite)] {
        let out = run(&[
            "export",
            "--model",
            s(&model),
            "--format",
            format,
            "--out",
            s(file),
            "--dataset",
            "fashion-mnist",
        ]);
        assert!(out.status.success(), "{}", text(&out));
    }

    let bytes = std::fs::read(&int8).unwrap();
    let double = Int8View::parse(&bytes).unwrap();
    let single = double.clone().with_rounding(Rounding::Single);
    let fashion = Path::new(FASHION);
    let (images, _) = read_idx_images(&fashion.join("t10k-images-idx3-ubyte.gz")).unwrap();
    let labels = read_idx_labels(&fashion.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    // Each rounding's int8 logits of every image, and its correct classes.
    let classify = |view: &Int8View| {
        let mut scratch = vec![0u32; view.scratch_words()];
        let mut logits = vec![0i32; view.shape().classes()];
        let mut all = Vec::new();
        let mut correct = 0;
        for (image, &label) in images.chunks_exact(784).zip(&labels) {
            let class = view.predict(image, &mut scratch, &mut logits);
            correct += usize::from(class == usize::from(label));
            all.extend(logits.iter().map(|&z| i8::try_from(z).unwrap() as u8));
        }
        (all, correct)
    };
    let (double_logits, double_correct) = classify(&double);
    let (single_logits, single_correct) = classify(&single);
    for (name, data) in [
        ("images.u8", &images),
        ("labels.u8", &labels),
        ("double.i8", &double_logits),
        ("single.i8", &single_logits),
    ] {
        std::fs::write(path(name), data).unwrap();
    }

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/tflite_check.py");
    let out = Command::new(&python)
        .arg(script)
        .args([&tflite, &path("images.u8"), &path("labels.u8")])
        .args([path("double.i8"), path("single.i8")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    eprintln!("{hidden}: {report}");
    let n = labels.len();
    assert_eq!(n, 10_000);
    for (interpreter, correct) in [
        ("tflm", double_correct),
        ("litert", single_correct),
        ("litert_reference", single_correct),
    ] {
        let accuracy = correct as f64 / n as f64;
        let r = &report[interpreter];
        assert_eq!(r["equal"].as_u64(), Some(n as u64), "{interpreter}: {r}");
        assert_eq!(r["accuracy"].as_f64(), Some(accuracy), "{interpreter}");
    }
}

#[test]
fn tflite_outputs_equal_int8_outputs_on_fashion_mnist() {
    bit_exact_on_the_test_set("512");
}

#[test]
fn deep_tflite_outputs_equal_int8_outputs_on_fashion_mnist() {
    bit_exact_on_the_test_set("128,64,32");
}
