//! The first layer's weights in a kernel's panels, where training keeps them between steps: the
//! forward product reads them in place rather than packing W1 again every step, and the
//! optimizer updates them there.

use crate::gemm::{Kernel, MatRef, panel_index};
use crate::layers::Mlp;
use crate::simd::PanelMatrix;

/// Which weights the panels hold, and how.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PanelState {
    /// Columns per panel; 0 until filled.
    width: usize,
    /// Address of the weights copied: which model the panels belong to.
    source: usize,
    rows: usize,
    cols: usize,
}

/// A weight matrix in the panels a kernel packs B into ([`MatRef::panels`]), on storage the
/// caller owns: `values` (at least `rows x cols` floats) and the [`PanelState`] beside them.
pub struct Panels<'a> {
    values: &'a mut [f32],
    state: &'a mut PanelState,
}

impl<'a> Panels<'a> {
    /// Panels on `values`, in the state `state` records (zeroed: not filled yet).
    pub fn new(values: &'a mut [f32], state: &'a mut PanelState) -> Self {
        Self { values, state }
    }

    /// Takes `weights` (`rows x cols`, row-major) into `kernel`'s panels, before the first
    /// step with these weights and kernel (and again after changing the weights).
    ///
    /// # Panics
    /// If `values` is shorter than the weights.
    pub fn copy_from(&mut self, weights: &[f32], rows: usize, cols: usize, kernel: Kernel) {
        assert!(
            weights.len() == rows * cols && self.values.len() >= rows * cols,
            "panels smaller than the weights"
        );
        *self.state = PanelState {
            width: width_for(kernel, cols),
            source: weights.as_ptr() as usize,
            rows,
            cols,
        };
        self.refresh(weights);
    }

    /// Writes the weights back into `weights` (those they were taken from), which the steps
    /// leave behind.
    ///
    /// # Panics
    /// If the panels were taken from other weights, or never filled.
    pub fn copy_to(&self, weights: &mut [f32]) {
        let s = *self.state;
        assert!(
            s.width > 0
                && s.source == weights.as_ptr() as usize
                && weights.len() == s.rows * s.cols,
            "panels of other weights"
        );
        for (r, row) in weights.chunks_exact_mut(s.cols).enumerate() {
            for (c, v) in row.iter_mut().enumerate() {
                *v = self.values[panel_index(r, c, s.rows, s.width)];
            }
        }
    }

    /// Takes the weights again, in the same layout.
    pub(crate) fn refresh(&mut self, weights: &[f32]) {
        let s = *self.state;
        assert!(s.width > 0, "panels never filled: call Panels::copy_from");
        for (r, row) in weights.chunks_exact(s.cols).enumerate() {
            for (c, &v) in row.iter().enumerate() {
                self.values[panel_index(r, c, s.rows, s.width)] = v;
            }
        }
    }

    /// The weights, for an update in place.
    pub(crate) fn values(&mut self) -> PanelMatrix<'_> {
        let s = *self.state;
        PanelMatrix::new(&mut self.values[..s.rows * s.cols], s.rows, s.cols, s.width)
    }

    pub(crate) fn view(&self) -> MatRef<'_> {
        let s = *self.state;
        MatRef::panels(&self.values[..s.rows * s.cols], s.rows, s.cols, s.width)
    }

    /// Whether these are `weights` in `kernel`'s layout (as far as can be told without reading
    /// them all).
    pub(crate) fn belong_to(&self, weights: &[f32], kernel: Kernel) -> bool {
        let s = *self.state;
        s.width == width_for(kernel, s.cols)
            && s.source == weights.as_ptr() as usize
            && weights.len() == s.rows * s.cols
    }

    /// Whether they hold exactly `weights`.
    #[cfg(test)]
    pub(crate) fn hold(&self, weights: &[f32]) -> bool {
        let s = *self.state;
        weights.chunks_exact(s.cols).enumerate().all(|(r, row)| {
            row.iter().enumerate().all(|(c, v)| {
                self.values[panel_index(r, c, s.rows, s.width)].to_bits() == v.to_bits()
            })
        })
    }
}

/// The kernel's panel width, or a single panel (row-major) when that does not divide the
/// columns (the panels would need padding).
fn width_for(kernel: Kernel, cols: usize) -> usize {
    match kernel.panel_width(cols) {
        w if cols.is_multiple_of(w) => w,
        _ => cols,
    }
}

/// [`Panels`] with fixed-size storage for an [`Mlp`]'s hidden weights (1.6 MB for the Keras
/// example: keep it on the heap).
pub struct HiddenPanels<const IN: usize, const HIDDEN: usize> {
    values: [[f32; HIDDEN]; IN],
    state: PanelState,
}

impl<const IN: usize, const HIDDEN: usize> HiddenPanels<IN, HIDDEN> {
    /// Empty panels (a big value: prefer a zeroed heap allocation, which is the same).
    pub const fn zeroed() -> Self {
        Self {
            values: [[0.0; HIDDEN]; IN],
            state: PanelState {
                width: 0,
                source: 0,
                rows: 0,
                cols: 0,
            },
        }
    }

    /// The panels as a [`Panels`] view.
    pub fn panels(&mut self) -> Panels<'_> {
        Panels::new(self.values.as_flattened_mut(), &mut self.state)
    }

    /// Takes `model`'s hidden weights into `kernel`'s panels.
    pub fn copy_from<const OUT: usize>(&mut self, model: &Mlp<IN, HIDDEN, OUT>, kernel: Kernel) {
        let weights = model.hidden.weights.as_flattened();
        self.panels().copy_from(weights, IN, HIDDEN, kernel);
    }

    /// Writes the weights back into `model`, the one they were taken from.
    ///
    /// # Panics
    /// If the panels were taken from another model, or never filled.
    pub fn copy_to<const OUT: usize>(&mut self, model: &mut Mlp<IN, HIDDEN, OUT>) {
        self.panels()
            .copy_to(model.hidden.weights.as_flattened_mut());
    }
}
