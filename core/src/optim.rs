//! Optimizers. Each update is one fused pass over a parameter tensor, its gradient and its state.

use crate::compute::Compute;
use crate::gemm::Parallel;
use crate::layers::{Layers, Mlp};
use crate::panels::Panels;
use crate::shape::Shape;
use crate::simd::RmsHyper;

/// What one optimizer step moves, and the gradients that move it.
pub struct Update<'s, 'a> {
    /// The parameters.
    pub params: &'s mut Layers<&'a mut [f32]>,
    /// Their gradients, shaped like them.
    pub grads: Layers<&'s [f32]>,
    /// The first layer's weights in panels, where the steps keep them: updated there, and their
    /// copy in `params` left unspecified.
    pub panels: Option<&'s mut Panels<'a>>,
    /// Whether the backward pass already moved the first layer's weights (with
    /// [`Optimizer::first_layer_step`]): the update then leaves them alone.
    pub first_weights_done: bool,
}

/// The first layer's RMSprop step, handed to the backward pass. Each weight's update needs
/// only its own gradient, so the paired weight gradient applies it to each block of rows it
/// has just formed, while they are in cache, instead of the gradient going to memory and
/// coming back for a pass of its own.
pub struct FirstLayerStep<'a> {
    pub(crate) hyper: RmsHyper,
    /// The first layer's velocities.
    pub(crate) velocity: &'a mut [f32],
}

/// Updates parameters from their gradients.
pub trait Optimizer {
    /// One step: the parameters move against the gradients, large tensors split between
    /// `compute`'s jobs (the result does not depend on how many).
    fn update<P: Parallel>(&mut self, step: Update, compute: &Compute<P>);

    /// The first layer's step, for the backward pass of a network of `shape` to run where it
    /// forms that layer's weight gradient, when this optimizer has one that needs nothing
    /// else.
    fn first_layer_step(&mut self, shape: Shape) -> Option<FirstLayerStep<'_>> {
        let _ = shape;
        None
    }
}

impl<T: Optimizer + ?Sized> Optimizer for &mut T {
    fn update<P: Parallel>(&mut self, step: Update, compute: &Compute<P>) {
        (**self).update(step, compute);
    }

    fn first_layer_step(&mut self, shape: Shape) -> Option<FirstLayerStep<'_>> {
        (**self).first_layer_step(shape)
    }
}

/// Plain gradient descent: `w -= lr * g` (the book's from-scratch optimizer).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sgd {
    /// Learning rate.
    pub learning_rate: f32,
}

impl Optimizer for Sgd {
    fn update<P: Parallel>(&mut self, step: Update, _compute: &Compute<P>) {
        assert!(!step.first_weights_done, "SGD has no first layer step");
        let params = step.params;
        if let Some(panels) = &step.panels {
            panels.copy_to(params.weights_mut(0));
        }
        for (w, g) in params.tensors_mut().iter_mut().zip(step.grads.tensors()) {
            for (w, &g) in w.iter_mut().zip(*g) {
                *w -= self.learning_rate * g;
            }
        }
        if let Some(panels) = step.panels {
            panels.refresh(params.weights(0));
        }
    }
}

/// RMSprop's hyper-parameters, as Keras 3 applies them (no momentum, not centred):
/// `v = rho*v + (1-rho)*g^2; w -= lr * g / sqrt(v + epsilon)`, `v` starting at zero.
/// Note epsilon sits inside the square root, unlike PyTorch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RmsPropRule {
    /// Learning rate (Keras default 1e-3).
    pub learning_rate: f32,
    /// Decay of the squared-gradient average (Keras default 0.9).
    pub rho: f32,
    /// Added under the root (Keras default 1e-7).
    pub epsilon: f32,
}

impl RmsPropRule {
    /// Keras's defaults with the given learning rate.
    pub const fn keras(learning_rate: f32) -> Self {
        Self {
            learning_rate,
            rho: 0.9,
            epsilon: 1e-7,
        }
    }

    fn hyper(&self) -> RmsHyper {
        RmsHyper {
            learning_rate: self.learning_rate,
            rho: self.rho,
            // Keras forms `1 - rho` in double precision before the f32 multiply.
            one_minus_rho: (1.0 - self.rho as f64) as f32,
            epsilon: self.epsilon,
        }
    }
}

/// RMSprop with its running averages beside the parameters, on storage the caller owns.
pub struct RmsPropState<'a> {
    /// The rule.
    pub rule: RmsPropRule,
    /// Running average of squared gradients, one per parameter.
    pub velocity: Layers<&'a mut [f32]>,
}

impl<'a> RmsPropState<'a> {
    /// [`Optimizer::first_layer_step`] of a network of `shape`, from a state not needed after.
    ///
    /// # Panics
    /// If the velocities are of another shape.
    pub fn into_first_layer_step(mut self, shape: Shape) -> FirstLayerStep<'a> {
        assert_eq!(self.velocity.shape(), shape, "velocity of another shape");
        FirstLayerStep {
            hyper: self.rule.hyper(),
            // The first layer's weights come first.
            velocity: core::mem::take(&mut self.velocity.tensors_mut()[0]),
        }
    }
}

impl Optimizer for RmsPropState<'_> {
    fn update<P: Parallel>(&mut self, mut step: Update, compute: &Compute<P>) {
        assert_eq!(
            self.velocity.shape(),
            step.params.shape(),
            "velocity of another shape"
        );
        let hyper = self.rule.hyper();
        let tensors = step
            .params
            .tensors_mut()
            .iter_mut()
            .zip(step.grads.tensors())
            .zip(self.velocity.tensors_mut().iter_mut());
        let skip = usize::from(step.first_weights_done);
        for (i, ((w, g), v)) in tensors.enumerate().skip(skip) {
            match step.panels.as_deref_mut() {
                // The first layer's weights come first.
                Some(panels) if i == 0 => compute.rmsprop_panels(&panels.values(), g, v, hyper),
                _ => compute.rmsprop(w, g, v, hyper),
            }
        }
    }

    fn first_layer_step(&mut self, shape: Shape) -> Option<FirstLayerStep<'_>> {
        let state = RmsPropState {
            rule: self.rule,
            velocity: self.velocity.reborrow(),
        };
        Some(state.into_first_layer_step(shape))
    }
}

/// RMSprop with fixed-size state for an [`Mlp`].
#[derive(Clone, Debug, PartialEq)]
pub struct RmsProp<const IN: usize, const HIDDEN: usize, const OUT: usize> {
    /// The rule.
    pub rule: RmsPropRule,
    /// Running average of squared gradients, one per parameter.
    pub velocity: Mlp<IN, HIDDEN, OUT>,
}

impl<const I: usize, const H: usize, const O: usize> RmsProp<I, H, O> {
    /// Keras's defaults with the given learning rate, zero velocity (small nets: a big one
    /// belongs in a zeroed heap allocation, then [`RmsProp::reset`]).
    pub const fn new(learning_rate: f32) -> Self {
        Self {
            rule: RmsPropRule::keras(learning_rate),
            velocity: Mlp::zeroed(),
        }
    }

    /// Keras's defaults with the given learning rate, and zero velocity, in place.
    pub fn reset(&mut self, learning_rate: f32) {
        self.rule = RmsPropRule::keras(learning_rate);
        self.velocity.clear();
    }

    /// The rule and the velocity as an [`RmsPropState`].
    pub fn state(&mut self) -> RmsPropState<'_> {
        RmsPropState {
            rule: self.rule,
            velocity: self.velocity.layers_mut(),
        }
    }
}

impl<const I: usize, const H: usize, const O: usize> Optimizer for RmsProp<I, H, O> {
    fn update<P: Parallel>(&mut self, step: Update, compute: &Compute<P>) {
        self.state().update(step, compute);
    }

    fn first_layer_step(&mut self, shape: Shape) -> Option<FirstLayerStep<'_>> {
        Some(self.state().into_first_layer_step(shape))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::{Kernel, Scratch, Serial};

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

    /// One step on the calling thread with portable code.
    fn step(opt: &mut impl Optimizer, params: &mut Mlp<1, 1, 1>, grads: &Mlp<1, 1, 1>) {
        let mut scratch = [Scratch::new()];
        let compute = Compute::new(Kernel::PORTABLE, &Serial, &mut scratch);
        let step = Update {
            params: &mut params.layers_mut(),
            grads: grads.layers(),
            panels: None,
            first_weights_done: false,
        };
        opt.update(step, &compute);
    }

    #[test]
    fn rmsprop_two_steps_match_the_formula() {
        let (mut params, grads) = hand_sized();
        let mut opt = RmsProp::new(1e-3);
        let w0 = values(&params);
        let g = values(&grads);
        step(&mut opt, &mut params, &grads);
        step(&mut opt, &mut params, &grads);
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
        step(&mut Sgd { learning_rate: 0.5 }, &mut params, &grads);
        let g = values(&grads);
        for i in 0..4 {
            assert!((values(&params)[i] - (before[i] - 0.5 * g[i])).abs() < 1e-6);
        }
    }
}
