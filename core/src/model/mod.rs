//! Training and inference of a network of Dense layers on a batch: forward, loss, backward and
//! the optimizer step, on storage the caller provides ([`Layers`], [`WorkspaceMut`]) with sizes
//! known at run time. [`Mlp`] and [`Workspace`] are fixed-size owners of the same storage.
//!
//! A network is `inputs -> hidden ReLU layers -> logits`; softmax is fused into the loss. A
//! step runs:
//! 1. the hidden layers, each `H_l = max(H_{l-1}·W_l + b_l, 0)` (`H_0` the inputs, whose rows
//!    are grouped by label so that panels of them share more zeros);
//! 2. the head, split by rows between the jobs: logits `Z = H·W + b`, each row's loss, its
//!    gradient `dZ = (softmax(Z) - onehot) / rows`, and `dH = dZ·Wᵀ` where `H > 0`;
//! 3. from the last hidden layer back to the first: `dW_l = H_{l-1}ᵀ·dH_l`, `db_l` the column
//!    sums of `dH_l` and, above the first, `dH_{l-1} = dH_l·W_lᵀ` where `H_{l-1} > 0`; the
//!    head's `dW = Hᵀ·dZ` and `db` run beside the last hidden layer's product;
//! 4. the optimizer's update of every tensor.
//!
//! Each product skips the zero steps of its A (pixels, ReLU zeros) and sums each element over
//! K in one fixed order on one thread, so the result is the same bits for any number of jobs.

use crate::compute::Compute;
use crate::gemm::pairs::{self, GradientSteps};
use crate::gemm::{
    Epilogue, Kernel, MAX_ORDERED_ROWS, MatRef, Parallel, Scratch, gemm, gemm_parallel_beside,
};
use crate::layers::{Layers, Mlp};
use crate::loss;
use crate::optim::{FirstLayerStep, Optimizer, Update};
use crate::panels::{HiddenPanels, Panels};
use crate::shape::{MAX_HIDDEN_LAYERS, Shape};
use crate::simd::RowsStep;

/// A batch of rows to learn from.
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a> {
    /// The rows' inputs, one after another.
    pub inputs: &'a [f32],
    /// One label per row, below the number of classes.
    pub labels: &'a [u8],
    /// One grouping key per row, or none: the forward product groups the rows by label, and
    /// within a label by key, so that rows with close keys share panels. Keys that bring
    /// together rows with the same blank regions (the host's: the area of the box around an
    /// image's ink) let the panels skip more zeros. Only the speed depends on them.
    pub keys: &'a [u16],
}

impl<'a> Batch<'a> {
    /// Rows and labels, without keys.
    pub fn new(inputs: &'a [f32], labels: &'a [u8]) -> Self {
        Self {
            inputs,
            labels,
            keys: &[],
        }
    }
}

/// Floats, pair masks and rows a [`WorkspaceMut`] needs for a shape and a batch size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkspaceLen {
    /// `f32` values.
    pub floats: usize,
    /// `u128` masks.
    pub masks: usize,
    /// Rows (the length of the `u16` and `bool` buffers).
    pub rows: usize,
}

impl WorkspaceLen {
    /// What a workspace for batches of up to `batch` rows of `shape` needs.
    pub fn of(shape: Shape, batch: usize) -> Self {
        let widest = shape.widest_hidden();
        Self {
            floats: batch * (2 * shape.hidden_units() + shape.classes() + 1 + widest)
                + shape.parameters(),
            masks: widest,
            rows: batch,
        }
    }
}

/// Activations and gradients for batches of up to `batch` rows, on storage the caller owns, so
/// that a training step allocates nothing.
pub struct WorkspaceMut<'a> {
    shape: Shape,
    batch: usize,
    /// Each hidden layer's ReLU activations, `batch x width`.
    acts: heapless::Vec<&'a mut [f32], MAX_HIDDEN_LAYERS>,
    /// The loss's gradient at each hidden layer's activations.
    act_grads: heapless::Vec<&'a mut [f32], MAX_HIDDEN_LAYERS>,
    /// Logits (during training, overwritten by their gradient), `batch x classes`.
    logits: &'a mut [f32],
    /// Gradients of the last training step, shaped like the network.
    grads: Layers<&'a mut [f32]>,
    /// The batch's rows sorted by label and key: the order the first product groups them in.
    row_order: &'a mut [u16],
    /// Each row's loss in the last training step.
    row_loss: &'a mut [f32],
    /// Whether each row was classified correctly in the last training step.
    row_correct: &'a mut [bool],
    /// An activation gradient in panels of two columns, and a mask of the rows where each
    /// pair is nonzero, for the paired weight gradient.
    pairs: &'a mut [f32],
    pair_masks: &'a mut [u128],
    weight_gradient: WeightGradient,
}

impl<'a> WorkspaceMut<'a> {
    /// A workspace for batches of up to `batch` rows of `shape` on buffers of at least the
    /// lengths [`WorkspaceLen::of`] gives; `None` when one is shorter.
    pub fn new(
        shape: Shape,
        batch: usize,
        floats: &'a mut [f32],
        masks: &'a mut [u128],
        order: &'a mut [u16],
        correct: &'a mut [bool],
    ) -> Option<Self> {
        let len = WorkspaceLen::of(shape, batch);
        if floats.len() < len.floats
            || masks.len() < len.masks
            || order.len() < batch
            || correct.len() < batch
        {
            return None;
        }
        let mut rest = floats;
        let mut take = |n: usize| {
            let (head, tail) = core::mem::take(&mut rest).split_at_mut(n);
            rest = tail;
            head
        };
        let mut acts = heapless::Vec::new();
        let mut act_grads = heapless::Vec::new();
        for &width in shape.hidden() {
            acts.push(take(batch * width)).ok()?;
        }
        for &width in shape.hidden() {
            act_grads.push(take(batch * width)).ok()?;
        }
        let logits = take(batch * shape.classes());
        let row_loss = take(batch);
        let pairs = take(batch * shape.widest_hidden());
        let grads = Layers::split_mut(shape, take(shape.parameters()))?;
        Some(Self {
            shape,
            batch,
            acts,
            act_grads,
            logits,
            grads,
            row_order: &mut order[..batch],
            row_loss,
            row_correct: &mut correct[..batch],
            pairs,
            pair_masks: &mut masks[..len.masks],
            weight_gradient: WeightGradient::Cheaper,
        })
    }

    /// Gradients of the last training step.
    pub fn grads(&self) -> Layers<&[f32]> {
        self.grads.view()
    }

    /// The logits of the last forward pass (`rows x classes`).
    pub fn logits(&self, rows: usize) -> &[f32] {
        &self.logits[..rows * self.shape.classes()]
    }
}

/// Fixed-size storage of a [`WorkspaceMut`] for an [`Mlp`] and batches of up to `BATCH` rows.
pub struct Workspace<const BATCH: usize, const IN: usize, const HIDDEN: usize, const OUT: usize> {
    /// ReLU activations of the hidden layer.
    pub hidden: [[f32; HIDDEN]; BATCH],
    /// Logits of the output layer (during training, overwritten by their gradient).
    pub logits: [[f32; OUT]; BATCH],
    /// Gradient of the loss with respect to the hidden activations.
    pub hidden_grad: [[f32; HIDDEN]; BATCH],
    /// Gradients of the last training step, shaped like the model.
    pub grads: Mlp<IN, HIDDEN, OUT>,
    row_order: [u16; BATCH],
    row_loss: [f32; BATCH],
    row_correct: [bool; BATCH],
    hidden_grad_pairs: [[f32; HIDDEN]; BATCH],
    pair_masks: [u128; HIDDEN],
    weight_gradient: WeightGradient,
}

/// Which product computes a weight gradient `Xᵀ·dH`: the same bits either way.
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

    /// The storage as a [`WorkspaceMut`].
    pub fn view(&mut self) -> WorkspaceMut<'_> {
        let mut acts = heapless::Vec::new();
        let mut act_grads = heapless::Vec::new();
        // One hidden layer: within the capacity.
        let _ = acts.push(self.hidden.as_flattened_mut());
        let _ = act_grads.push(self.hidden_grad.as_flattened_mut());
        WorkspaceMut {
            shape: Mlp::<I, H, O>::shape(),
            batch: B,
            acts,
            act_grads,
            logits: self.logits.as_flattened_mut(),
            grads: self.grads.layers_mut(),
            row_order: &mut self.row_order,
            row_loss: &mut self.row_loss,
            row_correct: &mut self.row_correct,
            pairs: self.hidden_grad_pairs.as_flattened_mut(),
            pair_masks: &mut self.pair_masks,
            weight_gradient: self.weight_gradient,
        }
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

/// Rows in `inputs` for a network of `shape`, checked against the workspace.
fn rows_of(shape: Shape, inputs: &[f32], ws: &WorkspaceMut) -> usize {
    assert_eq!(ws.shape, shape, "workspace of another shape");
    assert!(
        inputs.len().is_multiple_of(shape.inputs()),
        "inputs are not whole rows of {}",
        shape.inputs()
    );
    let rows = inputs.len() / shape.inputs();
    assert!(
        rows <= ws.batch,
        "batch of {rows} rows exceeds workspace of {}",
        ws.batch
    );
    rows
}

/// The logits of `inputs` (whole rows), computed into `ws`, which also keeps the hidden
/// activations.
///
/// # Panics
/// If `inputs` is not whole rows, has more rows than the workspace, or the workspace is of
/// another shape.
pub fn forward<'w, P: Parallel>(
    net: &Layers<&[f32]>,
    inputs: &[f32],
    ws: &'w mut WorkspaceMut,
    compute: &mut Compute<P>,
) -> &'w [f32] {
    let shape = net.shape();
    let rows = rows_of(shape, inputs, ws);
    let x = MatRef::row_major(inputs, rows, shape.inputs());
    let w0 = MatRef::row_major(net.weights(0), shape.inputs(), shape.hidden()[0]);
    hidden_layers(net, x, w0, &mut ws.acts, compute);
    let last = shape.layers() - 1;
    let (width, classes) = shape.layer(last);
    let h = &ws.acts[last - 1][..rows * width];
    let logits = &mut ws.logits[..rows * classes];
    compute.gemm(
        MatRef::row_major(h, rows, width),
        MatRef::row_major(net.weights(last), width, classes),
        logits,
        Epilogue::Bias(net.bias(last)),
    );
    logits
}

/// Loss and accuracy of a batch, without training.
///
/// # Panics
/// As [`forward`], and if there is not one label per row or a label is not below the classes.
pub fn evaluate<P: Parallel>(
    net: &Layers<&[f32]>,
    batch: Batch,
    ws: &mut WorkspaceMut,
    compute: &mut Compute<P>,
) -> StepStats {
    let classes = net.shape().classes();
    let logits = forward(net, batch.inputs, ws, compute);
    assert_eq!(
        logits.len(),
        batch.labels.len() * classes,
        "one label per row"
    );
    let mut stats = StepStats {
        rows: batch.labels.len() as u32,
        ..StepStats::default()
    };
    for (z, &label) in logits.chunks_exact(classes).zip(batch.labels) {
        stats.loss_sum += f64::from(loss::cross_entropy(z, usize::from(label)));
        stats.correct += u32::from(loss::argmax(z) == usize::from(label));
    }
    stats
}

/// The hidden layers' activations of `x` into `acts`, the first layer's weights read through
/// `w0`.
fn hidden_layers<P: Parallel>(
    net: &Layers<&[f32]>,
    x: MatRef,
    w0: MatRef,
    acts: &mut [&mut [f32]],
    compute: &mut Compute<P>,
) {
    let shape = net.shape();
    let rows = x.rows();
    for l in 0..shape.hidden().len() {
        let (fan_in, width) = shape.layer(l);
        let (below, here) = acts.split_at_mut(l);
        let (a, b) = match l {
            0 => (x, w0),
            _ => (
                MatRef::row_major(&below[l - 1][..rows * fan_in], rows, fan_in),
                MatRef::row_major(net.weights(l), fan_in, width),
            ),
        };
        compute.gemm(
            a,
            b,
            &mut here[0][..rows * width],
            Epilogue::BiasRelu(net.bias(l)),
        );
    }
}

/// What training steps change, on storage the caller owns: a network's parameters, their
/// optimizer, the first layer's weights in panels (or not) and the workspace.
pub struct Learner<'a, O> {
    /// The network's parameters.
    pub params: Layers<&'a mut [f32]>,
    /// What updates them.
    pub optimizer: O,
    /// The first layer's weights in the kernel's panels, filled by [`Panels::copy_from`] from
    /// `params`' first weights for the kernel the steps run: the steps read and update them
    /// there, the same bits without packing them every step; `params`' own copy then falls
    /// behind until [`Panels::copy_to`].
    pub panels: Option<Panels<'a>>,
    /// Activations and gradients, for batches of the network's shape.
    pub workspace: WorkspaceMut<'a>,
}

impl<O: Optimizer> Learner<'_, O> {
    /// One training step: forward, mean cross-entropy, backward, optimizer update. Returns the
    /// loss and accuracy of the batch before the update.
    ///
    /// # Panics
    /// As [`evaluate`]; if `keys` is neither empty nor one per row; if the panels belong to
    /// other weights or another kernel.
    pub fn train_step<P: Parallel>(&mut self, batch: Batch, compute: &mut Compute<P>) -> StepStats {
        let Learner {
            params,
            optimizer,
            panels,
            workspace,
        } = self;
        let first_step = optimizer.first_layer_step(params.shape());
        let (stats, first_weights_done) = forward_and_back(
            params,
            panels.as_mut(),
            batch,
            workspace,
            compute,
            first_step,
        );
        let step = Update {
            params,
            grads: workspace.grads.view(),
            panels: panels.as_mut(),
            first_weights_done,
        };
        optimizer.update(step, compute);
        stats
    }
}

/// Forward, loss and backward of [`Learner::train_step`]: the batch's figures, and the gradients
/// in `ws`. With the first layer's weights in panels and the paired weight gradient, also
/// `first_step` on them, block by block of rows as their gradient is formed; the second value
/// says whether it ran.
fn forward_and_back<P: Parallel>(
    net: &Layers<&mut [f32]>,
    mut panels: Option<&mut Panels>,
    batch: Batch,
    ws: &mut WorkspaceMut,
    compute: &mut Compute<P>,
    mut first_step: Option<FirstLayerStep>,
) -> (StepStats, bool) {
    let shape = net.shape();
    let rows = rows_of(shape, batch.inputs, ws);
    let Batch {
        inputs,
        labels,
        keys,
    } = batch;
    assert_eq!(rows, labels.len(), "one label per row");
    assert!(
        keys.is_empty() || keys.len() == rows,
        "one key per row, or none"
    );
    for &label in labels {
        assert!(
            usize::from(label) < shape.classes(),
            "label {label} out of range"
        );
    }
    let kernel = compute.kernel();
    let (inputs_width, first_width) = shape.layer(0);
    let w0 = match &panels {
        Some(p) => {
            assert!(
                p.belong_to(net.weights(0), kernel),
                "panels of other weights or another kernel: fill them with Panels::copy_from"
            );
            p.view()
        }
        None => MatRef::row_major(net.weights(0), inputs_width, first_width),
    };
    // Rows of one class share more of their blank background, so panels of them skip more
    // pixels (the result is the same either way).
    let mut x = MatRef::row_major(inputs, rows, inputs_width);
    if rows <= MAX_ORDERED_ROWS {
        order_rows(labels, keys, shape.classes(), &mut ws.row_order[..rows]);
        x = x.row_order(&ws.row_order[..rows]);
    }
    hidden_layers(&net.view(), x, w0, &mut ws.acts, compute);

    let top = shape.hidden().len() - 1;
    let head_steps = output_and_back(&net.view(), inputs, labels, ws, compute);
    let mut stats = StepStats {
        rows: rows as u32,
        ..StepStats::default()
    };
    // In row order, whatever the split: the same sum for any number of jobs.
    for (&loss, &correct) in ws.row_loss[..rows].iter().zip(&ws.row_correct[..rows]) {
        stats.loss_sum += f64::from(loss);
        stats.correct += u32::from(correct);
    }

    let WorkspaceMut {
        acts,
        act_grads,
        logits,
        grads,
        pairs: pair_panels,
        pair_masks,
        weight_gradient,
        ..
    } = ws;
    let classes = shape.classes();
    let d_logits = &logits[..rows * classes];
    let mut first_weights_done = false;
    for l in (0..=top).rev() {
        let (fan_in, width) = shape.layer(l);
        let (below, here) = act_grads.split_at_mut(l);
        let d = &here[0][..rows * width];
        let input = match l {
            0 => inputs,
            _ => &acts[l - 1][..rows * fan_in],
        };
        let (dw, rest) = grads.tensors_mut().split_at_mut(2 * l + 1);
        let (db, head) = rest.split_first_mut().expect("a bias after every weight");
        let dw = &mut dw[2 * l][..];
        let h = &acts[l][..rows * width];
        // Beside dW_l = Xᵀ·dH on one job: db_l, and with the top hidden layer the head's
        // dW = Hᵀ·dZ and db.
        let beside = |scratch: &mut Scratch| {
            if l == top {
                let [dw_head, db_head] = head else {
                    unreachable!("the head's two tensors follow the top layer's")
                };
                let z = MatRef::row_major(d_logits, rows, classes);
                let h = MatRef::row_major(h, rows, width);
                gemm(kernel, h.t(), z, dw_head, Epilogue::Store, scratch);
                column_sums(d_logits, classes, db_head);
            }
            column_sums(d, width, db);
        };
        let fits = pairs::fits(rows, width);
        let paired = match *weight_gradient {
            WeightGradient::Cheaper if fits && pairs::fast_on(kernel) => match l == top {
                true => head_steps.prefer_pairs(),
                false => count_steps(kernel, input, d, fan_in, width).prefer_pairs(),
            },
            WeightGradient::Cheaper => false,
            #[cfg(test)]
            WeightGradient::Blocked => false,
            #[cfg(test)]
            WeightGradient::Paired => fits,
        };
        // Nothing after the first layer's weight gradient reads its weights: its update can
        // run as the rows of the gradient are formed.
        let fused = match (l, paired, panels.as_deref_mut()) {
            (0, true, Some(panels)) => first_step
                .take()
                .map(|step| RowsStep::new(kernel, panels.values(), step.velocity, step.hyper)),
            _ => None,
        };
        first_weights_done |= fused.is_some();
        if paired {
            pairs::weight_gradient(
                compute.parallel(),
                kernel,
                input,
                d,
                (rows, fan_in, width),
                pair_panels,
                pair_masks,
                dw,
                compute.scratches(),
                beside,
                &fused,
            );
        } else {
            gemm_parallel_beside(
                compute.parallel(),
                kernel,
                MatRef::row_major(input, rows, fan_in).t(),
                MatRef::row_major(d, rows, width),
                dw,
                Epilogue::Store,
                compute.scratches(),
                beside,
            );
        }
        if l > 0 {
            // dH_{l-1} = dH_l·W_lᵀ where H_{l-1} > 0.
            compute.gemm(
                MatRef::row_major(d, rows, width),
                MatRef::row_major(net.weights(l), fan_in, width).t(),
                &mut below[l - 1][..rows * fan_in],
                Epilogue::ReluMask(input),
            );
        }
    }
    (stats, first_weights_done)
}

/// Each way's steps for the weight gradient `Xᵀ·D`, counted on a quarter of the rows, which
/// tells which product is cheaper well enough.
fn count_steps(kernel: Kernel, x: &[f32], d: &[f32], fan_in: usize, width: usize) -> GradientSteps {
    let mut steps = GradientSteps::default();
    for (x, d) in x.chunks_exact(fan_in).zip(d.chunks_exact(width)).step_by(4) {
        steps.add_row(kernel, x, d);
    }
    steps
}

/// From the top hidden layer's activations to the gradient that reaches them: the logits,
/// each row's loss (into `ws.row_loss` and `ws.row_correct`), the logits' gradient (over the
/// logits) and `dH = (dZ·Wᵀ)` where `H > 0`. No row needs another, so each job takes a share of
/// the rows through all three, in one call rather than one per product with the loss in
/// between on one thread. Where the paired weight gradient may run, also counts each way's
/// steps for the top layer's weight gradient while its inputs and `dH` are at hand.
fn output_and_back<P: Parallel>(
    net: &Layers<&[f32]>,
    inputs: &[f32],
    labels: &[u8],
    ws: &mut WorkspaceMut,
    compute: &mut Compute<P>,
) -> GradientSteps {
    let shape = net.shape();
    let rows = labels.len();
    let top = shape.hidden().len() - 1;
    let (fan_in, width) = shape.layer(top);
    let classes = shape.classes();
    let kernel = compute.kernel();
    let count = pairs::fits(rows, width)
        && ws.weight_gradient == WeightGradient::Cheaper
        && pairs::fast_on(kernel);
    let parts = compute
        .jobs()
        .min(rows.div_ceil(HEAD_ROWS_MIN))
        .clamp(1, MAX_HEAD_PARTS);
    let chunk = rows.div_ceil(parts).max(1);
    let (below, here) = ws.acts.split_at(top);
    let top_inputs = match top {
        0 => inputs,
        _ => &below[top - 1][..rows * fan_in],
    };
    let par = compute.parallel();
    let mut pieces: heapless::Vec<HeadRows, MAX_HEAD_PARTS> = heapless::Vec::new();
    let shares = here[0][..rows * width]
        .chunks(chunk * width)
        .zip(ws.logits[..rows * classes].chunks_mut(chunk * classes))
        .zip(ws.act_grads[top][..rows * width].chunks_mut(chunk * width))
        .zip(ws.row_loss[..rows].chunks_mut(chunk))
        .zip(ws.row_correct[..rows].chunks_mut(chunk))
        .zip(labels.chunks(chunk).zip(top_inputs.chunks(chunk * fan_in)))
        .zip(compute.scratches().iter_mut());
    for ((((((hidden, logits), hidden_grad), loss), correct), (labels, inputs)), scratch) in shares
    {
        // At most `parts` <= MAX_HEAD_PARTS chunks, so this never fails.
        let _ = pieces.push(HeadRows {
            hidden,
            logits,
            hidden_grad,
            loss,
            correct,
            labels,
            inputs,
            steps: GradientSteps::default(),
            scratch,
        });
    }
    let w = MatRef::row_major(net.weights(top + 1), width, classes);
    let bias = net.bias(top + 1);
    par.run(&mut pieces, &|_, part| {
        let n = part.labels.len();
        gemm(
            kernel,
            MatRef::row_major(part.hidden, n, width),
            w,
            part.logits,
            Epilogue::Bias(bias),
            part.scratch,
        );
        let scored = part.logits.chunks_exact_mut(classes).zip(part.labels);
        for ((z, &label), (loss, correct)) in
            scored.zip(part.loss.iter_mut().zip(&mut *part.correct))
        {
            (*loss, *correct) = loss::loss_and_gradient(z, usize::from(label), rows);
        }
        gemm(
            kernel,
            MatRef::row_major(part.logits, n, classes),
            w.t(),
            part.hidden_grad,
            Epilogue::ReluMask(part.hidden),
            part.scratch,
        );
        if count {
            part.steps = count_steps(kernel, part.inputs, part.hidden_grad, fan_in, width);
        }
    });
    pieces
        .iter()
        .fold(GradientSteps::default(), |sum, part| sum.merge(part.steps))
}

/// Fewest rows a job of [`output_and_back`] gets.
const HEAD_ROWS_MIN: usize = 32;
/// Most jobs [`output_and_back`] splits a batch into.
const MAX_HEAD_PARTS: usize = 8;

/// One job's rows in [`output_and_back`].
struct HeadRows<'a> {
    hidden: &'a [f32],
    logits: &'a mut [f32],
    hidden_grad: &'a mut [f32],
    loss: &'a mut [f32],
    correct: &'a mut [bool],
    labels: &'a [u8],
    inputs: &'a [f32],
    steps: GradientSteps,
    scratch: &'a mut Scratch,
}

/// Writes the row numbers of `labels` into `order`, sorted by label (labels of `classes` or
/// more last), then by `keys` when there are any, then by row.
fn order_rows(labels: &[u8], keys: &[u16], classes: usize, order: &mut [u16]) {
    let mut next = 0;
    for class in 0..=classes {
        let start = next;
        for (row, &label) in labels.iter().enumerate() {
            if usize::from(label).min(classes) == class {
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

/// Sums of the columns of `rows` (`width` wide, row-major) into `sums`, row after row.
fn column_sums(rows: &[f32], width: usize, sums: &mut [f32]) {
    sums.fill(0.0);
    for row in rows.chunks_exact(width) {
        for (s, &v) in sums.iter_mut().zip(row) {
            *s += v;
        }
    }
}

impl<const IN: usize, const HIDDEN: usize, const OUT: usize> Mlp<IN, HIDDEN, OUT> {
    /// The logits of `images` (at most `BATCH` rows), computed into `ws`.
    ///
    /// # Panics
    /// If there are more images than `BATCH`.
    pub fn forward<'w, const BATCH: usize, P: Parallel>(
        &self,
        images: &[[f32; IN]],
        ws: &'w mut Workspace<BATCH, IN, HIDDEN, OUT>,
        compute: &mut Compute<P>,
    ) -> &'w [[f32; OUT]] {
        forward(
            &self.layers(),
            images.as_flattened(),
            &mut ws.view(),
            compute,
        );
        &ws.logits[..images.len()]
    }

    /// Loss and accuracy of a batch, without training.
    pub fn evaluate<const BATCH: usize, P: Parallel>(
        &self,
        images: &[[f32; IN]],
        labels: &[u8],
        ws: &mut Workspace<BATCH, IN, HIDDEN, OUT>,
        compute: &mut Compute<P>,
    ) -> StepStats {
        let batch = Batch::new(images.as_flattened(), labels);
        evaluate(&self.layers(), batch, &mut ws.view(), compute)
    }

    /// A [`Learner`] of this model for batches of up to `BATCH` rows, the hidden weights in
    /// `panels` when given (filled by [`HiddenPanels::copy_from`] from this model).
    pub fn learner<'a, const BATCH: usize, O: Optimizer>(
        &'a mut self,
        optimizer: O,
        panels: Option<&'a mut HiddenPanels<IN, HIDDEN>>,
        workspace: &'a mut Workspace<BATCH, IN, HIDDEN, OUT>,
    ) -> Learner<'a, O> {
        Learner {
            params: self.layers_mut(),
            optimizer,
            panels: panels.map(HiddenPanels::panels),
            workspace: workspace.view(),
        }
    }
}

#[cfg(test)]
mod tests;
