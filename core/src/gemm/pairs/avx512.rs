//! The paired product's tile compiled for AVX-512: the sums of the AVX2 tile, in its order, on
//! 16 inputs a vector (counting and copying the pairs run the AVX2 code). The tiles leave each
//! hidden unit's sums as the accumulators hold them, a column of C; once a stage of 16 units
//! is done, 16 x 16 transposes in registers turn them into rows of C, each stored whole. (An
//! AVX2 tile interleaves its pair in the stage, 8 bytes a store, and the stage is then copied.)

use super::{Block, Out, STAGE, Scratch, WIDE_BLOCK, WIDE_TAIL, for_each_bit, pack_block};
use core::arch::x86_64::{
    __m512, _mm512_castpd_ps, _mm512_castps_pd, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps,
    _mm512_setzero_ps, _mm512_shuffle_f32x4, _mm512_storeu_ps, _mm512_unpackhi_pd,
    _mm512_unpackhi_ps, _mm512_unpacklo_pd, _mm512_unpacklo_ps,
};

/// Inputs of the widest block, a last one: the stride of X's panel and of the stage's columns.
const MOST: usize = WIDE_BLOCK + WIDE_TAIL;

/// A stage: the sums of [`STAGE`] hidden units (a column each) at the block's inputs.
type Columns = [[f32; MOST]; STAGE];

/// The tile of a pair over X's panel: `(panel, pair's panel, mask, the pair's two columns)`.
type Tile = unsafe fn(&[f32], &[[f32; 2]], u128, &mut [[f32; MOST]; 2]);

/// [`super::run_block`] with the AVX-512 tiles, on blocks of [`WIDE_BLOCK`] inputs (a last
/// one up to [`MOST`]).
///
/// # Safety
/// The CPU has AVX-512 F.
#[target_feature(enable = "avx512f")]
pub(super) fn run_block(block: &Block, out: &Out, scratch: &mut Scratch) {
    // A last, narrower block runs on a tile just wide enough (X's panel is padded with zeros).
    let tile: Tile = match block.width.div_ceil(16) {
        7.. => tile::<7>,
        4.. => tile::<6>,
        3 => tile::<3>,
        2 => tile::<2>,
        _ => tile::<1>,
    };
    let Block {
        rows, pairs, masks, ..
    } = *block;
    let nonzero = pack_block::<MOST>(block, &mut scratch.b);
    let panel = &scratch.b[..rows * MOST];
    let columns: &mut Columns = scratch
        .packed_a
        .as_flattened_mut()
        .as_chunks_mut::<MOST>()
        .0
        .first_chunk_mut::<STAGE>()
        .expect("scratch holds a stage");
    let pairs = pairs.as_chunks::<2>().0;
    for first in (0..masks.len()).step_by(STAGE / 2) {
        let staged = (STAGE / 2).min(masks.len() - first);
        for (q, two) in (first..first + staged).zip(columns.as_chunks_mut::<2>().0) {
            let pair = &pairs[q * rows..(q + 1) * rows];
            // SAFETY: the CPU has AVX-512 F, the caller's promise.
            unsafe { tile(panel, pair, masks[q] & nonzero, two) };
        }
        write_stage(block, out, columns, 2 * first, 2 * staged);
    }
}

/// Writes the first `cols` columns of the stage into C: rows `block.start..` (`block.width`
/// of them), columns `col..col + cols`.
#[target_feature(enable = "avx512f")]
fn write_stage(block: &Block, out: &Out, columns: &Columns, col: usize, cols: usize) {
    let Block { start, width, .. } = *block;
    let whole = if cols == STAGE { width / 16 * 16 } else { 0 };
    for p0 in (0..whole).step_by(16) {
        // SAFETY: p0 + 16 <= width <= MOST, so each load reads 16 floats of a column.
        let rows = transpose(core::array::from_fn(|c| unsafe {
            _mm512_loadu_ps(columns[c][p0..].as_ptr())
        }));
        for (i, row) in rows.into_iter().enumerate() {
            // SAFETY: this job claimed rows start..start + width of C, and its columns
            // col..col + STAGE lie inside C's (the stage is whole).
            unsafe {
                let c_row = out.row_mut(start + p0 + i, col, STAGE);
                _mm512_storeu_ps(c_row.as_mut_ptr(), row);
            }
        }
    }
    for p in whole..width {
        // SAFETY: as above, for `cols` columns.
        let c_row = unsafe { out.row_mut(start + p, col, cols) };
        for (value, column) in c_row.iter_mut().zip(columns) {
            *value = column[p];
        }
    }
}

/// The transpose of 16 rows of 16 floats: unpacks within 128-bit lanes, then lanes moved
/// across.
#[inline]
#[target_feature(enable = "avx512f")]
fn transpose(r: [__m512; 16]) -> [__m512; 16] {
    // t[2k], t[2k + 1]: rows 2k and 2k + 1 interleaved, the low and the high halves of each lane.
    let t: [__m512; 16] = core::array::from_fn(|i| {
        let (a, b) = (r[i & !1], r[i | 1]);
        if i % 2 == 0 {
            _mm512_unpacklo_ps(a, b)
        } else {
            _mm512_unpackhi_ps(a, b)
        }
    });
    // u[4k + m], lane l: element 4l + m of rows 4k..4k + 4.
    let u: [__m512; 16] = core::array::from_fn(|i| {
        let (k, m) = (i / 4, i % 4);
        let (a, b) = (
            _mm512_castps_pd(t[4 * k + m / 2]),
            _mm512_castps_pd(t[4 * k + 2 + m / 2]),
        );
        _mm512_castpd_ps(if m % 2 == 0 {
            _mm512_unpacklo_pd(a, b)
        } else {
            _mm512_unpackhi_pd(a, b)
        })
    });
    // Row 4l + m of the transpose: lane l of u[m], u[4 + m], u[8 + m], u[12 + m].
    let mut out = [_mm512_setzero_ps(); 16];
    for m in 0..4 {
        let even_lanes = |a, b| _mm512_shuffle_f32x4::<0b10_00_10_00>(a, b);
        let odd_lanes = |a, b| _mm512_shuffle_f32x4::<0b11_01_11_01>(a, b);
        let (v0, v1) = (even_lanes(u[m], u[4 + m]), odd_lanes(u[m], u[4 + m]));
        let (v2, v3) = (
            even_lanes(u[8 + m], u[12 + m]),
            odd_lanes(u[8 + m], u[12 + m]),
        );
        out[m] = even_lanes(v0, v2);
        out[4 + m] = even_lanes(v1, v3);
        out[8 + m] = odd_lanes(v0, v2);
        out[12 + m] = odd_lanes(v1, v3);
    }
    out
}

/// [`super::tile`] with `V` vectors of 16 inputs (the block's first `16 V`), FMA; each unit's
/// sums go to its column.
///
/// # Safety
/// The CPU has AVX-512 F.
#[target_feature(enable = "avx512f")]
unsafe fn tile<const V: usize>(
    panel: &[f32],
    pair: &[[f32; 2]],
    mask: u128,
    columns: &mut [[f32; MOST]; 2],
) {
    const { assert!(V * 16 <= MOST) };
    assert!(panel.len() >= pair.len() * MOST);
    let mut acc: [[__m512; V]; 2] = [[_mm512_setzero_ps(); V]; 2];
    accumulate!(acc, panel, pair, mask, block: MOST, lanes: 16, splat: |v| _mm512_set1_ps(*v),
        load: _mm512_loadu_ps, fmadd: _mm512_fmadd_ps);
    for (unit, column) in acc.iter().zip(columns) {
        for (sums, chunk) in unit.iter().zip(column.as_chunks_mut::<16>().0) {
            // SAFETY: the store writes the chunk's 16 floats.
            unsafe { _mm512_storeu_ps(chunk.as_mut_ptr(), *sums) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_swaps_rows_and_columns() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            std::println!("skipped: this CPU has no AVX-512 F");
            return;
        }
        let rows: [[f32; 16]; 16] =
            core::array::from_fn(|i| core::array::from_fn(|j| (16 * i + j) as f32));
        // SAFETY: AVX-512 F checked above; each load and store covers one row's 16 floats.
        let got: [[f32; 16]; 16] = unsafe {
            let out = transpose(rows.map(|row| _mm512_loadu_ps(row.as_ptr())));
            out.map(|v| {
                let mut row = [0.0; 16];
                _mm512_storeu_ps(row.as_mut_ptr(), v);
                row
            })
        };
        for (i, row) in got.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                assert_eq!(v, rows[j][i], "element ({i}, {j})");
            }
        }
    }
}
