//! Matrix products for training.
//!
//! Every product is `C = A·B` where `A` and `B` are strided views ([`MatRef`]), so the three
//! layouts training needs (X·W, Xᵀ·dY, dY·Wᵀ) are one routine: a transpose is a swap of strides
//! and the packing step absorbs it. The blocked routine follows the usual GEMM loop nest
//! (NC columns of B, KC deep, MC rows of A, packed into panels) around a register-tiled
//! micro-kernel that holds an `MR x NR` block of C in a fixed-size array of accumulators.
//!
//! Determinism: each element of C is summed over K in one fixed order (KC blocks in order,
//! sequentially inside a block) whatever the column range a call covers, so splitting columns
//! between threads never changes a bit of the result.

use core::marker::PhantomData;
use core::ops::Range;

/// Depth of a packed block (rows of B, columns of A).
pub const KC: usize = 256;
/// Rows of A packed at once; a multiple of every kernel's MR, and >= 128 so a batch is one block.
pub const MC: usize = 144;
/// Columns of B packed at once; a multiple of every kernel's NR.
pub const NC: usize = 512;

/// A read-only strided matrix view: element `(i, j)` is `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
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
        }
    }

    /// The transposed view (no data moves).
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    #[inline(always)]
    fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.row_stride + j * self.col_stride]
    }
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
            Epilogue::ReluMask(mask) => {
                if mask[index] > 0.0 {
                    v
                } else {
                    0.0
                }
            }
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
fn relu(v: f32) -> f32 {
    if v > 0.0 { v } else { 0.0 }
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
    /// The CPU must support `avx2` and `fma` (check with `is_x86_feature_detected!`).
    #[cfg(target_arch = "x86_64")]
    pub const unsafe fn avx2_unchecked() -> Kernel {
        Kernel(Variant::Avx2)
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
            #[cfg(target_arch = "aarch64")]
            Variant::Neon => "neon",
        }
    }

    /// Width of the micro-kernel tile; thread column splits align to it.
    pub fn nr(self) -> usize {
        match self.0 {
            Variant::Naive => 1,
            Variant::Portable => PORTABLE_NR,
            #[cfg(target_arch = "x86_64")]
            Variant::Avx2 => 16,
            #[cfg(target_arch = "aarch64")]
            Variant::Neon => 16,
        }
    }
}

const PORTABLE_MR: usize = 4;
const PORTABLE_NR: usize = 8;

/// Packing buffers for the blocked kernels (about 600 KB: keep it on the heap or in a static).
pub struct Scratch {
    a: [f32; MC * KC],
    b: [f32; KC * NC],
}

impl Scratch {
    /// A zeroed scratch. Large: prefer a zero-initialised heap allocation on a host.
    pub const fn new() -> Self {
        Self {
            a: [0.0; MC * KC],
            b: [0.0; KC * NC],
        }
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs independent jobs, possibly on several threads. The core has no threads of its own;
/// a host implements this with scoped threads.
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

/// Like [`gemm`], with the columns of C split between `scratches.len()` jobs run by `par`.
/// The result is bitwise the same for any number of jobs.
pub fn gemm_parallel<P: Parallel>(
    par: &P,
    kernel: Kernel,
    a: MatRef,
    b: MatRef,
    c: &mut [f32],
    epilogue: Epilogue,
    scratches: &mut [Scratch],
) {
    let (m, n) = (a.rows, b.cols);
    assert_eq!(a.cols, b.rows, "inner dimensions differ");
    assert!(c.len() >= m * n, "output too short");
    assert!(!scratches.is_empty(), "no scratch");
    epilogue.check(m, n);
    let out = Out {
        ptr: c.as_mut_ptr(),
        ld: n,
        _c: PhantomData,
    };
    let parts = scratches.len().min(n.div_ceil(kernel.nr())).max(1);
    let job = |part: usize, scratch: &mut Scratch| {
        let cols = part_columns(n, parts, part, kernel.nr());
        if !cols.is_empty() {
            run_kernel(kernel, a, b, &out, cols, epilogue, scratch);
        }
    };
    par.run(&mut scratches[..parts], &job);
}

/// Columns of part `part` out of `parts`, in whole tiles of `align` columns.
fn part_columns(n: usize, parts: usize, part: usize, align: usize) -> Range<usize> {
    let tiles = n.div_ceil(align);
    let start = (tiles * part / parts * align).min(n);
    let end = (tiles * (part + 1) / parts * align).min(n);
    start..end
}

/// Write access to C shared by jobs that own disjoint column ranges.
struct Out<'a> {
    ptr: *mut f32,
    ld: usize,
    _c: PhantomData<&'a mut [f32]>,
}

// SAFETY: jobs write through `Out` only inside their own column range (disjoint by construction
// in `part_columns`), and the borrow of C outlives every job.
unsafe impl Send for Out<'_> {}
unsafe impl Sync for Out<'_> {}

impl Out<'_> {
    /// # Safety
    /// `(i, j)` is inside C and column `j` belongs to the caller's range.
    #[inline(always)]
    unsafe fn get(&self, i: usize, j: usize) -> f32 {
        unsafe { *self.ptr.add(i * self.ld + j) }
    }

    /// # Safety
    /// As for [`Out::get`].
    #[inline(always)]
    unsafe fn set(&self, i: usize, j: usize, v: f32) {
        unsafe { *self.ptr.add(i * self.ld + j) = v }
    }
}

fn run_kernel(
    kernel: Kernel,
    a: MatRef,
    b: MatRef,
    out: &Out,
    cols: Range<usize>,
    epilogue: Epilogue,
    scratch: &mut Scratch,
) {
    match kernel.0 {
        Variant::Naive => naive(a, b, out, cols, epilogue),
        Variant::Portable => {
            blocked::<Plain, PORTABLE_MR, PORTABLE_NR>(a, b, out, cols, epilogue, scratch)
        }
        // SAFETY: an `Avx2` kernel is only constructed through `avx2_unchecked`, whose caller
        // vouches for the CPU.
        #[cfg(target_arch = "x86_64")]
        Variant::Avx2 => unsafe { blocked_avx2(a, b, out, cols, epilogue, scratch) },
        #[cfg(target_arch = "aarch64")]
        Variant::Neon => unsafe { blocked_neon(a, b, out, cols, epilogue, scratch) },
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn blocked_avx2(
    a: MatRef,
    b: MatRef,
    out: &Out,
    cols: Range<usize>,
    epilogue: Epilogue,
    scratch: &mut Scratch,
) {
    blocked::<Fused, 6, 16>(a, b, out, cols, epilogue, scratch)
}

#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
fn blocked_neon(
    a: MatRef,
    b: MatRef,
    out: &Out,
    cols: Range<usize>,
    epilogue: Epilogue,
    scratch: &mut Scratch,
) {
    blocked::<Plain, 8, 16>(a, b, out, cols, epilogue, scratch)
}

/// Multiply-add as a kernel variant computes it.
trait MulAdd {
    fn mul_add(a: f32, b: f32, c: f32) -> f32;
}

/// `a * b + c` with two roundings: what every target can do quickly.
struct Plain;

impl MulAdd for Plain {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// A fused multiply-add; only inlined into functions compiled with the `fma` feature.
#[cfg(target_arch = "x86_64")]
struct Fused;

#[cfg(target_arch = "x86_64")]
impl MulAdd for Fused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        use core::arch::x86_64::{_mm_cvtss_f32, _mm_fmadd_ss, _mm_set_ss};
        // SAFETY: `Fused` is only used by `blocked_avx2`, compiled with `fma` enabled; LLVM turns
        // this scalar FMA into packed `vfmadd231ps` when it vectorises the tile loop.
        unsafe { _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(a), _mm_set_ss(b), _mm_set_ss(c))) }
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

#[inline(always)]
fn blocked<M: MulAdd, const MR: usize, const NR: usize>(
    a: MatRef,
    b: MatRef,
    out: &Out,
    cols: Range<usize>,
    epilogue: Epilogue,
    scratch: &mut Scratch,
) {
    let (m, k) = (a.rows, a.cols);
    let mut jc = cols.start;
    while jc < cols.end {
        let nc = NC.min(cols.end - jc);
        // k == 0 still runs one (empty) block so the epilogue is applied.
        let mut pc = 0;
        loop {
            let kc = KC.min(k - pc);
            let (first, last) = (pc == 0, pc + kc == k);
            pack_b::<NR>(&b, pc, kc, jc, nc, &mut scratch.b);
            let mut ic = 0;
            while ic < m {
                let mc = MC.min(m - ic);
                pack_a::<MR>(&a, ic, mc, pc, kc, &mut scratch.a);
                for jr in (0..nc).step_by(NR) {
                    let b_panel = &scratch.b[jr * kc..(jr + NR) * kc];
                    for ir in (0..mc).step_by(MR) {
                        let a_panel = &scratch.a[ir * kc..(ir + MR) * kc];
                        let acc = micro_kernel::<M, MR, NR>(a_panel, b_panel);
                        let tile = Tile {
                            row: ic + ir,
                            col: jc + jr,
                            rows: MR.min(mc - ir),
                            cols: NR.min(nc - jr),
                        };
                        store(&acc, out, tile, first, last, epilogue);
                    }
                }
                ic += mc;
            }
            pc += kc;
            if pc >= k {
                break;
            }
        }
        jc += nc;
    }
}

/// Packs rows `pc..pc+kc`, columns `jc..jc+nc` of B into NR-wide panels, each `kc` rows of NR,
/// zero-padding the last panel.
#[inline(always)]
fn pack_b<const NR: usize>(
    b: &MatRef,
    pc: usize,
    kc: usize,
    jc: usize,
    nc: usize,
    buf: &mut [f32],
) {
    for (q, jr) in (0..nc).step_by(NR).enumerate() {
        let width = NR.min(nc - jr);
        let panel = &mut buf[q * NR * kc..(q + 1) * NR * kc];
        let rows = panel.as_chunks_mut::<NR>().0;
        if b.col_stride == 1 && width == NR {
            for (p, row) in rows.iter_mut().enumerate() {
                let start = (pc + p) * b.row_stride + jc + jr;
                row.copy_from_slice(&b.data[start..start + NR]);
            }
        } else {
            for (p, row) in rows.iter_mut().enumerate() {
                for (jj, v) in row.iter_mut().enumerate() {
                    *v = if jj < width {
                        b.at(pc + p, jc + jr + jj)
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

/// Packs rows `ic..ic+mc`, columns `pc..pc+kc` of A into MR-tall panels stored column by column
/// (`kc` groups of MR), zero-padding the last panel.
#[inline(always)]
fn pack_a<const MR: usize>(
    a: &MatRef,
    ic: usize,
    mc: usize,
    pc: usize,
    kc: usize,
    buf: &mut [f32],
) {
    for (r, ir) in (0..mc).step_by(MR).enumerate() {
        let height = MR.min(mc - ir);
        let panel = &mut buf[r * MR * kc..(r + 1) * MR * kc];
        let groups = panel.as_chunks_mut::<MR>().0;
        if a.row_stride == 1 && height == MR {
            // Aᵀ stored row-major (the weight-gradient layout): a group is contiguous.
            for (p, group) in groups.iter_mut().enumerate() {
                let start = (pc + p) * a.col_stride + ic + ir;
                group.copy_from_slice(&a.data[start..start + MR]);
            }
        } else {
            for (p, group) in groups.iter_mut().enumerate() {
                for (ii, v) in group.iter_mut().enumerate() {
                    *v = if ii < height {
                        a.at(ic + ir + ii, pc + p)
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

/// The register tile: `MR x NR` accumulators, one rank-1 update per step of K.
#[inline(always)]
fn micro_kernel<M: MulAdd, const MR: usize, const NR: usize>(
    a_panel: &[f32],
    b_panel: &[f32],
) -> [[f32; NR]; MR] {
    let mut acc = [[0.0f32; NR]; MR];
    for (a_col, b_row) in a_panel
        .as_chunks::<MR>()
        .0
        .iter()
        .zip(b_panel.as_chunks::<NR>().0)
    {
        for (acc_row, &a_v) in acc.iter_mut().zip(a_col) {
            for (acc_v, &b_v) in acc_row.iter_mut().zip(b_row) {
                *acc_v = M::mul_add(a_v, b_v, *acc_v);
            }
        }
    }
    acc
}

#[derive(Clone, Copy)]
struct Tile {
    row: usize,
    col: usize,
    rows: usize,
    cols: usize,
}

#[inline(always)]
fn store<const MR: usize, const NR: usize>(
    acc: &[[f32; NR]; MR],
    out: &Out,
    tile: Tile,
    first: bool,
    last: bool,
    epilogue: Epilogue,
) {
    for (ii, acc_row) in acc.iter().enumerate().take(tile.rows) {
        let i = tile.row + ii;
        for (jj, &v) in acc_row.iter().enumerate().take(tile.cols) {
            let j = tile.col + jj;
            // SAFETY: the tile lies inside C and inside this job's column range.
            unsafe {
                let mut sum = if first { v } else { out.get(i, j) + v };
                if last {
                    sum = epilogue.apply(sum, i * out.ld + j, j);
                }
                out.set(i, j, sum);
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

    fn kernels() -> Vec<Kernel> {
        let mut list = std::vec![Kernel::PORTABLE];
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: detected just above.
            list.push(unsafe { Kernel::avx2_unchecked() });
        }
        list
    }

    fn scratches(count: usize) -> Vec<Box<Scratch>> {
        (0..count).map(|_| crate::zeroed_box()).collect()
    }

    fn values(seed: u64, len: usize) -> Vec<f32> {
        let mut s = seed | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[derive(Clone, Copy, Debug)]
    enum Layout {
        Nn,
        Tn,
        Nt,
    }

    /// Computes `a·b` for the layout with `kernel`; returns C.
    #[allow(clippy::too_many_arguments)]
    fn product(
        kernel: Kernel,
        layout: Layout,
        m: usize,
        k: usize,
        n: usize,
        seed: u64,
        epi: u8,
        threads: usize,
    ) -> Vec<f32> {
        let a_data = values(seed, m * k);
        let b_data = values(seed + 1, k * n);
        let bias = values(seed + 2, n);
        let mask = values(seed + 3, m * n);
        let (a, b) = match layout {
            Layout::Nn => (
                MatRef::row_major(&a_data, m, k),
                MatRef::row_major(&b_data, k, n),
            ),
            Layout::Tn => (
                MatRef::row_major(&a_data, k, m).t(),
                MatRef::row_major(&b_data, k, n),
            ),
            Layout::Nt => (
                MatRef::row_major(&a_data, m, k),
                MatRef::row_major(&b_data, n, k).t(),
            ),
        };
        let epilogue = match epi {
            0 => Epilogue::Store,
            1 => Epilogue::Bias(&bias),
            2 => Epilogue::BiasRelu(&bias),
            _ => Epilogue::ReluMask(&mask),
        };
        let mut c = std::vec![f32::NAN; m * n];
        if threads == 1 {
            gemm(kernel, a, b, &mut c, epilogue, &mut scratches(1)[0]);
        } else {
            let many = crate::zeroed_slice::<Scratch>(threads);
            let mut many = many;
            gemm_parallel(&Serial, kernel, a, b, &mut c, epilogue, &mut many);
        }
        c
    }

    fn assert_close(got: &[f32], want: &[f32], k: usize) {
        for (idx, (&g, &w)) in got.iter().zip(want).enumerate() {
            // Summation order differs (KC blocks, FMA): scale the tolerance by the sum's size.
            let tol = 1e-5 * (1.0 + w.abs()) * (1.0 + (k as f32).sqrt() / 4.0);
            assert!((g - w).abs() <= tol, "element {idx}: {g} vs {w}");
        }
    }

    const EDGES: [usize; 12] = [1, 3, 5, 7, 9, 10, 15, 17, 127, 128, 512, 784];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn blocked_matches_naive(
            m in prop::sample::select(&EDGES[..10]),
            k in prop::sample::select(&EDGES[..]),
            n in prop::sample::select(&EDGES[..11]),
            layout in prop::sample::select(&[Layout::Nn, Layout::Tn, Layout::Nt][..]),
            epi in 0u8..4,
            seed in any::<u64>(),
        ) {
            let want = product(Kernel::NAIVE, layout, m, k, n, seed, epi, 1);
            for kernel in kernels() {
                let got = product(kernel, layout, m, k, n, seed, epi, 1);
                assert_close(&got, &want, k);
            }
        }

        #[test]
        fn column_split_is_bitwise_identical(
            m in 1usize..40, k in 1usize..300, n in 1usize..100, threads in 2usize..5,
            seed in any::<u64>(),
        ) {
            for kernel in kernels() {
                let one = product(kernel, Layout::Nn, m, k, n, seed, 2, 1);
                let many = product(kernel, Layout::Nn, m, k, n, seed, 2, threads);
                prop_assert_eq!(
                    one.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    many.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                );
            }
        }
    }

    #[test]
    fn model_shapes_match_naive() {
        for (m, k, n) in [
            (128, 784, 512),
            (784, 128, 512),
            (128, 512, 10),
            (128, 10, 512),
        ] {
            let want = product(Kernel::NAIVE, Layout::Nn, m, k, n, 7, 1, 1);
            for kernel in kernels() {
                assert_close(&product(kernel, Layout::Nn, m, k, n, 7, 1, 1), &want, k);
            }
        }
    }

    #[test]
    fn part_columns_cover_everything_once() {
        for n in [1, 10, 16, 17, 512, 513] {
            for parts in 1..5 {
                let mut next = 0;
                for part in 0..parts {
                    let r = part_columns(n, parts, part, 16);
                    assert_eq!(r.start, next);
                    next = r.end;
                }
                assert_eq!(next, n);
            }
        }
    }
}
