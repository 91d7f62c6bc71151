//! Getting the operands to the tiles: A read where it lies, a panel of rows at a time; B
//! packed into NR-wide panels.

use super::MatRef;
use super::params::TRANSPOSE_SIDE as SIDE;
use core::marker::PhantomData;

/// `R` rows of A over one K block, read where they lie: whatever A's layout, nothing is copied.
pub(crate) struct APanel<'a, const R: usize> {
    /// Each row's value at the block's first K step. Rows past the panel's last are that row
    /// again: their sums are computed and never stored.
    pub(super) rows: [*const f32; R],
    /// The rows' numbers in A, which are also the rows of C their sums go to.
    pub(super) numbers: [usize; R],
    /// Distance from one K step to the next.
    pub(super) stride: usize,
    /// K steps in the block.
    pub(crate) kc: usize,
    _a: PhantomData<&'a [f32]>,
}

impl<'a, const R: usize> APanel<'a, R> {
    /// The rows at positions `i0..i0 + height` (`1 <= height <= R`) of A's panel order, K steps
    /// `pc..pc + kc`.
    #[inline(always)]
    pub(super) fn new(a: &MatRef<'a>, i0: usize, height: usize, pc: usize, kc: usize) -> Self {
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
    pub(crate) unsafe fn at(&self, ii: usize, p: usize) -> f32 {
        debug_assert!(p < self.kc);
        // SAFETY: `new` checked that `start + (kc - 1) * stride` is inside A for every row.
        unsafe { *self.rows[ii].add(p * self.stride) }
    }
}

/// Packs rows `pc..pc+rows.len()`, columns `jc..jc+width` of B into one NR-wide panel,
/// zero-padding the columns past `width`. Rows that `used` marks unused may be left as they
/// were (only on the common path, where skipping saves reading B).
#[inline(always)]
pub(super) fn pack_b<const NR: usize>(
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
        const { assert!(NR.is_multiple_of(SIDE)) };
        for (p0, rows) in (0..kc).step_by(SIDE).zip(rows.chunks_mut(SIDE)) {
            let depth = rows.len();
            for (q, j0) in (0..NR).step_by(SIDE).enumerate() {
                // Columns past `width` are zero padding.
                let mut block = [[0.0f32; SIDE]; SIDE];
                for (column, j) in block.iter_mut().zip(j0..width) {
                    column[..depth].copy_from_slice(b.col(pc + p0, jc + j, depth));
                }
                for (pp, row) in rows.iter_mut().enumerate() {
                    let piece = &mut row.as_chunks_mut::<SIDE>().0[q];
                    for (value, column) in piece.iter_mut().zip(&block) {
                        *value = column[pp];
                    }
                }
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
