//! Writing tiles to C: the shared output, and the fused epilogue applied after the last K block.

use core::marker::PhantomData;

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
    pub(super) fn apply(&self, v: f32, index: usize, col: usize) -> f32 {
        match *self {
            Epilogue::Store => v,
            Epilogue::Bias(bias) => v + bias[col],
            Epilogue::BiasRelu(bias) => relu(v + bias[col]),
            Epilogue::ReluMask(mask) => masked(v, mask[index]),
        }
    }

    /// The epilogue of C without its first `row` rows (C `ld` wide).
    pub(super) fn rows_after(self, row: usize, ld: usize) -> Self {
        match self {
            Epilogue::ReluMask(mask) => Epilogue::ReluMask(&mask[row * ld..]),
            other => other,
        }
    }

    /// Panics if the bias or mask is too short for an `m x n` C.
    pub(super) fn check(&self, m: usize, n: usize) {
        match *self {
            Epilogue::Store => {}
            Epilogue::Bias(b) | Epilogue::BiasRelu(b) => assert!(b.len() >= n, "bias too short"),
            Epilogue::ReluMask(mask) => assert!(mask.len() >= m * n, "mask too short"),
        }
    }
}

#[inline(always)]
pub(crate) fn relu(v: f32) -> f32 {
    if v > 0.0 { v } else { 0.0 }
}

#[inline(always)]
pub(super) fn masked(v: f32, mask: f32) -> f32 {
    if mask > 0.0 { v } else { 0.0 }
}

/// Write access to C shared by jobs that own disjoint column or row ranges.
#[derive(Clone, Copy)]
pub(crate) struct Out<'a> {
    ptr: *mut f32,
    pub(super) ld: usize,
    _c: PhantomData<&'a mut [f32]>,
}

// SAFETY: `Out` stands for the `&mut [f32]` of C, borrowed for `'a`, which may move to another
// thread.
unsafe impl Send for Out<'_> {}
// SAFETY: jobs write through `Out` only inside their own column or row range (disjoint by
// construction in `part_range`), and the borrow of C outlives every job.
unsafe impl Sync for Out<'_> {}

impl<'a> Out<'a> {
    /// Write access to `c`, `ld` floats a row.
    pub(super) fn new(c: &'a mut [f32], ld: usize) -> Self {
        Self {
            ptr: c.as_mut_ptr(),
            ld,
            _c: PhantomData,
        }
    }

    /// C without its first `row` rows.
    pub(super) fn rows_after(&self, row: usize) -> Self {
        Self {
            // In bounds whenever a row of it is written: row < m, so row * ld < m * ld <= c.len().
            ptr: self.ptr.wrapping_add(row * self.ld),
            ..*self
        }
    }

    /// # Safety
    /// `(i, j)` is inside C and column `j` belongs to the caller's range.
    #[inline(always)]
    pub(super) unsafe fn set(&self, i: usize, j: usize, v: f32) {
        // SAFETY: `(i, j)` lies inside C and no other job writes it (the caller's promise).
        unsafe { *self.ptr.add(i * self.ld + j) = v }
    }

    /// Elements `(i, j..j + len)` of C.
    ///
    /// # Safety
    /// They lie inside C and in the caller's column range, and no other reference to them is
    /// live while the slice is.
    // Jobs share `Out` and each carves its own disjoint rows out of it.
    #[allow(clippy::mut_from_ref)]
    #[inline(always)]
    pub(super) unsafe fn row_mut(&self, i: usize, j: usize, len: usize) -> &mut [f32] {
        // SAFETY: the elements lie inside C, and nothing else refers to them while the slice
        // lives (the caller's promise).
        unsafe { core::slice::from_raw_parts_mut(self.ptr.add(i * self.ld + j), len) }
    }
}

/// Where a tile goes in C: its rows (in panel order) and columns.
#[derive(Clone, Copy)]
pub(super) struct Tile<'r> {
    pub(super) rows: &'r [usize],
    pub(super) col: usize,
    pub(super) cols: usize,
}

/// A tile's sums so far, as the last K block left them in C (zero beyond its columns).
#[inline(always)]
pub(super) fn load<const R: usize, const NR: usize>(out: &Out, tile: Tile) -> [[f32; NR]; R] {
    let mut sums = [[0.0; NR]; R];
    for (row, &i) in sums.iter_mut().zip(tile.rows) {
        // SAFETY: the tile lies inside C and inside this job's column range, and this is the
        // only live reference to that row segment.
        let c_row = unsafe { out.row_mut(i, tile.col, tile.cols) };
        row[..tile.cols].copy_from_slice(c_row);
    }
    sums
}

/// Writes a tile's sums to C, through the epilogue after the last K block.
#[inline(always)]
pub(super) fn store<const R: usize, const NR: usize>(
    acc: &[[f32; NR]; R],
    out: &Out,
    tile: Tile,
    last: bool,
    epilogue: Epilogue,
) {
    for (acc_row, &i) in acc.iter().zip(tile.rows) {
        // SAFETY: the tile lies inside C and inside this job's column range, and this is the
        // only live reference to that row segment.
        let c_row = unsafe { out.row_mut(i, tile.col, tile.cols) };
        let at = Place {
            index: i * out.ld + tile.col,
            col: tile.col,
        };
        match <&mut [f32; NR]>::try_from(&mut *c_row) {
            // Whole arrays: the row becomes a few vector operations.
            Ok(c_row) => store_full(acc_row, c_row, at, last, epilogue),
            Err(_) => store_row(&acc_row[..tile.cols], c_row, at, last, epilogue),
        }
    }
}

/// [`store_row`] for a full-width row, on values rather than memory so that it vectorises.
#[inline(always)]
fn store_full<const NR: usize>(
    acc: &[f32; NR],
    c: &mut [f32; NR],
    at: Place,
    last: bool,
    epi: Epilogue,
) {
    let mut v = *acc;
    if last {
        match epi {
            Epilogue::Store => {}
            Epilogue::Bias(bias) => {
                let bias = *bias[at.col..].first_chunk::<NR>().expect("bias checked");
                for (v, b) in v.iter_mut().zip(bias) {
                    *v += b;
                }
            }
            Epilogue::BiasRelu(bias) => {
                let bias = *bias[at.col..].first_chunk::<NR>().expect("bias checked");
                for (v, b) in v.iter_mut().zip(bias) {
                    *v = relu(*v + b);
                }
            }
            Epilogue::ReluMask(mask) => {
                let mask = *mask[at.index..].first_chunk::<NR>().expect("mask checked");
                for (v, mk) in v.iter_mut().zip(mask) {
                    *v = masked(*v, mk);
                }
            }
        }
    }
    *c = v;
}

/// Where a row segment of a tile starts in C: flat index (for masks) and column (for biases).
#[derive(Clone, Copy)]
struct Place {
    index: usize,
    col: usize,
}

#[inline(always)]
fn store_row(acc: &[f32], c: &mut [f32], at: Place, last: bool, epi: Epilogue) {
    let len = c.len();
    match (last, epi) {
        (false, _) | (true, Epilogue::Store) => c.copy_from_slice(acc),
        (true, Epilogue::Bias(bias)) => {
            for ((c, &v), &b) in c.iter_mut().zip(acc).zip(&bias[at.col..at.col + len]) {
                *c = v + b;
            }
        }
        (true, Epilogue::BiasRelu(bias)) => {
            for ((c, &v), &b) in c.iter_mut().zip(acc).zip(&bias[at.col..at.col + len]) {
                *c = relu(v + b);
            }
        }
        (true, Epilogue::ReluMask(mask)) => {
            for ((c, &v), &mk) in c.iter_mut().zip(acc).zip(&mask[at.index..at.index + len]) {
                *c = masked(v, mk);
            }
        }
    }
}
