//! The matrix view every product reads its operands through.

use super::params::MAX_ORDERED_ROWS;
use core::ops::Range;

/// A read-only strided matrix view: element `(i, j)` is `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    pub(super) data: &'a [f32],
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) row_stride: usize,
    pub(super) col_stride: usize,
    /// The order in which the blocked kernels group rows into panels (empty: 0, 1, 2...).
    pub(super) order: &'a [u16],
    /// Columns per panel in the panel layout of [`MatRef::panels`] (0: the strided layout).
    pub(super) panel_width: usize,
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
    /// ([`Kernel::panel_width`](super::Kernel::panel_width)) reads such a B in place instead of
    /// packing it; the others read it element by element. Either way the product is the same
    /// bits as with B row-major.
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
    pub(super) fn row_index(&self, pos: usize) -> usize {
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
    pub(super) fn row_range(self, rows: Range<usize>) -> Self {
        Self {
            // Empty only when there is nothing to read (k = 0).
            data: self.data.get(rows.start * self.row_stride..).unwrap_or(&[]),
            rows: rows.len(),
            order: &[],
            ..self
        }
    }

    #[inline(always)]
    pub(super) fn at(&self, i: usize, j: usize) -> f32 {
        match self.panel_width {
            0 => self.data[i * self.row_stride + j * self.col_stride],
            w => self.data[panel_index(i, j, self.rows, w)],
        }
    }

    /// Elements `(i, j..j + len)`, for a view with unit column stride.
    #[inline(always)]
    pub(super) fn row(&self, i: usize, j: usize, len: usize) -> &'a [f32] {
        let start = i * self.row_stride + j;
        &self.data[start..start + len]
    }

    /// Elements `(i..i + len, j)`, for a view with unit row stride.
    #[inline(always)]
    pub(super) fn col(&self, i: usize, j: usize, len: usize) -> &'a [f32] {
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
