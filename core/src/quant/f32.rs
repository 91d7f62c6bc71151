//! Inference from an f32 model file borrowed from memory (flash), without copying it.

use crate::format::{F32Le, FormatError, ModelView};
use crate::loss::argmax;

/// One f32 weight matrix read in place: as `&[f32]` when the bytes are 4-byte aligned (so the
/// compiler may use wide loads), otherwise through [`F32Le`]. Both give the same values.
#[derive(Clone, Copy, Debug)]
enum F32Matrix<'a> {
    Aligned(&'a [f32]),
    Bytes(F32Le<'a>),
}

impl<'a> F32Matrix<'a> {
    fn new(t: F32Le<'a>) -> Self {
        let bytes = t.bytes();
        // SAFETY: every bit pattern is a valid f32; `align_to` puts only whole, aligned f32
        // values in the middle slice, and we use it only when nothing is left over. The
        // little-endian file matches the in-memory layout only on little-endian targets.
        let (head, mid, tail) = unsafe { bytes.align_to::<f32>() };
        if cfg!(target_endian = "little") && head.is_empty() && tail.is_empty() {
            F32Matrix::Aligned(mid)
        } else {
            F32Matrix::Bytes(t)
        }
    }
}

/// A checked f32 model file borrowed from memory (flash), for inference without copying it.
#[derive(Clone, Copy, Debug)]
pub struct F32View<'a> {
    sizes: [usize; 3],
    hidden_weights: F32Matrix<'a>,
    hidden_bias: F32Le<'a>,
    output_weights: F32Matrix<'a>,
    output_bias: F32Le<'a>,
}

impl<'a> F32View<'a> {
    /// Checks the file ([`ModelView::parse`]) and that it is f32.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, FormatError> {
        Self::new(&ModelView::parse(bytes)?)
    }

    /// The f32 inference view of an already checked file.
    pub fn new(view: &ModelView<'a>) -> Result<Self, FormatError> {
        let shape = view.header().shape;
        let (Some(sizes), &[w1, b1, w2, b2]) = (view.header().sizes(), &*view.f32_tensors()?)
        else {
            return Err(FormatError::OneHiddenLayerOnly(shape));
        };
        Ok(Self {
            sizes,
            hidden_weights: F32Matrix::new(w1),
            hidden_bias: b1,
            output_weights: F32Matrix::new(w2),
            output_bias: b2,
        })
    }

    /// Inputs, hidden units, outputs.
    pub fn sizes(&self) -> [usize; 3] {
        self.sizes
    }

    /// True when the weights are read as aligned `f32` slices (the fast path).
    pub fn is_aligned(&self) -> bool {
        matches!(
            (self.hidden_weights, self.output_weights),
            (F32Matrix::Aligned(_), F32Matrix::Aligned(_))
        )
    }

    /// Classifies one input (pixels as [`unit_pixel`](super::unit_pixel)): fills `hidden` and
    /// `logits` and returns the arg-max (the first on ties).
    ///
    /// Each sum runs over the inputs in order from 0.0, then adds the bias, with a separate
    /// multiply and add: the bits of [`crate::Mlp::forward`] with [`crate::Kernel::NAIVE`] on
    /// any IEEE target. The blocked and FMA kernels sum in another order, so they can differ in
    /// the last bits (and, on a near tie, in the class).
    ///
    /// # Panics
    /// If `input`, `hidden` or `logits` is shorter than the model's layer.
    pub fn predict(&self, input: &[f32], hidden: &mut [f32], logits: &mut [f32]) -> usize {
        let [i, h, o] = self.sizes;
        let hidden = &mut hidden[..h];
        let logits = &mut logits[..o];
        dense_f32(
            &self.hidden_weights,
            &input[..i],
            self.hidden_bias,
            hidden,
            true,
        );
        dense_f32(
            &self.output_weights,
            hidden,
            self.output_bias,
            logits,
            false,
        );
        argmax(logits)
    }
}

/// Classifies `input` with the f32 model in `view`, reading the weights in place; see
/// [`F32View::predict`]. Fails if the file is not f32.
pub fn predict_f32(
    view: &ModelView,
    input: &[f32],
    hidden: &mut [f32],
    logits: &mut [f32],
) -> Result<usize, FormatError> {
    Ok(F32View::new(view)?.predict(input, hidden, logits))
}

/// `out = act(input · W + bias)` for `W` stored `input.len() x out.len()` row-major, a register
/// tile of output columns at a time.
fn dense_f32(w: &F32Matrix, input: &[f32], bias: F32Le, out: &mut [f32], relu: bool) {
    let cols = out.len();
    let mut o = 0;
    while o < cols {
        let left = cols - o;
        let n = if left >= 8 {
            tile_f32::<8>(w, input, cols, o, &mut out[o..])
        } else if left >= 4 {
            tile_f32::<4>(w, input, cols, o, &mut out[o..])
        } else {
            tile_f32::<1>(w, input, cols, o, &mut out[o..])
        };
        for (t, v) in out[o..o + n].iter_mut().enumerate() {
            let z = *v + bias.get(o + t);
            // The kernels' epilogue: NaN and -0.0 become 0.0 too.
            *v = if relu { crate::gemm::relu(z) } else { z };
        }
        o += n;
    }
}

/// `N` output columns from `o` of `input · W`, each summed in input order from 0.0.
#[inline(always)]
fn tile_f32<const N: usize>(
    w: &F32Matrix,
    input: &[f32],
    cols: usize,
    o: usize,
    out: &mut [f32],
) -> usize {
    let mut acc = [0.0f32; N];
    match *w {
        F32Matrix::Aligned(s) => {
            // Whole rows of W (each `cols` long, so the column check is loop-invariant).
            for (row, &x) in s.chunks_exact(cols).zip(input) {
                if let Some(row) = row.get(o..).and_then(|r| r.first_chunk::<N>()) {
                    for (a, &v) in acc.iter_mut().zip(row) {
                        *a += x * v;
                    }
                }
            }
        }
        F32Matrix::Bytes(b) => {
            for (i, &x) in input.iter().enumerate() {
                for (t, a) in acc.iter_mut().enumerate() {
                    *a += x * b.get(i * cols + o + t);
                }
            }
        }
    }
    out[..N].copy_from_slice(&acc);
    N
}
