//! How the jobs of a product share it: the [`Parallel`] that runs them, equal ranges, and units
//! of work claimed from a shared counter.

use super::Scratch;
use super::params::UNIT_HEIGHT;
use core::cell::UnsafeCell;
use core::ops::Range;
use core::sync::atomic::{AtomicUsize, Ordering};

/// Runs independent jobs, possibly on several threads. The core has no threads of its own;
/// a host implements this with its thread pool.
pub trait Parallel {
    /// Calls `job(i, &mut items[i])` once for every item, in any order or concurrently.
    fn run<T: Send>(&self, items: &mut [T], job: &(impl Fn(usize, &mut T) + Sync));
}

/// Runs every job on the calling thread.
#[derive(Clone, Copy, Debug, Default)]
pub struct Serial;

impl Parallel for Serial {
    fn run<T: Send>(&self, items: &mut [T], job: &(impl Fn(usize, &mut T) + Sync)) {
        for (i, item) in items.iter_mut().enumerate() {
            job(i, item);
        }
    }
}

/// A job that runs once, on whichever thread asks first.
pub(super) struct Once<F> {
    job: UnsafeCell<Option<F>>,
    taken: Counter,
}

/// Numbers that jobs take in turn, each number once: how jobs claim work. Where the target has
/// no atomic read-modify-write (Cortex-M0), a load then a store: right for a [`Parallel`] that
/// runs its jobs one after another, as [`Serial`] does.
pub(super) struct Counter(AtomicUsize);

impl Counter {
    /// A counter at 0.
    pub(super) const fn new() -> Self {
        Self(AtomicUsize::new(0))
    }

    /// The next number, from 0.
    #[inline(always)]
    pub(super) fn next(&self) -> usize {
        #[cfg(target_has_atomic = "ptr")]
        return self.0.fetch_add(1, Ordering::AcqRel);
        #[cfg(not(target_has_atomic = "ptr"))]
        {
            let n = self.0.load(Ordering::Acquire);
            self.0.store(n + 1, Ordering::Release);
            n
        }
    }
}

// SAFETY: only the thread that takes number 0 of `taken` touches `job`, and it may move `F` there.
unsafe impl<F: Send> Sync for Once<F> {}

impl<F: FnOnce(&mut Scratch)> Once<F> {
    /// `job`, not run yet.
    pub(super) fn new(job: F) -> Self {
        Self {
            job: UnsafeCell::new(Some(job)),
            taken: Counter::new(),
        }
    }

    /// Runs the job on `scratch` if no thread has taken it yet.
    pub(super) fn run(&self, scratch: &mut Scratch) {
        if self.taken.next() == 0 {
            // SAFETY: the counter above gave 0 to this thread alone.
            if let Some(job) = unsafe { (*self.job.get()).take() } {
                job(scratch);
            }
        }
    }
}

/// Part `part` of `parts` of `0..n`, in whole blocks of `align`.
pub(super) fn part_range(n: usize, parts: usize, part: usize, align: usize) -> Range<usize> {
    let tiles = n.div_ceil(align);
    let start = (tiles * part / parts * align).min(n);
    let end = (tiles * (part + 1) / parts * align).min(n);
    start..end
}

/// The columns of C a job computes: its range, or units of it claimed from a counter; or
/// with row claims, its range for each unit of rows it claims.
pub(super) struct Columns<'a> {
    pub(super) range: Range<usize>,
    pub(super) claims: Option<(Claims, &'a Counter)>,
}

/// What the jobs of a product claim, one unit at a time, from a counter they share.
#[derive(Clone, Copy)]
pub(super) enum Claims {
    /// Units of [`unit_width`](super::params::unit_width) columns, every row.
    Columns,
    /// Units of [`UNIT_HEIGHT`] rows, every column (products of one K block only).
    Rows,
}

impl Columns<'_> {
    /// A fixed range of columns, claimed by no one else.
    pub(super) fn range(range: Range<usize>) -> Self {
        Self {
            range,
            claims: None,
        }
    }
}

/// The groups of columns (first, width) a job runs in one K block and row block, or the
/// blocks of rows (first, height) it runs in one K block.
pub(super) enum Units<'a> {
    /// Its fixed range, a group at a time.
    Range {
        next: usize,
        end: usize,
        step: usize,
    },
    /// Units of `size` claimed from a counter that all the product's jobs share, until none
    /// are left: a job that the OS holds up takes fewer. Columns record each in `claimed`, for
    /// the later K blocks to replay.
    Claim {
        counter: &'a Counter,
        end: usize,
        size: usize,
        claimed: Option<&'a mut u64>,
    },
    /// The units of columns claimed in the first block again: every K block of a column stays
    /// with the job that started it.
    Replay { left: u64, end: usize, size: usize },
}

impl<'a> Units<'a> {
    /// Units of [`UNIT_HEIGHT`] rows of `0..end`, claimed from `counter`.
    pub(super) fn claim_rows(counter: &'a Counter, end: usize) -> Self {
        Units::Claim {
            counter,
            end,
            size: UNIT_HEIGHT,
            claimed: None,
        }
    }
}

impl Iterator for Units<'_> {
    type Item = (usize, usize);

    #[inline(always)]
    fn next(&mut self) -> Option<(usize, usize)> {
        let (start, end, width) = match self {
            Units::Range { next, end, step } => {
                let start = *next;
                *next += *step;
                (start, *end, *step)
            }
            Units::Claim {
                counter,
                end,
                size,
                claimed,
            } => {
                let unit = counter.next();
                let start = unit.saturating_mul(*size);
                if let Some(claimed) = claimed.as_deref_mut().filter(|_| start < *end) {
                    *claimed |= 1 << unit;
                }
                (start, *end, *size)
            }
            Units::Replay { left, end, size } => {
                if *left == 0 {
                    return None;
                }
                let unit = left.trailing_zeros() as usize;
                *left &= *left - 1;
                (unit * *size, *end, *size)
            }
        };
        (start < end).then(|| (start, width.min(end - start)))
    }
}
