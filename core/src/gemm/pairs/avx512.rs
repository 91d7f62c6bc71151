//! The paired product's tile compiled for AVX-512: the sums of the AVX2 tile, in its order, on
//! 16 inputs a vector (counting and copying the pairs run the AVX2 code).

use super::{Block, Out, STAGE, Scratch, WIDE_BLOCK, WIDE_TAIL, for_each_bit};
use core::arch::x86_64::{
    __m512, _mm_castps_pd, _mm_storeh_pd, _mm_storel_pd, _mm512_extractf32x4_ps, _mm512_fmadd_ps,
    _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_unpackhi_ps, _mm512_unpacklo_ps,
};

/// Inputs of the widest block, a last one: the stride of X's panel.
const MOST: usize = WIDE_BLOCK + WIDE_TAIL;

/// [`super::run_block`] with the AVX-512 tiles, on blocks of [`WIDE_BLOCK`] inputs (a last
/// one up to [`MOST`]).
///
/// # Safety
/// The CPU has AVX-512 F.
#[target_feature(enable = "avx512f")]
pub(super) fn run_block(block: &Block, out: &Out, scratch: &mut Scratch) {
    // A last, narrower block runs on a tile just wide enough (X's panel is padded with zeros).
    let tile: super::TileFn<MOST> = match block.width.div_ceil(16) {
        7.. => tile::<7>,
        4.. => tile::<6>,
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
    stage: &mut [[f32; STAGE]; MOST],
    col: usize,
) {
    const { assert!(V * 16 <= MOST) };
    assert!(col + 1 < STAGE && panel.len() >= pair.len() * MOST);
    let mut acc: [[__m512; V]; 2] = [[_mm512_setzero_ps(); V]; 2];
    accumulate!(acc, panel, pair, mask, block: MOST, lanes: 16, splat: |v| _mm512_set1_ps(*v),
        load: _mm512_loadu_ps, fmadd: _mm512_fmadd_ps);
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
            // SAFETY: p + 1 < 16 V <= MOST rows of STAGE values; col + 1 < STAGE.
            unsafe {
                let at = stage.as_mut_ptr().add(p * STAGE + col);
                _mm_storel_pd(at.cast(), lane);
                _mm_storeh_pd(at.add(STAGE).cast(), lane);
            }
        }
    }
}
