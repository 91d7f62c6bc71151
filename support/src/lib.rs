//! Test support shared by the picodense crates' tests, benchmarks and fuzz targets: a seeded
//! generator, synthetic images, writers of the files the host reads, and the checks for real
//! data.
//!
//! It depends on no picodense crate, so every one of them can use it without a cycle, and the
//! files it writes are built from the formats' definitions rather than from the code under test.

mod files;
mod images;

pub use files::*;
pub use images::*;

use std::path::Path;

use rand_core::{Rng, SeedableRng};
use rand_xorshift::XorShiftRng;

/// Pixels in one 28 x 28 image.
pub const PIXELS: usize = 784;

/// Seeded pseudo-random numbers (xorshift), the same on every machine.
pub struct Noise(XorShiftRng);

impl Noise {
    /// A generator for `seed` (any value, zero included).
    pub fn new(seed: u64) -> Self {
        Noise(XorShiftRng::seed_from_u64(seed))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform below `n` (`n > 0`; the bias of the remainder is irrelevant for test data).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A random byte below `n` (`1..=256`).
    pub fn byte(&mut self, n: u32) -> u8 {
        self.below(u64::from(n)) as u8
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }

    /// `len` values uniform in `[lo, hi)`.
    pub fn floats(&mut self, len: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..len).map(|_| self.range(lo, hi)).collect()
    }
}

/// Where Debian's `dataset-fashion-mnist` installs.
pub const FASHION: &str = "/usr/share/datasets/fashion-mnist";

/// The four files of Debian's Fashion-MNIST, the test labels last.
pub const FASHION_FILES: [&str; 4] = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
];

/// Skips a real-data test with `reason` printed (returns `None`), or fails when CI requires the
/// real data (`PICODENSE_REQUIRE_REAL_DATA=1`).
pub fn skip_real_data<T>(reason: &str) -> Option<T> {
    let required = std::env::var_os("PICODENSE_REQUIRE_REAL_DATA").is_some_and(|v| v == "1");
    assert!(!required, "PICODENSE_REQUIRE_REAL_DATA=1 but {reason}");
    eprintln!("skipped: {reason}");
    None
}

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

/// Asserts an error message names the file it is about.
pub fn assert_names(message: &str, path: &Path) {
    let name = path.to_string_lossy();
    assert!(
        message.contains(&*name),
        "error does not name {name}: {message}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_seeded_and_in_range() {
        let draw = |seed| {
            let mut noise = Noise::new(seed);
            (0..100).map(|_| noise.range(-1.0, 1.0)).collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
        assert!(draw(0).iter().all(|v| (-1.0..1.0).contains(v)));
    }
}
