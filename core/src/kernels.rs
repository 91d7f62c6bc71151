//! Matrix products for training.
//!
//! Every product is `C = A·B` where `A` and `B` are strided views ([`MatRef`]), so the three
//! layouts training needs (X·W, Xᵀ·dY, dY·Wᵀ) are one routine: a transpose is a swap of strides.
//! The blocked routine follows the usual GEMM loop nest around a register-tiled micro-kernel
//! that holds an `R x NR` block of C in a fixed-size array of accumulators: K blocks of at most
//! [`KC`]; a group of NR-wide panels of B packed together (up to 256 KB, in L2); then for each
//! panel of R rows of A every B panel of the group, so C is written along its rows (AVX2's wide
//! 3 x 32 tiles and AVX-512's 3 x 64 turn the last two loops round: their B panels are larger).
//! AVX-512 sums every element as AVX2 does, over the same 3-row panels' steps, so the two give
//! the same bits; only the panel width differs ([`Kernel::panel_width`]). A is read
//! where it lies, whatever its layout: each value is broadcast once per tile straight from
//! memory, so copying A first would only add a pass over it (and, with several threads, one
//! pass per thread). A B already in the kernel's panels ([`MatRef::panels`]: the training step
//! keeps W1 so between steps) is read where it lies too.
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
//! sequentially inside a block), and neither the blocking nor the skipping depends on which
//! columns or rows a call covers, so splitting them between threads never changes a bit of the
//! result.

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ops::Range;
use core::sync::atomic::{AtomicUsize, Ordering};

mod detect;
pub(crate) mod pairs;

pub(crate) use detect::Isa;

/// Longest row order [`MatRef::row_order`] takes.
pub const MAX_ORDERED_ROWS: usize = 4096;

/// Deepest K block: the forward's 784 inputs in one. Three blocks of 262 keep a B panel in L1,
/// but each block then adds its sums into C, and with the zero steps skipped the tiles wait on
/// those passes more than on L2: one block measured 6% faster on one thread.
pub const KC: usize = 784;

/// Most panels of A rows in one block (sizes the per-panel step counts).
const MAX_PANELS: usize = 256;
/// K steps listed per block, all panels together (a block of 784 steps for 128 rows).
const STEPS_LEN: usize = 1 << 16;
/// Listed steps whose values are packed beside them, all panels together (Xᵀ·dH: 128 steps).
const PACKED_LEN: usize = 1 << 15;
/// Most rows of a panel whose values are packed beside its steps.
const PACKED_ROWS: usize = 4;
/// Widest micro-kernel tile.
const NR_MAX: usize = 64;
/// Floats of packed B: a group of NR-wide panels, half a typical L2. Enough for all of dH
/// (128 x 512) in one group, which jobs that claim rows of Xᵀ·dH then pack only once.
const B_LEN: usize = 1 << 16;

/// A read-only strided matrix view: element `(i, j)` is `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
    /// The order in which the blocked kernels group rows into panels (empty: 0, 1, 2...).
    order: &'a [u16],
    /// Columns per panel in the panel layout of [`MatRef::panels`] (0: the strided layout).
    panel_width: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major `rows x cols` view of the first `rows * cols` elements of `data`.
    ///
    /// # Panics
    /// If `data` is shorter than `rows * cols`.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        assert!(data.len() >= rows * cols, "matrix data too short");
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
            order: &[],
            panel_width: 0,
        }
    }

    /// A `rows x cols` matrix stored as panels of `width` columns one after another, each
    /// row-major (`rows x width`; a last, narrower panel is padded to `width`): the layout the
    /// blocked kernels pack B into. A kernel whose tiles are `width` wide
    /// ([`Kernel::panel_width`]) reads such a B in place instead of packing it; the others read
    /// it element by element. Either way the product is the same bits as with B row-major.
    ///
    /// # Panics
    /// If `width` is 0 or `data` is shorter than the panels.
    pub fn panels(data: &'a [f32], rows: usize, cols: usize, width: usize) -> Self {
        assert!(width > 0, "panels of no columns");
        assert!(
            data.len() >= cols.div_ceil(width) * rows * width,
            "matrix data too short"
        );
        Self {
            data,
            rows,
            cols,
            row_stride: width,
            col_stride: 1,
            order: &[],
            panel_width: width,
        }
    }

    /// The transposed view (no data moves; a row order is dropped).
    ///
    /// # Panics
    /// If the view is in panel layout.
    pub fn t(self) -> Self {
        assert_eq!(
            self.panel_width, 0,
            "a matrix in panels has no transposed view"
        );
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            order: &[],
            ..self
        }
    }

    /// The same view, its rows grouped into the kernels' panels in `order` (a permutation of
    /// the row numbers). Only the speed changes: rows whose zeros fall on the same K steps,
    /// grouped together, let a panel skip more steps, and every element of a product is still
    /// summed by itself in K order, so the result is the same bit for bit.
    ///
    /// # Panics
    /// If `order` is not a permutation of `0..rows`, or has more than [`MAX_ORDERED_ROWS`].
    pub fn row_order(self, order: &'a [u16]) -> Self {
        assert!(
            order.len() == self.rows && order.len() <= MAX_ORDERED_ROWS,
            "row order of the wrong length"
        );
        let mut seen = [0u64; MAX_ORDERED_ROWS / 64];
        for &row in order {
            let row = usize::from(row);
            assert!(row < self.rows, "row order outside the rows");
            let (word, bit) = (row / 64, 1u64 << (row % 64));
            assert!(seen[word] & bit == 0, "row order repeats a row");
            seen[word] |= bit;
        }
        Self { order, ..self }
    }

    /// The row at position `pos` of the panel order.
    #[inline(always)]
    fn row_index(&self, pos: usize) -> usize {
        self.order.get(pos).map_or(pos, |&row| usize::from(row))
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Rows `rows` of the view.
    fn row_range(self, rows: Range<usize>) -> Self {
        Self {
            // Empty only when there is nothing to read (k = 0).
            data: self.data.get(rows.start * self.row_stride..).unwrap_or(&[]),
            rows: rows.len(),
            order: &[],
            ..self
        }
    }

    #[inline(always)]
    fn at(&self, i: usize, j: usize) -> f32 {
        match self.panel_width {
            0 => self.data[i * self.row_stride + j * self.col_stride],
            w => self.data[panel_index(i, j, self.rows, w)],
        }
    }

    /// Elements `(i, j..j + len)`, for a view with unit column stride.
    #[inline(always)]
    fn row(&self, i: usize, j: usize, len: usize) -> &'a [f32] {
        let start = i * self.row_stride + j;
        &self.data[start..start + len]
    }

    /// Elements `(i..i + len, j)`, for a view with unit row stride.
    #[inline(always)]
    fn col(&self, i: usize, j: usize, len: usize) -> &'a [f32] {
        let start = i + j * self.col_stride;
        &self.data[start..start + len]
    }
}

/// Where element `(i, j)` of a matrix of `rows` rows lies in panels of `width` columns
/// ([`MatRef::panels`]).
#[inline(always)]
pub(crate) fn panel_index(i: usize, j: usize, rows: usize, width: usize) -> usize {
    (j / width) * rows * width + i * width + j % width
}

/// What happens to each element of C after its last K block: the fused epilogue saves a pass
/// over memory for bias + ReLU (forward) and the ReLU derivative (backward).
#[derive(Clone, Copy, Debug)]
pub enum Epilogue<'a> {
    /// `C = A·B`.
    Store,
    /// `C = A·B + bias` (bias per column).
    Bias(&'a [f32]),
    /// `C = max(A·B + bias, 0)`.
    BiasRelu(&'a [f32]),
    /// `C = A·B` where `mask > 0`, else 0; `mask` has C's shape (row-major, same width).
    ReluMask(&'a [f32]),
}

impl Epilogue<'_> {
    #[inline(always)]
    fn apply(&self, v: f32, index: usize, col: usize) -> f32 {
        match *self {
            Epilogue::Store => v,
            Epilogue::Bias(bias) => v + bias[col],
            Epilogue::BiasRelu(bias) => relu(v + bias[col]),
            Epilogue::ReluMask(mask) => masked(v, mask[index]),
        }
    }

    /// The epilogue of C without its first `row` rows (C `ld` wide).
    fn rows_after(self, row: usize, ld: usize) -> Self {
        match self {
            Epilogue::ReluMask(mask) => Epilogue::ReluMask(&mask[row * ld..]),
            other => other,
        }
    }

    fn check(&self, m: usize, n: usize) {
        match *self {
            Epilogue::Store => {}
            Epilogue::Bias(b) | Epilogue::BiasRelu(b) => assert!(b.len() >= n, "bias too short"),
            Epilogue::ReluMask(mask) => assert!(mask.len() >= m * n, "mask too short"),
        }
    }
}

#[inline(always)]
pub(crate) fn relu(v: f32) -> f32 {
    if v > 0.0 { v } else { 0.0 }
}

#[inline(always)]
fn masked(v: f32, mask: f32) -> f32 {
    if mask > 0.0 { v } else { 0.0 }
}

/// Which implementation of the products to run. Constructed only for code the CPU can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernel(Variant);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Naive,
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "aarch64")]
    Neon,
}

impl Kernel {
    /// The triple loop: the reference every other kernel is tested against.
    pub const NAIVE: Kernel = Kernel(Variant::Naive);
    /// Blocked and register-tiled, plain arithmetic for the compile target (runs anywhere).
    pub const PORTABLE: Kernel = Kernel(Variant::Portable);

    /// The blocked kernel compiled for AVX2 + FMA.
    ///
    /// # Safety
    /// The CPU must support `avx2` and `fma` ([`Kernel::avx2`] checks).
    #[cfg(target_arch = "x86_64")]
    pub const unsafe fn avx2_unchecked() -> Kernel {
        Kernel(Variant::Avx2)
    }

    /// The blocked kernel with 512-bit tiles: the same sums in the same order as
    /// [`Kernel::avx2_unchecked`]'s, so the same bits, twice as many per instruction.
    ///
    /// # Safety
    /// The CPU must support `avx512f`, `avx2` and `fma` ([`Kernel::avx512`] checks): its
    /// narrow products and the paired weight gradient run the AVX2 code.
    #[cfg(target_arch = "x86_64")]
    pub const unsafe fn avx512_unchecked() -> Kernel {
        Kernel(Variant::Avx512)
    }

    /// The blocked kernel compiled for NEON (always present on aarch64).
    #[cfg(target_arch = "aarch64")]
    pub const NEON: Kernel = Kernel(Variant::Neon);

    /// Short lowercase name, as the CLI spells it.
    pub fn name(self) -> &'static str {
        match self.0 {
            Variant::Naive => "naive",
            Variant::Portable => "portable",
            #[cfg(target_arch = "x86_64")]
            Variant::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Variant::Avx512 => "avx512",
            #[cfg(target_arch = "aarch64")]
            Variant::Neon => "neon",
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
            Variant::Portable => PORTABLE_NR,
            #[cfg(target_arch = "x86_64")]
            Variant::Avx2 if n > AVX2_WIDE_MIN => AVX2_WIDE_NR,
            #[cfg(target_arch = "x86_64")]
            Variant::Avx2 => AVX2_NR,
            #[cfg(target_arch = "x86_64")]
            Variant::Avx512 if n > AVX512_WIDE_MIN => AVX512_WIDE_NR,
            #[cfg(target_arch = "x86_64")]
            Variant::Avx512 => AVX2_NR,
            #[cfg(target_arch = "aarch64")]
            Variant::Neon => NEON_NR,
        }
    }
}

const PORTABLE_MR: usize = 4;
const PORTABLE_NR: usize = 8;
// 12 accumulators + 2 rows of B + 1 broadcast fill the 16 ymm registers.
#[cfg(target_arch = "x86_64")]
const AVX2_MR: usize = 6;
#[cfg(target_arch = "x86_64")]
const AVX2_NR: usize = 16;
// Wide products (n = 512) run 3 x 32 tiles: the same 12 accumulators, and panels of 3 rows
// skip more zero steps than panels of 6 (Fashion-MNIST: 64% of the forward's steps run, not
// 73%). Narrow ones (n = 10) keep 16 columns, which wastes fewer on padding.
#[cfg(target_arch = "x86_64")]
const AVX2_WIDE_MR: usize = 3;
#[cfg(target_arch = "x86_64")]
const AVX2_WIDE_NR: usize = 32;
#[cfg(target_arch = "x86_64")]
const AVX2_WIDE_MIN: usize = 2 * AVX2_NR;
// AVX-512 runs the wide products on tiles of 512-bit vectors (32 zmm registers); the narrow
// ones on AVX2's tiles, whose sums they are.
#[cfg(target_arch = "x86_64")]
const AVX512_WIDE_MR: usize = 3;
#[cfg(target_arch = "x86_64")]
const AVX512_WIDE_NR: usize = 64;
#[cfg(target_arch = "x86_64")]
const AVX512_WIDE_MIN: usize = AVX512_WIDE_NR;
// 16 accumulators of the 32 q registers, leaving room for B, A and the pipeline depth.
#[cfg(target_arch = "aarch64")]
const NEON_MR: usize = 8;
#[cfg(target_arch = "aarch64")]
const NEON_NR: usize = 8;

/// Working memory of the blocked kernels (about 900 KB: keep it on the heap or in a static).
pub struct Scratch {
    /// A group of NR-wide panels of B, `kc` rows each.
    b: [f32; B_LEN],
    /// Per panel of A rows, the K steps of the block where some row is nonzero.
    steps: [u16; STEPS_LEN + 8],
    /// Beside each listed step, the panel's values there, when A's rows are strided (Xᵀ):
    /// the tiles then read them in a row instead of one scattered cache line per step.
    packed_a: [[f32; PACKED_ROWS]; PACKED_LEN + 8],
    /// Per panel, how many steps are listed.
    counts: [u16; MAX_PANELS],
    /// A bit per K step of the block, set when any panel lists it (rows of B no panel reads
    /// are not packed: blank image margins).
    used: [u8; KC.div_ceil(8)],
}

impl Scratch {
    /// A zeroed scratch. Large: prefer a zero-initialised heap allocation on a host.
    pub const fn new() -> Self {
        Self {
            b: [0.0; B_LEN],
            steps: [0; STEPS_LEN + 8],
            packed_a: [[0.0; PACKED_ROWS]; PACKED_LEN + 8],
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
    let out = Out {
        ptr: c.as_mut_ptr(),
        ld: n,
        _c: PhantomData,
    };
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

/// A job that runs once, on whichever thread asks first.
struct Once<F> {
    job: UnsafeCell<Option<F>>,
    taken: Counter,
}

/// Numbers that jobs take in turn, each number once: how jobs claim work. Where the target has
/// no atomic read-modify-write (Cortex-M0), a load then a store: right for a [`Parallel`] that
/// runs its jobs one after another, as [`Serial`] does.
pub(crate) struct Counter(AtomicUsize);

impl Counter {
    pub(crate) const fn new() -> Self {
        Self(AtomicUsize::new(0))
    }

    /// The next number, from 0.
    #[inline(always)]
    pub(crate) fn next(&self) -> usize {
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
    fn new(job: F) -> Self {
        Self {
            job: UnsafeCell::new(Some(job)),
            taken: Counter::new(),
        }
    }

    fn run(&self, scratch: &mut Scratch) {
        if self.taken.next() == 0 {
            // SAFETY: the counter above gave 0 to this thread alone.
            if let Some(job) = unsafe { (*self.job.get()).take() } {
                job(scratch);
            }
        }
    }
}

/// Whether the blocked kernels list and skip A's zero K steps for a product `n` columns wide,
/// on tiles `tile_width` wide. With one or two panels of B (n = 10) a step list would serve one
/// or two tiles: listing costs about what skipping saves. Decided by n alone, never by a job's
/// columns.
#[inline(always)]
fn skips_zeros(n: usize, tile_width: usize) -> bool {
    n > 2 * tile_width
}

/// Columns of C in a unit that a job claims: whole tiles of every width up to it, 16 units for
/// n = 512.
const UNIT_WIDTH: usize = 32;

/// Columns of C in a unit claimed by a kernel whose tiles are `nr` wide: [`UNIT_WIDTH`], or a
/// tile when tiles are wider (AVX-512's 64).
const fn unit_width(nr: usize) -> usize {
    if nr > UNIT_WIDTH { nr } else { UNIT_WIDTH }
}
// Wider tiles take units of one tile, so their widths must be whole multiples of the unit.
#[cfg(target_arch = "x86_64")]
const _: () = assert!(AVX512_WIDE_NR.is_multiple_of(UNIT_WIDTH));
/// Rows of C in a unit that a job claims: whole panels of every tile height, 17 units for
/// Xᵀ·dH (784 rows).
const UNIT_HEIGHT: usize = 48;
// A claimed unit is one row block: its panels (2 rows or more) fit the step lists of a K block.
const _: () = assert!(UNIT_HEIGHT / 2 <= MAX_PANELS && UNIT_HEIGHT / 2 * KC <= PACKED_LEN);

/// Fewest values of A for which jobs claim units of columns rather than take equal ranges.
const CLAIM_MIN: usize = 1 << 14;

/// Fewest rows of C a job gets when jobs split rows.
const ROWS_MIN: usize = 32;
/// Row splits fall on whole panels of every tile height (3, 4 and 6).
const ROWS_ALIGN: usize = 12;

/// Part `part` of `parts` of `0..n`, in whole blocks of `align`.
fn part_range(n: usize, parts: usize, part: usize, align: usize) -> Range<usize> {
    let tiles = n.div_ceil(align);
    let start = (tiles * part / parts * align).min(n);
    let end = (tiles * (part + 1) / parts * align).min(n);
    start..end
}

/// Write access to C shared by jobs that own disjoint column or row ranges.
#[derive(Clone, Copy)]
struct Out<'a> {
    ptr: *mut f32,
    ld: usize,
    _c: PhantomData<&'a mut [f32]>,
}

// SAFETY: jobs write through `Out` only inside their own column or row range (disjoint by
// construction in `part_range`), and the borrow of C outlives every job.
unsafe impl Send for Out<'_> {}
unsafe impl Sync for Out<'_> {}

impl Out<'_> {
    /// # Safety
    /// `(i, j)` is inside C and column `j` belongs to the caller's range.
    #[inline(always)]
    unsafe fn set(&self, i: usize, j: usize, v: f32) {
        unsafe { *self.ptr.add(i * self.ld + j) = v }
    }

    /// Elements `(i, j..j + len)` of C.
    ///
    /// # Safety
    /// They lie inside C and in the caller's column range, and no other reference to them is
    /// live while the slice is.
    // Jobs share `Out` and each carves its own disjoint rows out of it.
    #[allow(clippy::mut_from_ref)]
    #[inline(always)]
    unsafe fn row_mut(&self, i: usize, j: usize, len: usize) -> &mut [f32] {
        unsafe { core::slice::from_raw_parts_mut(self.ptr.add(i * self.ld + j), len) }
    }
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
    let out = Out {
        // In bounds: rows.start < m, so rows.start * ld < m * ld <= c.len().
        ptr: out.ptr.wrapping_add(rows.start * out.ld),
        ..*out
    };
    let epilogue = epilogue.rows_after(rows.start, out.ld);
    let cols = Columns::range(cols);
    run_kernel(kernel, a.row_range(rows), b, &out, cols, epilogue, scratch);
}

fn run_kernel(
    kernel: Kernel,
    a: MatRef,
    b: MatRef,
    out: &Out,
    cols: Columns,
    epilogue: Epilogue,
    scratch: &mut Scratch,
) {
    match (kernel.0, cols.claims) {
        (Variant::Naive, None) => naive(a, b, out, cols.range, epilogue),
        (Variant::Naive, Some((Claims::Columns, counter))) => {
            let units = Units::Claim {
                counter,
                end: cols.range.end,
                size: UNIT_WIDTH,
                claimed: None,
            };
            for (col, width) in units {
                naive(a, b, out, col..col + width, epilogue);
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
        (Variant::Portable, _) => {
            blocked::<Plain, PORTABLE_MR, PORTABLE_NR>(a, b, out, cols, epilogue, scratch)
        }
        // SAFETY: an `Avx2` kernel is only constructed through `avx2_unchecked`, whose caller
        // vouches for the CPU.
        #[cfg(target_arch = "x86_64")]
        (Variant::Avx2, _) => unsafe { blocked_avx2(a, b, out, cols, epilogue, scratch) },
        // SAFETY: an `Avx512` kernel is only constructed through `avx512_unchecked`, whose
        // caller vouches for the CPU.
        #[cfg(target_arch = "x86_64")]
        (Variant::Avx512, _) => unsafe { blocked_avx512(a, b, out, cols, epilogue, scratch) },
        // SAFETY: NEON is part of the aarch64 baseline.
        #[cfg(target_arch = "aarch64")]
        (Variant::Neon, _) => unsafe { blocked_neon(a, b, out, cols, epilogue, scratch) },
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn blocked_avx2(
    a: MatRef,
    b: MatRef,
    out: &Out,
    cols: Columns,
    epilogue: Epilogue,
    scratch: &mut Scratch,
) {
    // Decided by the product's width, never by the job's columns.
    if b.cols > AVX2_WIDE_MIN {
        blocked::<avx2::Wide, AVX2_WIDE_MR, AVX2_WIDE_NR>(a, b, out, cols, epilogue, scratch)
    } else {
        blocked::<Fused, AVX2_MR, AVX2_NR>(a, b, out, cols, epilogue, scratch)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn blocked_avx512(
    a: MatRef,
    b: MatRef,
    out: &Out,
    cols: Columns,
    epilogue: Epilogue,
    scratch: &mut Scratch,
) {
    // Decided by the product's width, never by the job's columns.
    if b.cols > AVX512_WIDE_MIN {
        type Wide = avx512::Wide<{ AVX512_WIDE_NR / 16 }>;
        blocked::<Wide, AVX512_WIDE_MR, AVX512_WIDE_NR>(a, b, out, cols, epilogue, scratch)
    } else {
        blocked::<Fused, AVX2_MR, AVX2_NR>(a, b, out, cols, epilogue, scratch)
    }
}

#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
fn blocked_neon(
    a: MatRef,
    b: MatRef,
    out: &Out,
    cols: Columns,
    epilogue: Epilogue,
    scratch: &mut Scratch,
) {
    blocked::<Fused, NEON_MR, NEON_NR>(a, b, out, cols, epilogue, scratch)
}

/// Multiply-add as a kernel variant computes it.
trait MulAdd {
    fn mul_add(a: f32, b: f32, c: f32) -> f32;
}

/// The tile loops of a kernel variant. Each is a function of its own, compiled with the
/// variant's target features, so that the loop nest around it cannot spoil its register
/// allocation (inlined into the whole nest, LLVM once left the accumulators in memory).
trait Tiles<const NR: usize> {
    /// Whether A panels pass over one B panel at a time rather than over the whole group.
    const ONE_B_PANEL_AT_A_TIME: bool = false;

    /// Every K step of the block.
    fn dense<const R: usize>(a: &APanel<R>, b_panel: &[f32]) -> [[f32; NR]; R];
    /// The listed K steps of the block.
    fn sparse<const R: usize>(a: &APanel<R>, steps: &[u16], b_panel: &[f32]) -> [[f32; NR]; R];
    /// The listed K steps, A's values packed beside them.
    fn packed<const R: usize>(
        a: &[[f32; PACKED_ROWS]],
        steps: &[u16],
        b_panel: &[f32],
    ) -> [[f32; NR]; R];
}

/// `a * b + c` with two roundings: what every target can do quickly.
struct Plain;

impl MulAdd for Plain {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// Variants whose tiles are the generic loops, with nothing but their multiply-add.
trait GenericTiles: MulAdd {}

impl GenericTiles for Plain {}

// NEON is part of the aarch64 baseline, so the generic loops vectorise with `fmla` there.
#[cfg(target_arch = "aarch64")]
impl GenericTiles for Fused {}

impl<M: GenericTiles, const NR: usize> Tiles<NR> for M {
    #[inline(never)]
    fn dense<const R: usize>(a: &APanel<R>, b_panel: &[f32]) -> [[f32; NR]; R] {
        dense_kernel::<Self, R, NR>(a, b_panel)
    }

    #[inline(never)]
    fn sparse<const R: usize>(a: &APanel<R>, steps: &[u16], b_panel: &[f32]) -> [[f32; NR]; R] {
        sparse_kernel::<Self, R, NR>(a, steps, b_panel)
    }

    #[inline(never)]
    fn packed<const R: usize>(
        a: &[[f32; PACKED_ROWS]],
        steps: &[u16],
        b_panel: &[f32],
    ) -> [[f32; NR]; R] {
        packed_kernel::<Self, R, NR>(a, steps, b_panel)
    }
}

/// A fused multiply-add: on x86-64 only used by functions compiled with the `fma` feature;
/// on aarch64 part of the baseline.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
struct Fused;

#[cfg(target_arch = "aarch64")]
impl MulAdd for Fused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        use core::arch::aarch64::{vdupq_n_f32, vfmaq_f32, vgetq_lane_f32};
        // SAFETY: NEON is part of the aarch64 baseline. LLVM turns this one-lane FMA into `fmla`
        // on whole vectors when it vectorises the tile.
        unsafe { vgetq_lane_f32::<0>(vfmaq_f32(vdupq_n_f32(c), vdupq_n_f32(a), vdupq_n_f32(b))) }
    }
}

#[cfg(target_arch = "x86_64")]
impl MulAdd for Fused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        use core::arch::x86_64::{_mm_cvtss_f32, _mm_fmadd_ss, _mm_set_ss};
        // SAFETY: `Fused` is only used by `blocked_avx2` and the `avx2` tile functions, all
        // compiled with `fma` enabled; LLVM turns this scalar FMA into packed `vfmadd231ps`
        // when it vectorises the tile loop.
        unsafe { _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(a), _mm_set_ss(b), _mm_set_ss(c))) }
    }
}

// SAFETY (both): `Fused` is only used by `blocked_avx2` and `blocked_avx512`, whose callers
// vouch for AVX2 and FMA (see `Kernel::avx2_unchecked` and `Kernel::avx512_unchecked`).
#[cfg(target_arch = "x86_64")]
impl<const NR: usize> Tiles<NR> for Fused {
    #[inline(always)]
    fn dense<const R: usize>(a: &APanel<R>, b_panel: &[f32]) -> [[f32; NR]; R] {
        unsafe { avx2::dense::<R, NR>(a, b_panel) }
    }

    #[inline(always)]
    fn sparse<const R: usize>(a: &APanel<R>, steps: &[u16], b_panel: &[f32]) -> [[f32; NR]; R] {
        unsafe { avx2::sparse::<R, NR>(a, steps, b_panel) }
    }

    #[inline(always)]
    fn packed<const R: usize>(
        a: &[[f32; PACKED_ROWS]],
        steps: &[u16],
        b_panel: &[f32],
    ) -> [[f32; NR]; R] {
        unsafe { avx2::packed::<R, NR>(a, steps, b_panel) }
    }
}

/// The tile loops compiled for AVX2 + FMA.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{APanel, Fused, PACKED_ROWS, Tiles, dense_kernel, packed_kernel, sparse_kernel};
    use core::arch::x86_64::{
        __m256, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_setzero_ps,
        _mm256_storeu_ps,
    };

    /// Vectors of 8 floats across a wide tile.
    const VECTORS: usize = 4;
    const WIDTH: usize = 8 * VECTORS;

    /// Tiles of up to 3 rows x 32 columns, written with intrinsics: the generic loop spills
    /// accumulators at this shape.
    pub(super) struct Wide;

    // `#[inline(never)]` on a `#[target_feature]` function does not keep LLVM from inlining
    // it into `blocked_avx2` (same features), where the tile ran 10% slower; a plain function
    // in between does.
    // SAFETY (both): `Wide` is only used by `blocked_avx2`, whose caller vouches for AVX2 and
    // FMA (see `Kernel::avx2_unchecked`).
    impl Tiles<WIDTH> for Wide {
        // A 32-wide panel of B does not stay in L1 while the next ones of its group pass:
        // measured 5% faster in training (with blocks of 262 steps; at 784 a group holds one).
        const ONE_B_PANEL_AT_A_TIME: bool = true;

        #[inline(never)]
        fn dense<const R: usize>(a: &APanel<R>, b_panel: &[f32]) -> [[f32; WIDTH]; R] {
            unsafe { wide_dense::<R>(a, b_panel) }
        }

        #[inline(never)]
        fn sparse<const R: usize>(
            a: &APanel<R>,
            steps: &[u16],
            b_panel: &[f32],
        ) -> [[f32; WIDTH]; R] {
            unsafe { wide_sparse::<R>(a, steps, b_panel) }
        }

        #[inline(never)]
        fn packed<const R: usize>(
            a: &[[f32; PACKED_ROWS]],
            steps: &[u16],
            b_panel: &[f32],
        ) -> [[f32; WIDTH]; R] {
            unsafe { wide_packed::<R>(a, steps, b_panel) }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    fn wide_dense<const R: usize>(a: &APanel<R>, b_panel: &[f32]) -> [[f32; WIDTH]; R] {
        let kc = (b_panel.len() / WIDTH).min(a.kc);
        // SAFETY: p < kc.
        let steps = (0..kc).map(|p| (p, core::array::from_fn(|ii| unsafe { a.at(ii, p) })));
        unsafe { wide::<R>(steps, b_panel) }
    }

    #[target_feature(enable = "avx2,fma")]
    fn wide_sparse<const R: usize>(
        a: &APanel<R>,
        steps: &[u16],
        b_panel: &[f32],
    ) -> [[f32; WIDTH]; R] {
        let kc = (b_panel.len() / WIDTH).min(a.kc);
        let steps = steps.iter().map(|&p| {
            let p = usize::from(p);
            assert!(p < kc, "step outside the block");
            // SAFETY: p < kc, just checked.
            (p, core::array::from_fn(|ii| unsafe { a.at(ii, p) }))
        });
        unsafe { wide::<R>(steps, b_panel) }
    }

    #[target_feature(enable = "avx2,fma")]
    fn wide_packed<const R: usize>(
        a: &[[f32; PACKED_ROWS]],
        steps: &[u16],
        b_panel: &[f32],
    ) -> [[f32; WIDTH]; R] {
        let steps = steps
            .iter()
            .zip(a)
            .map(|(&p, a)| (usize::from(p), core::array::from_fn(|ii| a[ii])));
        unsafe { wide::<R>(steps, b_panel) }
    }

    /// The `R x 32` register tile over `steps` (K step, A's values there) of the block: the
    /// same sums, in the same order, as `dense_kernel` with `Fused`.
    ///
    /// # Safety
    /// Only inlined into functions compiled with AVX2 and FMA.
    #[inline(always)]
    unsafe fn wide<const R: usize>(
        steps: impl Iterator<Item = (usize, [f32; R])>,
        b_panel: &[f32],
    ) -> [[f32; WIDTH]; R] {
        let b_rows = b_panel.as_chunks::<WIDTH>().0;
        // SAFETY (all intrinsics): the caller runs with AVX2 and FMA; every load and store
        // covers exactly 8 floats of a checked slice.
        let mut acc = [[unsafe { _mm256_setzero_ps() }; VECTORS]; R];
        for (p, a) in steps {
            let b_row = &b_rows[p];
            let a_v: [__m256; R] = a.map(|v| unsafe { _mm256_set1_ps(v) });
            for (v, b_v) in b_row.as_chunks::<8>().0.iter().enumerate() {
                let b_v = unsafe { _mm256_loadu_ps(b_v.as_ptr()) };
                for (acc_row, &a_v) in acc.iter_mut().zip(&a_v) {
                    acc_row[v] = unsafe { _mm256_fmadd_ps(a_v, b_v, acc_row[v]) };
                }
            }
        }
        acc.map(|acc_row| {
            let mut row = [0.0; WIDTH];
            for (out, v) in row.as_chunks_mut::<8>().0.iter_mut().zip(acc_row) {
                unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
            }
            row
        })
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline(never)]
    pub(super) fn dense<const R: usize, const NR: usize>(
        a: &APanel<R>,
        b_panel: &[f32],
    ) -> [[f32; NR]; R] {
        dense_kernel::<Fused, R, NR>(a, b_panel)
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline(never)]
    pub(super) fn sparse<const R: usize, const NR: usize>(
        a: &APanel<R>,
        steps: &[u16],
        b_panel: &[f32],
    ) -> [[f32; NR]; R] {
        sparse_kernel::<Fused, R, NR>(a, steps, b_panel)
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline(never)]
    pub(super) fn packed<const R: usize, const NR: usize>(
        a: &[[f32; PACKED_ROWS]],
        steps: &[u16],
        b_panel: &[f32],
    ) -> [[f32; NR]; R] {
        packed_kernel::<Fused, R, NR>(a, steps, b_panel)
    }
}

/// The wide tiles compiled for AVX-512: the same sums, in the same order, as [`avx2::Wide`]'s
/// (each element starts from zero and takes one fused multiply-add per listed K step), on
/// 512-bit vectors.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{APanel, PACKED_ROWS, Tiles};
    use core::arch::x86_64::{
        __m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps,
        _mm512_storeu_ps,
    };

    /// Tiles of `V` vectors of 16 floats across (`W = 16 V` columns).
    pub(super) struct Wide<const V: usize>;

    // A plain function between the loop nest and the tile keeps LLVM from inlining the tile
    // into the nest, as for AVX2.
    // SAFETY (all three): `Wide` is only used by `blocked_avx512`, whose caller vouches for
    // AVX-512 F (see `Kernel::avx512_unchecked`).
    impl<const V: usize, const W: usize> Tiles<W> for Wide<V> {
        // A 64-wide panel of B (200 KB at K = 784) stays in L2 while every A panel passes.
        const ONE_B_PANEL_AT_A_TIME: bool = true;

        #[inline(never)]
        fn dense<const R: usize>(a: &APanel<R>, b_panel: &[f32]) -> [[f32; W]; R] {
            unsafe { wide_dense::<R, V, W>(a, b_panel) }
        }

        #[inline(never)]
        fn sparse<const R: usize>(a: &APanel<R>, steps: &[u16], b_panel: &[f32]) -> [[f32; W]; R] {
            unsafe { wide_sparse::<R, V, W>(a, steps, b_panel) }
        }

        #[inline(never)]
        fn packed<const R: usize>(
            a: &[[f32; PACKED_ROWS]],
            steps: &[u16],
            b_panel: &[f32],
        ) -> [[f32; W]; R] {
            unsafe { wide_packed::<R, V, W>(a, steps, b_panel) }
        }
    }

    #[target_feature(enable = "avx512f")]
    fn wide_dense<const R: usize, const V: usize, const W: usize>(
        a: &APanel<R>,
        b_panel: &[f32],
    ) -> [[f32; W]; R] {
        let kc = (b_panel.len() / W).min(a.kc);
        // SAFETY: p < kc.
        let steps = (0..kc).map(|p| (p, core::array::from_fn(|ii| unsafe { a.at(ii, p) })));
        unsafe { wide::<R, V, W>(steps, b_panel) }
    }

    #[target_feature(enable = "avx512f")]
    fn wide_sparse<const R: usize, const V: usize, const W: usize>(
        a: &APanel<R>,
        steps: &[u16],
        b_panel: &[f32],
    ) -> [[f32; W]; R] {
        let kc = (b_panel.len() / W).min(a.kc);
        let steps = steps.iter().map(|&p| {
            let p = usize::from(p);
            assert!(p < kc, "step outside the block");
            // SAFETY: p < kc, just checked.
            (p, core::array::from_fn(|ii| unsafe { a.at(ii, p) }))
        });
        unsafe { wide::<R, V, W>(steps, b_panel) }
    }

    #[target_feature(enable = "avx512f")]
    fn wide_packed<const R: usize, const V: usize, const W: usize>(
        a: &[[f32; PACKED_ROWS]],
        steps: &[u16],
        b_panel: &[f32],
    ) -> [[f32; W]; R] {
        let steps = steps
            .iter()
            .zip(a)
            .map(|(&p, a)| (usize::from(p), core::array::from_fn(|ii| a[ii])));
        unsafe { wide::<R, V, W>(steps, b_panel) }
    }

    /// The `R x W` register tile over `steps` (K step, A's values there) of the block.
    ///
    /// # Safety
    /// Only inlined into functions compiled with AVX-512 F.
    #[inline(always)]
    unsafe fn wide<const R: usize, const V: usize, const W: usize>(
        steps: impl Iterator<Item = (usize, [f32; R])>,
        b_panel: &[f32],
    ) -> [[f32; W]; R] {
        const { assert!(W == 16 * V) };
        let b_rows = b_panel.as_chunks::<W>().0;
        // SAFETY (all intrinsics): the caller runs with AVX-512 F; every load and store covers
        // exactly 16 floats of a checked slice.
        let mut acc = [[unsafe { _mm512_setzero_ps() }; V]; R];
        for (p, a) in steps {
            let b_row = &b_rows[p];
            let a_v: [__m512; R] = a.map(|v| unsafe { _mm512_set1_ps(v) });
            for (v, b_v) in b_row.as_chunks::<16>().0.iter().enumerate() {
                let b_v = unsafe { _mm512_loadu_ps(b_v.as_ptr()) };
                for (acc_row, &a_v) in acc.iter_mut().zip(&a_v) {
                    acc_row[v] = unsafe { _mm512_fmadd_ps(a_v, b_v, acc_row[v]) };
                }
            }
        }
        acc.map(|acc_row| {
            let mut row = [0.0; W];
            for (out, v) in row.as_chunks_mut::<16>().0.iter_mut().zip(acc_row) {
                unsafe { _mm512_storeu_ps(out.as_mut_ptr(), v) };
            }
            row
        })
    }
}

/// The reference: one dot product per element, summed in K order.
fn naive(a: MatRef, b: MatRef, out: &Out, cols: Range<usize>, epilogue: Epilogue) {
    for i in 0..a.rows {
        for j in cols.clone() {
            let mut sum = 0.0f32;
            for p in 0..a.cols {
                sum += a.at(i, p) * b.at(p, j);
            }
            // SAFETY: i < m and j is in this job's column range.
            unsafe { out.set(i, j, epilogue.apply(sum, i * out.ld + j, j)) };
        }
    }
}

/// The GEMM loop nest for one job's columns of C.
#[inline(always)]
fn blocked<M: Tiles<NR>, const MR: usize, const NR: usize>(
    a: MatRef,
    b: MatRef,
    out: &Out,
    cols: Columns,
    epilogue: Epilogue,
    scratch: &mut Scratch,
) {
    const { assert!(MR >= 2 && NR <= NR_MAX) };
    let Columns {
        range: cols,
        claims,
    } = cols;
    let (m, k) = (a.rows, a.cols);
    // Equal K blocks: 1024 = 2 x 512 rather than 784 + 240, and never a thin last block that
    // pays a full pass over C for little work. Only k decides the blocks, never the columns.
    let kc_step = k.div_ceil(k.div_ceil(KC).max(1));
    // As many panels of B as fit in `B_LEN`: each A panel then sweeps a wide strip of C's rows,
    // which keeps the write-back of a large C (Xᵀ·dH is 1.6 MB) streaming.
    let group = (B_LEN / (kc_step.max(1) * NR)).max(1);
    let skip_zeros = skips_zeros(b.cols, NR);
    // A's rows strided (Xᵀ: each step of a panel is a cache line of its own): the listing
    // reads every value anyway, so it packs the listed ones for the tiles.
    let pack_a = skip_zeros && a.col_stride != 1 && MR <= PACKED_ROWS;
    // Rows of A per block: as many panels as the step lists (and packed values) hold.
    let listed_len = if pack_a { PACKED_LEN } else { STEPS_LEN };
    let max_panels = (listed_len / kc_step.max(1)).min(MAX_PANELS);
    let panels = m.div_ceil(MR);
    let mc_step = panels.div_ceil(panels.div_ceil(max_panels).max(1)) * MR;
    // B already in this kernel's panels (the training step's copy of W1): read in place.
    let b_in_place = b.panel_width == NR;
    let row_claims = match claims {
        Some((Claims::Rows, counter)) => {
            // A row's sum would otherwise be split between jobs, in no fixed order.
            assert!(
                kc_step >= k,
                "rows are claimed only in products of one K block"
            );
            Some(counter)
        }
        _ => None,
    };
    // The units of columns this job claimed in the first block (with column claims).
    let mut claimed = 0u64;
    // The group of B that `scratch.b` holds with every row packed: (pc, jc, width).
    let mut packed_b = None;
    // k == 0 still runs one (empty) block so the epilogue is applied.
    let mut pc = 0;
    loop {
        let kc = kc_step.min(k - pc);
        let (first, last) = (pc == 0, pc + kc == k);
        let row_blocks = match row_claims {
            None => Units::Range {
                next: 0,
                end: m,
                step: mc_step,
            },
            Some(counter) => Units::claim_rows(counter, m),
        };
        for (ic, mc) in row_blocks {
            if skip_zeros {
                list_block_steps::<MR>(&a, ic..ic + mc, pc, kc, pack_a, scratch);
            }
            // Rows of B that no panel reads are not packed (blank image margins), unless later
            // row blocks will read the same packing.
            let used = &scratch.used[..kc.div_ceil(8)];
            let used =
                (skip_zeros && row_claims.is_none() && !every_step_used(used, kc)).then_some(used);
            let units = match claims {
                None | Some((Claims::Rows, _)) => Units::Range {
                    next: cols.start,
                    end: cols.end,
                    step: group * NR,
                },
                Some((Claims::Columns, counter)) if pc == 0 && ic == 0 => Units::Claim {
                    counter,
                    end: cols.end,
                    size: unit_width(NR),
                    claimed: Some(&mut claimed),
                },
                Some((Claims::Columns, _)) => Units::Replay {
                    left: claimed,
                    end: cols.end,
                    size: unit_width(NR),
                },
            };
            for (jc, width) in units {
                if !b_in_place && (used.is_some() || packed_b != Some((pc, jc, width))) {
                    let b_rows = scratch.b.as_chunks_mut::<NR>().0;
                    for (panel, j) in b_rows
                        .chunks_exact_mut(kc.max(1))
                        .zip((0..width).step_by(NR))
                    {
                        pack_b(&b, pc, jc + j, NR.min(width - j), &mut panel[..kc], used);
                    }
                    packed_b = used.is_none().then_some((pc, jc, width));
                }
                // Wide tiles keep one B panel close while every A panel passes over it; with
                // narrow ones each A panel sweeps the whole group, writing C along its rows.
                let pass_width = if M::ONE_B_PANEL_AT_A_TIME { NR } else { width };
                for pass in (0..width).step_by(pass_width) {
                    let (b_panels, panel_stride) = if b_in_place {
                        // Units and column ranges start on whole tiles.
                        debug_assert_eq!((jc + pass) % NR, 0);
                        let panel = (jc + pass) / NR * b.rows * NR;
                        (&b.data[panel + pc * NR..], b.rows * NR)
                    } else {
                        (&scratch.b[pass * kc..], kc * NR)
                    };
                    for (q, ir) in (0..mc).step_by(MR).enumerate() {
                        let listed = q * kc..q * kc + usize::from(scratch.counts[q]);
                        let steps = match (skip_zeros, pack_a) {
                            (true, true) => Steps::Packed(
                                &scratch.steps[listed.clone()],
                                &scratch.packed_a[listed],
                            ),
                            // A panel that keeps every step runs dense.
                            (true, false) if listed.len() < kc => {
                                Steps::Listed(&scratch.steps[listed])
                            }
                            _ => Steps::All,
                        };
                        let strip = Strip {
                            row: ic + ir,
                            rows: MR.min(mc - ir),
                            pc,
                            kc,
                            steps,
                            col: jc + pass,
                            width: pass_width.min(width - pass),
                            panel_stride,
                            first,
                            last,
                        };
                        // The last panel of 128 = 21 x 6 + 2 rows runs a 2-row tile, not 6.
                        match strip.rows {
                            r if r > 4 || r == MR => {
                                run_strip::<M, MR, NR>(&a, strip, b_panels, out, epilogue)
                            }
                            r if r > 2 => run_strip::<M, 4, NR>(&a, strip, b_panels, out, epilogue),
                            _ => run_strip::<M, 2, NR>(&a, strip, b_panels, out, epilogue),
                        }
                    }
                }
            }
        }
        pc += kc;
        if pc >= k {
            break;
        }
    }
}

/// The columns of C a job computes: its range, or units of it claimed from a counter; or
/// with row claims, its range for each unit of rows it claims.
struct Columns<'a> {
    range: Range<usize>,
    claims: Option<(Claims, &'a Counter)>,
}

/// What the jobs of a product claim, one unit at a time, from a counter they share.
#[derive(Clone, Copy)]
enum Claims {
    /// Units of [`unit_width`] columns, every row.
    Columns,
    /// Units of [`UNIT_HEIGHT`] rows, every column (products of one K block only).
    Rows,
}

impl Columns<'_> {
    fn range(range: Range<usize>) -> Self {
        Self {
            range,
            claims: None,
        }
    }
}

/// The groups of columns (first, width) a job runs in one K block and row block, or the
/// blocks of rows (first, height) it runs in one K block.
enum Units<'a> {
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
    fn claim_rows(counter: &'a Counter, end: usize) -> Self {
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

/// Which K steps of a block a panel runs, and where its values of A come from.
#[derive(Clone, Copy)]
enum Steps<'a> {
    /// Every step, values read in A.
    All,
    /// The listed steps, values read in A.
    Listed(&'a [u16]),
    /// The listed steps, values packed beside them.
    Packed(&'a [u16], &'a [[f32; PACKED_ROWS]]),
}

/// One panel of A rows against a group of B panels: a row of tiles of C.
#[derive(Clone, Copy)]
struct Strip<'a> {
    /// Position of the panel's first row in A's panel order.
    row: usize,
    /// Rows of A in the panel (at most the tile's R).
    rows: usize,
    /// The K block.
    pc: usize,
    kc: usize,
    /// The K steps to run and where A's values come from.
    steps: Steps<'a>,
    /// First column of C and width of the group.
    col: usize,
    width: usize,
    /// Distance between the group's B panels.
    panel_stride: usize,
    first: bool,
    last: bool,
}

#[inline(always)]
fn run_strip<M: Tiles<NR>, const R: usize, const NR: usize>(
    a: &MatRef,
    strip: Strip,
    b_panels: &[f32],
    out: &Out,
    epilogue: Epilogue,
) {
    let panel = APanel::<R>::new(a, strip.row, strip.rows, strip.pc, strip.kc);
    for j in (0..strip.width).step_by(NR) {
        let b_panel = &b_panels[j / NR * strip.panel_stride..][..NR * strip.kc];
        let acc = match strip.steps {
            Steps::All => M::dense::<R>(&panel, b_panel),
            Steps::Listed(steps) => M::sparse::<R>(&panel, steps, b_panel),
            Steps::Packed(steps, values) => M::packed::<R>(values, steps, b_panel),
        };
        let tile = Tile {
            rows: &panel.numbers[..strip.rows],
            col: strip.col + j,
            cols: NR.min(strip.width - j),
        };
        store(&acc, out, tile, strip.first, strip.last, epilogue);
    }
}

/// `R` rows of A over one K block, read where they lie: whatever A's layout, nothing is copied.
struct APanel<'a, const R: usize> {
    /// Each row's value at the block's first K step. Rows past the panel's last are that row
    /// again: their sums are computed and never stored.
    rows: [*const f32; R],
    /// The rows' numbers in A, which are also the rows of C their sums go to.
    numbers: [usize; R],
    /// Distance from one K step to the next.
    stride: usize,
    /// K steps in the block.
    kc: usize,
    _a: PhantomData<&'a [f32]>,
}

impl<'a, const R: usize> APanel<'a, R> {
    /// The rows at positions `i0..i0 + height` (`1 <= height <= R`) of A's panel order, K steps
    /// `pc..pc + kc`.
    #[inline(always)]
    fn new(a: &MatRef<'a>, i0: usize, height: usize, pc: usize, kc: usize) -> Self {
        let numbers: [usize; R] = core::array::from_fn(|ii| a.row_index(i0 + ii.min(height - 1)));
        let starts = numbers.map(|i| i * a.row_stride + pc * a.col_stride);
        // The panel's only bounds check: every value `at` reads lies inside `a.data`.
        let last_step = kc.saturating_sub(1) * a.col_stride;
        assert!(
            kc == 0 || starts.iter().all(|&s| s + last_step < a.data.len()),
            "panel outside A"
        );
        Self {
            // `wrapping_add`: with kc == 0 a start may lie past the data; it is never read.
            rows: starts.map(|s| a.data.as_ptr().wrapping_add(s)),
            numbers,
            stride: a.col_stride,
            kc,
            _a: PhantomData,
        }
    }

    /// Row `ii`'s value at K step `p` of the block.
    ///
    /// # Safety
    /// `p < self.kc`.
    #[inline(always)]
    unsafe fn at(&self, ii: usize, p: usize) -> f32 {
        debug_assert!(p < self.kc);
        // SAFETY: `new` checked that `start + (kc - 1) * stride` is inside A for every row.
        unsafe { *self.rows[ii].add(p * self.stride) }
    }
}

/// One step of K: `acc += a[.., p] ⊗ b_row`.
///
/// # Safety
/// `p < a.kc`.
#[inline(always)]
unsafe fn rank1<M: MulAdd, const R: usize, const NR: usize>(
    acc: &mut [[f32; NR]; R],
    a: &APanel<R>,
    p: usize,
    b_row: &[f32; NR],
) {
    for (ii, acc_row) in acc.iter_mut().enumerate() {
        // Read where it is used, so that it is broadcast straight from memory: loading the
        // whole column first would take R more registers than the tile has.
        // SAFETY: p < kc (the caller's promise).
        let a_v = unsafe { a.at(ii, p) };
        for (acc_v, &b_v) in acc_row.iter_mut().zip(b_row) {
            *acc_v = M::mul_add(a_v, b_v, *acc_v);
        }
    }
}

/// Where a tile goes in C: its rows (in panel order) and columns.
#[derive(Clone, Copy)]
struct Tile<'r> {
    rows: &'r [usize],
    col: usize,
    cols: usize,
}

/// The register tile: `R x NR` accumulators, one rank-1 update per K step of the block.
#[inline(always)]
fn dense_kernel<M: MulAdd, const R: usize, const NR: usize>(
    a: &APanel<R>,
    b_panel: &[f32],
) -> [[f32; NR]; R] {
    let mut acc = [[0.0f32; NR]; R];
    let b_rows = b_panel.as_chunks::<NR>().0;
    assert!(b_rows.len() <= a.kc, "B panel deeper than the block");
    for (p, b_row) in b_rows.iter().enumerate() {
        // SAFETY: p < b_rows.len() <= kc.
        unsafe { rank1::<M, R, NR>(&mut acc, a, p, b_row) };
    }
    acc
}

/// The register tile over the listed K steps only.
#[inline(always)]
fn sparse_kernel<M: MulAdd, const R: usize, const NR: usize>(
    a: &APanel<R>,
    steps: &[u16],
    b_panel: &[f32],
) -> [[f32; NR]; R] {
    let mut acc = [[0.0f32; NR]; R];
    let b_rows = b_panel.as_chunks::<NR>().0;
    assert!(b_rows.len() <= a.kc, "B panel deeper than the block");
    for &step in steps {
        let p = usize::from(step);
        let b_row = &b_rows[p];
        // SAFETY: indexing `b_rows` just checked p < b_rows.len() <= kc.
        unsafe { rank1::<M, R, NR>(&mut acc, a, p, b_row) };
    }
    acc
}

/// The register tile over the listed K steps, A's values packed beside them.
#[inline(always)]
fn packed_kernel<M: MulAdd, const R: usize, const NR: usize>(
    a: &[[f32; PACKED_ROWS]],
    steps: &[u16],
    b_panel: &[f32],
) -> [[f32; NR]; R] {
    let mut acc = [[0.0f32; NR]; R];
    let b_rows = b_panel.as_chunks::<NR>().0;
    for (&step, a) in steps.iter().zip(a) {
        let b_row = &b_rows[usize::from(step)];
        for (acc_row, &a_v) in acc.iter_mut().zip(a) {
            for (acc_v, &b_v) in acc_row.iter_mut().zip(b_row) {
                *acc_v = M::mul_add(a_v, b_v, *acc_v);
            }
        }
    }
    acc
}

/// For each MR-row panel of A rows `rows`, K steps `pc..pc+kc`: lists the steps where some
/// row is nonzero (NaN counts as nonzero) in `steps`, their number in `counts`, and marks in
/// `used` every step some panel lists.
// Not inlined: inside the loop nest LLVM kept the listing's values on the stack.
#[inline(never)]
fn list_block_steps<const MR: usize>(
    a: &MatRef,
    rows: Range<usize>,
    pc: usize,
    kc: usize,
    pack_a: bool,
    scratch: &mut Scratch,
) {
    scratch.used[..kc.div_ceil(8)].fill(0);
    let mut first = rows.start;
    if pack_a && a.row_stride == 1 && a.order.is_empty() {
        // Whole panels of neighbouring rows (Xᵀ: neighbouring pixels), all in one pass.
        let panels = rows.len() / MR;
        list_and_pack_neighbours::<MR>(a, first, panels, pc, kc, scratch);
        first += panels * MR;
    }
    let done = (first - rows.start) / MR;
    for (q, i0) in (first..rows.end).step_by(MR).enumerate() {
        let q = done + q;
        // Each panel's list may spill up to 8 entries into the next panel's space, which that
        // panel's own listing then overwrites.
        let steps = &mut scratch.steps[q * kc..];
        let panel = APanel::<MR>::new(a, i0, MR.min(rows.end - i0), pc, kc);
        let used = &mut scratch.used[..kc.div_ceil(8)];
        let count = if pack_a {
            list_and_pack_steps(&panel, steps, &mut scratch.packed_a[q * kc..], used)
        } else {
            list_steps(&panel, steps, used)
        };
        scratch.counts[q] = count as u16;
    }
}

/// Bit `i` set when `bits[i]`, its sign left out, is not zero.
#[inline(always)]
fn nonzero_mask(bits: [u32; 8]) -> u8 {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{
            _mm_and_si128, _mm_castsi128_ps, _mm_cmpeq_epi32, _mm_loadu_si128, _mm_movemask_ps,
            _mm_set1_epi32, _mm_setzero_si128,
        };
        // SSE2 is part of the x86-64 baseline: one compare and move-mask per 4 flags, where
        // the plain fold below became 8 scalar tests.
        // SAFETY: SSE2 is always present on x86-64, and each load reads 4 of the 8 values.
        unsafe {
            let [low, high] = [0, 4].map(|i| _mm_loadu_si128(bits[i..].as_ptr().cast()));
            let magnitude = _mm_set1_epi32(0x7fff_ffff);
            let zero = |v| {
                let is_zero = _mm_cmpeq_epi32(_mm_and_si128(v, magnitude), _mm_setzero_si128());
                _mm_movemask_ps(_mm_castsi128_ps(is_zero))
            };
            !((zero(low) | zero(high) << 4) as u8)
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        bits.iter()
            .enumerate()
            .fold(0, |mask, (i, &b)| mask | (u8::from(nonzero_bits(b)) << i))
    }
}

/// For each byte, the positions of its set bits, lowest first: they turn the flags of 8 steps
/// into list entries without a branch per step.
static SET_BITS: [[u16; 8]; 256] = set_bits_table();

const fn set_bits_table() -> [[u16; 8]; 256] {
    let mut table = [[0; 8]; 256];
    let mut mask = 0;
    while mask < 256 {
        let (mut bit, mut count) = (0, 0);
        while bit < 8 {
            if mask & (1 << bit) != 0 {
                table[mask][count] = bit as u16;
                count += 1;
            }
            bit += 1;
        }
        mask += 1;
    }
    table
}

/// Lists in `steps` the K steps where some row of the panel is nonzero and marks them in
/// `used` (a bit per step); returns how many. `steps` needs room for 8 entries past the last.
#[inline(always)]
fn list_steps<const R: usize>(panel: &APanel<R>, steps: &mut [u16], used: &mut [u8]) -> usize {
    let kc = panel.kc;
    assert!(steps.len() >= kc + 8 && used.len() >= kc.div_ceil(8));
    let mut count = 0;
    for (group, used) in (0..kc).step_by(8).zip(used) {
        let len = 8.min(kc - group);
        let mut bits = [0u32; 8];
        if panel.stride == 1 && len == 8 {
            // Rows lie along K (X, dZ): 8 steps of a row are one load.
            for &row in &panel.rows {
                // SAFETY: group + 8 <= kc, and `APanel::new` checked that the row's kc values
                // lie inside A.
                let values = unsafe { &*row.add(group).cast::<[f32; 8]>() };
                for (b, v) in bits.iter_mut().zip(values) {
                    *b |= v.to_bits();
                }
            }
        } else {
            for (i, b) in bits[..len].iter_mut().enumerate() {
                // SAFETY: group + i < kc.
                *b = (0..R).fold(0, |any, ii| {
                    any | unsafe { panel.at(ii, group + i) }.to_bits()
                });
            }
        }
        let mask = nonzero_mask(bits);
        *used |= mask;
        let out: &mut [u16; 8] = (&mut steps[count..count + 8])
            .try_into()
            .expect("8 entries");
        for (entry, &bit) in out.iter_mut().zip(&SET_BITS[usize::from(mask)]) {
            *entry = group as u16 + bit;
        }
        count += mask.count_ones() as usize;
    }
    count
}

/// The listing of [`list_block_steps`] with A's values packed beside the steps, for `panels`
/// whole panels of R rows from row `i0` that lie next to each other in memory (Xᵀ:
/// neighbouring pixels). One pass along K: each step's values of every panel are read in a
/// row, rather than a cache line per step and panel.
fn list_and_pack_neighbours<const R: usize>(
    a: &MatRef,
    i0: usize,
    panels: usize,
    pc: usize,
    kc: usize,
    scratch: &mut Scratch,
) {
    assert!(R <= PACKED_ROWS && panels * kc <= PACKED_LEN);
    let counts = &mut scratch.counts[..panels];
    counts.fill(0);
    for p in 0..kc {
        let start = i0 + (pc + p) * a.col_stride;
        let values = a.data[start..start + panels * R].as_chunks::<R>().0;
        let mut any = 0;
        for (q, (row, count)) in values.iter().zip(counts.iter_mut()).enumerate() {
            let bits = row.iter().fold(0, |bits, v| bits | v.to_bits());
            let at = q * kc + usize::from(*count);
            scratch.steps[at] = p as u16;
            scratch.packed_a[at] = core::array::from_fn(|ii| if ii < R { row[ii] } else { 0.0 });
            *count += u16::from(nonzero_bits(bits));
            any |= bits;
        }
        scratch.used[p / 8] |= u8::from(nonzero_bits(any)) << (p % 8);
    }
}

/// Lists in `steps` the K steps where some row of the panel is nonzero, and the panel's values
/// there in `packed` (zero past its R rows); marks them in `used`; returns how many.
#[inline(always)]
fn list_and_pack_steps<const R: usize>(
    panel: &APanel<R>,
    steps: &mut [u16],
    packed: &mut [[f32; PACKED_ROWS]],
    used: &mut [u8],
) -> usize {
    let kc = panel.kc;
    assert!(R <= PACKED_ROWS && steps.len() >= kc && packed.len() >= kc);
    assert!(used.len() >= kc.div_ceil(8));
    let mut count = 0;
    for p in 0..kc {
        // SAFETY: p < kc.
        let values: [f32; PACKED_ROWS] = core::array::from_fn(|ii| {
            if ii < R {
                unsafe { panel.at(ii, p) }
            } else {
                0.0
            }
        });
        let bits = values.iter().fold(0, |any, v| any | v.to_bits());
        // Branch-free: every step is written, and kept when nonzero (NaN counts as nonzero).
        steps[count] = p as u16;
        packed[count] = values;
        let nonzero = nonzero_bits(bits);
        used[p / 8] |= u8::from(nonzero) << (p % 8);
        count += usize::from(nonzero);
    }
    count
}

/// Whether every one of `kc` steps has its bit set in `used`.
fn every_step_used(used: &[u8], kc: usize) -> bool {
    used.iter().enumerate().all(|(byte, &bits)| {
        let steps = 8.min(kc - 8 * byte);
        bits == u8::MAX >> (8 - steps)
    })
}

/// Whether the bits of a float (or several, OR-ed together) are not all ±0 (NaN is nonzero).
/// A test on the bits without the sign: no float compares, so the listing loops vectorise.
#[inline(always)]
fn nonzero_bits(bits: u32) -> bool {
    bits & 0x7fff_ffff != 0
}

/// Packs rows `pc..pc+rows.len()`, columns `jc..jc+width` of B into one NR-wide panel,
/// zero-padding the columns past `width`. Rows that `used` marks unused may be left as they
/// were (only on the common path, where skipping saves reading B).
#[inline(always)]
fn pack_b<const NR: usize>(
    b: &MatRef,
    pc: usize,
    jc: usize,
    width: usize,
    rows: &mut [[f32; NR]],
    used: Option<&[u8]>,
) {
    let kc = rows.len();
    // Panels of another width go element by element, through the last branch.
    let strided = b.panel_width == 0;
    if strided && b.col_stride == 1 && width == NR {
        match used {
            Some(used) => {
                for (p, row) in rows.iter_mut().enumerate() {
                    if used[p / 8] & (1 << (p % 8)) != 0 {
                        row.copy_from_slice(b.row(pc + p, jc, NR));
                    }
                }
            }
            None => {
                for (p, row) in rows.iter_mut().enumerate() {
                    row.copy_from_slice(b.row(pc + p, jc, NR));
                }
            }
        }
    } else if strided && b.col_stride == 1 {
        for (p, row) in rows.iter_mut().enumerate() {
            row[..width].copy_from_slice(b.row(pc + p, jc, width));
            row[width..].fill(0.0);
        }
    } else if strided && b.row_stride == 1 {
        // Bᵀ stored row-major (W2ᵀ): a column of B is contiguous.
        for jj in 0..NR {
            if jj < width {
                for (row, &v) in rows.iter_mut().zip(b.col(pc, jc + jj, kc)) {
                    row[jj] = v;
                }
            } else {
                rows.iter_mut().for_each(|row| row[jj] = 0.0);
            }
        }
    } else {
        for (p, row) in rows.iter_mut().enumerate() {
            for (jj, v) in row.iter_mut().enumerate() {
                *v = if jj < width {
                    b.at(pc + p, jc + jj)
                } else {
                    0.0
                };
            }
        }
    }
}

/// Adds a tile to C (or sets it, for the first K block) and applies the epilogue after the last.
#[inline(always)]
fn store<const R: usize, const NR: usize>(
    acc: &[[f32; NR]; R],
    out: &Out,
    tile: Tile,
    first: bool,
    last: bool,
    epilogue: Epilogue,
) {
    for (acc_row, &i) in acc.iter().zip(tile.rows) {
        // SAFETY: the tile lies inside C and inside this job's column range, and this is the
        // only live reference to that row segment.
        let c_row = unsafe { out.row_mut(i, tile.col, tile.cols) };
        let at = Place {
            index: i * out.ld + tile.col,
            col: tile.col,
        };
        match <&mut [f32; NR]>::try_from(&mut *c_row) {
            // Whole arrays: the row becomes a few vector operations.
            Ok(c_row) => store_full(acc_row, c_row, at, first, last, epilogue),
            Err(_) => store_row(&acc_row[..tile.cols], c_row, at, first, last, epilogue),
        }
    }
}

/// [`store_row`] for a full-width row, on values rather than memory so that it vectorises.
#[inline(always)]
fn store_full<const NR: usize>(
    acc: &[f32; NR],
    c: &mut [f32; NR],
    at: Place,
    first: bool,
    last: bool,
    epi: Epilogue,
) {
    let mut v = *acc;
    if !first {
        let old = *c;
        for (v, o) in v.iter_mut().zip(old) {
            *v += o;
        }
    }
    if last {
        match epi {
            Epilogue::Store => {}
            Epilogue::Bias(bias) => {
                let bias = *bias[at.col..].first_chunk::<NR>().expect("bias checked");
                for (v, b) in v.iter_mut().zip(bias) {
                    *v += b;
                }
            }
            Epilogue::BiasRelu(bias) => {
                let bias = *bias[at.col..].first_chunk::<NR>().expect("bias checked");
                for (v, b) in v.iter_mut().zip(bias) {
                    *v = relu(*v + b);
                }
            }
            Epilogue::ReluMask(mask) => {
                let mask = *mask[at.index..].first_chunk::<NR>().expect("mask checked");
                for (v, mk) in v.iter_mut().zip(mask) {
                    *v = masked(*v, mk);
                }
            }
        }
    }
    *c = v;
}

/// Where a row segment of a tile starts in C: flat index (for masks) and column (for biases).
#[derive(Clone, Copy)]
struct Place {
    index: usize,
    col: usize,
}

#[inline(always)]
fn store_row(acc: &[f32], c: &mut [f32], at: Place, first: bool, last: bool, epi: Epilogue) {
    let len = c.len();
    let sum = |c: f32, v: f32| if first { v } else { c + v };
    match (last, epi) {
        (false, _) | (true, Epilogue::Store) => {
            for (c, &v) in c.iter_mut().zip(acc) {
                *c = sum(*c, v);
            }
        }
        (true, Epilogue::Bias(bias)) => {
            for ((c, &v), &b) in c.iter_mut().zip(acc).zip(&bias[at.col..at.col + len]) {
                *c = sum(*c, v) + b;
            }
        }
        (true, Epilogue::BiasRelu(bias)) => {
            for ((c, &v), &b) in c.iter_mut().zip(acc).zip(&bias[at.col..at.col + len]) {
                *c = relu(sum(*c, v) + b);
            }
        }
        (true, Epilogue::ReluMask(mask)) => {
            for ((c, &v), &mk) in c.iter_mut().zip(acc).zip(&mask[at.index..at.index + len]) {
                *c = masked(sum(*c, v), mk);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;
    use std::boxed::Box;
    use std::vec::Vec;

    /// The blocked kernels (the naive one is their reference).
    fn kernels() -> Vec<Kernel> {
        let mut list = crate::every_kernel();
        list.retain(|&kernel| kernel != Kernel::NAIVE);
        list
    }

    fn scratches(count: usize) -> Box<[Scratch]> {
        crate::zeroed_slice::<Scratch>(count)
    }

    fn values(seed: u64, len: usize) -> Vec<f32> {
        picodense_support::Noise::new(seed).floats(len, -1.0, 1.0)
    }

    #[derive(Clone, Copy, Debug)]
    enum Layout {
        Nn,
        Tn,
        Nt,
    }

    /// One product to compute: shapes, data seed, epilogue (0-3) and how sparse A is.
    #[derive(Clone, Copy, Debug)]
    struct Case {
        layout: Layout,
        m: usize,
        k: usize,
        n: usize,
        seed: u64,
        epi: u8,
        /// 0: dense A. Otherwise whole columns, whole rows and single values of A are zeroed,
        /// like the blank margins and background of images, so that panels skip K steps.
        sparse: u8,
    }

    impl Case {
        fn dense(layout: Layout, m: usize, k: usize, n: usize) -> Self {
            Self {
                layout,
                m,
                k,
                n,
                seed: 7,
                epi: 1,
                sparse: 0,
            }
        }
    }

    /// Computes `a·b` for the case with `kernel`, split into `jobs` column ranges; returns C.
    fn product(kernel: Kernel, case: Case, jobs: usize) -> Vec<f32> {
        compute(kernel, case, jobs, false)
    }

    /// `|a|·|b|`: the size of the terms each element of C sums, which bounds rounding errors.
    fn magnitude(case: Case) -> Vec<f32> {
        compute(Kernel::NAIVE, Case { epi: 0, ..case }, 1, true)
    }

    fn compute(kernel: Kernel, case: Case, jobs: usize, abs: bool) -> Vec<f32> {
        compute_in_order(kernel, case, jobs, abs, None)
    }

    /// [`compute`] with A's rows grouped in a random order drawn from `order_seed`.
    fn compute_in_order(
        kernel: Kernel,
        case: Case,
        jobs: usize,
        abs: bool,
        order_seed: Option<u64>,
    ) -> Vec<f32> {
        compute_with(kernel, case, jobs, abs, order_seed, None)
    }

    /// [`compute_in_order`], with B (not transposed) given in panels of `b_panels` columns.
    fn compute_with(
        kernel: Kernel,
        case: Case,
        jobs: usize,
        abs: bool,
        order_seed: Option<u64>,
        b_panels: Option<usize>,
    ) -> Vec<f32> {
        let Case { m, k, n, seed, .. } = case;
        let mut a_data = values(seed, m * k);
        // B by position, so that a narrower product has the first columns of a wider one.
        let b_all = values(seed + 1, k * 64);
        let b_at =
            |p: usize, j: usize| b_all[(p * 64 + j % 64) % b_all.len()] * (1.0 + (j / 64) as f32);
        let mut b_data: Vec<f32> = match case.layout {
            Layout::Nt => (0..n * k).map(|x| b_at(x % k, x / k)).collect(),
            Layout::Nn | Layout::Tn => (0..k * n).map(|x| b_at(x / n, x % n)).collect(),
        };
        let bias = values(seed + 2, n);
        let mask = values(seed + 3, m * n);
        if case.sparse > 0 {
            let s = u64::from(case.sparse);
            for i in 0..m {
                for p in 0..k {
                    let (i64_, p64) = (i as u64, p as u64);
                    let hit = (p64 * 7 + s) % 5 < 2
                        || (i64_ * 3 + s) % 4 == 0
                        || (i64_ * 31 + p64 * 17 + seed) % 3 == 0;
                    if hit {
                        let index = match case.layout {
                            Layout::Tn => p * m + i,
                            Layout::Nn | Layout::Nt => i * k + p,
                        };
                        a_data[index] = 0.0;
                    }
                }
            }
        }
        if abs {
            a_data.iter_mut().for_each(|v| *v = v.abs());
            b_data.iter_mut().for_each(|v| *v = v.abs());
        }
        let mut paneled = Vec::new();
        if let Some(w) = b_panels {
            // NaN padding: a kernel that read past the last column would show it.
            paneled = std::vec![f32::NAN; n.div_ceil(w) * k * w];
            for p in 0..k {
                for j in 0..n {
                    paneled[panel_index(p, j, k, w)] = b_data[p * n + j];
                }
            }
        }
        let (a, b) = match (case.layout, b_panels) {
            (Layout::Nn, Some(w)) => (
                MatRef::row_major(&a_data, m, k),
                MatRef::panels(&paneled, k, n, w),
            ),
            (Layout::Tn, Some(w)) => (
                MatRef::row_major(&a_data, k, m).t(),
                MatRef::panels(&paneled, k, n, w),
            ),
            (Layout::Nn, _) => (
                MatRef::row_major(&a_data, m, k),
                MatRef::row_major(&b_data, k, n),
            ),
            (Layout::Tn, _) => (
                MatRef::row_major(&a_data, k, m).t(),
                MatRef::row_major(&b_data, k, n),
            ),
            (Layout::Nt, _) => (
                MatRef::row_major(&a_data, m, k),
                MatRef::row_major(&b_data, n, k).t(),
            ),
        };
        let mut order: Vec<u16> = (0..m as u16).collect();
        let a = match order_seed {
            Some(order_seed) => {
                // Fisher-Yates with the test's generator.
                let draws = values(order_seed, m);
                for i in (1..m).rev() {
                    let j = ((draws[i] + 1.0) / 2.0 * (i + 1) as f32) as usize;
                    order.swap(i, j.min(i));
                }
                a.row_order(&order)
            }
            None => a,
        };
        let epilogue = match case.epi {
            0 => Epilogue::Store,
            1 => Epilogue::Bias(&bias),
            2 => Epilogue::BiasRelu(&bias),
            _ => Epilogue::ReluMask(&mask),
        };
        let mut c = std::vec![f32::NAN; m * n];
        if jobs == 1 {
            gemm(kernel, a, b, &mut c, epilogue, &mut scratches(1)[0]);
        } else {
            gemm_parallel(
                &Serial,
                kernel,
                a,
                b,
                &mut c,
                epilogue,
                &mut scratches(jobs),
            );
        }
        c
    }

    /// Checks a kernel's C against the naive one. Summation orders differ (K blocks, FMA), so
    /// the tolerance grows with the size of the summed terms, not of the (maybe cancelled) sum.
    fn assert_close(got: &[f32], want: &[f32], case: Case) {
        let sizes = magnitude(case);
        let k = case.k as f32;
        for (idx, ((&g, &w), &size)) in got.iter().zip(want).zip(&sizes).enumerate() {
            let tol = f32::EPSILON * (4.0 * k.sqrt() * size + 2.0 * w.abs()) + 1e-6;
            assert!(
                (g - w).abs() <= tol,
                "element {idx}: {g} vs {w} (terms {size})"
            );
        }
    }

    fn bits(values: &[f32]) -> Vec<u32> {
        values.iter().map(|v| v.to_bits()).collect()
    }

    const EDGES: [usize; 12] = [1, 3, 5, 7, 9, 10, 15, 17, 127, 128, 512, 784];
    const LAYOUTS: [Layout; 3] = [Layout::Nn, Layout::Tn, Layout::Nt];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn blocked_matches_naive(
            m in prop::sample::select(&EDGES[..10]),
            k in prop::sample::select(&EDGES[..]),
            n in prop::sample::select(&EDGES[..11]),
            layout in prop::sample::select(&LAYOUTS[..]),
            epi in 0u8..4,
            sparse in prop::sample::select(&[0u8, 1, 2][..]),
            seed in any::<u64>(),
        ) {
            let case = Case { layout, m, k, n, seed, epi, sparse };
            let want = product(Kernel::NAIVE, case, 1);
            for kernel in kernels() {
                assert_close(&product(kernel, case, 1), &want, case);
            }
        }

        #[test]
        fn splitting_columns_or_rows_is_bitwise_identical(
            m in 1usize..100, k in 1usize..300, n in 1usize..100, jobs in 2usize..5,
            layout in prop::sample::select(&LAYOUTS[..]),
            sparse in prop::sample::select(&[0u8, 1, 2][..]),
            seed in any::<u64>(),
        ) {
            let case = Case { layout, m, k, n, seed, epi: 2, sparse };
            for kernel in kernels() {
                prop_assert_eq!(bits(&product(kernel, case, 1)), bits(&product(kernel, case, jobs)));
            }
        }

        /// Skipping zero K steps (wide C) gives the bits of the dense path (narrow C, no step
        /// lists): the first columns of a wide product equal the narrow product.
        #[test]
        fn zero_skipping_is_bitwise_exact(
            m in 1usize..60, k in prop::sample::select(&EDGES[..]),
            layout in prop::sample::select(&[Layout::Nn, Layout::Tn][..]),
            sparse in 1u8..4, seed in any::<u64>(),
        ) {
            for kernel in kernels() {
                let narrow = kernel.panel_width(1);
                let wide = Case { layout, m, k, n: 4 * narrow, seed, epi: 0, sparse };
                let thin = Case { n: narrow, ..wide };
                let wide_c = product(kernel, wide, 1);
                let thin_c = product(kernel, thin, 1);
                let wide_first: Vec<f32> =
                    wide_c.chunks(wide.n).flat_map(|row| &row[..narrow]).copied().collect();
                prop_assert_eq!(bits(&wide_first), bits(&thin_c));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// Grouping A's rows in any order changes no bit of the product, whatever the jobs.
        #[test]
        fn row_order_changes_no_bit(
            m in 1usize..80, k in prop::sample::select(&EDGES[..]), n in 1usize..100,
            jobs in 1usize..4,
            layout in prop::sample::select(&LAYOUTS[..]),
            sparse in 0u8..3, epi in 0u8..4, seed in any::<u64>(), order_seed in any::<u64>(),
        ) {
            let case = Case { layout, m, k, n, seed, epi, sparse };
            for kernel in kernels() {
                let natural = product(kernel, case, 1);
                let grouped = compute_in_order(kernel, case, jobs, false, Some(order_seed));
                prop_assert_eq!(bits(&natural), bits(&grouped));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// B given in panels, of the kernel's own width (read in place) or another, gives the
        /// bits of B row-major, whatever the jobs.
        #[test]
        fn b_in_panels_changes_no_bit(
            m in 1usize..80, k in prop::sample::select(&EDGES[..]),
            n in prop::sample::select(&[1usize, 10, 33, 64, 100, 512][..]),
            jobs in 1usize..4, other_width in 1usize..40,
            layout in prop::sample::select(&[Layout::Nn, Layout::Tn][..]),
            sparse in 0u8..3, epi in 0u8..4, seed in any::<u64>(),
        ) {
            let case = Case { layout, m, k, n, seed, epi, sparse };
            for kernel in kernels().into_iter().chain([Kernel::NAIVE]) {
                let plain = bits(&product(kernel, case, jobs));
                for width in [kernel.panel_width(n), other_width] {
                    let paneled = compute_with(kernel, case, jobs, false, None, Some(width));
                    prop_assert_eq!(&plain, &bits(&paneled), "panels of {}", width);
                }
            }
        }
    }

    /// The AVX2 and AVX-512 kernels when this CPU runs both (the test says when it does not).
    #[cfg(target_arch = "x86_64")]
    fn avx2_and_avx512() -> Option<(Kernel, Kernel)> {
        let avx512 = crate::avx512_kernel()?;
        Some((Kernel::avx2()?, avx512))
    }

    #[cfg(target_arch = "x86_64")]
    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// AVX-512 gives AVX2's bits: every element is summed in the same order with the same
        /// fused multiply-adds, whatever the shape, layout, sparsity, epilogue, jobs, row order
        /// or panel layout of B.
        #[test]
        fn avx512_gives_the_avx2_bits(
            m in 1usize..140, k in prop::sample::select(&EDGES[..]),
            n in prop::sample::select(&[1usize, 10, 16, 33, 64, 65, 100, 129, 200, 512][..]),
            jobs in 1usize..4,
            layout in prop::sample::select(&LAYOUTS[..]),
            sparse in 0u8..3, epi in 0u8..4, seed in any::<u64>(),
            order_seed in prop::option::of(any::<u64>()), in_panels in any::<bool>(),
        ) {
            let Some((avx2, avx512)) = avx2_and_avx512() else { return Ok(()) };
            let case = Case { layout, m, k, n, seed, epi, sparse };
            let want = bits(&compute_in_order(avx2, case, jobs, false, order_seed));
            let got = bits(&compute_in_order(avx512, case, jobs, false, order_seed));
            prop_assert_eq!(&got, &want);
            if in_panels && !matches!(layout, Layout::Nt) {
                let width = avx512.panel_width(n);
                let paneled = compute_with(avx512, case, jobs, false, None, Some(width));
                prop_assert_eq!(bits(&paneled), want);
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_gives_the_avx2_bits_at_the_model_shapes() {
        let Some((avx2, avx512)) = avx2_and_avx512() else {
            return;
        };
        let shapes = [
            (Layout::Nn, 128, 784, 512),
            (Layout::Tn, 784, 128, 512),
            (Layout::Nn, 128, 512, 10),
            (Layout::Tn, 512, 128, 10),
            (Layout::Nt, 128, 10, 512),
            (Layout::Nn, 64, 2 * KC + 16, 512),
        ];
        for (layout, m, k, n) in shapes {
            for (sparse, epi) in [(0, 0), (1, 2), (2, 3)] {
                let case = Case {
                    sparse,
                    epi,
                    ..Case::dense(layout, m, k, n)
                };
                for jobs in [1, 2, 3] {
                    assert_eq!(
                        bits(&product(avx512, case, jobs)),
                        bits(&product(avx2, case, jobs)),
                        "{case:?}, {jobs} jobs"
                    );
                }
            }
        }
    }

    #[test]
    fn row_orders_must_be_permutations() {
        let data = [0.0f32; 12];
        let a = MatRef::row_major(&data, 4, 3);
        let _ = a.row_order(&[3, 1, 0, 2]);
        for bad in [&[0u16, 1, 2][..], &[0, 1, 2, 2], &[0, 1, 2, 4]] {
            let refused = std::panic::catch_unwind(|| a.row_order(bad));
            assert!(refused.is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn model_shapes_match_naive() {
        let mnist = [
            (Layout::Nn, 128, 784, 512),
            (Layout::Tn, 784, 128, 512),
            (Layout::Nn, 128, 512, 10),
            (Layout::Tn, 512, 128, 10),
            (Layout::Nt, 128, 10, 512),
            (Layout::Nn, 100, 784, 512),
        ];
        for (layout, m, k, n) in mnist {
            for sparse in [0, 1] {
                let case = Case {
                    sparse,
                    ..Case::dense(layout, m, k, n)
                };
                let want = product(Kernel::NAIVE, case, 1);
                for kernel in kernels() {
                    assert_close(&product(kernel, case, 1), &want, case);
                    assert_eq!(
                        bits(&product(kernel, case, 2)),
                        bits(&product(kernel, case, 1))
                    );
                }
            }
        }
    }

    #[test]
    fn empty_products_apply_the_epilogue_or_do_nothing() {
        for kernel in kernels().into_iter().chain([Kernel::NAIVE]) {
            // k = 0: C is the epilogue of zero.
            let case = Case::dense(Layout::Nn, 3, 0, 5);
            let bias = values(case.seed + 2, 5);
            let c = product(kernel, case, 2);
            for row in c.chunks(5) {
                assert_eq!(row, &bias[..]);
            }
            assert!(product(kernel, Case::dense(Layout::Nn, 0, 4, 5), 1).is_empty());
            assert!(product(kernel, Case::dense(Layout::Nn, 4, 4, 0), 1).is_empty());
        }
    }

    #[test]
    fn all_zero_a_gives_exact_zeros() {
        let a = [0.0f32; 6 * 40];
        let b = values(3, 40 * 64);
        for kernel in kernels() {
            let mut c = [f32::NAN; 6 * 64];
            let (a, b) = (MatRef::row_major(&a, 6, 40), MatRef::row_major(&b, 40, 64));
            gemm(kernel, a, b, &mut c, Epilogue::Store, &mut scratches(1)[0]);
            assert!(c.iter().all(|v| v.to_bits() == 0), "{c:?}");
        }
    }

    #[test]
    fn parts_cover_everything_once() {
        for n in [1, 10, 16, 17, 512, 513] {
            for parts in 1..5 {
                let mut next = 0;
                for part in 0..parts {
                    let r = part_range(n, parts, part, 16);
                    assert_eq!(r.start, next);
                    next = r.end;
                }
                assert_eq!(next, n);
            }
        }
    }

    /// Runs every job on a thread of its own, so that jobs claim columns concurrently.
    struct Spawned;

    impl Parallel for Spawned {
        fn run<T: Send>(&self, items: &mut [T], job: &(impl Fn(usize, &mut T) + Sync)) {
            std::thread::scope(|scope| {
                for (i, item) in items.iter_mut().enumerate() {
                    scope.spawn(move || job(i, item));
                }
            });
        }
    }

    #[test]
    fn work_beside_a_product_runs_once() {
        let (a_data, b_data) = (values(21, 784 * 128), values(22, 128 * 512));
        let a = MatRef::row_major(&a_data, 128, 784).t();
        let b = MatRef::row_major(&b_data, 128, 512);
        for (m, jobs) in [(784, 1), (784, 2), (784, 3), (0, 2)] {
            let runs = AtomicUsize::new(0);
            let mut c = std::vec![0.0; m * 512];
            let beside = |_: &mut Scratch| {
                runs.fetch_add(1, Ordering::Relaxed);
            };
            let a = a.row_range(0..m);
            let scratches = &mut scratches(jobs);
            gemm_parallel_beside(
                &Spawned,
                Kernel::PORTABLE,
                a,
                b,
                &mut c,
                Epilogue::Store,
                scratches,
                beside,
            );
            assert_eq!(runs.load(Ordering::Relaxed), 1, "{m} rows, {jobs} jobs");
        }
    }

    #[test]
    fn jobs_claiming_units_change_no_bit() {
        // Columns: the forward's width, deep enough for three K blocks (the later blocks replay
        // the units claimed in the first), 16 units. Rows: Xᵀ·dH-like, 17 units of rows.
        let products = [
            (Layout::Nn, 64, 2 * KC + 16, 512),
            (Layout::Tn, 784, 128, 512),
        ];
        for (layout, m, k, n) in products {
            // A third of A zero, in scattered steps and whole rows.
            let a_data: Vec<f32> = values(11, m * k)
                .into_iter()
                .enumerate()
                .map(|(i, v)| {
                    let (row, step) = match layout {
                        Layout::Tn => (i % m, i / m),
                        _ => (i / k, i % k),
                    };
                    if step % 3 == 0 || row % 5 == 0 {
                        0.0
                    } else {
                        v
                    }
                })
                .collect();
            let b_data = values(12, k * n);
            let bias = values(13, n);
            let a = match layout {
                Layout::Tn => MatRef::row_major(&a_data, k, m).t(),
                _ => MatRef::row_major(&a_data, m, k),
            };
            let b = MatRef::row_major(&b_data, k, n);
            for kernel in kernels().into_iter().chain([Kernel::NAIVE]) {
                let mut alone = std::vec![f32::NAN; m * n];
                gemm(
                    kernel,
                    a,
                    b,
                    &mut alone,
                    Epilogue::BiasRelu(&bias),
                    &mut scratches(1)[0],
                );
                for jobs in [2, 3] {
                    for _ in 0..3 {
                        let mut c = std::vec![f32::NAN; m * n];
                        let epilogue = Epilogue::BiasRelu(&bias);
                        gemm_parallel(
                            &Spawned,
                            kernel,
                            a,
                            b,
                            &mut c,
                            epilogue,
                            &mut scratches(jobs),
                        );
                        let name = kernel.name();
                        assert_eq!(bits(&c), bits(&alone), "{name}, {m} rows, {jobs} jobs");
                    }
                }
            }
        }
    }
}
