//! The hidden layer's weight gradient `C = Xᵀ·D` (inputs x hidden units) when both X and
//! D = dH are sparse.
//!
//! The blocked product skips K steps (images) where a panel of three inputs is zero in X, but
//! cannot skip the zeros of D: a B row of 32 hidden units is hardly ever all zero. Yet ReLU
//! zeroes most of D once training is under way (half of it at the start, three quarters later
//! on Fashion-MNIST). Here a tile is 2 hidden units x 48 inputs: D's pair is broadcast, X's
//! block is the vector row, and an image is a step only if the pair is nonzero *and* the block
//! of X is: with bit masks over the batch (one per pair, one per block), the tile's steps are
//! the set bits of one AND. Late in training that leaves a third fewer steps than the panels of
//! inputs do; early on, or with sparse images (MNIST), it leaves more, so the caller counts
//! both ([`GradientSteps`]) and takes the cheaper.
//!
//! Each element of C is summed over the images in order, skipping only steps whose product is
//! zero, as the blocked product does: for finite values the result is the same bits.
//!
//! Two calls: the first copies D into panels of pairs (each pair's values image by image, and
//! its mask); in the second, jobs claim blocks of 48 inputs, copy X's block into a panel of
//! their own, run every pair's tile over it, and write C a cache line of 16 hidden units at a
//! time (C's rows lie 2 KB apart: a tile's 48 rows written straight to C would fall into two
//! sets of the L1 cache).

use super::Counter;
use core::ops::Range;

#[cfg(target_arch = "aarch64")]
use super::Variant;
use super::{Isa, Kernel, MulAdd, Once, Out, Parallel, Plain, Scratch};

/// Inputs per block (rows of C a unit covers): a tile of 2 x 6 vectors of 8.
const BLOCK: usize = 48;
/// Hidden units whose tiles are staged before they are written to C: a cache line.
const STAGE: usize = 16;
/// Most images: the masks are `u128`.
const MAX_ROWS: usize = 128;
/// Most pieces the panels of pairs are copied in.
const MAX_PIECES: usize = 64;
/// Pairs a piece copies (more when there would be over [`MAX_PIECES`] pieces).
const PIECE_PAIRS: usize = 16;
/// The AVX2 blocked product's tiles for `Xᵀ·D`: panels of 3 inputs by 32 hidden units.
const LISTED_TILE: (usize, usize) = (3, 32);

/// Tile steps for `C = Xᵀ·D` each way, counted over a batch's rows: the blocked product's
/// (steps of its 3-input panels where X is nonzero, per 32-column tile) and the paired one's
/// (pairs of D x blocks of X, both nonzero, per image). A step is 96 multiply-adds either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct GradientSteps {
    listed: u64,
    paired: u64,
}

impl GradientSteps {
    /// Counts one image: its inputs `x` and the gradient `d` at its hidden units.
    pub(crate) fn add_row(&mut self, kernel: Kernel, x: &[f32], d: &[f32]) {
        let (panels, blocks, pairs) = match kernel.isa() {
            // SAFETY: an AVX2 or AVX-512 kernel vouches for AVX2.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512 => unsafe { avx2::count_row(x, d) },
            Isa::Plain => count_row(x, d),
        };
        self.listed += u64::from(panels) * d.len().div_ceil(LISTED_TILE.1) as u64;
        self.paired += u64::from(blocks) * u64::from(pairs);
    }

    /// Both counts of two sets of rows.
    pub(crate) fn merge(self, other: Self) -> Self {
        Self {
            listed: self.listed + other.listed,
            paired: self.paired + other.paired,
        }
    }

    /// Whether the paired product is the cheaper. A step costs about the same either way
    /// (2.0 ns on a Zen 3 core), but copying the pairs and staging C cost more than listing Xᵀ:
    /// the two took the same time at 93 paired steps to 100 listed (Fashion-MNIST, step 500),
    /// and 7 to 8 leaves a margin.
    pub(crate) fn prefer_pairs(self) -> bool {
        self.paired * 8 < self.listed * 7
    }
}

/// Whether the paired product computes `Xᵀ·D` for `rows` images and `n` hidden units.
pub(crate) fn fits(rows: usize, n: usize) -> bool {
    (1..=MAX_ROWS).contains(&rows) && n.is_multiple_of(2)
}

/// Whether `kernel` is one whose paired product is fast (the others have it, for tests).
pub(crate) fn fast_on(kernel: Kernel) -> bool {
    match kernel.isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 => true,
        Isa::Plain => false,
    }
}

/// One image's nonzero 3-input panels and 48-input blocks in `x`, and nonzero pairs in `d`.
#[inline(always)]
fn count_row(x: &[f32], d: &[f32]) -> (u32, u32, u32) {
    let (mut panels, mut blocks) = (0, 0);
    for block in x.chunks(BLOCK) {
        let bits = block
            .iter()
            .enumerate()
            .fold(0u64, |bits, (i, &v)| bits | u64::from(v != 0.0) << i);
        (panels, blocks) = add_block(bits, panels, blocks);
    }
    let pairs = d
        .as_chunks::<2>()
        .0
        .iter()
        .filter(|p| p[0] != 0.0 || p[1] != 0.0)
        .count() as u32;
    (panels, blocks, pairs)
}

/// Adds a block's nonzero bits to the counts of nonzero panels (blocks start on whole panels
/// of 3: 48 = 16 x 3) and blocks.
#[inline(always)]
fn add_block(bits: u64, panels: u32, blocks: u32) -> (u32, u32) {
    const { assert!(BLOCK.is_multiple_of(LISTED_TILE.0) && LISTED_TILE.0 == 3) };
    // Bit 3i set when any input of panel i is nonzero.
    const PANEL_STARTS: u64 = 0x2492_4924_9249;
    let any = (bits | bits >> 1 | bits >> 2) & PANEL_STARTS;
    (panels + any.count_ones(), blocks + u32::from(bits != 0))
}

/// `c` (`k x n`, row-major) = `xᵀ·d`, `x` being `rows x k` and `d` `rows x n`, both
/// row-major. `pairs` (`rows x n` values) and `masks` (`n / 2`) hold D's pairs between the two
/// calls. `beside` runs once, on the first job of the second call, before its share.
///
/// # Panics
/// If the shapes do not [`fits`] or a slice is too short.
#[allow(clippy::too_many_arguments)]
pub(crate) fn weight_gradient<P: Parallel>(
    par: &P,
    kernel: Kernel,
    x: &[f32],
    d: &[f32],
    (rows, k, n): (usize, usize, usize),
    pairs: &mut [f32],
    masks: &mut [u128],
    c: &mut [f32],
    scratches: &mut [Scratch],
    beside: impl FnOnce(&mut Scratch) + Send,
) {
    assert!(fits(rows, n), "{rows} rows, {n} columns: not for pairs");
    assert!(x.len() >= rows * k && d.len() >= rows * n && c.len() >= k * n);
    assert!(!scratches.is_empty(), "no scratch");
    let (pairs, masks) = (&mut pairs[..rows * n], &mut masks[..n / 2]);

    // The panels of pairs: pair q's values for every image, then the next pair's.
    let per_piece = PIECE_PAIRS.max((n / 2).div_ceil(MAX_PIECES));
    let mut pieces: heapless::Vec<_, MAX_PIECES> = heapless::Vec::new();
    let chunks = pairs.chunks_mut(per_piece * 2 * rows);
    for (i, piece) in chunks.zip(masks.chunks_mut(per_piece)).enumerate() {
        // At most MAX_PIECES chunks, by the choice of per_piece.
        let _ = pieces.push((i * per_piece, piece));
    }
    par.run(&mut pieces, &|_, (first, (panels, masks))| {
        copy_pairs(kernel, d, (rows, n), *first, panels, masks);
    });
    drop(pieces);

    let beside = Once::new(beside);
    let out = Out {
        ptr: c.as_mut_ptr(),
        ld: n,
        _c: core::marker::PhantomData,
    };
    let (pairs, masks) = (&*pairs, &*masks);
    let counter = Counter::new();
    let job = |_: usize, scratch: &mut Scratch| {
        beside.run(scratch);
        loop {
            let start = counter.next().saturating_mul(BLOCK);
            if start >= k {
                break;
            }
            let block = Block {
                x,
                rows,
                k,
                start,
                width: BLOCK.min(k - start),
                pairs,
                masks,
            };
            match kernel.isa() {
                // SAFETY: an AVX2 kernel vouches for the CPU.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { avx2::run_block(&block, &out, scratch) },
                // SAFETY: an AVX-512 kernel vouches for the CPU.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => unsafe { avx512::run_block(&block, &out, scratch) },
                Isa::Plain => run_block(&block, &out, scratch, generic_tile(kernel)),
            }
        }
    };
    let jobs = scratches.len().min(k.div_ceil(BLOCK)).max(1);
    par.run(&mut scratches[..jobs], &job);
}

/// Copies pairs `first..` of `d` (as many as `masks` holds) into `panels`, image by image,
/// and sets bit `b` of a pair's mask when either of its values is nonzero in image `b` (or
/// -0: its products add nothing either way).
fn copy_pairs(
    kernel: Kernel,
    d: &[f32],
    shape: (usize, usize),
    first: usize,
    panels: &mut [f32],
    masks: &mut [u128],
) {
    masks.fill(0);
    let (rows, pairs) = (shape.0, masks.len());
    let done = match kernel.isa() {
        // SAFETY: an AVX2 or AVX-512 kernel vouches for AVX2.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 => unsafe { avx2::copy_pairs(d, shape, first, panels, masks) },
        Isa::Plain => (0, 0),
    };
    copy_range(d, shape, first, panels, masks, done.0..rows, 0..pairs);
    copy_range(d, shape, first, panels, masks, 0..done.0, done.1..pairs);
}

/// [`copy_pairs`] for images `images` and pairs `pairs` of the piece, one value at a time.
fn copy_range(
    d: &[f32],
    (rows, n): (usize, usize),
    first: usize,
    panels: &mut [f32],
    masks: &mut [u128],
    images: Range<usize>,
    pairs: Range<usize>,
) {
    let values = d.as_chunks::<2>().0;
    let panels = panels.as_chunks_mut::<2>().0;
    // Eight images at a time: D's rows lie 2 KB apart, and eight of them stay in L1 while
    // every pair of the piece is read from them.
    for b0 in images.clone().step_by(8) {
        let group = b0..(b0 + 8).min(images.end);
        for q in pairs.clone() {
            let mut bits = 0u32;
            for b in group.clone() {
                let pair = values[b * n / 2 + first + q];
                panels[q * rows + b] = pair;
                bits |= u32::from(pair[0].to_bits() | pair[1].to_bits() != 0) << (b - b0);
            }
            masks[q] |= u128::from(bits) << b0;
        }
    }
}

/// One unit of the second call: `width` inputs from `start` (rows of C), every pair.
struct Block<'a> {
    x: &'a [f32],
    rows: usize,
    k: usize,
    start: usize,
    width: usize,
    pairs: &'a [f32],
    masks: &'a [u128],
}

/// The tile of pair `q` over a block: `(block's X panel, pair's panel, mask, stage, column)`.
type TileFn = unsafe fn(&[f32], &[[f32; 2]], u128, &mut [[f32; STAGE]; BLOCK], usize);

/// The generic tile with the multiply-add of `kernel`'s blocked product (whose bits it gives).
fn generic_tile(kernel: Kernel) -> TileFn {
    match kernel.0 {
        #[cfg(target_arch = "aarch64")]
        Variant::Neon => tile::<super::Fused>,
        _ => tile::<Plain>,
    }
}

/// Runs a block: packs its X, then every pair's tile, writing C a stage at a time.
#[inline(always)]
fn run_block(block: &Block, out: &Out, scratch: &mut Scratch, tile: TileFn) {
    let Block { rows, width, .. } = *block;
    // X's block, row by row at a stride of BLOCK, and the images where it is nonzero.
    let panel = &mut scratch.b[..rows * BLOCK];
    let mut nonzero = 0u128;
    for (b, (dst, src)) in panel
        .chunks_exact_mut(BLOCK)
        .zip(block.x.chunks(block.k))
        .enumerate()
    {
        let src = &src[block.start..block.start + width];
        dst[..width].copy_from_slice(src);
        dst[width..].fill(0.0);
        nonzero |= u128::from(src.iter().any(|&v| v != 0.0)) << b;
    }
    let panel = &scratch.b[..rows * BLOCK];
    let stage = scratch
        .packed_a
        .as_flattened_mut()
        .as_chunks_mut::<STAGE>()
        .0
        .first_chunk_mut::<BLOCK>()
        .expect("scratch holds a stage");
    let pairs = block.pairs.as_chunks::<2>().0;
    let n = block.masks.len() * 2;
    for first in (0..block.masks.len()).step_by(STAGE / 2) {
        let staged = (STAGE / 2).min(block.masks.len() - first);
        for q in first..first + staged {
            let mask = block.masks[q] & nonzero;
            let pair = &pairs[q * rows..(q + 1) * rows];
            // SAFETY: `tile` is this kernel's, whose CPU was vouched for.
            unsafe { tile(panel, pair, mask, stage, 2 * (q - first)) };
        }
        for (p, staged_row) in stage[..width].iter().enumerate() {
            let cols = 2 * staged;
            // SAFETY: this job claimed rows start..start + width of C; columns 2 * first ..
            // 2 * first + cols < n lie inside its rows.
            debug_assert!(2 * first + cols <= n);
            let c_row = unsafe { out.row_mut(block.start + p, 2 * first, cols) };
            c_row.copy_from_slice(&staged_row[..cols]);
        }
    }
}

/// A pair's tile, generic: `stage[p][col..col + 2]` = the pair's sums at input `p` of the
/// block, over the images set in `mask`, in order.
///
/// # Safety
/// None beyond the types': `unsafe` to share [`TileFn`] with the AVX2 tile.
unsafe fn tile<M: MulAdd>(
    panel: &[f32],
    pair: &[[f32; 2]],
    mask: u128,
    stage: &mut [[f32; STAGE]; BLOCK],
    col: usize,
) {
    let mut acc = [[0.0f32; BLOCK]; 2];
    for b in Bits(mask) {
        let a = pair[b];
        let x = &panel[b * BLOCK..(b + 1) * BLOCK];
        for (row, &a) in acc.iter_mut().zip(&a) {
            for (acc, &x) in row.iter_mut().zip(x) {
                *acc = M::mul_add(a, x, *acc);
            }
        }
    }
    for (p, staged) in stage.iter_mut().enumerate() {
        staged[col] = acc[0][p];
        staged[col + 1] = acc[1][p];
    }
}

/// The set bits of a mask, lowest first.
struct Bits(u128);

impl Iterator for Bits {
    type Item = usize;

    #[inline(always)]
    fn next(&mut self) -> Option<usize> {
        (self.0 != 0).then(|| {
            let b = self.0.trailing_zeros() as usize;
            self.0 &= self.0 - 1;
            b
        })
    }
}

/// The paired product's tile and counting, compiled for AVX2 + FMA.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{BLOCK, Block, Out, STAGE, Scratch, add_block};
    use core::arch::x86_64::{
        __m256, _CMP_NEQ_UQ, _mm_castps_pd, _mm_storeh_pd, _mm_storel_pd, _mm256_broadcast_ss,
        _mm256_castpd_si256, _mm256_castps256_ps128, _mm256_castsi256_pd, _mm256_cmp_ps,
        _mm256_cmpeq_epi64, _mm256_extractf128_ps, _mm256_fmadd_ps, _mm256_loadu_pd,
        _mm256_loadu_ps, _mm256_movemask_pd, _mm256_movemask_ps, _mm256_permute2f128_pd,
        _mm256_setzero_ps, _mm256_setzero_si256, _mm256_storeu_pd, _mm256_unpackhi_pd,
        _mm256_unpackhi_ps, _mm256_unpacklo_pd, _mm256_unpacklo_ps,
    };

    /// [`super::run_block`] with the AVX2 tiles.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn run_block(block: &Block, out: &Out, scratch: &mut Scratch) {
        let tile: super::TileFn = match block.width.div_ceil(8) {
            6 => tile::<6>,
            5 => tile::<5>,
            4 => tile::<4>,
            3 => tile::<3>,
            2 => tile::<2>,
            _ => tile::<1>,
        };
        super::run_block(block, out, scratch, tile);
    }

    /// [`super::tile`] with `V` vectors of 8 inputs (the block's first `8 V`), FMA.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const V: usize>(
        panel: &[f32],
        pair: &[[f32; 2]],
        mask: u128,
        stage: &mut [[f32; STAGE]; BLOCK],
        col: usize,
    ) {
        const { assert!(V * 8 <= BLOCK) };
        assert!(col + 1 < STAGE && panel.len() >= pair.len() * BLOCK);
        let mut acc = [[_mm256_setzero_ps(); V]; 2];
        // Two 64-bit halves: a u128's trailing zeros cost a branch of their own each step.
        for (half, base) in [(mask as u64, 0), ((mask >> 64) as u64, 64)] {
            let mut bits = half;
            while bits != 0 {
                let b = base + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let a = &pair[b];
                let (a0, a1) = (_mm256_broadcast_ss(&a[0]), _mm256_broadcast_ss(&a[1]));
                // SAFETY: b < pair.len(), so the row's BLOCK >= 8 V values lie in `panel`.
                let x = unsafe { panel.as_ptr().add(b * BLOCK) };
                let [first, second] = &mut acc;
                for (v, (first, second)) in first.iter_mut().zip(second).enumerate() {
                    let x = unsafe { _mm256_loadu_ps(x.add(8 * v)) };
                    *first = _mm256_fmadd_ps(a0, x, *first);
                    *second = _mm256_fmadd_ps(a1, x, *second);
                }
            }
        }
        // Inputs p of both units side by side: stage[p][col..col + 2].
        let stage = stage.as_flattened_mut();
        for (v, (&first, &second)) in acc[0].iter().zip(&acc[1]).enumerate() {
            let (low, high) = (
                _mm256_unpacklo_ps(first, second),
                _mm256_unpackhi_ps(first, second),
            );
            // Each 128-bit half holds two inputs' pairs: (0, 1) and (2, 3) of the low half of
            // the vector's 8 inputs, (4, 5) and (6, 7) of the high one.
            let halves = [
                _mm256_castps256_ps128(low),
                _mm256_castps256_ps128(high),
                _mm256_extractf128_ps::<1>(low),
                _mm256_extractf128_ps::<1>(high),
            ];
            for (i, half) in halves.into_iter().enumerate() {
                let p = 8 * v + 2 * i;
                let half = _mm_castps_pd(half);
                // SAFETY: p + 1 < 8 V <= BLOCK rows of STAGE values; col + 1 < STAGE.
                unsafe {
                    let at = stage.as_mut_ptr().add(p * STAGE + col);
                    _mm_storel_pd(at.cast(), half);
                    _mm_storeh_pd(at.add(STAGE).cast(), half);
                }
            }
        }
    }

    /// [`super::copy_pairs`] four images by four pairs at a time (a pair is one 64-bit lane):
    /// returns how many images and pairs it copied, whole fours of each.
    ///
    /// # Safety
    /// The CPU has AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) fn copy_pairs(
        d: &[f32],
        (rows, n): (usize, usize),
        first: usize,
        panels: &mut [f32],
        masks: &mut [u128],
    ) -> (usize, usize) {
        let (images, pairs) = (rows / 4 * 4, masks.len() / 4 * 4);
        assert!(d.len() >= rows * n && first + masks.len() <= n / 2);
        assert!(panels.len() >= masks.len() * rows * 2);
        let (src, dst) = (d.as_ptr().cast::<f64>(), panels.as_mut_ptr().cast::<f64>());
        let zero = _mm256_setzero_si256();
        for b in (0..images).step_by(4) {
            for q in (0..pairs).step_by(4) {
                // SAFETY (loads): rows b..b + 4 < rows, pairs first + q.. + 4 <= n / 2.
                let row =
                    |i: usize| unsafe { _mm256_loadu_pd(src.add((b + i) * n / 2 + first + q)) };
                let (r0, r1, r2, r3) = (row(0), row(1), row(2), row(3));
                let (t0, t1) = (_mm256_unpacklo_pd(r0, r1), _mm256_unpackhi_pd(r0, r1));
                let (t2, t3) = (_mm256_unpacklo_pd(r2, r3), _mm256_unpackhi_pd(r2, r3));
                let columns = [
                    _mm256_permute2f128_pd::<0x20>(t0, t2),
                    _mm256_permute2f128_pd::<0x20>(t1, t3),
                    _mm256_permute2f128_pd::<0x31>(t0, t2),
                    _mm256_permute2f128_pd::<0x31>(t1, t3),
                ];
                for (j, column) in columns.into_iter().enumerate() {
                    // SAFETY: pair q + j < masks.len(), images b.. + 4 <= rows of its panel.
                    unsafe { _mm256_storeu_pd(dst.add((q + j) * rows + b), column) };
                    let zeros = _mm256_cmpeq_epi64(_mm256_castpd_si256(column), zero);
                    let nonzero = !_mm256_movemask_pd(_mm256_castsi256_pd(zeros)) & 0xf;
                    masks[q + j] |= u128::from(nonzero as u32) << b;
                }
            }
        }
        (images, pairs)
    }

    /// [`super::count_row`] with vector compares.
    ///
    /// # Safety
    /// The CPU has AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) fn count_row(x: &[f32], d: &[f32]) -> (u32, u32, u32) {
        let zero = _mm256_setzero_ps();
        // Bit i set when lane i is nonzero (NaN counts as nonzero).
        let nonzero = |v: &[f32; 8]| {
            // SAFETY: 8 floats; the caller vouched for AVX2.
            let v: __m256 = unsafe { _mm256_loadu_ps(v.as_ptr()) };
            _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_NEQ_UQ>(v, zero)) as u32 as u64
        };
        let (mut panels, mut blocks) = (0, 0);
        for block in x.chunks(BLOCK) {
            let (vectors, rest) = block.as_chunks::<8>();
            let mut bits = 0u64;
            for (i, v) in vectors.iter().enumerate() {
                bits |= nonzero(v) << (8 * i);
            }
            for (i, &v) in rest.iter().enumerate() {
                bits |= u64::from(v != 0.0) << (8 * vectors.len() + i);
            }
            (panels, blocks) = add_block(bits, panels, blocks);
        }
        let (vectors, rest) = d.as_chunks::<8>();
        let mut pairs = 0;
        for v in vectors {
            let bits = nonzero(v);
            pairs += ((bits | bits >> 1) & 0x55).count_ones();
        }
        for p in rest.as_chunks::<2>().0 {
            pairs += u32::from(p[0] != 0.0 || p[1] != 0.0);
        }
        (panels, blocks, pairs)
    }
}

/// The paired product's tile compiled for AVX-512: the sums of the AVX2 tile, in its order, on
/// 16 inputs a vector (counting and copying the pairs run the AVX2 code).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{BLOCK, Block, Out, STAGE, Scratch};
    use core::arch::x86_64::{
        __m512, _mm_castps_pd, _mm_storeh_pd, _mm_storel_pd, _mm512_extractf32x4_ps,
        _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_unpackhi_ps,
        _mm512_unpacklo_ps,
    };

    /// [`super::run_block`] with the AVX-512 tiles.
    ///
    /// # Safety
    /// The CPU has AVX-512 F.
    #[target_feature(enable = "avx512f")]
    pub(super) fn run_block(block: &Block, out: &Out, scratch: &mut Scratch) {
        let tile: super::TileFn = match block.width.div_ceil(16) {
            3 => tile::<3>,
            2 => tile::<2>,
            _ => tile::<1>,
        };
        super::run_block(block, out, scratch, tile);
    }

    /// [`super::tile`] with `V` vectors of 16 inputs (the block's first `16 V`), FMA.
    ///
    /// # Safety
    /// The CPU has AVX-512 F.
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const V: usize>(
        panel: &[f32],
        pair: &[[f32; 2]],
        mask: u128,
        stage: &mut [[f32; STAGE]; BLOCK],
        col: usize,
    ) {
        const { assert!(V * 16 <= BLOCK) };
        assert!(col + 1 < STAGE && panel.len() >= pair.len() * BLOCK);
        let mut acc: [[__m512; V]; 2] = [[_mm512_setzero_ps(); V]; 2];
        // Two 64-bit halves: a u128's trailing zeros cost a branch of their own each step.
        for (half, base) in [(mask as u64, 0), ((mask >> 64) as u64, 64)] {
            let mut bits = half;
            while bits != 0 {
                let b = base + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let a = &pair[b];
                let (a0, a1) = (_mm512_set1_ps(a[0]), _mm512_set1_ps(a[1]));
                // SAFETY: b < pair.len(), so the row's BLOCK >= 16 V values lie in `panel`.
                let x = unsafe { panel.as_ptr().add(b * BLOCK) };
                let [first, second] = &mut acc;
                for (v, (first, second)) in first.iter_mut().zip(second).enumerate() {
                    // SAFETY: as above.
                    let x = unsafe { _mm512_loadu_ps(x.add(16 * v)) };
                    *first = _mm512_fmadd_ps(a0, x, *first);
                    *second = _mm512_fmadd_ps(a1, x, *second);
                }
            }
        }
        // Inputs p of both units side by side: stage[p][col..col + 2].
        let stage = stage.as_flattened_mut();
        for (v, (&first, &second)) in acc[0].iter().zip(&acc[1]).enumerate() {
            let (low, high) = (
                _mm512_unpacklo_ps(first, second),
                _mm512_unpackhi_ps(first, second),
            );
            // Each 128-bit lane l of `low` holds the pairs of inputs 4l and 4l + 1, of `high`
            // those of 4l + 2 and 4l + 3.
            let lanes = [
                (0, _mm512_extractf32x4_ps::<0>(low)),
                (2, _mm512_extractf32x4_ps::<0>(high)),
                (4, _mm512_extractf32x4_ps::<1>(low)),
                (6, _mm512_extractf32x4_ps::<1>(high)),
                (8, _mm512_extractf32x4_ps::<2>(low)),
                (10, _mm512_extractf32x4_ps::<2>(high)),
                (12, _mm512_extractf32x4_ps::<3>(low)),
                (14, _mm512_extractf32x4_ps::<3>(high)),
            ];
            for (offset, lane) in lanes {
                let p = 16 * v + offset;
                let lane = _mm_castps_pd(lane);
                // SAFETY: p + 1 < 16 V <= BLOCK rows of STAGE values; col + 1 < STAGE.
                unsafe {
                    let at = stage.as_mut_ptr().add(p * STAGE + col);
                    _mm_storel_pd(at.cast(), lane);
                    _mm_storeh_pd(at.add(STAGE).cast(), lane);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::kernels::{Epilogue, MatRef, Serial, gemm};
    use proptest::prelude::*;
    use std::vec::Vec;

    /// `len` values in [-1, 1), about `zeros` in 8 of them zero (some -0), from `seed`.
    fn sparse_values(seed: u64, len: usize, zeros: u64) -> Vec<f32> {
        let mut noise = picodense_support::Noise::new(seed);
        (0..len)
            .map(|_| {
                let s = noise.next_u64();
                match s % 8 {
                    z if z < zeros && s.is_multiple_of(3) => -0.0,
                    z if z < zeros => 0.0,
                    _ => noise.range(-1.0, 1.0),
                }
            })
            .collect()
    }

    fn bits(values: &[f32]) -> Vec<u32> {
        values.iter().map(|v| v.to_bits()).collect()
    }

    /// Xᵀ·D through the pairs with `jobs` scratches.
    fn paired(
        kernel: Kernel,
        x: &[f32],
        d: &[f32],
        shape: (usize, usize, usize),
        jobs: usize,
    ) -> Vec<f32> {
        let (rows, k, n) = shape;
        let mut c = std::vec![f32::NAN; k * n];
        let mut pairs = std::vec![f32::NAN; rows * n];
        let mut masks = std::vec![u128::MAX; n / 2];
        let mut scratches = crate::zeroed_slice::<Scratch>(jobs);
        let mut beside_ran = 0;
        weight_gradient(
            &Serial,
            kernel,
            x,
            d,
            shape,
            &mut pairs,
            &mut masks,
            &mut c,
            &mut scratches,
            |_| beside_ran += 1,
        );
        assert_eq!(beside_ran, 1);
        c
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The paired product gives the blocked product's bits (the naive one's for the naive
        /// kernel), for any shape it takes, any sparsity of either side and any number of jobs.
        #[test]
        fn pairs_give_the_blocked_bits(
            rows in prop::sample::select(&[1usize, 3, 8, 31, 64, 65, 127, 128][..]),
            k in prop::sample::select(&[1usize, 5, 8, 47, 48, 49, 100, 150][..]),
            half_n in 1usize..40,
            x_zeros in 0u64..8, d_zeros in 0u64..8, jobs in 1usize..4, seed in any::<u64>(),
        ) {
            let n = 2 * half_n;
            let x = sparse_values(seed, rows * k, x_zeros);
            let d = sparse_values(seed ^ 0x5555, rows * n, d_zeros);
            for kernel in crate::every_kernel() {
                let mut want = std::vec![0.0; k * n];
                let mut scratch = crate::zeroed_box::<Scratch>();
                let (xm, dm) = (MatRef::row_major(&x, rows, k), MatRef::row_major(&d, rows, n));
                gemm(kernel, xm.t(), dm, &mut want, Epilogue::Store, &mut scratch);
                let got = paired(kernel, &x, &d, (rows, k, n), jobs);
                // Up to the sign of zero sums (the two skip different zero products).
                let zero_signs = |v: &[f32]| bits(v).iter().map(|&b| if b == 1 << 31 { 0 } else { b }).collect::<Vec<_>>();
                prop_assert_eq!(zero_signs(&got), zero_signs(&want), "{:?}", kernel);
            }
        }

        /// AVX-512's paired product gives AVX2's bits exactly, signs of zero sums included.
        #[cfg(target_arch = "x86_64")]
        #[test]
        fn avx512_pairs_give_the_avx2_bits(
            rows in prop::sample::select(&[1usize, 3, 8, 31, 64, 65, 127, 128][..]),
            k in prop::sample::select(&[1usize, 5, 16, 17, 32, 47, 48, 49, 100, 784][..]),
            half_n in prop::sample::select(&[1usize, 7, 8, 9, 33, 256][..]),
            x_zeros in 0u64..8, d_zeros in 0u64..8, jobs in 1usize..4, seed in any::<u64>(),
        ) {
            let (Some(avx512), Some(avx2)) = (crate::avx512_kernel(), Kernel::avx2()) else {
                return Ok(());
            };
            let n = 2 * half_n;
            let x = sparse_values(seed, rows * k, x_zeros);
            let d = sparse_values(seed ^ 0x5555, rows * n, d_zeros);
            let want = paired(avx2, &x, &d, (rows, k, n), 1);
            let got = paired(avx512, &x, &d, (rows, k, n), jobs);
            prop_assert_eq!(bits(&got), bits(&want));
        }

        /// Counting gives the steps each product runs, by every kernel's code.
        #[test]
        fn steps_are_counted_exactly(
            k in 1usize..200, half_n in 1usize..80, x_zeros in 0u64..9, d_zeros in 0u64..9,
            seed in any::<u64>(),
        ) {
            let n = 2 * half_n;
            let x = sparse_values(seed, k, x_zeros);
            let d = sparse_values(seed ^ 0xaaaa, n, d_zeros);
            let nonzero = |v: &[f32]| v.iter().any(|&v| v != 0.0);
            let panels = x.chunks(3).filter(|p| nonzero(p)).count() as u64;
            let blocks = x.chunks(BLOCK).filter(|b| nonzero(b)).count() as u64;
            // -0 counts as nonzero for the pairs' masks but not for the estimate: either way.
            let pairs = d.chunks(2).filter(|p| nonzero(p)).count() as u64;
            let want = GradientSteps { listed: panels * n.div_ceil(32) as u64, paired: blocks * pairs };
            for kernel in crate::every_kernel() {
                let mut got = GradientSteps::default();
                got.add_row(kernel, &x, &d);
                prop_assert_eq!(got, want, "{:?}", kernel);
            }
        }
    }

    #[test]
    fn shapes_beyond_the_masks_do_not_fit() {
        assert!(fits(128, 512) && fits(1, 2));
        assert!(!fits(129, 512) && !fits(0, 512) && !fits(64, 511));
    }
}
