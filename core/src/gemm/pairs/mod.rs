//! The hidden layer's weight gradient `C = Xᵀ·D` (inputs x hidden units) when both X and
//! D = dH are sparse.
//!
//! The blocked product skips K steps (images) where a panel of three inputs is zero in X, but
//! cannot skip the zeros of D: a B row of 32 hidden units is hardly ever all zero. Yet ReLU
//! zeroes most of D once training is under way (half of it at the start, three quarters later
//! on Fashion-MNIST). Here a tile is 2 hidden units x 48 inputs (96 with AVX-512): D's pair is
//! broadcast, X's block is the vector row, and an image is a step only if the pair is nonzero
//! *and* the block of X is: with bit masks over the batch (one per pair, one per block), the
//! tile's steps are the set bits of one AND. Late in training that leaves a third fewer steps
//! than the panels of inputs do; early on, or with sparse images (MNIST), it leaves more, so
//! the caller counts both ([`GradientSteps`]) and takes the cheaper.
//!
//! Each element of C is summed over the images in order, skipping only steps whose product is
//! zero, as the blocked product does: for finite values the result is the same bits.
//!
//! Two calls: the first copies D into panels of pairs (each pair's values image by image, and
//! its mask); in the second, jobs claim blocks of inputs, copy X's block into a panel of
//! their own, run every pair's tile over it, and write C a cache line of 16 hidden units at a
//! time (C's rows lie 2 KB apart: a tile's 48 rows written straight to C would fall into two
//! sets of the L1 cache).

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use super::Isa;
use super::claims::{Counter, Once};
use super::epilogue::Out;
use super::params::pairs::{
    BLOCK, LISTED_TILE, MAX_PIECES, MAX_ROWS, PIECE_PAIRS, PREFER_PAIRS, STAGE,
};
#[cfg(target_arch = "x86_64")]
use super::params::pairs::{WIDE_BLOCK, WIDE_TAIL};
use super::tiles::{MulAdd, SoftFused};
use super::{Kernel, Parallel, Scratch};
use core::ops::Range;

/// Tile steps for `C = Xᵀ·D` each way, counted over a batch's rows: the blocked product's
/// (steps of its 3-input panels where X is nonzero, per 32-column tile) and the paired one's
/// (pairs of D x blocks of X, both nonzero, per image). A step is 96 multiply-adds either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct GradientSteps {
    pub(super) listed: u64,
    pub(super) paired: u64,
}

impl GradientSteps {
    /// Counts one image: its inputs `x` and the gradient `d` at its hidden units.
    pub(crate) fn add_row(&mut self, kernel: Kernel, x: &[f32], d: &[f32]) {
        let (panels, blocks, pairs) = match kernel.isa() {
            // SAFETY: an AVX2 or AVX-512 kernel vouches for AVX2.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512 => unsafe { avx2::count_row(x, d) },
            _ => count_row(x, d),
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

    /// Whether the paired product is the cheaper. A step costs about the same either way, but
    /// copying the pairs and staging C cost more than listing Xᵀ, so the paired steps must be
    /// fewer by a margin ([`PREFER_PAIRS`]).
    pub(crate) fn prefer_pairs(self) -> bool {
        let (fewer, than) = PREFER_PAIRS;
        self.paired * than < self.listed * fewer
    }
}

/// Work on each block of rows of C that the paired product forms, done by the job that formed
/// it, right after, while the block is in its cache (the first layer's optimizer step).
pub(crate) trait OnRows: Sync {
    /// Rows `rows` of C are formed: `c_rows`.
    ///
    /// # Safety
    /// No other thread touches those rows, of C or of anything the work indexes by C's rows,
    /// until the call returns.
    unsafe fn on_rows(&self, rows: Range<usize>, c_rows: &[f32]);
}

/// The work, if any.
impl<T: OnRows> OnRows for Option<T> {
    unsafe fn on_rows(&self, rows: Range<usize>, c_rows: &[f32]) {
        if let Some(work) = self {
            // SAFETY: the caller's promise.
            unsafe { work.on_rows(rows, c_rows) }
        }
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
        _ => false,
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
/// calls. `beside` runs once, on the first job of the second call, before its share;
/// `on_rows` on every block of rows of C once it is formed.
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
    on_rows: &impl OnRows,
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
    let out = Out::new(c, n);
    let (pairs, masks) = (&*pairs, &*masks);
    let counter = Counter::new();
    let (block_len, tail) = match kernel.isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => (WIDE_BLOCK, WIDE_TAIL),
        _ => (BLOCK, 0),
    };
    // The last block takes the inputs left, up to `tail` more than the others.
    let blocks = k.saturating_sub(tail).div_ceil(block_len).max(1);
    let job = |_: usize, scratch: &mut Scratch| {
        beside.run(scratch);
        loop {
            let claimed = counter.next();
            if claimed >= blocks {
                break;
            }
            // From the middle out: the images' middle inputs, inked most, cost most, and the
            // last blocks claimed, at the margins, cost least, which evens out the jobs' ends.
            let unit = match claimed % 2 {
                0 => blocks / 2 + claimed / 2,
                _ => blocks / 2 - 1 - claimed / 2,
            };
            let start = unit * block_len;
            let width = if unit + 1 == blocks {
                k - start
            } else {
                block_len
            };
            let block = Block {
                x,
                rows,
                k,
                start,
                width,
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
                _ => run_block(&block, &out, scratch, generic_tile(kernel)),
            }
            // SAFETY: this job claimed rows start..start + width of C, and has written them.
            let formed = unsafe { out.row_mut(start, 0, width * n) };
            // SAFETY: no other job takes these rows.
            unsafe { on_rows.on_rows(start..start + width, formed) };
        }
    };
    let jobs = scratches.len().min(blocks);
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
        _ => (0, 0),
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

/// The tile of pair `q` over a block of [`BLOCK`] inputs: `(block's X panel, pair's panel, mask,
/// stage, column)`.
type TileFn = unsafe fn(&[f32], &[[f32; 2]], u128, &mut [[f32; STAGE]; BLOCK], usize);

/// The generic tile with the multiply-add of `kernel`'s blocked product (whose bits it gives).
fn generic_tile(kernel: Kernel) -> TileFn {
    match kernel.isa() {
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => tile::<super::tiles::Fused>,
        _ => tile::<SoftFused>,
    }
}

/// Copies X's block into `panel`, image by image at a stride of `B` (zero past the block's
/// width), and returns the images where it is nonzero.
#[inline(always)]
fn pack_block<const B: usize>(block: &Block, panel: &mut [f32]) -> u128 {
    let Block { rows, width, .. } = *block;
    let mut nonzero = 0u128;
    for (b, (dst, src)) in panel[..rows * B]
        .chunks_exact_mut(B)
        .zip(block.x.chunks(block.k))
        .enumerate()
    {
        let src = &src[block.start..block.start + width];
        dst[..width].copy_from_slice(src);
        dst[width..].fill(0.0);
        nonzero |= u128::from(src.iter().any(|&v| v != 0.0)) << b;
    }
    nonzero
}

/// Runs a block of at most [`BLOCK`] inputs: packs its X, then every pair's tile, writing C a
/// stage at a time.
#[inline(always)]
fn run_block(block: &Block, out: &Out, scratch: &mut Scratch, tile: TileFn) {
    let Block { rows, width, .. } = *block;
    let nonzero = pack_block::<BLOCK>(block, &mut scratch.b);
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
            debug_assert!(2 * first + cols <= n);
            // SAFETY: this job claimed rows start..start + width of C; columns 2 * first ..
            // 2 * first + cols < n lie inside its rows.
            let c_row = unsafe { out.row_mut(block.start + p, 2 * first, cols) };
            // A whole stage (every one but a last, narrower one) as one fixed-size copy,
            // inline: a call to `memcpy` for each 64 bytes costs more than the copy.
            match <&mut [f32; STAGE]>::try_from(&mut *c_row) {
                Ok(whole) => *whole = *staged_row,
                Err(_) => c_row.copy_from_slice(&staged_row[..cols]),
            }
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
        let x = panel[b * BLOCK..]
            .first_chunk::<BLOCK>()
            .expect("a whole block per image");
        for (row, &a) in acc.iter_mut().zip(&a) {
            M::mul_add_row(a, x, row);
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

/// Calls `step` with each set bit of `mask`, lowest first, a 64-bit half at a time: a `u128`'s
/// trailing zeros cost a branch of their own each step.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn for_each_bit(mask: u128, mut step: impl FnMut(usize)) {
    for (half, base) in [(mask as u64, 0), ((mask >> 64) as u64, 64)] {
        let mut bits = half;
        while bits != 0 {
            let b = base + bits.trailing_zeros() as usize;
            bits &= bits - 1;
            step(b);
        }
    }
}

/// The loop of the AVX2 and AVX-512 tiles: for every image `b` set in `mask`, in order,
/// `acc[i][v] += pair[b][i] · x[b][v]` for both units `i` of the pair and every vector `v` of
/// `$lanes` inputs of the block's row of X in `panel` (one fused multiply-add each).
#[cfg(target_arch = "x86_64")]
macro_rules! accumulate {
    ($acc:ident, $panel:ident, $pair:ident, $mask:ident, block: $block:expr, lanes: $lanes:literal,
     splat: |$a:ident| $splat:expr, load: $load:ident, fmadd: $fmadd:ident) => {
        for_each_bit($mask, |b| {
            let pair = &$pair[b];
            let (a0, a1) = (
                {
                    let $a = &pair[0];
                    $splat
                },
                {
                    let $a = &pair[1];
                    $splat
                },
            );
            // SAFETY: b < pair.len(), so the row's `$block` >= `$lanes` V values lie in `panel`.
            let x = unsafe { $panel.as_ptr().add(b * $block) };
            let [first, second] = &mut $acc;
            for (v, (first, second)) in first.iter_mut().zip(second).enumerate() {
                // SAFETY: v < V and `$lanes` V <= `$block`, so the `$lanes` floats from
                // `x + $lanes * v` lie in the row's `$block` values in `panel`.
                let x = unsafe { $load(x.add($lanes * v)) };
                *first = $fmadd(a0, x, *first);
                *second = $fmadd(a1, x, *second);
            }
        })
    };
}

#[cfg(target_arch = "x86_64")]
mod avx2;

#[cfg(target_arch = "x86_64")]
mod avx512;
