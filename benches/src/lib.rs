//! Shared pieces of the criterion benchmarks in `benches/`: MNIST-like synthetic data and a
//! thread-CPU-time measurement for single-thread runs.

use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};

/// Pixels in one 28 x 28 image.
pub const PIXELS: usize = 784;

/// A small xorshift generator, so the data needs no extra dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in `[lo, hi)`.
    fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }
}

/// A stroke from `(x0, y0)` to `(x1, y1)` in pixel coordinates.
#[derive(Clone, Copy)]
struct Stroke([f32; 4]);

/// Images that look like MNIST to the arithmetic: 28 x 28 `u8`, a few thick pen strokes in the
/// central 20 x 20 box on a zero background (about 17% of the pixels nonzero, MNIST has 19%;
/// blank margins), one stroke template per class with per-image jitter so classes are learnable.
/// Returns `count * 784` pixels and `count` labels.
pub fn synthetic_mnist(count: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let templates: Vec<Vec<Stroke>> = (0..10)
        .map(|_| {
            let strokes = 4 + (rng.next() % 3) as usize;
            (0..strokes)
                .map(|_| Stroke([0; 4].map(|_| rng.range(9.0, 19.0))))
                .collect()
        })
        .collect();
    let mut images = vec![0u8; count * PIXELS];
    let mut labels = Vec::with_capacity(count);
    for image in images.chunks_exact_mut(PIXELS) {
        let label = (rng.next() % 10) as u8;
        labels.push(label);
        let (dx, dy) = (rng.range(-2.0, 2.0), rng.range(-2.0, 2.0));
        let pen = rng.range(1.9, 2.7);
        let strokes: Vec<Stroke> = templates[usize::from(label)]
            .iter()
            .map(|s| {
                let [x0, y0, x1, y1] = s.0;
                Stroke([
                    x0 + dx + rng.range(-1.0, 1.0),
                    y0 + dy + rng.range(-1.0, 1.0),
                    x1 + dx + rng.range(-1.0, 1.0),
                    y1 + dy + rng.range(-1.0, 1.0),
                ])
            })
            .collect();
        for (index, pixel) in image.iter_mut().enumerate() {
            let (x, y) = ((index % 28) as f32, (index / 28) as f32);
            let d = strokes
                .iter()
                .map(|s| distance(s, x, y))
                .fold(f32::INFINITY, f32::min);
            // Solid core, one pixel of anti-aliased edge.
            let ink = (pen + 0.5 - d).clamp(0.0, 1.0);
            *pixel = (ink * 255.0 + 0.5) as u8;
        }
    }
    (images, labels)
}

/// Distance from `(x, y)` to the segment.
fn distance(s: &Stroke, x: f32, y: f32) -> f32 {
    let [x0, y0, x1, y1] = s.0;
    let (vx, vy) = (x1 - x0, y1 - y0);
    let len2 = (vx * vx + vy * vy).max(1e-6);
    let t = (((x - x0) * vx + (y - y0) * vy) / len2).clamp(0.0, 1.0);
    let (px, py) = (x0 + t * vx - x, y0 + t * vy - y);
    (px * px + py * py).sqrt()
}

/// Criterion measurement of the CPU time of the benchmarking thread: on a shared machine, time
/// the thread spends descheduled while other processes run does not count. Only meaningful for
/// work done on that one thread; multi-threaded runs use wall time.
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadCpuTime;

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        thread_cpu_time()
    }

    fn end(&self, start: Duration) -> Duration {
        thread_cpu_time().saturating_sub(start)
    }

    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }

    fn zero(&self) -> Duration {
        Duration::ZERO
    }

    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        // Same unit (nanoseconds) as wall time, so the same formatting.
        static WALL: WallTime = WallTime;
        WALL.formatter()
    }
}

/// CPU time consumed so far by the calling thread.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
pub fn thread_cpu_time() -> Duration {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    unsafe extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec (64-bit Linux layout) for the call.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.sec as u64, ts.nsec as u32)
}

/// Elsewhere: wall time since the first call (no portable per-thread CPU clock in std).
#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
pub fn thread_cpu_time() -> Duration {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_cpu_time_advances_with_work() {
        let start = thread_cpu_time();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        assert!(thread_cpu_time() > start, "{x}");
    }

    #[test]
    fn synthetic_images_are_sparse_like_mnist() {
        let (images, labels) = synthetic_mnist(2000, 1);
        assert_eq!(images.len(), 2000 * PIXELS);
        assert!(labels.iter().all(|&l| l < 10));
        let nonzero = images.iter().filter(|&&p| p > 0).count() as f64 / images.len() as f64;
        assert!((0.14..0.26).contains(&nonzero), "{nonzero}");
        // Blank margins: the outer two rows and columns never get ink.
        for image in images.chunks_exact(PIXELS) {
            for (index, &p) in image.iter().enumerate() {
                let (x, y) = (index % 28, index / 28);
                if x < 2 || y < 2 || x > 25 || y > 25 {
                    assert_eq!(p, 0, "pixel {x},{y}");
                }
            }
        }
    }
}
