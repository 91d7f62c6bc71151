//! Every block size, tile size and threshold of the products, each with the loop it cuts.
//!
//! The loop nest ([`super::blocked()`]), outermost first:
//!
//! 1. K blocks of at most [`KC`] steps;
//! 2. row blocks of A: as many panels as the step lists hold ([`MAX_PANELS`], [`STEPS_LEN`],
//!    [`PACKED_LEN`]);
//! 3. column groups: as many NR-wide panels of B as [`B_LEN`] floats hold;
//! 4. panels of MR rows of A (the tile height), against
//! 5. the group's panels of B, NR columns each (the tile width).
//!
//! Around the nest, the jobs of a product split the columns or rows of C ([`UNIT_WIDTH`],
//! [`UNIT_HEIGHT`], [`CLAIM_MIN`], [`ROWS_MIN`], [`ROWS_ALIGN`]); the paired weight gradient has
//! sizes of its own ([`pairs`]).

/// Longest row order [`super::MatRef::row_order`] takes (it sizes the check's bit set).
pub const MAX_ORDERED_ROWS: usize = 4096;

// ---- Loop 1: K blocks.

/// Deepest K block: the forward's 784 inputs in one. Blocks of 160 would keep a 64-wide B panel
/// in L1 (and the sums carried through C keep the bits), but with the zero steps skipped each
/// tile then does too little between its round trips through C.
pub const KC: usize = 784;

// ---- Loop 2: row blocks of A, sized by the step lists of a K block.

/// Most panels of A rows in one row block (sizes the per-panel step counts).
pub(super) const MAX_PANELS: usize = 256;
/// K steps listed per row block, all panels together (a block of 784 steps for 128 rows).
pub(super) const STEPS_LEN: usize = 1 << 16;
/// Listed steps whose values are packed beside them, all panels together (Xᵀ·dH: 128 steps).
pub(super) const PACKED_LEN: usize = 1 << 15;
/// Most rows of a panel whose values are packed beside its steps.
pub(super) const PACKED_ROWS: usize = 4;

// ---- Loop 3: column groups of packed B.

/// Floats of packed B: a group of NR-wide panels, half a typical L2. Enough for all of dH
/// (128 x 512) in one group, which jobs that claim rows of Xᵀ·dH then pack only once.
pub(super) const B_LEN: usize = 1 << 16;
/// Side of the square blocks in which a Bᵀ stored row-major (Wᵀ) is packed: read a column at
/// a time, written a row at a time (a column written at a time becomes scattered stores).
pub(super) const TRANSPOSE_SIDE: usize = 8;

// ---- Loops 4 and 5: the register tile, MR rows of A by NR columns of B.

/// How many K steps ahead the wide tiles prefetch B's rows (about L2's latency over a step's
/// time). The tiles read a step list this far past its end.
pub(super) const PREFETCH_STEPS: usize = 8;

/// Widest tile.
pub(super) const NR_MAX: usize = 64;

/// Portable tiles: plain arithmetic that vectorises on any target.
pub(super) const PORTABLE_MR: usize = 4;
/// See [`PORTABLE_MR`].
pub(super) const PORTABLE_NR: usize = 8;
/// AVX2's narrow tiles: 12 accumulators + 2 rows of B + 1 broadcast fill the 16 ymm registers.
#[cfg(target_arch = "x86_64")]
pub(super) const AVX2_MR: usize = 6;
/// See [`AVX2_MR`].
#[cfg(target_arch = "x86_64")]
pub(super) const AVX2_NR: usize = 16;
/// AVX2's wide tiles, for products wider than [`AVX2_WIDE_MIN`] (n = 512): the same 12
/// accumulators, and panels of 3 rows skip more zero steps than panels of 6. Narrow products
/// (n = 10) keep 16 columns, which wastes fewer on padding.
#[cfg(target_arch = "x86_64")]
pub(super) const AVX2_WIDE_MR: usize = 3;
/// See [`AVX2_WIDE_MR`].
#[cfg(target_arch = "x86_64")]
pub(super) const AVX2_WIDE_NR: usize = 32;
/// Narrowest product (exclusive) that AVX2 runs on its wide tiles.
#[cfg(target_arch = "x86_64")]
pub(super) const AVX2_WIDE_MIN: usize = 2 * AVX2_NR;
/// AVX-512's wide tiles, on 512-bit vectors: 24 accumulators, 4 vectors of B and the
/// broadcasts fill the 32 zmm registers, and 6 rows share each B vector read from L2. Panels
/// of 6 images skip fewer zero steps than panels of 3, but each step costs about half as much.
#[cfg(target_arch = "x86_64")]
pub(super) const AVX512_WIDE_MR: usize = 6;
/// See [`AVX512_WIDE_MR`].
#[cfg(target_arch = "x86_64")]
pub(super) const AVX512_WIDE_NR: usize = 64;
/// AVX-512's narrow tiles: one vector of 16 columns (AVX2's narrow panels of B, so the same
/// sums) by 12 rows, whose accumulators and broadcasts take 24 of the 32 zmm registers.
#[cfg(target_arch = "x86_64")]
pub(super) const AVX512_NARROW_MR: usize = 12;
/// Narrowest product (exclusive) that AVX-512 runs on its wide tiles.
#[cfg(target_arch = "x86_64")]
pub(super) const AVX512_WIDE_MIN: usize = AVX512_WIDE_NR;
/// NEON's tiles: 16 accumulators of the 32 q registers, leaving room for B, A and the pipeline
/// depth.
#[cfg(target_arch = "aarch64")]
pub(super) const NEON_MR: usize = 8;
/// See [`NEON_MR`].
#[cfg(target_arch = "aarch64")]
pub(super) const NEON_NR: usize = 8;

/// Whether the blocked kernels list and skip A's zero K steps (loop 2) for a product `n`
/// columns wide, on tiles `tile_width` wide. With one or two panels of B (n = 10) a step list
/// would serve one or two tiles: listing costs about what skipping saves. Decided by n alone,
/// never by a job's columns.
#[inline(always)]
pub(super) fn skips_zeros(n: usize, tile_width: usize) -> bool {
    n > 2 * tile_width
}

// ---- Jobs: how the threads split C.

/// Columns of C in a unit that a job claims: whole tiles of every width up to it, 16 units for
/// n = 512.
pub(super) const UNIT_WIDTH: usize = 32;

/// Columns of C in a unit claimed by a kernel whose tiles are `nr` wide: [`UNIT_WIDTH`], or a
/// tile when tiles are wider (AVX-512's 64).
pub(super) const fn unit_width(nr: usize) -> usize {
    if nr > UNIT_WIDTH { nr } else { UNIT_WIDTH }
}
// Wider tiles take units of one tile, so their widths must be whole multiples of the unit.
#[cfg(target_arch = "x86_64")]
const _: () = assert!(AVX512_WIDE_NR.is_multiple_of(UNIT_WIDTH));
/// Rows of C in a unit that a job claims: whole panels of every tile height, 17 units for
/// Xᵀ·dH (784 rows).
pub(super) const UNIT_HEIGHT: usize = 48;
// A claimed unit is one row block: its panels (2 rows or more) fit the step lists of a K block.
const _: () = assert!(UNIT_HEIGHT / 2 <= MAX_PANELS && UNIT_HEIGHT / 2 * KC <= PACKED_LEN);

/// Fewest values of A for which jobs claim units of work rather than take equal ranges.
pub(super) const CLAIM_MIN: usize = 1 << 14;

/// Fewest rows of C a job gets when jobs split rows.
pub(super) const ROWS_MIN: usize = 32;
/// Row splits fall on whole panels of every tile height (3, 4 and 6).
pub(super) const ROWS_ALIGN: usize = 12;

// The paired product is weighed against AVX2's wide tiles.
#[cfg(target_arch = "x86_64")]
const _: () = assert!(pairs::LISTED_TILE.0 == AVX2_WIDE_MR && pairs::LISTED_TILE.1 == AVX2_WIDE_NR);

/// The paired weight gradient's sizes ([`super::pairs`]).
pub(super) mod pairs {
    /// Inputs per block (rows of C a unit covers): a tile of 2 x 6 vectors of 8.
    pub(crate) const BLOCK: usize = 48;
    /// AVX-512's blocks: a tile of 2 x 6 vectors of 16. Twelve chains of multiply-adds keep
    /// both FMA units busy where blocks of 48 (six chains) wait on their latency, and the
    /// images a block of 96 inputs is blank in are hardly fewer.
    #[cfg(target_arch = "x86_64")]
    pub(crate) const WIDE_BLOCK: usize = 96;
    /// Inputs a last AVX-512 block takes beyond [`WIDE_BLOCK`] rather than leave them to a
    /// block of their own, whose steps would cost nearly what a whole block's do (784 = 7 x 96
    /// + 112).
    #[cfg(target_arch = "x86_64")]
    pub(crate) const WIDE_TAIL: usize = 16;
    /// Hidden units whose tiles are staged before they are written to C: a cache line.
    pub(crate) const STAGE: usize = 16;
    /// Most images: the masks are `u128`.
    pub(crate) const MAX_ROWS: usize = 128;
    /// Most pieces the panels of pairs are copied in.
    pub(crate) const MAX_PIECES: usize = 64;
    /// Pairs a piece copies (more when there would be over [`MAX_PIECES`] pieces).
    pub(crate) const PIECE_PAIRS: usize = 16;
    /// The blocked product's tiles for `Xᵀ·D` that the paired one is weighed against: AVX2's
    /// wide tiles, panels of 3 inputs by 32 hidden units.
    pub(crate) const LISTED_TILE: (usize, usize) = (3, 32);
    /// The paired product is the cheaper when its steps are fewer than this fraction
    /// (numerator, denominator) of the listed ones: copying the pairs and staging C cost more
    /// than listing Xᵀ, so it needs a margin.
    pub(crate) const PREFER_PAIRS: (u64, u64) = (7, 8);
}
