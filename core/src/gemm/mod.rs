//! Matrix products for training.
//!
//! Every product is `C = A·B` where `A` and `B` are strided views ([`MatRef`]), so the three
//! layouts training needs (X·W, Xᵀ·dY, dY·Wᵀ) are one routine: a transpose is a swap of strides.
//! The blocked routine follows the usual GEMM loop nest around a register-tiled micro-kernel
//! that holds an `R x NR` block of C in a fixed-size array of accumulators: K blocks of at most
//! [`KC`]; a group of NR-wide panels of B packed together (up to 256 KB, in L2); then for each
//! panel of R rows of A every B panel of the group, so C is written along its rows (AVX2's wide
//! 3 x 32 tiles and AVX-512's 6 x 64 turn the last two loops round: their B panels are larger).
//! Every tile sums each element as one chain of fused multiply-adds over K in order, carried
//! from K block to K block through C, so every kernel gives the same bits: the AVX-512, AVX2
//! and NEON ones fuse in hardware, the portable one and the naive oracle in f64 arithmetic
//! that rounds once (`tiles::SoftFused`); only the panel width differs
//! ([`Kernel::panel_width`]). A is read where it lies, whatever its layout: each value is
//! broadcast once per tile straight from memory, so copying A first would only add a pass over
//! it (and, with several threads, one pass per thread). A B already in the kernel's panels
//! ([`MatRef::panels`]: the training step keeps W1 so between steps) is read where it lies too.
//!
//! Zero skipping: before the tiles of a panel of A rows run, the K steps where all its values
//! are zero are left out of its step list (MNIST pixels are mostly zero, in both X and Xᵀ), and
//! rows of B that no panel needs are not packed. When A's rows are strided (Xᵀ), the listing,
//! which reads every value anyway, also packs the listed steps' values, so the tiles read them
//! in a row rather than one scattered cache line per step. Adding `0·b` to a sum never changes
//! it, so for finite B the result is the dense result bit for bit (with FMA, a sum that
//! underflowed to -0 may stay -0 where the dense sum would turn it into +0). A NaN or infinity
//! in B that only ever meets zeros of A is skipped rather than turned into NaN.
//!
//! Determinism: each element of C is summed over K in one fixed order (K blocks in order,
//! sequentially inside a block, one chain across them), and neither the blocking nor the
//! skipping depends on which columns or rows a call covers, so splitting them between threads
//! never changes a bit of the result.
//!
//! Where things are: this file has the entry points ([`gemm`], [`gemm_parallel`],
//! [`gemm_parallel_beside`]), [`Kernel`], [`Scratch`] and the naive oracle; `view` the matrix
//! view; `params` every block and tile size and threshold, with the loop each cuts; `detect`
//! the one place that picks the instruction set; `claims` how jobs share a product; `blocked`
//! the loop nest; `steps` the zero-step listing; `pack` A's panels and B's packing; `tiles` the
//! register tiles per instruction set; `epilogue` the writes to C; `pairs` the paired weight
//! gradient; `narrow` AVX-512's narrow products of a transposed A (the head's weight gradient);
//! `tests` one suite run for every kernel.

mod blocked;
mod claims;
mod detect;
mod epilogue;
#[cfg(target_arch = "x86_64")]
mod narrow;
mod pack;
pub(crate) mod pairs;
mod params;
mod steps;
#[cfg(test)]
mod tests;
mod tiles;
mod view;

pub use claims::{Parallel, Serial};
pub use detect::Isa;
pub use epilogue::Epilogue;
pub(crate) use epilogue::relu;
pub use params::{KC, MAX_ORDERED_ROWS};
pub use view::MatRef;
pub(crate) use view::panel_index;

use blocked::{Share, blocked};
use claims::{Claims, Columns, Counter, Once, Units, part_range};
use core::ops::Range;
use epilogue::Out;
#[cfg(target_arch = "aarch64")]
use params::NEON_NR;
#[cfg(target_arch = "x86_64")]
use params::{AVX2_NR, AVX2_WIDE_MIN, AVX2_WIDE_NR, AVX512_WIDE_MIN, AVX512_WIDE_NR};
use params::{
    B_LEN, CLAIM_MIN, MAX_PANELS, PACKED_LEN, PACKED_ROWS, PORTABLE_MR, PORTABLE_NR, ROWS_ALIGN,
    ROWS_MIN, STEPS_LEN, UNIT_WIDTH, skips_zeros, unit_width,
};
use tiles::{MulAdd, SoftFused};

/// Which implementation of the products to run. Constructed only for code the CPU can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernel(Variant);

/// The naive product, or the blocked one on an instruction set's tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Naive,
    Blocked(Isa),
}

impl Kernel {
    /// The triple loop: the reference every other kernel is tested against, with the same fused
    /// multiply-adds in the same order, so the same bits.
    pub const NAIVE: Kernel = Kernel(Variant::Naive);
    /// Blocked and register-tiled, plain arithmetic for the compile target (runs anywhere); its
    /// multiply-add is fused in software, so it gives the AVX2 kernel's bits.
    pub const PORTABLE: Kernel = Kernel(Variant::Blocked(Isa::Plain));

    /// The blocked kernel compiled for AVX2 + FMA.
    ///
    /// # Safety
    /// The CPU must support `avx2` and `fma` ([`Kernel::avx2`] checks).
    #[cfg(target_arch = "x86_64")]
    pub const unsafe fn avx2_unchecked() -> Kernel {
        Kernel(Variant::Blocked(Isa::Avx2))
    }

    /// The blocked kernel with 512-bit tiles: the same sums in the same order as
    /// [`Kernel::avx2_unchecked`]'s, so the same bits, twice as many per instruction.
    ///
    /// # Safety
    /// The CPU must support `avx512f`, `avx512bw`, `avx2` and `fma` ([`Kernel::avx512`]
    /// checks): its narrow products and the paired weight gradient run the AVX2 code, and code
    /// that follows the kernel's [`Isa`] (the host's byte conversions) runs AVX-512 BW.
    #[cfg(target_arch = "x86_64")]
    pub const unsafe fn avx512_unchecked() -> Kernel {
        Kernel(Variant::Blocked(Isa::Avx512))
    }

    /// The blocked kernel compiled for NEON (always present on aarch64).
    #[cfg(target_arch = "aarch64")]
    pub const NEON: Kernel = Kernel(Variant::Blocked(Isa::Neon));

    /// Short lowercase name, as the CLI spells it.
    pub fn name(self) -> &'static str {
        match self.0 {
            Variant::Naive => "naive",
            Variant::Blocked(Isa::Plain) => "portable",
            #[cfg(target_arch = "x86_64")]
            Variant::Blocked(Isa::Avx2) => "avx2",
            #[cfg(target_arch = "x86_64")]
            Variant::Blocked(Isa::Avx512) => "avx512",
            #[cfg(target_arch = "aarch64")]
            Variant::Blocked(Isa::Neon) => "neon",
        }
    }

    /// Width of the tiles, and of the packed panels of B, of a product `n` columns wide: a B
    /// given in panels of this width ([`MatRef::panels`]) is read in place. Thread column
    /// splits align to it.
    // Only the x86-64 kernels have two widths.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    pub fn panel_width(self, n: usize) -> usize {
        match self.0 {
            Variant::Naive => 1,
            Variant::Blocked(Isa::Plain) => PORTABLE_NR,
            #[cfg(target_arch = "x86_64")]
            Variant::Blocked(Isa::Avx2) if n > AVX2_WIDE_MIN => AVX2_WIDE_NR,
            #[cfg(target_arch = "x86_64")]
            Variant::Blocked(Isa::Avx512) if n > AVX512_WIDE_MIN => AVX512_WIDE_NR,
            #[cfg(target_arch = "x86_64")]
            Variant::Blocked(Isa::Avx2 | Isa::Avx512) => AVX2_NR,
            #[cfg(target_arch = "aarch64")]
            Variant::Blocked(Isa::Neon) => NEON_NR,
        }
    }
}

/// Working memory of the blocked kernels (about 900 KB: keep it on the heap or in a static).
// Cache-line aligned, so that every job's scratch (an array of them, one per job) starts on a
// line, and in this field order, so that both float buffers do too: a vector load or store in
// a panel packed there, or in the paired product's stage, then never straddles two lines.
#[repr(C, align(64))]
pub struct Scratch {
    /// A group of NR-wide panels of B, `kc` rows each.
    pub(crate) b: [f32; B_LEN],
    /// Beside each listed step, the panel's values there, when A's rows are strided (Xᵀ):
    /// the tiles then read them in a row instead of one scattered cache line per step.
    pub(crate) packed_a: [[f32; PACKED_ROWS]; PACKED_LEN + 8],
    /// Per panel of A rows, the K steps of the block where some row is nonzero.
    pub(super) steps: [u16; STEPS_LEN + 8],
    /// Per panel, how many steps are listed.
    pub(super) counts: [u16; MAX_PANELS],
    /// A bit per K step of the block, set when any panel lists it (rows of B no panel reads
    /// are not packed: blank image margins).
    pub(super) used: [u8; KC.div_ceil(8)],
}
// The second float buffer starts on a cache line too.
const _: () = assert!(core::mem::offset_of!(Scratch, packed_a).is_multiple_of(64));
// The listing writes 8 entries at a time, and the tiles read `PREFETCH_STEPS` past a list's
// end: both within the 8 spare entries of `steps`.
const _: () = assert!(params::PREFETCH_STEPS <= 8);

impl Scratch {
    /// A zeroed scratch. Large: prefer a zero-initialised heap allocation on a host.
    pub const fn new() -> Self {
        Self {
            b: [0.0; B_LEN],
            packed_a: [[0.0; PACKED_ROWS]; PACKED_LEN + 8],
            steps: [0; STEPS_LEN + 8],
            counts: [0; MAX_PANELS],
            used: [0; KC.div_ceil(8)],
        }
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

/// `c` (row-major, `a.rows() x b.cols()`) = epilogue(`a · b`), on one thread.
///
/// # Panics
/// If the shapes disagree or `c` is too short.
pub fn gemm(
    kernel: Kernel,
    a: MatRef,
    b: MatRef,
    c: &mut [f32],
    epilogue: Epilogue,
    scratch: &mut Scratch,
) {
    gemm_parallel(
        &Serial,
        kernel,
        a,
        b,
        c,
        epilogue,
        core::slice::from_mut(scratch),
    );
}

/// Like [`gemm`], with the columns of C (the rows, when it is too narrow to share or taller
/// than wide) split between `scratches.len()` jobs run by `par`. The result is bitwise the
/// same for any number of jobs.
pub fn gemm_parallel<P: Parallel>(
    par: &P,
    kernel: Kernel,
    a: MatRef,
    b: MatRef,
    c: &mut [f32],
    epilogue: Epilogue,
    scratches: &mut [Scratch],
) {
    gemm_parallel_beside(par, kernel, a, b, c, epilogue, scratches, |_| {});
}

/// Like [`gemm_parallel`], and `beside` runs once, on the first job to start, with that job's
/// scratch, before its share of the product. Small work that would otherwise be a call of its
/// own, or run on one thread while the others wait, joins a product whose jobs claim units
/// of it: the other jobs take more of those.
#[allow(clippy::too_many_arguments)]
pub fn gemm_parallel_beside<P: Parallel>(
    par: &P,
    kernel: Kernel,
    a: MatRef,
    b: MatRef,
    c: &mut [f32],
    epilogue: Epilogue,
    scratches: &mut [Scratch],
    beside: impl FnOnce(&mut Scratch) + Send,
) {
    let (m, n) = (a.rows, b.cols);
    assert_eq!(a.cols, b.rows, "inner dimensions differ");
    assert_eq!(a.panel_width, 0, "A is read where it lies, not in panels");
    assert!(c.len() >= m * n, "output too short");
    assert!(!scratches.is_empty(), "no scratch");
    epilogue.check(m, n);
    if m == 0 || n == 0 {
        return beside(&mut scratches[0]);
    }
    let beside = Once::new(beside);
    let out = Out::new(c, n);
    let tiles = n.div_ceil(kernel.panel_width(n));
    // Too few columns to share (n = 10), or more rows than columns (Xᵀ·dH, 784 x 512): the
    // jobs split the rows instead, and each lists the zero steps of its own panels of A only.
    // Either way each element of C is summed by one job, in the same order.
    let by_rows = tiles < scratches.len() || m > n;
    let parts = if by_rows { m.div_ceil(ROWS_MIN) } else { tiles };
    let parts = parts.min(scratches.len()).max(1);
    let nr = kernel.panel_width(n);
    let skips_zeros = skips_zeros(n, nr);
    // Rows (or columns) with more zeros in A cost less, and the OS may hold a thread up: equal
    // ranges would leave a job waiting, so jobs claim units of work until none are left. Worth
    // a claim: a unit of the forward is 3 million multiply-adds, one of dZ·W2ᵀ 40,000.
    let deep = m * a.cols >= CLAIM_MIN;
    // Columns: later K blocks replay the units claimed in the first (at most 64 of them).
    // Rows: only where each job packs all of B once (one K block, one group of B panels).
    let units = n.div_ceil(unit_width(nr));
    let one_b_group = a.cols <= KC && (B_LEN / (a.cols.max(1) * nr)).max(1) * nr >= n;
    let claims = match (by_rows, skips_zeros && deep && parts > 1) {
        (false, true) if units <= u64::BITS as usize => Some(Claims::Columns),
        (true, true) if one_b_group => Some(Claims::Rows),
        _ => None,
    };
    if let Some(claims) = claims {
        // Jobs claim units of columns (or rows) one at a time (see `Units`).
        let counter = Counter::new();
        let job = |_: usize, scratch: &mut Scratch| {
            beside.run(scratch);
            let cols = Columns {
                range: 0..n,
                claims: Some((claims, &counter)),
            };
            run_kernel(kernel, a, b, &out, cols, epilogue, scratch);
        };
        let jobs = match claims {
            Claims::Columns => parts.min(units),
            Claims::Rows => parts,
        };
        par.run(&mut scratches[..jobs], &job);
        return;
    }
    let job = |part: usize, scratch: &mut Scratch| {
        beside.run(scratch);
        if by_rows {
            let rows = part_range(m, parts, part, ROWS_ALIGN);
            if !rows.is_empty() {
                run_rows(kernel, a, b, &out, rows, 0..n, epilogue, scratch);
            }
        } else {
            let cols = part_range(n, parts, part, nr);
            if !cols.is_empty() {
                run_kernel(kernel, a, b, &out, Columns::range(cols), epilogue, scratch);
            }
        }
    };
    par.run(&mut scratches[..parts], &job);
}

/// Rows `rows` of the product, columns `cols`, as a product of its own.
#[allow(clippy::too_many_arguments)]
fn run_rows(
    kernel: Kernel,
    a: MatRef,
    b: MatRef,
    out: &Out,
    rows: Range<usize>,
    cols: Range<usize>,
    epilogue: Epilogue,
    scratch: &mut Scratch,
) {
    let out = out.rows_after(rows.start);
    let epilogue = epilogue.rows_after(rows.start, out.ld);
    let cols = Columns::range(cols);
    run_kernel(kernel, a.row_range(rows), b, &out, cols, epilogue, scratch);
}

/// Columns `cols` of the product, on `kernel`'s code.
fn run_kernel(
    kernel: Kernel,
    a: MatRef,
    b: MatRef,
    out: &Out,
    cols: Columns,
    epilogue: Epilogue,
    scratch: &mut Scratch,
) {
    let claims = cols.claims;
    #[cfg(target_arch = "x86_64")]
    if kernel.isa() == Isa::Avx512 && claims.is_none() && narrow::fits(&a, &b) {
        // SAFETY: an AVX-512 kernel is only constructed through `avx512_unchecked`, whose
        // caller vouches for the CPU; without claims the columns are this job's.
        return unsafe { narrow::product(a, b, out, cols.range, epilogue) };
    }
    let share = |cols| Share {
        a,
        b,
        out,
        cols,
        epilogue,
    };
    match (kernel.0, claims) {
        (Variant::Naive, None) => naive(share(cols)),
        (Variant::Naive, Some((Claims::Columns, counter))) => {
            let units = Units::Claim {
                counter,
                end: cols.range.end,
                size: UNIT_WIDTH,
                claimed: None,
            };
            for (col, width) in units {
                naive(share(Columns::range(col..col + width)));
            }
        }
        (Variant::Naive, Some((Claims::Rows, counter))) => {
            for (row, height) in Units::claim_rows(counter, a.rows) {
                let rows = row..row + height;
                run_rows(
                    kernel,
                    a,
                    b,
                    out,
                    rows,
                    cols.range.clone(),
                    epilogue,
                    scratch,
                );
            }
        }
        (Variant::Blocked(Isa::Plain), _) => {
            blocked::<SoftFused, PORTABLE_MR, PORTABLE_NR>(share(cols), scratch)
        }
        // SAFETY: an AVX2 kernel is only constructed through `avx2_unchecked`, whose caller
        // vouches for the CPU.
        #[cfg(target_arch = "x86_64")]
        (Variant::Blocked(Isa::Avx2), _) => unsafe { tiles::avx2::blocked(share(cols), scratch) },
        // SAFETY: an AVX-512 kernel is only constructed through `avx512_unchecked`, whose
        // caller vouches for the CPU.
        #[cfg(target_arch = "x86_64")]
        (Variant::Blocked(Isa::Avx512), _) => unsafe {
            tiles::avx512::blocked(share(cols), scratch)
        },
        // SAFETY: NEON is part of the aarch64 baseline.
        #[cfg(target_arch = "aarch64")]
        (Variant::Blocked(Isa::Neon), _) => unsafe { tiles::neon::blocked(share(cols), scratch) },
    }
}

/// The reference: one dot product per element, one chain of fused multiply-adds from 0 in K
/// order, as every tile sums.
fn naive(share: Share) {
    let Share {
        a,
        b,
        out,
        cols,
        epilogue,
    } = share;
    for i in 0..a.rows {
        for j in cols.range.clone() {
            let mut sum = 0.0f32;
            for p in 0..a.cols {
                sum = SoftFused::mul_add(a.at(i, p), b.at(p, j), sum);
            }
            // SAFETY: i < m and j is in this job's column range.
            unsafe { out.set(i, j, epilogue.apply(sum, i * out.ld + j, j)) };
        }
    }
}
