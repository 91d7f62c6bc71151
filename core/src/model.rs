//! Training and inference of an [`Mlp`] on a batch, inside a caller-owned [`Workspace`].

use crate::kernels::pairs::{self, GradientSteps};
use crate::kernels::{
    Epilogue, Kernel, MAX_ORDERED_ROWS, MatRef, Parallel, Scratch, gemm, gemm_parallel,
    gemm_parallel_beside, panel_index,
};
use crate::layers::Mlp;
use crate::loss;
use crate::optim::Optimizer;
use crate::simd::PanelMatrix;

/// Activations and gradients for batches of up to `BATCH` rows. Owned by the caller so a
/// training step allocates nothing.
pub struct Workspace<const BATCH: usize, const IN: usize, const HIDDEN: usize, const OUT: usize> {
    /// ReLU activations of the hidden layer.
    pub hidden: [[f32; HIDDEN]; BATCH],
    /// Logits of the output layer (during training, overwritten by their gradient).
    pub logits: [[f32; OUT]; BATCH],
    /// Gradient of the loss with respect to the hidden activations.
    pub hidden_grad: [[f32; HIDDEN]; BATCH],
    /// Gradients of the last training step, shaped like the model.
    pub grads: Mlp<IN, HIDDEN, OUT>,
    /// The batch's rows sorted by label and key: the order the forward product groups them in.
    row_order: [u16; BATCH],
    /// Each row's loss in the last training step.
    row_loss: [f32; BATCH],
    /// Whether each row was classified correctly in the last training step.
    row_correct: [bool; BATCH],
    /// `hidden_grad` in panels of two columns, and a mask of the rows where each pair is
    /// nonzero (the first `HIDDEN / 2`: a length cannot be computed from `HIDDEN` on stable),
    /// for the paired weight gradient.
    hidden_grad_pairs: [[f32; HIDDEN]; BATCH],
    pair_masks: [u128; HIDDEN],
    /// How the weight gradient is computed (tests choose).
    weight_gradient: WeightGradient,
}

/// Which product computes `dW1 = Xᵀ·dH`: the same bits either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
// Zero bytes are `Cheaper` (the workspace is `Zeroable`).
#[repr(u8)]
enum WeightGradient {
    /// The cheaper by the batch's counts, where the paired product is fast.
    Cheaper = 0,
    /// The blocked product.
    #[cfg(test)]
    Blocked,
    /// The paired product wherever it fits.
    #[cfg(test)]
    Paired,
}

impl<const B: usize, const I: usize, const H: usize, const O: usize> Workspace<B, I, H, O> {
    /// A zeroed workspace (small nets; a big one belongs in a zeroed heap allocation).
    pub const fn zeroed() -> Self {
        Self {
            hidden: [[0.0; H]; B],
            logits: [[0.0; O]; B],
            hidden_grad: [[0.0; H]; B],
            grads: Mlp::zeroed(),
            row_order: [0; B],
            row_loss: [0.0; B],
            row_correct: [false; B],
            hidden_grad_pairs: [[0.0; H]; B],
            pair_masks: [0; H],
            weight_gradient: WeightGradient::Cheaper,
        }
    }
}

/// A model's hidden weights in the panels a kernel packs B into ([`MatRef::panels`]), where
/// training steps through [`Mlp::train_step_with_panels`] keep them: the forward product reads
/// them in place rather than packing W1 again every step, and the optimizer updates them
/// there. Owned by the caller (1.6 MB for the Keras example: keep it on the heap).
pub struct HiddenPanels<const IN: usize, const HIDDEN: usize> {
    values: [[f32; HIDDEN]; IN],
    /// Columns per panel; 0 until filled.
    width: usize,
    /// Address of the weights copied: which model the panels belong to.
    source: usize,
}

impl<const IN: usize, const HIDDEN: usize> HiddenPanels<IN, HIDDEN> {
    /// Empty panels (a big value: prefer a zeroed heap allocation, which is the same).
    pub const fn zeroed() -> Self {
        Self {
            values: [[0.0; HIDDEN]; IN],
            width: 0,
            source: 0,
        }
    }

    /// Takes `model`'s hidden weights into `kernel`'s panels, before the first step with this
    /// model and kernel (and again after changing the model's weights).
    pub fn copy_from<const OUT: usize>(&mut self, model: &Mlp<IN, HIDDEN, OUT>, kernel: Kernel) {
        self.width = Self::width_for(kernel);
        self.source = model.hidden.weights.as_ptr() as usize;
        self.refresh(model);
    }

    /// The kernel's panel width, or a single panel (row-major) when that does not divide the
    /// hidden units (the panels would need padding).
    fn width_for(kernel: Kernel) -> usize {
        match kernel.panel_width(HIDDEN) {
            w if HIDDEN.is_multiple_of(w) => w,
            _ => HIDDEN,
        }
    }

    /// Writes the weights back into `model` (the one they were taken from), whose own copy the
    /// steps leave behind.
    ///
    /// # Panics
    /// If the panels were taken from another model, or never filled.
    pub fn copy_to<const OUT: usize>(&self, model: &mut Mlp<IN, HIDDEN, OUT>) {
        assert!(
            self.width > 0 && self.source == model.hidden.weights.as_ptr() as usize,
            "panels of another model"
        );
        for (r, row) in model.hidden.weights.iter_mut().enumerate() {
            for (c, v) in row.iter_mut().enumerate() {
                *v = self.values.as_flattened()[self.place(r, c)];
            }
        }
    }

    /// Where weight `(r, c)` lies in the panels.
    #[inline(always)]
    fn place(&self, r: usize, c: usize) -> usize {
        panel_index(r, c, IN, self.width)
    }

    /// Takes the weights again, in the same layout.
    pub(crate) fn refresh<const OUT: usize>(&mut self, model: &Mlp<IN, HIDDEN, OUT>) {
        assert!(
            self.width > 0,
            "panels never filled: call HiddenPanels::copy_from"
        );
        for (r, row) in model.hidden.weights.iter().enumerate() {
            for (c, &v) in row.iter().enumerate() {
                let at = self.place(r, c);
                self.values.as_flattened_mut()[at] = v;
            }
        }
    }

    /// The weights, for an update in place.
    pub(crate) fn values(&mut self) -> PanelMatrix<'_> {
        PanelMatrix::new(self.values.as_flattened_mut(), IN, HIDDEN, self.width)
    }

    fn view(&self) -> MatRef<'_> {
        MatRef::panels(self.values.as_flattened(), IN, HIDDEN, self.width)
    }

    /// Whether these are `model`'s weights in `kernel`'s layout (as far as can be told without
    /// reading them all).
    fn belong_to<const OUT: usize>(&self, model: &Mlp<IN, HIDDEN, OUT>, kernel: Kernel) -> bool {
        self.width == Self::width_for(kernel)
            && self.source == model.hidden.weights.as_ptr() as usize
    }

    /// Whether they hold exactly `model`'s hidden weights.
    #[cfg(test)]
    fn hold<const OUT: usize>(&self, model: &Mlp<IN, HIDDEN, OUT>) -> bool {
        model.hidden.weights.iter().enumerate().all(|(r, row)| {
            row.iter()
                .enumerate()
                .all(|(c, v)| self.values.as_flattened()[self.place(r, c)].to_bits() == v.to_bits())
        })
    }
}

/// How products are computed: which kernel, on which threads, with one [`Scratch`] per job.
pub struct Compute<'a, P: Parallel> {
    kernel: Kernel,
    parallel: &'a P,
    scratches: &'a mut [Scratch],
}

impl<'a, P: Parallel> Compute<'a, P> {
    /// Products split into `scratches.len()` column ranges, run by `parallel`.
    ///
    /// # Panics
    /// If `scratches` is empty.
    pub fn new(kernel: Kernel, parallel: &'a P, scratches: &'a mut [Scratch]) -> Self {
        assert!(!scratches.is_empty(), "at least one scratch is needed");
        Self {
            kernel,
            parallel,
            scratches,
        }
    }

    /// The kernel in use.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    fn gemm(&mut self, a: MatRef, b: MatRef, c: &mut [f32], epilogue: Epilogue) {
        gemm_parallel(
            self.parallel,
            self.kernel,
            a,
            b,
            c,
            epilogue,
            self.scratches,
        );
    }
}

/// What a batch scored.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepStats {
    /// Sum of the per-row losses (divide by `rows` for the batch mean Keras reports).
    pub loss_sum: f64,
    /// Rows whose arg-max equals the label.
    pub correct: u32,
    /// Rows in the batch.
    pub rows: u32,
}

impl StepStats {
    /// Adds another batch's figures.
    pub fn merge(&mut self, other: StepStats) {
        self.loss_sum += other.loss_sum;
        self.correct += other.correct;
        self.rows += other.rows;
    }

    /// Mean loss per row.
    pub fn mean_loss(&self) -> f64 {
        self.loss_sum / f64::from(self.rows.max(1))
    }

    /// Fraction of rows classified correctly.
    pub fn accuracy(&self) -> f64 {
        f64::from(self.correct) / f64::from(self.rows.max(1))
    }
}

impl<const IN: usize, const HIDDEN: usize, const OUT: usize> Mlp<IN, HIDDEN, OUT> {
    /// Computes the logits of `images` (at most `BATCH` rows) into `ws.logits`, the hidden
    /// activations into `ws.hidden`, and returns the logits.
    ///
    /// # Panics
    /// If there are more images than `BATCH`.
    pub fn forward<'w, const BATCH: usize, P: Parallel>(
        &self,
        images: &[[f32; IN]],
        ws: &'w mut Workspace<BATCH, IN, HIDDEN, OUT>,
        compute: &mut Compute<P>,
    ) -> &'w [[f32; OUT]] {
        let rows = images.len();
        self.hidden_layer(images, false, None, ws, compute);
        compute.gemm(
            MatRef::row_major(ws.hidden[..rows].as_flattened(), rows, HIDDEN),
            MatRef::row_major(self.output.weights.as_flattened(), HIDDEN, OUT),
            ws.logits[..rows].as_flattened_mut(),
            Epilogue::Bias(&self.output.bias),
        );
        &ws.logits[..rows]
    }

    /// The hidden layer's activations of `images` into `ws.hidden`, the rows of X grouped in
    /// `ws.row_order` when `grouped`.
    fn hidden_layer<const BATCH: usize, P: Parallel>(
        &self,
        images: &[[f32; IN]],
        grouped: bool,
        panels: Option<&HiddenPanels<IN, HIDDEN>>,
        ws: &mut Workspace<BATCH, IN, HIDDEN, OUT>,
        compute: &mut Compute<P>,
    ) {
        let rows = images.len();
        assert!(
            rows <= BATCH,
            "batch of {rows} rows exceeds workspace of {BATCH}"
        );
        let mut x = MatRef::row_major(images.as_flattened(), rows, IN);
        if grouped {
            x = x.row_order(&ws.row_order[..rows]);
        }
        let w1 = match panels {
            Some(panels) => panels.view(),
            None => MatRef::row_major(self.hidden.weights.as_flattened(), IN, HIDDEN),
        };
        compute.gemm(
            x,
            w1,
            ws.hidden[..rows].as_flattened_mut(),
            Epilogue::BiasRelu(&self.hidden.bias),
        );
    }

    /// From the hidden activations to the gradient that reaches them: the logits, each row's
    /// loss (into `ws.row_loss` and `ws.row_correct`), the logits' gradient (over the logits)
    /// and `dH = (dZ·W2ᵀ)` where `H > 0` (into `ws.hidden_grad`). No row needs another, so each
    /// job takes a share of the rows through all three, in one call rather than one per product
    /// with the loss in between on one thread. With `count`, also counts each way's steps for
    /// the weight gradient from the rows' `images` and `dH`, while both are at hand.
    fn output_and_back<const BATCH: usize, P: Parallel>(
        &self,
        images: &[[f32; IN]],
        labels: &[u8],
        count: bool,
        ws: &mut Workspace<BATCH, IN, HIDDEN, OUT>,
        compute: &mut Compute<P>,
    ) -> GradientSteps {
        let rows = labels.len();
        let parts = compute
            .scratches
            .len()
            .min(rows.div_ceil(HEAD_ROWS_MIN))
            .clamp(1, MAX_HEAD_PARTS);
        let chunk = rows.div_ceil(parts).max(1);
        let mut pieces: heapless::Vec<HeadRows<IN, HIDDEN, OUT>, MAX_HEAD_PARTS> =
            heapless::Vec::new();
        let rows_of = ws.hidden[..rows]
            .chunks(chunk)
            .zip(ws.logits[..rows].chunks_mut(chunk))
            .zip(ws.hidden_grad[..rows].chunks_mut(chunk))
            .zip(ws.row_loss[..rows].chunks_mut(chunk))
            .zip(ws.row_correct[..rows].chunks_mut(chunk))
            .zip(labels.chunks(chunk).zip(images.chunks(chunk)))
            .zip(compute.scratches.iter_mut());
        for ((((((hidden, logits), hidden_grad), loss), correct), (labels, images)), scratch) in
            rows_of
        {
            // At most `parts` <= MAX_HEAD_PARTS chunks, so this never fails.
            let _ = pieces.push(HeadRows {
                hidden,
                logits,
                hidden_grad,
                loss,
                correct,
                labels,
                images,
                steps: GradientSteps::default(),
                scratch,
            });
        }
        let kernel = compute.kernel;
        let w2 = MatRef::row_major(self.output.weights.as_flattened(), HIDDEN, OUT);
        compute.parallel.run(&mut pieces, &|_, part| {
            let n = part.labels.len();
            let h = part.hidden.as_flattened();
            gemm(
                kernel,
                MatRef::row_major(h, n, HIDDEN),
                w2,
                part.logits.as_flattened_mut(),
                Epilogue::Bias(&self.output.bias),
                part.scratch,
            );
            let scored = part.logits.iter_mut().zip(part.labels);
            for ((z, &label), (loss, correct)) in
                scored.zip(part.loss.iter_mut().zip(&mut *part.correct))
            {
                (*loss, *correct) = loss::loss_and_gradient(z, usize::from(label), rows);
            }
            gemm(
                kernel,
                MatRef::row_major(part.logits.as_flattened(), n, OUT),
                w2.t(),
                part.hidden_grad.as_flattened_mut(),
                Epilogue::ReluMask(h),
                part.scratch,
            );
            if count {
                // A quarter of the rows tells which product is cheaper well enough.
                for (x, d) in part.images.iter().zip(&*part.hidden_grad).step_by(4) {
                    part.steps.add_row(kernel, x, d);
                }
            }
        });
        pieces
            .iter()
            .fold(GradientSteps::default(), |sum, part| sum.merge(part.steps))
    }

    /// Loss and accuracy of a batch, without training.
    pub fn evaluate<const BATCH: usize, P: Parallel>(
        &self,
        images: &[[f32; IN]],
        labels: &[u8],
        ws: &mut Workspace<BATCH, IN, HIDDEN, OUT>,
        compute: &mut Compute<P>,
    ) -> StepStats {
        assert_eq!(images.len(), labels.len(), "one label per image");
        let logits = self.forward(images, ws, compute);
        let mut stats = StepStats {
            rows: labels.len() as u32,
            ..StepStats::default()
        };
        for (z, &label) in logits.iter().zip(labels) {
            stats.loss_sum += f64::from(loss::cross_entropy(z, label as usize));
            stats.correct += u32::from(loss::argmax(z) == label as usize);
        }
        stats
    }

    /// One training step on a batch of `images.len()` rows (the last batch of an epoch may be
    /// shorter than `BATCH`): forward, mean cross-entropy, backward, optimizer update.
    /// Returns the loss and accuracy of the batch before the update.
    ///
    /// # Panics
    /// If there are more images than `BATCH`, labels and images differ in count, or a label
    /// is not below `OUT`.
    pub fn train_step<const BATCH: usize, P: Parallel>(
        &mut self,
        optimizer: &mut impl Optimizer<IN, HIDDEN, OUT>,
        images: &[[f32; IN]],
        labels: &[u8],
        ws: &mut Workspace<BATCH, IN, HIDDEN, OUT>,
        compute: &mut Compute<P>,
    ) -> StepStats {
        self.train_step_with_keys(optimizer, images, labels, &[], ws, compute)
    }

    /// [`Mlp::train_step`], with a hint for the forward product: it groups the batch's rows
    /// by label, and within a label by `keys` (one per image, or none), so that images with
    /// close keys share panels. Keys that bring together images with the same blank regions
    /// (the host's: the area of the box around an image's ink) let the panels skip more zero
    /// pixels. Only the speed depends on them: the result is the same bits whatever they are.
    ///
    /// # Panics
    /// As [`Mlp::train_step`], and if `keys` is neither empty nor one per image.
    pub fn train_step_with_keys<const BATCH: usize, P: Parallel>(
        &mut self,
        optimizer: &mut impl Optimizer<IN, HIDDEN, OUT>,
        images: &[[f32; IN]],
        labels: &[u8],
        keys: &[u16],
        ws: &mut Workspace<BATCH, IN, HIDDEN, OUT>,
        compute: &mut Compute<P>,
    ) -> StepStats {
        self.step(optimizer, images, labels, keys, None, ws, compute)
    }

    /// [`Mlp::train_step_with_keys`] with the hidden weights in `panels`: the forward product
    /// reads them there in place and the optimizer updates them there, the same bits without
    /// packing W1 each step. `self.hidden.weights` fall behind: [`HiddenPanels::copy_to`]
    /// brings them up to date (before saving or evaluating the model); to change the weights
    /// between steps, change the model's and take them again with [`HiddenPanels::copy_from`].
    ///
    /// # Panics
    /// As [`Mlp::train_step`], and if `panels` were not filled from this model for this
    /// kernel by [`HiddenPanels::copy_from`].
    #[allow(clippy::too_many_arguments)]
    pub fn train_step_with_panels<const BATCH: usize, P: Parallel>(
        &mut self,
        optimizer: &mut impl Optimizer<IN, HIDDEN, OUT>,
        images: &[[f32; IN]],
        labels: &[u8],
        keys: &[u16],
        panels: &mut HiddenPanels<IN, HIDDEN>,
        ws: &mut Workspace<BATCH, IN, HIDDEN, OUT>,
        compute: &mut Compute<P>,
    ) -> StepStats {
        assert!(
            panels.belong_to(self, compute.kernel),
            "panels of another model or kernel: fill them with HiddenPanels::copy_from"
        );
        self.step(optimizer, images, labels, keys, Some(panels), ws, compute)
    }

    #[allow(clippy::too_many_arguments)]
    fn step<const BATCH: usize, P: Parallel>(
        &mut self,
        optimizer: &mut impl Optimizer<IN, HIDDEN, OUT>,
        images: &[[f32; IN]],
        labels: &[u8],
        keys: &[u16],
        panels: Option<&mut HiddenPanels<IN, HIDDEN>>,
        ws: &mut Workspace<BATCH, IN, HIDDEN, OUT>,
        compute: &mut Compute<P>,
    ) -> StepStats {
        assert_eq!(images.len(), labels.len(), "one label per image");
        assert!(
            keys.is_empty() || keys.len() == labels.len(),
            "one key per image, or none"
        );
        let rows = images.len();
        // Images of one class share more of their blank background, so panels of them skip
        // more pixels (the result is the same either way).
        let grouped = rows <= MAX_ORDERED_ROWS;
        if grouped {
            order_rows::<OUT>(labels, keys, &mut ws.row_order[..rows]);
        }
        for &label in labels {
            assert!(usize::from(label) < OUT, "label {label} out of range");
        }
        self.hidden_layer(images, grouped, panels.as_deref(), ws, compute);
        let fits = pairs::fits(rows, HIDDEN);
        let count =
            fits && ws.weight_gradient == WeightGradient::Cheaper && pairs::fast_on(compute.kernel);
        let steps = self.output_and_back(images, labels, count, ws, compute);
        let paired = match ws.weight_gradient {
            WeightGradient::Cheaper => count && steps.prefer_pairs(),
            #[cfg(test)]
            WeightGradient::Blocked => false,
            #[cfg(test)]
            WeightGradient::Paired => fits,
        };

        let mut stats = StepStats {
            rows: rows as u32,
            ..StepStats::default()
        };
        // In row order, whatever the split: the same sum for any number of jobs.
        for (&loss, &correct) in ws.row_loss[..rows].iter().zip(&ws.row_correct[..rows]) {
            stats.loss_sum += f64::from(loss);
            stats.correct += u32::from(correct);
        }

        let x = MatRef::row_major(images.as_flattened(), rows, IN);
        let h = MatRef::row_major(ws.hidden[..rows].as_flattened(), rows, HIDDEN);
        let d_logits = MatRef::row_major(ws.logits[..rows].as_flattened(), rows, OUT);
        let d_hidden = &ws.hidden_grad[..rows];
        let Mlp {
            hidden: hidden_grads,
            output: output_grads,
        } = &mut ws.grads;
        let hidden_bias = &mut hidden_grads.bias;
        let (logits, kernel) = (&ws.logits[..rows], compute.kernel);
        // Beside dW1 = Xᵀ·dH, on one job: the output layer's dW2 = Hᵀ·dZ and db2 = column
        // sums of dZ, and db1 = column sums of dH.
        let beside = |scratch: &mut Scratch| {
            let dw2 = output_grads.weights.as_flattened_mut();
            gemm(kernel, h.t(), d_logits, dw2, Epilogue::Store, scratch);
            column_sums(logits, &mut output_grads.bias);
            column_sums(d_hidden, hidden_bias);
        };
        let dw1 = hidden_grads.weights.as_flattened_mut();
        if paired {
            pairs::weight_gradient(
                compute.parallel,
                kernel,
                images.as_flattened(),
                d_hidden.as_flattened(),
                (rows, IN, HIDDEN),
                ws.hidden_grad_pairs.as_flattened_mut(),
                &mut ws.pair_masks,
                dw1,
                compute.scratches,
                beside,
            );
        } else {
            gemm_parallel_beside(
                compute.parallel,
                kernel,
                x.t(),
                MatRef::row_major(d_hidden.as_flattened(), rows, HIDDEN),
                dw1,
                Epilogue::Store,
                compute.scratches,
                beside,
            );
        }

        let (kernel, par, parts) = (compute.kernel, compute.parallel, compute.scratches.len());
        match panels {
            Some(panels) => optimizer.step_with_panels(self, &ws.grads, kernel, par, parts, panels),
            None => optimizer.step_with(self, &ws.grads, kernel, par, parts),
        }
        stats
    }
}

/// Fewest rows a job of [`Mlp::output_and_back`] gets.
const HEAD_ROWS_MIN: usize = 32;
/// Most jobs [`Mlp::output_and_back`] splits a batch into.
const MAX_HEAD_PARTS: usize = 8;

/// One job's rows in [`Mlp::output_and_back`].
struct HeadRows<'a, const IN: usize, const HIDDEN: usize, const OUT: usize> {
    hidden: &'a [[f32; HIDDEN]],
    logits: &'a mut [[f32; OUT]],
    hidden_grad: &'a mut [[f32; HIDDEN]],
    loss: &'a mut [f32],
    correct: &'a mut [bool],
    labels: &'a [u8],
    images: &'a [[f32; IN]],
    steps: GradientSteps,
    scratch: &'a mut Scratch,
}

/// Writes the row numbers of `labels` into `order`, sorted by label (labels of `OUT` or more
/// last), then by `keys` when there are any, then by row.
fn order_rows<const OUT: usize>(labels: &[u8], keys: &[u16], order: &mut [u16]) {
    let mut next = 0;
    for class in 0..=OUT {
        let start = next;
        for (row, &label) in labels.iter().enumerate() {
            if usize::from(label).min(OUT) == class {
                order[next] = row as u16;
                next += 1;
            }
        }
        if !keys.is_empty() {
            // Stable: equal keys keep their rows in order. A class holds a dozen rows of a
            // batch of 128, so insertion sort is enough.
            let class_rows = &mut order[start..next];
            for i in 1..class_rows.len() {
                let mut j = i;
                while j > 0
                    && keys[usize::from(class_rows[j - 1])] > keys[usize::from(class_rows[j])]
                {
                    class_rows.swap(j - 1, j);
                    j -= 1;
                }
            }
        }
    }
}

fn column_sums<const N: usize>(rows: &[[f32; N]], sums: &mut [f32; N]) {
    sums.fill(0.0);
    for row in rows {
        for (s, &v) in sums.iter_mut().zip(row) {
            *s += v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::Serial;
    use crate::optim::{RmsProp, Sgd};
    use crate::{zeroed_box, zeroed_slice};
    use rand_core::{Rng, SeedableRng};
    use rand_xorshift::XorShiftRng;
    use std::boxed::Box;
    use std::vec::Vec;

    type Small = Mlp<8, 16, 4>;

    #[test]
    fn rows_are_ordered_by_label_then_key_stably() {
        let labels = [2, 0, 3, 0, 2, 9, 1, 2];
        let mut order = [0u16; 8];
        order_rows::<4>(&labels, &[], &mut order);
        assert_eq!(order, [1, 3, 6, 0, 4, 7, 2, 5]);
        order_rows::<4>(&labels, &[5, 9, 0, 1, 5, 0, 0, 2], &mut order);
        assert_eq!(order, [3, 1, 6, 7, 0, 4, 2, 5]);
    }

    fn small_model(seed: u64) -> Small {
        let mut m = Small::zeroed();
        m.init_glorot(&mut XorShiftRng::seed_from_u64(seed));
        // Non-zero biases so their gradients are exercised away from zero too.
        let mut rng = XorShiftRng::seed_from_u64(seed + 100);
        for b in m.hidden.bias.iter_mut().chain(m.output.bias.iter_mut()) {
            *b = (rng.next_u32() as f32 / u32::MAX as f32 - 0.5) * 0.2;
        }
        m
    }

    fn batch(seed: u64, rows: usize) -> (Vec<[f32; 8]>, Vec<u8>) {
        let mut rng = XorShiftRng::seed_from_u64(seed);
        let images = (0..rows)
            .map(|_| core::array::from_fn(|_| rng.next_u32() as f32 / u32::MAX as f32))
            .collect();
        let labels = (0..rows).map(|_| (rng.next_u32() % 4) as u8).collect();
        (images, labels)
    }

    /// Batch-mean loss computed in f64 from scratch (independent of the f32 code path).
    fn loss_f64(m: &Small, images: &[[f32; 8]], labels: &[u8]) -> f64 {
        let mut total = 0.0;
        for (x, &y) in images.iter().zip(labels) {
            let mut h = [0.0f64; 16];
            for (o, h) in h.iter_mut().enumerate() {
                let dot: f64 = x
                    .iter()
                    .zip(&m.hidden.weights)
                    .map(|(&x, w)| x as f64 * w[o] as f64)
                    .sum();
                *h = (dot + m.hidden.bias[o] as f64).max(0.0);
            }
            let mut z = [0.0f64; 4];
            for (o, z) in z.iter_mut().enumerate() {
                let dot: f64 = h
                    .iter()
                    .zip(&m.output.weights)
                    .map(|(&h, w)| h * w[o] as f64)
                    .sum();
                *z = dot + m.output.bias[o] as f64;
            }
            let max = z.iter().cloned().fold(f64::MIN, f64::max);
            let lse = z.iter().map(|v| (v - max).exp()).sum::<f64>().ln() + max;
            total += lse - z[y as usize];
        }
        total / images.len() as f64
    }

    #[test]
    fn gradients_match_central_differences() {
        let model = small_model(11);
        let (images, labels) = batch(12, 6);
        let mut ws: Workspace<8, 8, 16, 4> = Workspace::zeroed();
        let mut scratch = zeroed_slice::<Scratch>(1);
        let mut compute = Compute::new(Kernel::PORTABLE, &Serial, &mut scratch);
        // A zero learning rate leaves the model as it is and fills ws.grads.
        let mut copy = model.clone();
        copy.train_step(
            &mut Sgd { learning_rate: 0.0 },
            &images,
            &labels,
            &mut ws,
            &mut compute,
        );
        assert_eq!(copy, model);
        let analytic = ws.grads.clone();
        let mut checked = 0;
        for t in 0..4 {
            for idx in 0..model.tensors()[t].len() {
                let h = 1e-3f32;
                let mut plus = model.clone();
                plus.tensors_mut()[t][idx] += h;
                let mut minus = model.clone();
                minus.tensors_mut()[t][idx] -= h;
                // The step actually taken in f32, so the quotient uses the true difference.
                let dh = plus.tensors()[t][idx] as f64 - minus.tensors()[t][idx] as f64;
                let numeric =
                    (loss_f64(&plus, &images, &labels) - loss_f64(&minus, &images, &labels)) / dh;
                let got = analytic.tensors()[t][idx] as f64;
                let err = (got - numeric).abs() / numeric.abs().max(got.abs()).max(1e-4);
                assert!(err < 1e-3, "tensor {t}[{idx}]: {got} vs {numeric} ({err})");
                checked += 1;
            }
        }
        assert_eq!(checked, Small::PARAMETERS);
    }

    /// Four classes, each a bright block in a different quarter of the 8 inputs, plus noise.
    fn separable(seed: u64, rows: usize) -> (Vec<[f32; 8]>, Vec<u8>) {
        let mut rng = XorShiftRng::seed_from_u64(seed);
        let mut images = Vec::new();
        let mut labels = Vec::new();
        for _ in 0..rows {
            let label = (rng.next_u32() % 4) as usize;
            let x: [f32; 8] = core::array::from_fn(|i| {
                let noise = rng.next_u32() as f32 / u32::MAX as f32 * 0.3;
                if i / 2 == label { 1.0 - noise } else { noise }
            });
            images.push(x);
            labels.push(label as u8);
        }
        (images, labels)
    }

    fn train_small(seed: u64, kernel: Kernel, threads: usize) -> (Small, StepStats) {
        let mut model = Small::zeroed();
        model.init_glorot(&mut XorShiftRng::seed_from_u64(seed));
        let mut opt = RmsProp::new(1e-2);
        let mut ws: Workspace<32, 8, 16, 4> = Workspace::zeroed();
        let mut scratch = zeroed_slice::<Scratch>(threads);
        let mut compute = Compute::new(kernel, &Serial, &mut scratch);
        let (images, labels) = separable(5, 200);
        let mut last = StepStats::default();
        for _epoch in 0..20 {
            last = StepStats::default();
            for (x, y) in images.chunks(32).zip(labels.chunks(32)) {
                last.merge(model.train_step(&mut opt, x, y, &mut ws, &mut compute));
            }
        }
        (model, last)
    }

    #[test]
    fn learns_a_separable_task() {
        let mut first = StepStats::default();
        {
            let mut model = Small::zeroed();
            model.init_glorot(&mut XorShiftRng::seed_from_u64(1));
            let mut ws: Workspace<32, 8, 16, 4> = Workspace::zeroed();
            let mut scratch = zeroed_slice::<Scratch>(1);
            let mut compute = Compute::new(Kernel::PORTABLE, &Serial, &mut scratch);
            let (images, labels) = separable(5, 200);
            for (x, y) in images.chunks(32).zip(labels.chunks(32)) {
                first.merge(model.evaluate(x, y, &mut ws, &mut compute));
            }
        }
        let (_, last) = train_small(1, Kernel::PORTABLE, 1);
        assert!(
            last.mean_loss() < 0.1 * first.mean_loss(),
            "{first:?} -> {last:?}"
        );
        assert_eq!(last.accuracy(), 1.0);
    }

    #[test]
    fn same_seed_same_bits_different_seed_different_weights() {
        let (a, _) = train_small(7, Kernel::PORTABLE, 1);
        let (b, _) = train_small(7, Kernel::PORTABLE, 3);
        let bits = |m: &Small| {
            m.tensors()
                .iter()
                .flat_map(|t| t.iter().map(|v| v.to_bits()))
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(&a), bits(&b));
        let (c, _) = train_small(8, Kernel::PORTABLE, 1);
        assert_ne!(bits(&a), bits(&c));
    }

    /// An MNIST-sized model, its optimizer, workspace and two scratches, all on the heap.
    fn mnist_sized() -> (
        Box<crate::MnistMlp>,
        Box<RmsProp<784, 512, 10>>,
        Box<crate::MnistWorkspace>,
        Box<[Scratch]>,
    ) {
        let mut model = zeroed_box::<crate::MnistMlp>();
        model.init_glorot(&mut XorShiftRng::seed_from_u64(1));
        let mut opt = zeroed_box::<RmsProp<784, 512, 10>>();
        opt.reset(1e-3);
        (model, opt, zeroed_box(), zeroed_slice(2))
    }

    #[test]
    fn mnist_sized_step_runs_without_stack_arrays() {
        let (mut model, mut opt, mut ws, mut scratch) = mnist_sized();
        let mut compute = Compute::new(Kernel::PORTABLE, &Serial, &mut scratch);
        let mut rng = XorShiftRng::seed_from_u64(2);
        let images: Vec<[f32; 784]> = (0..96)
            .map(|_| core::array::from_fn(|_| (rng.next_u32() % 64) as f32 / 255.0))
            .collect();
        let labels: Vec<u8> = (0..96).map(|i| (i % 10) as u8).collect();
        let first = model.train_step(&mut *opt, &images, &labels, &mut ws, &mut compute);
        assert_eq!(first.rows, 96);
        // Ten classes at initialisation: loss near ln(10).
        assert!((first.mean_loss() - 10f64.ln()).abs() < 0.5, "{first:?}");
        let second = model.train_step(&mut *opt, &images, &labels, &mut ws, &mut compute);
        assert!(
            second.mean_loss() < first.mean_loss(),
            "{first:?} -> {second:?}"
        );
        assert!(model.is_finite());
    }

    /// 32 images of which every `blank`-th pixel is zero (a blank column), the others random
    /// bytes / 255: the products then skip steps.
    fn blank_column_images<const IN: usize>(seed: u64, blank: usize) -> Vec<[f32; IN]> {
        let mut rng = XorShiftRng::seed_from_u64(seed);
        (0..32)
            .map(|_| {
                core::array::from_fn(|p| match p % blank {
                    0 => 0.0,
                    _ => (rng.next_u32() % 256) as f32 / 255.0,
                })
            })
            .collect()
    }

    /// Each tensor's bits.
    fn tensor_bits<const IN: usize, const HIDDEN: usize>(m: &Mlp<IN, HIDDEN, 10>) -> [Vec<u32>; 4] {
        m.tensors().map(|t| t.iter().map(|v| v.to_bits()).collect())
    }

    /// Three steps with and without panels, for an optimizer that updates them in place
    /// (RMSprop) and one that copies them over (SGD): the same scores, and the same model once
    /// the panels are copied back.
    fn panels_give_the_same_bits<const IN: usize, const HIDDEN: usize>() {
        let images = blank_column_images::<IN>(4, 3);
        let labels: Vec<u8> = (0..32).map(|i| (i % 10) as u8).collect();
        for kernel in crate::every_kernel() {
            for jobs in [1, 2] {
                for sgd in [false, true] {
                    let run = |with_panels: bool| {
                        let mut model = zeroed_box::<Mlp<IN, HIDDEN, 10>>();
                        model.init_glorot(&mut XorShiftRng::seed_from_u64(5));
                        let mut rms = zeroed_box::<RmsProp<IN, HIDDEN, 10>>();
                        rms.reset(1e-3);
                        let mut ws = zeroed_box::<Workspace<32, IN, HIDDEN, 10>>();
                        let mut panels = zeroed_box::<HiddenPanels<IN, HIDDEN>>();
                        let mut scratch = zeroed_slice::<Scratch>(jobs);
                        let mut compute = Compute::new(kernel, &Serial, &mut scratch);
                        panels.copy_from(&model, kernel);
                        let (m, p, w, c) = (&mut *model, &mut *panels, &mut *ws, &mut compute);
                        let scores = match sgd {
                            false => {
                                three_steps(&mut *rms, m, with_panels, p, &images, &labels, w, c)
                            }
                            true => {
                                let mut plain = Sgd { learning_rate: 0.1 };
                                three_steps(&mut plain, m, with_panels, p, &images, &labels, w, c)
                            }
                        };
                        if with_panels {
                            panels.copy_to(&mut model);
                            assert!(panels.hold(&model));
                        }
                        (tensor_bits(&model), scores)
                    };
                    assert_eq!(run(false), run(true), "{kernel:?}, {jobs} jobs, sgd {sgd}");
                }
            }
        }
    }

    /// Steps whose weight gradient goes through pairs give the blocked product's bits, on
    /// every kernel and any number of jobs (the naive kernel: its triple loop's).
    #[test]
    fn paired_weight_gradient_gives_the_same_bits() {
        let images = blank_column_images::<50>(6, 4);
        let labels: Vec<u8> = (0..32).map(|i| (i % 10) as u8).collect();
        for kernel in crate::every_kernel() {
            for jobs in [1, 2, 3] {
                let run = |how: WeightGradient| {
                    let mut model = zeroed_box::<Mlp<50, 96, 10>>();
                    model.init_glorot(&mut XorShiftRng::seed_from_u64(5));
                    let mut rms = zeroed_box::<RmsProp<50, 96, 10>>();
                    rms.reset(1e-3);
                    let mut ws = zeroed_box::<Workspace<32, 50, 96, 10>>();
                    ws.weight_gradient = how;
                    let mut scratch = zeroed_slice::<Scratch>(jobs);
                    let mut compute = Compute::new(kernel, &Serial, &mut scratch);
                    let scores: Vec<StepStats> = (0..3)
                        .map(|_| {
                            model.train_step(&mut *rms, &images, &labels, &mut ws, &mut compute)
                        })
                        .collect();
                    (tensor_bits(&model), scores)
                };
                let blocked = run(WeightGradient::Blocked);
                assert_eq!(
                    blocked,
                    run(WeightGradient::Paired),
                    "{kernel:?}, {jobs} jobs"
                );
            }
        }
    }

    /// Three steps of `optimizer` on `images`, through the panels or not.
    #[allow(clippy::too_many_arguments)]
    fn three_steps<const IN: usize, const HIDDEN: usize>(
        optimizer: &mut impl Optimizer<IN, HIDDEN, 10>,
        model: &mut Mlp<IN, HIDDEN, 10>,
        with_panels: bool,
        panels: &mut HiddenPanels<IN, HIDDEN>,
        images: &[[f32; IN]],
        labels: &[u8],
        ws: &mut Workspace<32, IN, HIDDEN, 10>,
        compute: &mut Compute<Serial>,
    ) -> Vec<StepStats> {
        (0..3)
            .map(|_| match with_panels {
                true => model.train_step_with_panels(
                    optimizer,
                    images,
                    labels,
                    &[],
                    panels,
                    ws,
                    compute,
                ),
                false => model.train_step(optimizer, images, labels, ws, compute),
            })
            .collect()
    }

    #[test]
    fn steps_through_panels_give_the_same_bits() {
        // Panels of every kernel's width.
        panels_give_the_same_bits::<50, 96>();
        // 100 hidden units: AVX2's and the portable kernel's panels would need padding, so
        // the copy is one row-major panel, packed like W1 itself.
        panels_give_the_same_bits::<50, 100>();
    }

    #[test]
    fn panels_of_another_model_or_kernel_are_refused() {
        let (mut model, mut opt, mut ws, mut scratch) = mnist_sized();
        let other = mnist_sized().0;
        let mut panels = zeroed_box::<HiddenPanels<784, 512>>();
        let images = std::vec![[0.5f32; 784]; 4];
        let labels = [1u8, 2, 3, 4];
        for kernel in [Kernel::PORTABLE, Kernel::NAIVE] {
            // Another model for the right kernel, then this model for another kernel.
            match kernel {
                Kernel::PORTABLE => panels.copy_from(&*other, kernel),
                _ => panels.copy_from(&*model, kernel),
            }
            let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut compute = Compute::new(Kernel::PORTABLE, &Serial, &mut scratch);
                model.train_step_with_panels(
                    &mut *opt,
                    &images,
                    &labels,
                    &[],
                    &mut panels,
                    &mut ws,
                    &mut compute,
                )
            }));
            assert!(refused.is_err(), "panels from {kernel:?} accepted");
        }
    }

    #[test]
    fn keys_change_the_grouping_but_not_a_bit() {
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
        let mut kernels = std::vec![Kernel::PORTABLE];
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: detected just above.
            kernels.push(unsafe { Kernel::avx2_unchecked() });
        }
        // Ink in a box of its own per image, so that each grouping skips different pixels.
        let mut rng = XorShiftRng::seed_from_u64(3);
        let images: Vec<[f32; 784]> = (0..128)
            .map(|_| {
                let (top, left) = (rng.next_u32() % 20, rng.next_u32() % 20);
                let side = 4 + rng.next_u32() % 8;
                core::array::from_fn(|p| {
                    let (y, x) = ((p / 28) as u32, (p % 28) as u32);
                    let inside = (top..top + side).contains(&y) && (left..left + side).contains(&x);
                    if inside {
                        (1 + rng.next_u32() % 255) as f32 / 255.0
                    } else {
                        0.0
                    }
                })
            })
            .collect();
        let labels: Vec<u8> = (0..128).map(|_| (rng.next_u32() % 10) as u8).collect();
        let keys: Vec<u16> = (0..128).map(|_| rng.next_u32() as u16).collect();
        for kernel in kernels {
            let trained = |keys: &[u16]| {
                let (mut model, mut opt, mut ws, mut scratch) = mnist_sized();
                let mut compute = Compute::new(kernel, &Serial, &mut scratch);
                for _ in 0..2 {
                    model.train_step_with_keys(
                        &mut *opt,
                        &images,
                        &labels,
                        keys,
                        &mut ws,
                        &mut compute,
                    );
                }
                model
                    .tensors()
                    .map(|t| t.iter().map(|v| v.to_bits()).collect::<Vec<_>>())
            };
            assert!(trained(&keys) == trained(&[]), "{kernel:?}");
        }
    }
}
