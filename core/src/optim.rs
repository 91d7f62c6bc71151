//! Optimizers. Each update is one fused pass over a parameter tensor, its gradient and its state.

use crate::kernels::{Kernel, Parallel, Serial};
use crate::layers::Mlp;
use crate::model::HiddenPanels;
use crate::simd::{self, RmsHyper};

/// Updates parameters from their gradients.
pub trait Optimizer<const IN: usize, const HIDDEN: usize, const OUT: usize> {
    /// One step: `params` moves against `grads`, large tensors split into `parts` jobs run by
    /// `par`, element-wise code picked by `kernel`. The result does not depend on `parts`.
    fn step_with<P: Parallel>(
        &mut self,
        params: &mut Mlp<IN, HIDDEN, OUT>,
        grads: &Mlp<IN, HIDDEN, OUT>,
        kernel: Kernel,
        par: &P,
        parts: usize,
    );

    /// [`Optimizer::step_with`] for a model whose hidden weights are held in `panels` (see
    /// [`Mlp::train_step_with_panels`]): they are updated there, and `params.hidden.weights`
    /// are left unspecified. This copies them into `params` for the step and back after it;
    /// an optimizer that updates the panels in place saves both passes.
    #[allow(clippy::too_many_arguments)]
    fn step_with_panels<P: Parallel>(
        &mut self,
        params: &mut Mlp<IN, HIDDEN, OUT>,
        grads: &Mlp<IN, HIDDEN, OUT>,
        kernel: Kernel,
        par: &P,
        parts: usize,
        panels: &mut HiddenPanels<IN, HIDDEN>,
    ) {
        panels.copy_to(params);
        self.step_with(params, grads, kernel, par, parts);
        panels.refresh(params);
    }

    /// One step on the calling thread with portable code.
    fn step(&mut self, params: &mut Mlp<IN, HIDDEN, OUT>, grads: &Mlp<IN, HIDDEN, OUT>) {
        self.step_with(params, grads, Kernel::PORTABLE, &Serial, 1);
    }
}

/// Plain gradient descent: `w -= lr * g` (the book's from-scratch optimizer).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sgd {
    /// Learning rate.
    pub learning_rate: f32,
}

impl<const I: usize, const H: usize, const O: usize> Optimizer<I, H, O> for Sgd {
    fn step_with<P: Parallel>(
        &mut self,
        params: &mut Mlp<I, H, O>,
        grads: &Mlp<I, H, O>,
        _kernel: Kernel,
        _par: &P,
        _parts: usize,
    ) {
        for (w, g) in params.tensors_mut().into_iter().zip(grads.tensors()) {
            for (w, &g) in w.iter_mut().zip(g) {
                *w -= self.learning_rate * g;
            }
        }
    }
}

/// RMSprop exactly as Keras 3 applies it (no momentum, not centred):
/// `v = rho*v + (1-rho)*g^2; w -= lr * g / sqrt(v + epsilon)`, `v` starting at zero.
/// Note epsilon sits inside the square root, unlike PyTorch.
#[derive(Clone, Debug, PartialEq)]
pub struct RmsProp<const IN: usize, const HIDDEN: usize, const OUT: usize> {
    /// Learning rate (Keras default 1e-3).
    pub learning_rate: f32,
    /// Decay of the squared-gradient average (Keras default 0.9).
    pub rho: f32,
    /// Added under the root (Keras default 1e-7).
    pub epsilon: f32,
    /// Running average of squared gradients, one per parameter.
    pub velocity: Mlp<IN, HIDDEN, OUT>,
}

impl<const I: usize, const H: usize, const O: usize> RmsProp<I, H, O> {
    /// Keras's defaults with the given learning rate, zero velocity (small nets: a big one
    /// belongs in a zeroed heap allocation, then [`RmsProp::reset`]).
    pub const fn new(learning_rate: f32) -> Self {
        Self {
            learning_rate,
            rho: 0.9,
            epsilon: 1e-7,
            velocity: Mlp::zeroed(),
        }
    }

    /// Keras's defaults with the given learning rate, and zero velocity, in place.
    pub fn reset(&mut self, learning_rate: f32) {
        self.learning_rate = learning_rate;
        self.rho = 0.9;
        self.epsilon = 1e-7;
        self.velocity.clear();
    }

    /// The step, the hidden weights in `panels` when there are any.
    fn update<P: Parallel>(
        &mut self,
        params: &mut Mlp<I, H, O>,
        grads: &Mlp<I, H, O>,
        kernel: Kernel,
        par: &P,
        parts: usize,
        mut panels: Option<&mut HiddenPanels<I, H>>,
    ) {
        let hyper = RmsHyper {
            learning_rate: self.learning_rate,
            rho: self.rho,
            // Keras forms `1 - rho` in double precision before the f32 multiply.
            one_minus_rho: (1.0 - self.rho as f64) as f32,
            epsilon: self.epsilon,
        };
        let tensors = params
            .tensors_mut()
            .into_iter()
            .zip(grads.tensors())
            .zip(self.velocity.tensors_mut());
        for (i, ((w, g), v)) in tensors.enumerate() {
            match panels.as_deref_mut() {
                // The hidden weights come first.
                Some(panels) if i == 0 => {
                    simd::rmsprop_panels(kernel, par, parts, &panels.values(), g, v, hyper);
                }
                _ => simd::rmsprop(kernel, par, parts, w, g, v, hyper),
            }
        }
    }
}

impl<const I: usize, const H: usize, const O: usize> Optimizer<I, H, O> for RmsProp<I, H, O> {
    fn step_with<P: Parallel>(
        &mut self,
        params: &mut Mlp<I, H, O>,
        grads: &Mlp<I, H, O>,
        kernel: Kernel,
        par: &P,
        parts: usize,
    ) {
        self.update(params, grads, kernel, par, parts, None);
    }

    /// Updates the panels in place.
    fn step_with_panels<P: Parallel>(
        &mut self,
        params: &mut Mlp<I, H, O>,
        grads: &Mlp<I, H, O>,
        kernel: Kernel,
        par: &P,
        parts: usize,
        panels: &mut HiddenPanels<I, H>,
    ) {
        self.update(params, grads, kernel, par, parts, Some(panels));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hand_sized() -> (Mlp<1, 1, 1>, Mlp<1, 1, 1>) {
        let mut params = Mlp::<1, 1, 1>::zeroed();
        let mut grads = Mlp::<1, 1, 1>::zeroed();
        let [w1, b1, w2, b2] = params.tensors_mut();
        (w1[0], b1[0], w2[0], b2[0]) = (0.5, -0.25, 2.0, 0.0);
        let [g1, gb1, g2, gb2] = grads.tensors_mut();
        (g1[0], gb1[0], g2[0], gb2[0]) = (0.1, -0.2, 3.0, 0.0);
        (params, grads)
    }

    fn values(m: &Mlp<1, 1, 1>) -> [f64; 4] {
        m.tensors().map(|t| t[0] as f64)
    }

    #[test]
    fn rmsprop_two_steps_match_the_formula() {
        let (mut params, grads) = hand_sized();
        let mut opt = RmsProp::new(1e-3);
        let w0 = values(&params);
        let g = values(&grads);
        opt.step(&mut params, &grads);
        opt.step(&mut params, &grads);
        for i in 0..4 {
            // Written out independently, in f64: v1 = 0.1 g^2, v2 = 0.9 v1 + 0.1 g^2.
            let v1 = 0.1 * g[i] * g[i];
            let w1 = w0[i] - 1e-3 * g[i] / (v1 + 1e-7).sqrt();
            let v2 = 0.9 * v1 + 0.1 * g[i] * g[i];
            let w2 = w1 - 1e-3 * g[i] / (v2 + 1e-7).sqrt();
            let got = values(&params)[i];
            assert!((got - w2).abs() < 1e-6, "tensor {i}: {got} vs {w2}");
            assert!((values(&opt.velocity)[i] - v2).abs() < 1e-6);
        }
        // A zero gradient leaves its weight alone (epsilon keeps the root away from zero).
        assert_eq!(values(&params)[3], 0.0);
    }

    #[test]
    fn sgd_step_matches_the_formula() {
        let (mut params, grads) = hand_sized();
        let before = values(&params);
        Sgd { learning_rate: 0.5 }.step(&mut params, &grads);
        let g = values(&grads);
        for i in 0..4 {
            assert!((values(&params)[i] - (before[i] - 0.5 * g[i])).abs() < 1e-6);
        }
    }
}
