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
