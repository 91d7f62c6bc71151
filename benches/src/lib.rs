//! Shared pieces of the criterion benchmarks in `benches/`: the products' operands, MNIST-like
//! synthetic data (from `picodense-support`), the kernels this CPU runs, a thread-CPU-time measurement for
//! single-thread runs, and the groups every benchmark runs on one and on two threads.

use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use picodense_core::{Kernel, PanelState, Panels};
use picodense_support::Noise;

pub use criterion;
pub use picodense_support::{PIXELS, synthetic_mnist};

/// `len` values uniform in `[-1, 1)`: the products' dense operands.
pub fn uniform(len: usize, seed: u64) -> Vec<f32> {
    Noise::new(seed).floats(len, -1.0, 1.0)
}

/// X for `images` MNIST-like images, pixels / 255, one image a row: the products' sparse A.
pub fn mnist_rows(images: usize) -> Vec<f32> {
    let (pixels, _) = synthetic_mnist(images, 3);
    pixels.iter().map(|&p| f32::from(p) / 255.0).collect()
}

/// `b` (`rows x cols`, row-major) in `kernel`'s panels ([`MatRef::panels`]), and their width:
/// the layout in which training keeps W1 between steps ([`Panels`]), so that its forward
/// product reads B in place. `cols` is a multiple of the kernel's panel width.
///
/// [`MatRef::panels`]: picodense_core::gemm::MatRef::panels
pub fn in_panels(b: &[f32], rows: usize, cols: usize, kernel: Kernel) -> (Vec<f32>, usize) {
    let width = kernel.panel_width(cols);
    assert!(
        cols.is_multiple_of(width),
        "{cols} columns: not whole panels"
    );
    let mut values = vec![0.0; rows * cols];
    let mut state = PanelState::default();
    Panels::new(&mut values, &mut state).copy_from(b, rows, cols, kernel);
    (values, width)
}

/// The AVX2 kernel, if this CPU runs it.
pub fn avx2() -> Option<Kernel> {
    #[cfg(target_arch = "x86_64")]
    return Kernel::avx2();
    #[cfg(not(target_arch = "x86_64"))]
    None
}

/// The AVX-512 kernel, if this CPU runs it.
pub fn avx512() -> Option<Kernel> {
    #[cfg(target_arch = "x86_64")]
    return Kernel::avx512();
    #[cfg(not(target_arch = "x86_64"))]
    None
}

/// `main` for a benchmark `fn(&mut Criterion<M>, threads)`: a group `single` that runs it on
/// one thread measured in the thread's CPU time, and a group `threads` on two threads in wall
/// time. No plots: they need system fonts, and the figures are what matters here.
#[macro_export]
macro_rules! one_and_two_threads {
    ($bench:path) => {
        fn one_thread(c: &mut $crate::criterion::Criterion<$crate::ThreadCpuTime>) {
            $bench(c, 1);
        }
        fn two_threads(c: &mut $crate::criterion::Criterion) {
            $bench(c, 2);
        }
        $crate::criterion::criterion_group! {
            name = single;
            config = $crate::criterion::Criterion::default()
                .without_plots()
                .with_measurement($crate::ThreadCpuTime);
            targets = one_thread
        }
        $crate::criterion::criterion_group! {
            name = threads;
            config = $crate::criterion::Criterion::default().without_plots();
            targets = two_threads
        }
        $crate::criterion::criterion_main!(single, threads);
    };
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
}
