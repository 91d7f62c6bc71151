//! Tests of training and inference: gradients against finite differences, learning, and the same
//! bits for every kernel, job count, product and panel layout.

use super::*;
use crate::PanelState;
use crate::gemm::Serial;
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
    let mut learner = copy.learner(Sgd { learning_rate: 0.0 }, None, &mut ws);
    learner.train_step(Batch::new(images.as_flattened(), &labels), &mut compute);
    drop(learner);
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
    let mut learner = model.learner(&mut opt, None, &mut ws);
    for _epoch in 0..20 {
        last = StepStats::default();
        for (x, y) in images.chunks(32).zip(labels.chunks(32)) {
            last.merge(learner.train_step(Batch::new(x.as_flattened(), y), &mut compute));
        }
    }
    drop(learner);
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
    assert_learned(first, last);
}

/// Training took the loss below a tenth of the first epoch's and classifies every row.
fn assert_learned(first: StepStats, last: StepStats) {
    assert!(
        last.mean_loss() < 0.1 * first.mean_loss(),
        "{first:?} -> {last:?}"
    );
    assert_eq!(last.accuracy(), 1.0);
}

/// Every weight's bits.
fn small_bits(model: &Small) -> Vec<u32> {
    model
        .tensors()
        .iter()
        .flat_map(|t| t.iter().map(|v| v.to_bits()))
        .collect()
}

#[test]
fn same_seed_same_bits_different_seed_different_weights() {
    let (a, _) = train_small(7, Kernel::PORTABLE, 1);
    let (b, _) = train_small(7, Kernel::PORTABLE, 3);
    assert_eq!(small_bits(&a), small_bits(&b));
    let (c, _) = train_small(8, Kernel::PORTABLE, 1);
    assert_ne!(small_bits(&a), small_bits(&c));
}

/// Every kernel (naive and portable fusing in software, the others in hardware) trains the
/// same bits, on any number of jobs.
#[test]
fn every_kernel_trains_the_same_bits() {
    let (reference, _) = train_small(7, Kernel::NAIVE, 1);
    for kernel in crate::every_kernel() {
        for jobs in [1, 3] {
            let (model, _) = train_small(7, kernel, jobs);
            assert_eq!(
                small_bits(&model),
                small_bits(&reference),
                "{kernel:?}, {jobs} jobs"
            );
        }
    }
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
    let mut learner = model.learner(&mut *opt, None, &mut ws);
    let batch = Batch::new(images.as_flattened(), &labels);
    let first = learner.train_step(batch, &mut compute);
    assert_eq!(first.rows, 96);
    // Ten classes at initialisation: loss near ln(10).
    assert!((first.mean_loss() - 10f64.ln()).abs() < 0.5, "{first:?}");
    let second = learner.train_step(batch, &mut compute);
    drop(learner);
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
                    let p = with_panels.then_some(&mut *panels);
                    let (x, c) = (images.as_flattened(), &mut compute);
                    let scores = match sgd {
                        false => {
                            three_steps(&mut model.learner(&mut *rms, p, &mut ws), x, &labels, c)
                        }
                        true => {
                            let plain = Sgd { learning_rate: 0.1 };
                            three_steps(&mut model.learner(plain, p, &mut ws), x, &labels, c)
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
/// every kernel and any number of jobs (the naive kernel: its triple loop's), with the
/// first layer's update in the backward pass (weights in panels) or after it.
#[test]
fn paired_weight_gradient_gives_the_same_bits() {
    let images = blank_column_images::<50>(6, 4);
    let labels: Vec<u8> = (0..32).map(|i| (i % 10) as u8).collect();
    for kernel in crate::every_kernel() {
        for jobs in [1, 2, 3] {
            let run = |how: WeightGradient, with_panels: bool| {
                let (mut model, mut rms, mut ws, mut panels) = paired_setup(how, kernel);
                let p = with_panels.then_some(&mut *panels);
                let mut scratch = zeroed_slice::<Scratch>(jobs);
                let mut compute = Compute::new(kernel, &Serial, &mut scratch);
                let (x, c) = (images.as_flattened(), &mut compute);
                let scores = three_steps(&mut model.learner(&mut *rms, p, &mut ws), x, &labels, c);
                if with_panels {
                    panels.copy_to(&mut model);
                }
                (tensor_bits(&model), tensor_bits(&rms.velocity), scores)
            };
            let blocked = run(WeightGradient::Blocked, false);
            for with_panels in [false, true] {
                assert_eq!(
                    blocked,
                    run(WeightGradient::Paired, with_panels),
                    "{kernel:?}, {jobs} jobs, panels {with_panels}"
                );
            }
        }
    }
}

/// RMSprop's step for the first layer runs in the backward pass (which says so, for the
/// update to leave those weights alone) when the weights are in panels and their gradient goes
/// through pairs; otherwise the update does it.
#[test]
fn the_first_layer_step_runs_in_the_backward_pass_with_panels_and_pairs() {
    let images = blank_column_images::<50>(6, 4);
    let labels: Vec<u8> = (0..32).map(|i| (i % 10) as u8).collect();
    let kernel = Kernel::PORTABLE;
    let cases = [
        (WeightGradient::Paired, true, true),
        (WeightGradient::Paired, false, false),
        (WeightGradient::Blocked, true, false),
    ];
    for (how, with_panels, in_backward) in cases {
        let (mut model, mut rms, mut ws, mut panels) = paired_setup(how, kernel);
        let mut panels = panels.panels();
        let mut scratch = zeroed_slice::<Scratch>(2);
        let mut compute = Compute::new(kernel, &Serial, &mut scratch);
        let step = rms.first_layer_step(Mlp::<50, 96, 10>::shape());
        let (_, done) = forward_and_back(
            &model.layers_mut(),
            with_panels.then_some(&mut panels),
            Batch::new(images.as_flattened(), &labels),
            &mut ws.view(),
            &mut compute,
            step,
        );
        let case = (how, with_panels);
        assert_eq!(done, in_backward, "{case:?}");
        let moved = rms.velocity.hidden.weights.as_flattened();
        assert_eq!(moved.iter().any(|&v| v != 0.0), in_backward, "{case:?}");
    }
}

/// A model, its optimizer, a workspace whose weight gradient goes `how`, and the model's
/// first layer in `kernel`'s panels, for the paired weight gradient's tests.
#[allow(clippy::type_complexity)]
fn paired_setup(
    how: WeightGradient,
    kernel: Kernel,
) -> (
    Box<Mlp<50, 96, 10>>,
    Box<RmsProp<50, 96, 10>>,
    Box<Workspace<32, 50, 96, 10>>,
    Box<HiddenPanels<50, 96>>,
) {
    let mut model = zeroed_box::<Mlp<50, 96, 10>>();
    model.init_glorot(&mut XorShiftRng::seed_from_u64(5));
    let mut rms = zeroed_box::<RmsProp<50, 96, 10>>();
    rms.reset(1e-3);
    let mut ws = zeroed_box::<Workspace<32, 50, 96, 10>>();
    ws.weight_gradient = how;
    let mut panels = zeroed_box::<HiddenPanels<50, 96>>();
    panels.copy_from(&model, kernel);
    (model, rms, ws, panels)
}

/// The scores of three steps of `learner` on `inputs`.
fn three_steps(
    learner: &mut Learner<impl Optimizer>,
    inputs: &[f32],
    labels: &[u8],
    compute: &mut Compute<Serial>,
) -> Vec<StepStats> {
    let batch = Batch::new(inputs, labels);
    (0..3).map(|_| learner.train_step(batch, compute)).collect()
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
            let mut learner = model.learner(&mut *opt, Some(&mut panels), &mut ws);
            learner.train_step(batch, &mut compute)
        }));
        assert!(refused.is_err(), "panels from {kernel:?} accepted");
    }
}

#[test]
fn keys_change_the_grouping_but_not_a_bit() {
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut kernels = std::vec![Kernel::PORTABLE];
    #[cfg(target_arch = "x86_64")]
    kernels.extend(Kernel::avx2());
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
            let mut learner = model.learner(&mut *opt, None, &mut ws);
            for _ in 0..2 {
                let batch = Batch {
                    keys,
                    ..Batch::new(images.as_flattened(), &labels)
                };
                learner.train_step(batch, &mut compute);
            }
            drop(learner);
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
    let mut learner = Learner {
        params: Layers::split_mut(shape, &mut copy).unwrap(),
        optimizer: Sgd { learning_rate: 0.0 },
        panels: None,
        workspace: owned.view(shape, 8),
    };
    learner.train_step(Batch::new(x, &labels), &mut compute);
    let analytic: Vec<f32> = learner.workspace.grads().tensors().concat();
    drop(learner);
    assert_eq!(copy, flat);
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
    let mut panels = Panels::new(&mut panel_values, &mut panel_state);
    let params = Layers::split_mut(shape, &mut flat).unwrap();
    panels.copy_from(params.weights(0), 50, 96, kernel);
    let mut learner = Learner {
        params,
        optimizer: crate::RmsPropState {
            rule: crate::RmsPropRule::keras(1e-3),
            velocity: Layers::split_mut(shape, &mut velocity).unwrap(),
        },
        panels: with_panels.then_some(panels),
        workspace: owned.view(shape, 32),
    };
    learner.workspace.weight_gradient = how;
    let scores = three_steps(&mut learner, images.as_flattened(), &labels, &mut compute);
    if let Some(panels) = &learner.panels {
        panels.copy_to(learner.params.weights_mut(0));
    }
    drop(learner);
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
    let mut learner = Learner {
        params: Layers::split_mut(shape, &mut flat).unwrap(),
        optimizer: crate::RmsPropState {
            rule: crate::RmsPropRule::keras(1e-2),
            velocity: Layers::split_mut(shape, &mut velocity).unwrap(),
        },
        panels: None,
        workspace: owned.view(shape, 32),
    };
    let mut first = StepStats::default();
    let mut last = StepStats::default();
    for epoch in 0..30 {
        last = StepStats::default();
        for (x, y) in images.chunks(32).zip(labels.chunks(32)) {
            last.merge(learner.train_step(Batch::new(x.as_flattened(), y), &mut compute));
        }
        if epoch == 0 {
            first = last;
        }
    }
    assert_learned(first, last);
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
