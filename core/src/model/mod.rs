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
use crate::kernels::pairs::{self, GradientSteps};
use crate::kernels::{
    Epilogue, Kernel, MAX_ORDERED_ROWS, MatRef, Parallel, Scratch, gemm, gemm_parallel_beside,
};
use crate::layers::{Layers, Mlp};
use crate::loss;
use crate::optim::Optimizer;
use crate::panels::{HiddenPanels, Panels};
use crate::shape::{MAX_HIDDEN_LAYERS, Shape};

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

/// One training step: forward, mean cross-entropy, backward, optimizer update. Returns the
/// loss and accuracy of the batch before the update. With `panels` (filled by
/// [`Panels::copy_from`] from `net`'s first weights for this kernel), the first layer's weights
/// are read and updated there, the same bits without packing them every step; `net`'s own copy
/// then falls behind until [`Panels::copy_to`].
///
/// # Panics
/// As [`evaluate`]; if `keys` is neither empty nor one per row; if `panels` belong to other
/// weights or another kernel.
pub fn train_step<P: Parallel>(
    net: &mut Layers<&mut [f32]>,
    optimizer: &mut impl Optimizer,
    batch: Batch,
    panels: Option<&mut Panels>,
    ws: &mut WorkspaceMut,
    compute: &mut Compute<P>,
) -> StepStats {
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
    let w0 = match panels.as_deref() {
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
    optimizer.update(net, &grads.view(), panels, compute);
    stats
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

    /// [`train_step`] on a batch of up to `BATCH` rows, the hidden weights in `panels` when
    /// given (filled by [`HiddenPanels::copy_from`] from this model).
    pub fn train_step<const BATCH: usize, P: Parallel>(
        &mut self,
        optimizer: &mut impl Optimizer,
        batch: Batch,
        panels: Option<&mut HiddenPanels<IN, HIDDEN>>,
        ws: &mut Workspace<BATCH, IN, HIDDEN, OUT>,
        compute: &mut Compute<P>,
    ) -> StepStats {
        let mut panels = panels.map(|p| p.panels());
        train_step(
            &mut self.layers_mut(),
            optimizer,
            batch,
            panels.as_mut(),
            &mut ws.view(),
            compute,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PanelState;
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
        order_rows(&labels, &[], 4, &mut order);
        assert_eq!(order, [1, 3, 6, 0, 4, 7, 2, 5]);
        order_rows(&labels, &[5, 9, 0, 1, 5, 0, 0, 2], 4, &mut order);
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
            Batch::new(images.as_flattened(), &labels),
            None,
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
        let mut opt = RmsProp::<8, 16, 4>::new(1e-2);
        let mut ws: Workspace<32, 8, 16, 4> = Workspace::zeroed();
        let mut scratch = zeroed_slice::<Scratch>(threads);
        let mut compute = Compute::new(kernel, &Serial, &mut scratch);
        let (images, labels) = separable(5, 200);
        let mut last = StepStats::default();
        for _epoch in 0..20 {
            last = StepStats::default();
            for (x, y) in images.chunks(32).zip(labels.chunks(32)) {
                last.merge(model.train_step(
                    &mut opt,
                    Batch::new(x.as_flattened(), y),
                    None,
                    &mut ws,
                    &mut compute,
                ));
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
        let first = model.train_step(
            &mut *opt,
            Batch::new(images.as_flattened(), &labels),
            None,
            &mut ws,
            &mut compute,
        );
        assert_eq!(first.rows, 96);
        // Ten classes at initialisation: loss near ln(10).
        assert!((first.mean_loss() - 10f64.ln()).abs() < 0.5, "{first:?}");
        let second = model.train_step(
            &mut *opt,
            Batch::new(images.as_flattened(), &labels),
            None,
            &mut ws,
            &mut compute,
        );
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
                            assert!(panels.panels().hold(model.hidden.weights.as_flattened()));
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
                            model.train_step(
                                &mut *rms,
                                Batch::new(images.as_flattened(), &labels),
                                None,
                                &mut ws,
                                &mut compute,
                            )
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
        optimizer: &mut impl Optimizer,
        model: &mut Mlp<IN, HIDDEN, 10>,
        with_panels: bool,
        panels: &mut HiddenPanels<IN, HIDDEN>,
        images: &[[f32; IN]],
        labels: &[u8],
        ws: &mut Workspace<32, IN, HIDDEN, 10>,
        compute: &mut Compute<Serial>,
    ) -> Vec<StepStats> {
        (0..3)
            .map(|_| {
                let batch = Batch::new(images.as_flattened(), labels);
                let panels = with_panels.then_some(&mut *panels);
                model.train_step(optimizer, batch, panels, ws, compute)
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
                let batch = Batch::new(images.as_flattened(), &labels);
                model.train_step(&mut *opt, batch, Some(&mut panels), &mut ws, &mut compute)
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
                    let batch = Batch {
                        keys,
                        ..Batch::new(images.as_flattened(), &labels)
                    };
                    model.train_step(&mut *opt, batch, None, &mut ws, &mut compute);
                }
                model
                    .tensors()
                    .map(|t| t.iter().map(|v| v.to_bits()).collect::<Vec<_>>())
            };
            assert!(trained(&keys) == trained(&[]), "{kernel:?}");
        }
    }

    /// Owned storage of a workspace of run-time size.
    struct Owned {
        floats: Vec<f32>,
        masks: Vec<u128>,
        order: Vec<u16>,
        correct: Vec<bool>,
    }

    impl Owned {
        fn new(shape: Shape, batch: usize) -> Self {
            let len = WorkspaceLen::of(shape, batch);
            Self {
                floats: std::vec![0.0; len.floats],
                masks: std::vec![0; len.masks],
                order: std::vec![0; len.rows],
                correct: std::vec![false; len.rows],
            }
        }

        fn view(&mut self, shape: Shape, batch: usize) -> WorkspaceMut<'_> {
            let (f, m, o, c) = (
                &mut self.floats,
                &mut self.masks,
                &mut self.order,
                &mut self.correct,
            );
            WorkspaceMut::new(shape, batch, f, m, o, c).unwrap()
        }
    }

    fn deep_shape() -> Shape {
        Shape::new(8, &[12, 10, 6], 4).unwrap()
    }

    /// Glorot weights and small random biases for `shape`.
    fn deep_params(shape: Shape, seed: u64) -> Vec<f32> {
        let mut flat = std::vec![0.0; shape.parameters()];
        {
            let mut layers = Layers::split_mut(shape, &mut flat).unwrap();
            layers.init_glorot(&mut XorShiftRng::seed_from_u64(seed));
            let mut rng = XorShiftRng::seed_from_u64(seed + 100);
            for l in 0..shape.layers() {
                for b in layers.bias_mut(l) {
                    *b = (rng.next_u32() as f32 / u32::MAX as f32 - 0.5) * 0.2;
                }
            }
        }
        flat
    }

    /// Batch-mean loss of any network in f64, from scratch.
    fn deep_loss_f64(shape: Shape, flat: &[f32], x: &[f32], labels: &[u8]) -> f64 {
        let net = Layers::split(shape, flat).unwrap();
        let mut total = 0.0;
        for (row, &y) in x.chunks_exact(shape.inputs()).zip(labels) {
            let mut a: Vec<f64> = row.iter().map(|&v| f64::from(v)).collect();
            for l in 0..shape.layers() {
                let (fan_in, fan_out) = shape.layer(l);
                let w = net.weights(l);
                let mut z: Vec<f64> = net.bias(l).iter().map(|&b| f64::from(b)).collect();
                for i in 0..fan_in {
                    for (o, z) in z.iter_mut().enumerate() {
                        *z += a[i] * f64::from(w[i * fan_out + o]);
                    }
                }
                if l + 1 < shape.layers() {
                    z.iter_mut().for_each(|v| *v = v.max(0.0));
                }
                a = z;
            }
            let max = a.iter().cloned().fold(f64::MIN, f64::max);
            let lse = a.iter().map(|v| (v - max).exp()).sum::<f64>().ln() + max;
            total += lse - a[usize::from(y)];
        }
        total / labels.len() as f64
    }

    #[test]
    fn deep_gradients_match_central_differences() {
        let shape = deep_shape();
        let flat = deep_params(shape, 21);
        let (images, labels) = batch(22, 6);
        let x = images.as_flattened();
        let mut owned = Owned::new(shape, 8);
        let mut scratch = zeroed_slice::<Scratch>(1);
        let mut compute = Compute::new(Kernel::PORTABLE, &Serial, &mut scratch);
        let mut copy = flat.clone();
        let mut ws = owned.view(shape, 8);
        train_step(
            &mut Layers::split_mut(shape, &mut copy).unwrap(),
            &mut Sgd { learning_rate: 0.0 },
            Batch::new(x, &labels),
            None,
            &mut ws,
            &mut compute,
        );
        assert_eq!(copy, flat);
        let analytic: Vec<f32> = ws.grads().tensors().concat();
        for (idx, &got) in analytic.iter().enumerate() {
            let h = 1e-3f32;
            let (mut plus, mut minus) = (flat.clone(), flat.clone());
            plus[idx] += h;
            minus[idx] -= h;
            let dh = f64::from(plus[idx]) - f64::from(minus[idx]);
            let numeric = (deep_loss_f64(shape, &plus, x, &labels)
                - deep_loss_f64(shape, &minus, x, &labels))
                / dh;
            let got = f64::from(got);
            let err = (got - numeric).abs() / numeric.abs().max(got.abs()).max(1e-4);
            assert!(err < 2e-3, "parameter {idx}: {got} vs {numeric} ({err})");
        }
    }

    /// Three RMSprop steps of a deep network on images with blank columns.
    fn deep_three_steps(
        kernel: Kernel,
        jobs: usize,
        how: WeightGradient,
        with_panels: bool,
    ) -> (Vec<u32>, Vec<StepStats>) {
        let shape = Shape::new(50, &[96, 64, 32], 10).unwrap();
        let images = blank_column_images::<50>(6, 4);
        let labels: Vec<u8> = (0..32).map(|i| (i % 10) as u8).collect();
        let mut flat = deep_params(shape, 5);
        let mut velocity = std::vec![0.0; shape.parameters()];
        let mut owned = Owned::new(shape, 32);
        let mut panel_values = std::vec![0.0; 50 * 96];
        let mut panel_state = PanelState::default();
        let mut scratch = zeroed_slice::<Scratch>(jobs);
        let mut compute = Compute::new(kernel, &Serial, &mut scratch);
        let mut scores = Vec::new();
        let mut panels = Panels::new(&mut panel_values, &mut panel_state);
        {
            let mut net = Layers::split_mut(shape, &mut flat).unwrap();
            panels.copy_from(net.weights(0), 50, 96, kernel);
            let mut opt = crate::RmsPropState {
                rule: crate::RmsPropRule::keras(1e-3),
                velocity: Layers::split_mut(shape, &mut velocity).unwrap(),
            };
            for _ in 0..3 {
                let mut ws = owned.view(shape, 32);
                ws.weight_gradient = how;
                let batch = Batch::new(images.as_flattened(), &labels);
                let p = with_panels.then_some(&mut panels);
                scores.push(train_step(
                    &mut net,
                    &mut opt,
                    batch,
                    p,
                    &mut ws,
                    &mut compute,
                ));
            }
            if with_panels {
                panels.copy_to(net.weights_mut(0));
            }
        }
        (flat.iter().map(|v| v.to_bits()).collect(), scores)
    }

    /// Every layer of a deep network skips zeros and may take the paired weight gradient:
    /// the same bits for any product, any number of jobs, with the first weights in panels or
    /// not.
    #[test]
    fn deep_networks_give_the_same_bits_every_way() {
        for kernel in crate::every_kernel() {
            let reference = deep_three_steps(kernel, 1, WeightGradient::Blocked, false);
            for jobs in [1, 2, 3] {
                for how in [WeightGradient::Blocked, WeightGradient::Paired] {
                    for panels in [false, true] {
                        assert_eq!(
                            deep_three_steps(kernel, jobs, how, panels),
                            reference,
                            "{kernel:?}, {jobs} jobs, {how:?}, panels {panels}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_deep_network_learns_a_separable_task() {
        let shape = Shape::new(8, &[16, 12], 4).unwrap();
        let mut flat = deep_params(shape, 3);
        let mut velocity = std::vec![0.0; shape.parameters()];
        let mut owned = Owned::new(shape, 32);
        let mut scratch = zeroed_slice::<Scratch>(2);
        let mut compute = Compute::new(Kernel::PORTABLE, &Serial, &mut scratch);
        let (images, labels) = separable(5, 200);
        let mut net = Layers::split_mut(shape, &mut flat).unwrap();
        let mut opt = crate::RmsPropState {
            rule: crate::RmsPropRule::keras(1e-2),
            velocity: Layers::split_mut(shape, &mut velocity).unwrap(),
        };
        let mut first = StepStats::default();
        let mut last = StepStats::default();
        for epoch in 0..30 {
            last = StepStats::default();
            for (x, y) in images.chunks(32).zip(labels.chunks(32)) {
                let mut ws = owned.view(shape, 32);
                let batch = Batch::new(x.as_flattened(), y);
                last.merge(train_step(
                    &mut net,
                    &mut opt,
                    batch,
                    None,
                    &mut ws,
                    &mut compute,
                ));
            }
            if epoch == 0 {
                first = last;
            }
        }
        assert!(
            last.mean_loss() < 0.1 * first.mean_loss(),
            "{first:?} -> {last:?}"
        );
        assert_eq!(last.accuracy(), 1.0);
    }

    #[test]
    fn a_workspace_too_small_for_the_shape_is_refused() {
        let shape = deep_shape();
        let len = WorkspaceLen::of(shape, 8);
        let mut floats = std::vec![0.0; len.floats - 1];
        let (mut masks, mut order, mut correct) = (
            std::vec![0; len.masks],
            std::vec![0; 8],
            std::vec![false; 8],
        );
        let ws = WorkspaceMut::new(shape, 8, &mut floats, &mut masks, &mut order, &mut correct);
        assert!(ws.is_none());
    }
}
