//! Where the core's arithmetic runs: kernel choice from CPU detection, and threads.

use picodense_core::{Kernel, Parallel, Zeroable};

/// Allocates a zeroed `T` directly on the heap (the core's big structs never touch the stack).
pub fn zeroed_box<T: Zeroable>() -> Box<T> {
    // SAFETY: `Zeroable` promises that all-zero bytes are a valid `T`.
    unsafe { Box::<T>::new_zeroed().assume_init() }
}

/// Allocates `len` zeroed `T`s on the heap.
pub fn zeroed_slice<T: Zeroable>(len: usize) -> Box<[T]> {
    // SAFETY: as for `zeroed_box`.
    unsafe { Box::<[T]>::new_zeroed_slice(len).assume_init() }
}

/// The kernel a user asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelChoice {
    /// The fastest kernel this CPU runs.
    Auto,
    /// AVX2 + FMA (x86-64).
    Avx2,
    /// Blocked, plain arithmetic: runs on any CPU.
    Portable,
    /// The reference triple loop (slow; for checking).
    Naive,
}

/// The CPU cannot run the kernel asked for.
#[derive(thiserror::Error, Debug)]
#[error("--kernel avx2: this CPU has no AVX2 + FMA (use --kernel auto or portable)")]
pub struct NoAvx2;

/// Resolves a choice against this CPU.
pub fn select_kernel(choice: KernelChoice) -> Result<Kernel, NoAvx2> {
    match choice {
        KernelChoice::Naive => Ok(Kernel::NAIVE),
        KernelChoice::Portable => Ok(Kernel::PORTABLE),
        KernelChoice::Avx2 => avx2().ok_or(NoAvx2),
        KernelChoice::Auto => Ok(avx2().unwrap_or(Kernel::PORTABLE)),
    }
}

#[cfg(target_arch = "x86_64")]
fn avx2() -> Option<Kernel> {
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: both features were detected on this CPU just above.
        Some(unsafe { Kernel::avx2_unchecked() })
    } else {
        None
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn avx2() -> Option<Kernel> {
    None
}

/// Number of threads to use when the user does not say: every core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs the core's jobs on scoped threads: the first on the calling thread, one new thread per
/// other job. Each job owns whole output columns, so results do not depend on the count.
#[derive(Clone, Copy, Debug)]
pub struct Threads;

impl Parallel for Threads {
    fn run<T: Send>(&self, items: &mut [T], job: &(impl Fn(usize, &mut T) + Sync)) {
        let Some((first, rest)) = items.split_first_mut() else {
            return;
        };
        std::thread::scope(|scope| {
            for (i, item) in rest.iter_mut().enumerate() {
                scope.spawn(move || job(i + 1, item));
            }
            job(0, first);
        });
    }
}
