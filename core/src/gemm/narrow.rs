//! Narrow products whose A lies down its rows (`Hᵀ·dZ`, the head's weight gradient: A = Hᵀ,
//! 512 x 128, and B = dZ, 128 x 10), on AVX-512 outside the loop nest. A tile holds 32 rows of
//! C by up to [`COLS`] columns: at each K step, two vectors of A's rows loaded where they lie
//! times each of B's values there, broadcast. The nest's narrow tiles instead broadcast A's
//! values into 16 lanes of B's row of which 10 are used, pack B and store through the stack.
//! Each element is still one chain of fused multiply-adds over K in order from zero, then the
//! epilogue, as in the nest: the same bits.

use super::MatRef;
use super::epilogue::{Epilogue, Out};
use super::params::AVX512_WIDE_MIN;
use core::arch::x86_64::*;
use core::ops::Range;

/// Most columns of C a tile holds: 2 x 12 accumulators, A's two vectors and a broadcast of the
/// 32 registers.
const COLS: usize = 12;
/// Rows of C a tile holds: two vectors.
const ROWS: usize = 32;

/// Whether [`product`] runs `a·b`: as narrow as the nest's narrow tiles, A's rows next to each
/// other in memory (a transposed row-major matrix), B strided rather than in panels.
pub(super) fn fits(a: &MatRef, b: &MatRef) -> bool {
    a.row_stride == 1 && b.panel_width == 0 && b.cols <= AVX512_WIDE_MIN
}

/// Columns `cols` of `a·b` into `out`, the epilogue applied.
///
/// # Safety
/// The CPU runs AVX-512 F; the product [`fits`]; `cols` are the caller's to write.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn product(
    a: MatRef,
    b: MatRef,
    out: &Out,
    cols: Range<usize>,
    epilogue: Epilogue,
) {
    let mut first = cols.start;
    while first < cols.end {
        let n = COLS.min(cols.end - first);
        // SAFETY: the caller's promise, and columns first..first + n lie in `cols`.
        unsafe {
            match n {
                1 => tiles::<1>(&a, &b, out, first, epilogue),
                2 => tiles::<2>(&a, &b, out, first, epilogue),
                3 => tiles::<3>(&a, &b, out, first, epilogue),
                4 => tiles::<4>(&a, &b, out, first, epilogue),
                5 => tiles::<5>(&a, &b, out, first, epilogue),
                6 => tiles::<6>(&a, &b, out, first, epilogue),
                7 => tiles::<7>(&a, &b, out, first, epilogue),
                8 => tiles::<8>(&a, &b, out, first, epilogue),
                9 => tiles::<9>(&a, &b, out, first, epilogue),
                10 => tiles::<10>(&a, &b, out, first, epilogue),
                11 => tiles::<11>(&a, &b, out, first, epilogue),
                _ => tiles::<COLS>(&a, &b, out, first, epilogue),
            }
        }
        first += n;
    }
}

/// Every row of C, columns `first..first + N`, a tile of [`ROWS`] rows at a time.
///
/// # Safety
/// As for [`product`], for those columns.
#[target_feature(enable = "avx512f")]
unsafe fn tiles<const N: usize>(
    a: &MatRef,
    b: &MatRef,
    out: &Out,
    first: usize,
    epilogue: Epilogue,
) {
    let (m, k) = (a.rows, a.cols);
    if k > 0 {
        // Every value the tiles read: A's rows < m at steps < k, B's columns < first + N.
        assert!(
            m == 0 || m - 1 + (k - 1) * a.col_stride < a.data.len(),
            "A too short"
        );
        let last = (k - 1) * b.row_stride + (first + N - 1) * b.col_stride;
        assert!(last < b.data.len(), "B too short");
    }
    for i0 in (0..m).step_by(ROWS) {
        let height = ROWS.min(m - i0);
        // Rows past C's last are neither read nor written.
        let lanes = |v: usize| match height.saturating_sub(16 * v) {
            0 => 0,
            h if h >= 16 => u16::MAX,
            h => (1u16 << h) - 1,
        };
        let masks = [lanes(0), lanes(1)];
        // Column j of the tile: its two vectors of rows.
        let mut acc = [[_mm512_setzero_ps(); 2]; N];
        for p in 0..k {
            // SAFETY: checked above (row i0 < m at step p < k).
            let column = unsafe { a.data.as_ptr().add(i0 + p * a.col_stride) };
            // SAFETY: lanes past the last row are masked, and a masked lane never faults.
            let down = [0, 1]
                .map(|v| unsafe { _mm512_maskz_loadu_ps(masks[v], column.wrapping_add(16 * v)) });
            // SAFETY: checked above.
            let b_row = unsafe { b.data.as_ptr().add(p * b.row_stride + first * b.col_stride) };
            for (j, acc) in acc.iter_mut().enumerate() {
                // SAFETY: checked above (column first + j < first + N).
                let value = _mm512_set1_ps(unsafe { *b_row.add(j * b.col_stride) });
                for (acc, &down) in acc.iter_mut().zip(&down) {
                    *acc = _mm512_fmadd_ps(down, value, *acc);
                }
            }
        }
        let mut sums = [[0.0f32; ROWS]; N];
        for (column, acc) in sums.iter_mut().zip(&acc) {
            for (half, &acc) in column.as_chunks_mut::<16>().0.iter_mut().zip(acc) {
                // SAFETY: the store covers the half's 16 floats.
                unsafe { _mm512_storeu_ps(half.as_mut_ptr(), acc) };
            }
        }
        for ii in 0..height {
            let i = i0 + ii;
            for (j, column) in (first..).zip(&sums) {
                // SAFETY: i < m, and column j is the caller's (see `product`).
                unsafe { out.set(i, j, epilogue.apply(column[ii], i * out.ld + j, j)) };
            }
        }
    }
}
