//! The paired product's tile and counting, compiled for AVX2 + FMA.

use super::{BLOCK, Block, Out, STAGE, Scratch, add_block, for_each_bit};
use core::arch::x86_64::{
    __m256, _CMP_NEQ_UQ, _mm_castps_pd, _mm_storeh_pd, _mm_storel_pd, _mm256_broadcast_ss,
    _mm256_castpd_si256, _mm256_castps256_ps128, _mm256_castsi256_pd, _mm256_cmp_ps,
    _mm256_cmpeq_epi64, _mm256_extractf128_ps, _mm256_fmadd_ps, _mm256_loadu_pd, _mm256_loadu_ps,
    _mm256_movemask_pd, _mm256_movemask_ps, _mm256_permute2f128_pd, _mm256_setzero_ps,
    _mm256_setzero_si256, _mm256_storeu_pd, _mm256_unpackhi_pd, _mm256_unpackhi_ps,
    _mm256_unpacklo_pd, _mm256_unpacklo_ps,
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
    accumulate!(acc, panel, pair, mask, block: BLOCK, lanes: 8, splat: |v| _mm256_broadcast_ss(v),
        load: _mm256_loadu_ps, fmadd: _mm256_fmadd_ps);
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
    // Pairs outermost: each panel is then written image after image, whole cache lines, while
    // the lines of D's rows they come from (8 KB for 128 images) stay in L1 for the next four
    // pairs.
    for q in (0..pairs).step_by(4) {
        for b in (0..images).step_by(4) {
            // SAFETY: rows b..b + 4 < rows, pairs first + q.. + 4 <= n / 2.
            let row = |i: usize| unsafe { _mm256_loadu_pd(src.add((b + i) * n / 2 + first + q)) };
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
