//! Where the core's arithmetic runs: kernel choice from CPU detection, and threads.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use picodense_core::{Kernel, Parallel, Serial, Zeroable};

/// Allocates a zeroed `T` directly on the heap (the core's big structs never touch the stack).
pub fn zeroed_box<T: Zeroable>() -> Box<T> {
    // SAFETY: `Zeroable` promises that all-zero bytes are a valid `T`.
    unsafe { Box::<T>::new_zeroed().assume_init() }
}

/// Allocates `len` zeroed `T`s on the heap.
pub fn zeroed_slice<T: Zeroable>(len: usize) -> Box<[T]> {
    // SAFETY: `Zeroable` promises that all-zero bytes are a valid `T`, so of `len` of them.
    unsafe { Box::<[T]>::new_zeroed_slice(len).assume_init() }
}

/// The kernel a user asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelChoice {
    /// The fastest kernel this CPU runs.
    Auto,
    /// AVX-512 F and BW with AVX2 + FMA (x86-64): the same bits as avx2.
    Avx512,
    /// AVX2 + FMA (x86-64).
    Avx2,
    /// Blocked, plain arithmetic with a software fused multiply-add: runs on any CPU, the same
    /// bits as avx2.
    Portable,
    /// The reference triple loop (slow; for checking): the same bits as avx2.
    Naive,
}

/// The CPU cannot run the kernel asked for.
#[derive(thiserror::Error, Debug)]
#[error("--kernel {kernel}: this CPU has no {needs} (use --kernel auto or portable)")]
pub struct Unsupported {
    kernel: &'static str,
    needs: &'static str,
}

/// Resolves a choice against this CPU (the core's detection decides what it runs).
pub fn select_kernel(choice: KernelChoice) -> Result<Kernel, Unsupported> {
    match choice {
        KernelChoice::Naive => Ok(Kernel::NAIVE),
        KernelChoice::Portable => Ok(Kernel::PORTABLE),
        KernelChoice::Avx2 => avx2().ok_or(Unsupported {
            kernel: "avx2",
            needs: "AVX2 + FMA",
        }),
        KernelChoice::Avx512 => avx512().ok_or(Unsupported {
            kernel: "avx512",
            needs: "AVX-512 F + BW + AVX2 + FMA",
        }),
        KernelChoice::Auto => Ok(Kernel::detect()),
    }
}

#[cfg(target_arch = "x86_64")]
fn avx2() -> Option<Kernel> {
    Kernel::avx2()
}

#[cfg(target_arch = "x86_64")]
fn avx512() -> Option<Kernel> {
    Kernel::avx512()
}

#[cfg(not(target_arch = "x86_64"))]
fn avx2() -> Option<Kernel> {
    None
}

#[cfg(not(target_arch = "x86_64"))]
fn avx512() -> Option<Kernel> {
    None
}

/// Number of threads to use when the user does not say: every core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A pool of worker threads that run the core's jobs beside the calling thread.
///
/// Threads start once, not per product: a training step runs five products and the RMSprop
/// update, and starting threads for each costs a large share of a step. Waking a sleeping
/// thread is slow too (a sizeable share of a product), so a worker that finishes a job watches
/// for the next one for a short while ([`SPIN`], yielding its core to any other runnable
/// thread) before it sleeps on a condition variable: during training the next product always
/// comes sooner, and an idle pool costs nothing. Jobs are claimed from a shared counter, so a
/// worker the OS has not scheduled yet never holds the others up; which thread runs a job never
/// changes its result, because each job owns whole columns (or rows) of C.
///
/// This pool, not a library's: in interleaved runs of the 2-thread default training, a rayon
/// pool (the caller waiting in `install`, or claiming beside the workers in `in_place_scope`)
/// took a median 16-21% more wall time on a quiet machine, and `std::thread::scope` per product
/// 45%; rayon's came level only while other processes crowded both cores.
pub struct Threads {
    shared: Arc<Shared>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

/// How long a worker watches for a next job before it sleeps.
pub const SPIN: Duration = Duration::from_micros(500);

struct Shared {
    state: Mutex<State>,
    work_ready: Condvar,
    /// Mirror of `State::generation` that watching workers read without the lock.
    posted: AtomicU64,
    /// Workers inside the current task: its caller may not return (and free it) before 0.
    active: AtomicUsize,
}

#[derive(Default)]
struct State {
    /// Bumped for each batch of jobs, so a worker joins a batch at most once.
    generation: u64,
    /// The batch's claim loop, while its caller runs it; `None` between batches.
    task: Option<Task>,
    /// Workers blocked on `work_ready`.
    sleeping: usize,
    /// A job panicked on a worker.
    panicked: bool,
    shutdown: bool,
}

/// The claim loop of one batch, its lifetime erased: it lives on the stack of the caller of
/// `run`, which does not return before every worker has left it.
#[derive(Clone, Copy)]
struct Task(*const (dyn Fn() + Sync));

// SAFETY: the pointee is `Sync`, and `run` keeps it alive while any worker can reach it.
unsafe impl Send for Task {}

/// The items of one batch, shared between the threads that claim them.
struct Items<T>(*mut T);

// SAFETY: each item is claimed by exactly one thread (a counter hands out each index once), so
// sharing the pointer only ever moves `&mut T` to one thread, which `T: Send` allows.
unsafe impl<T: Send> Sync for Items<T> {}

impl Threads {
    /// `threads` threads in all: the caller and `threads - 1` workers (none for 0 or 1).
    pub fn new(threads: usize) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work_ready: Condvar::new(),
            posted: AtomicU64::new(0),
            active: AtomicUsize::new(0),
        });
        let workers = (1..threads)
            .map(|i| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("picodense-{i}"))
                    .spawn(move || shared.work())
                    .expect("starting a worker thread")
            })
            .collect();
        Self { shared, workers }
    }

    /// Threads in all, the caller included.
    pub fn count(&self) -> usize {
        self.workers.len() + 1
    }
}

/// Waits until `done()` or `limit` has passed, yielding the core to other runnable threads;
/// returns whether `done()` became true.
fn watch(limit: Duration, done: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            if done() {
                return true;
            }
            std::hint::spin_loop();
        }
        if start.elapsed() > limit {
            return done();
        }
        std::thread::yield_now();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Jobs run outside the lock, so a panic never leaves the state half-updated.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A worker's life: wait for a batch, join it, repeat until shutdown.
    fn work(&self) {
        let mut seen = 0;
        loop {
            watch(SPIN, || self.posted.load(Ordering::Acquire) != seen);
            let mut state = self.lock();
            let task = loop {
                if state.shutdown {
                    return;
                }
                match state.task {
                    Some(task) if state.generation != seen => break task,
                    _ => {
                        state.sleeping += 1;
                        state = self
                            .work_ready
                            .wait(state)
                            .unwrap_or_else(|e| e.into_inner());
                        state.sleeping -= 1;
                    }
                }
            };
            seen = state.generation;
            // Under the lock, so the caller (which clears the task under it) sees this worker.
            self.active.fetch_add(1, Ordering::Relaxed);
            drop(state);
            // SAFETY: `run` keeps the task alive until `active` is back to 0.
            let result = catch_unwind(AssertUnwindSafe(|| unsafe { (*task.0)() }));
            if result.is_err() {
                self.lock().panicked = true;
            }
            self.active.fetch_sub(1, Ordering::Release);
        }
    }
}

impl Parallel for Threads {
    fn run<T: Send>(&self, items: &mut [T], job: &(impl Fn(usize, &mut T) + Sync)) {
        if items.len() < 2 || self.workers.is_empty() {
            return Serial.run(items, job);
        }
        let next = AtomicUsize::new(0);
        let (base, len) = (Items(items.as_mut_ptr()), items.len());
        let claim = || {
            let base = &base;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= len {
                    break;
                }
                // SAFETY: `i < len` and the counter hands out each index once.
                job(i, unsafe { &mut *base.0.add(i) });
            }
        };
        let claim: &(dyn Fn() + Sync) = &claim;
        // SAFETY: only the lifetime is erased; this function clears the task and waits for
        // every worker to leave it before `claim` goes out of scope, even if a job panics.
        let task = Task(unsafe {
            std::mem::transmute::<*const (dyn Fn() + Sync + '_), *const (dyn Fn() + Sync)>(claim)
        });
        let wake = {
            let mut state = self.shared.lock();
            // A job that itself calls `run`, or a second caller, finds the pool busy and runs
            // its jobs in place.
            if state.task.is_some() {
                drop(state);
                return Serial.run(items, job);
            }
            state.generation += 1;
            state.task = Some(task);
            self.shared
                .posted
                .store(state.generation, Ordering::Release);
            state.sleeping > 0
        };
        if wake {
            self.shared.work_ready.notify_all();
        }
        let own = catch_unwind(AssertUnwindSafe(claim));
        // Every job is claimed by now; those still running belong to active workers, and no
        // worker can join once the task is cleared.
        self.shared.lock().task = None;
        // The rest of a job that is already running: yield the core while waiting for it.
        watch(Duration::MAX, || {
            self.shared.active.load(Ordering::Acquire) == 0
        });
        let worker_panicked = std::mem::take(&mut self.shared.lock().panicked);
        if let Err(payload) = own {
            resume_unwind(payload);
        }
        assert!(!worker_panicked, "a job panicked on a worker thread");
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.work_ready.notify_all();
        for worker in self.workers.drain(..) {
            // A worker never panics outside a job, and job panics are caught.
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::panic::{AssertUnwindSafe, catch_unwind};

    #[test]
    fn every_item_runs_once_whatever_the_counts() {
        for threads in 1..4 {
            let pool = Threads::new(threads);
            assert_eq!(pool.count(), threads);
            for len in [0, 1, 2, 3, 7] {
                for _ in 0..50 {
                    let mut items = vec![0usize; len];
                    pool.run(&mut items, &|i, item: &mut usize| *item += i + 1);
                    assert_eq!(items, (1..=len).collect::<Vec<_>>());
                }
            }
        }
    }

    #[test]
    fn a_job_that_runs_jobs_finishes() {
        let pool = Threads::new(2);
        let mut outer = [0u32; 2];
        pool.run(&mut outer, &|_, total: &mut u32| {
            let mut inner = [1u32; 3];
            pool.run(&mut inner, &|_, v: &mut u32| *v *= 2);
            *total = inner.iter().sum();
        });
        assert_eq!(outer, [6, 6]);
    }

    #[test]
    fn a_panicking_job_panics_the_caller_and_the_pool_survives() {
        let pool = Threads::new(2);
        for bad in 0..2 {
            let caught = catch_unwind(AssertUnwindSafe(|| {
                let mut items = [0u8; 2];
                pool.run(&mut items, &|i, _: &mut u8| {
                    if i == bad {
                        // Give the worker time to claim the other job.
                        std::thread::sleep(Duration::from_millis(5));
                        panic!("job {i} fails");
                    }
                });
            }));
            assert!(caught.is_err(), "job {bad}'s panic was lost");
        }
        let mut items = [0u8; 4];
        pool.run(&mut items, &|i, v: &mut u8| *v = i as u8);
        assert_eq!(items, [0, 1, 2, 3]);
    }

    #[test]
    fn idle_workers_go_to_sleep() {
        let pool = Threads::new(3);
        let mut items = [0u8; 3];
        pool.run(&mut items, &|_, _: &mut u8| {});
        let asleep = watch(Duration::from_secs(10), || pool.shared.lock().sleeping == 2);
        assert!(asleep, "workers still awake long after the last job");
        // And they wake up for the next batch.
        pool.run(&mut items, &|i, v: &mut u8| *v = i as u8 + 1);
        assert_eq!(items, [1, 2, 3]);
    }
}
