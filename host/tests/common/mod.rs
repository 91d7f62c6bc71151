//! Helpers shared by the end-to-end tests: the binary, its output, and IDX files to feed it.
#![allow(dead_code)] // each test crate uses its own subset

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

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

/// A temporary path as an argument.
pub fn s(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// Pseudo-random bytes from a seed (no dependency on the code under test).
pub struct Noise(pub u64);

impl Noise {
    /// The next xorshift draw.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// An IDX image file of 28 x 28 images.
pub fn idx_images(pixels: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 8, 3];
    out.extend(((pixels.len() / 784) as u32).to_be_bytes());
    out.extend(28u32.to_be_bytes());
    out.extend(28u32.to_be_bytes());
    out.extend(pixels);
    out
}

/// An IDX label file.
pub fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 8, 1];
    out.extend((labels.len() as u32).to_be_bytes());
    out.extend(labels);
    out
}

/// `bytes` gzipped.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// `count` images where class `c` draws a bright 4x4 block at a class-specific place over faint
/// noise (learnable, so the weights keep changing from step to step), and their labels.
pub fn block_images(count: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let mut noise = Noise(seed | 1);
    let mut pixels = vec![0u8; count * 784];
    let mut labels = Vec::with_capacity(count);
    for (i, image) in pixels.chunks_mut(784).enumerate() {
        let label = (noise.next() % 10) as u8;
        labels.push(label);
        let (row0, col0) = (2 + 10 * (label as usize / 5), 2 + 5 * (label as usize % 5));
        for (p, v) in image.iter_mut().enumerate() {
            *v = (noise.next() % 60) as u8;
            let (r, c) = (p / 28, p % 28);
            if (row0..row0 + 4).contains(&r) && (col0..col0 + 4).contains(&c) {
                *v = 200 + (i % 50) as u8;
            }
        }
    }
    (pixels, labels)
}

/// Writes the dataset folder `dir/name` from (pixels, labels) pairs: the training files
/// gzipped and the test files raw, so that every run reads both forms.
pub fn write_dataset(
    dir: &Path,
    name: &str,
    train: (Vec<u8>, Vec<u8>),
    test: (Vec<u8>, Vec<u8>),
) -> std::path::PathBuf {
    let data = dir.join(name);
    std::fs::create_dir_all(&data).unwrap();
    let write = |file: &str, bytes: Vec<u8>| std::fs::write(data.join(file), bytes).unwrap();
    write("train-images-idx3-ubyte.gz", gzip(&idx_images(&train.0)));
    write("train-labels-idx1-ubyte.gz", gzip(&idx_labels(&train.1)));
    write("t10k-images-idx3-ubyte", idx_images(&test.0));
    write("t10k-labels-idx1-ubyte", idx_labels(&test.1));
    data
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

/// Where Debian's `dataset-fashion-mnist` installs.
pub const FASHION: &str = "/usr/share/datasets/fashion-mnist";

/// Skips a real-data test with `reason` printed (returns `None`), or fails when CI requires the
/// real data (`PICODENSE_REQUIRE_REAL_DATA=1`).
pub fn skip_real_data<T>(reason: &str) -> Option<T> {
    let required = std::env::var_os("PICODENSE_REQUIRE_REAL_DATA").is_some_and(|v| v == "1");
    assert!(!required, "PICODENSE_REQUIRE_REAL_DATA=1 but {reason}");
    eprintln!("skipped: {reason}");
    None
}

/// The four files of Debian's Fashion-MNIST, the test labels last.
pub const FASHION_FILES: [&str; 4] = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
];

/// Whether Debian's Fashion-MNIST files are all there; otherwise skipped, or failed in CI.
pub fn have_fashion_mnist() -> bool {
    FASHION_FILES
        .iter()
        .all(|f| Path::new(FASHION).join(f).is_file())
        || skip_real_data::<()>(&format!(
            "{FASHION} is missing (apt-get install dataset-fashion-mnist)"
        ))
        .is_some()
}

/// A model and a checkpoint of one epoch on `data`, written in `dir`: their bytes.
pub fn trained_files(dir: &Path, data: &Path) -> (Vec<u8>, Vec<u8>) {
    let (model, ckpt) = (dir.join("m.pdn"), dir.join("c.pdn"));
    let out = bin()
        .args(["train", "--data", s(data), "--epochs", "1", "--quiet"])
        .args(["--save", s(&model), "--checkpoint", s(&ckpt)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    (std::fs::read(model).unwrap(), std::fs::read(ckpt).unwrap())
}
