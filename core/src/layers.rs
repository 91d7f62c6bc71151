//! Layers: fixed-size owners for firmware and tests ([`Dense`], [`Mlp`]), the [`Layers`] view
//! every routine runs on, and Glorot-uniform initialisation (Keras's default).

use core::ops::Deref;

use rand_core::Rng;

use crate::shape::{MAX_LAYERS, Shape};

/// A fully connected layer: `y = x · weights + bias`, weights stored `IN x OUT` row-major (the
/// shape Keras gives a Dense kernel).
#[derive(Clone, Debug, PartialEq)]
pub struct Dense<const IN: usize, const OUT: usize> {
    /// `weights[i][o]` connects input `i` to output `o`.
    pub weights: [[f32; OUT]; IN],
    /// One bias per output.
    pub bias: [f32; OUT],
}

impl<const IN: usize, const OUT: usize> Dense<IN, OUT> {
    /// All weights and biases zero.
    pub const fn zeroed() -> Self {
        Self {
            weights: [[0.0; OUT]; IN],
            bias: [0.0; OUT],
        }
    }

    /// Glorot-uniform weights `U(-l, l)`, `l = sqrt(6 / (IN + OUT))`, and zero biases.
    pub fn init_glorot<R: Rng + ?Sized>(&mut self, rng: &mut R) {
        fill_glorot(self.weights.as_flattened_mut(), IN, OUT, rng);
        self.bias = [0.0; OUT];
    }

    /// Weights as one row-major slice.
    pub fn weights_flat(&self) -> &[f32] {
        self.weights.as_flattened()
    }
}

/// Keras's Glorot-uniform bound for a `fan_in x fan_out` kernel.
pub fn glorot_limit(fan_in: usize, fan_out: usize) -> f32 {
    libm::sqrtf(6.0 / (fan_in + fan_out) as f32)
}

/// Draws a `fan_in x fan_out` kernel from Glorot-uniform, in row-major order.
fn fill_glorot<R: Rng + ?Sized>(weights: &mut [f32], fan_in: usize, fan_out: usize, rng: &mut R) {
    let limit = glorot_limit(fan_in, fan_out);
    for w in weights {
        *w = (2.0 * unit_f32(rng) - 1.0) * limit;
    }
}

/// A uniform `f32` in `[0, 1)` from the top 24 bits of a draw (every value exactly representable).
fn unit_f32<R: Rng + ?Sized>(rng: &mut R) -> f32 {
    (rng.next_u32() >> 8) as f32 * (1.0 / (1u32 << 24) as f32)
}

/// `Dense(HIDDEN, relu) -> Dense(OUT, softmax)`: the Keras example's network for any sizes.
///
/// The same struct holds parameters, their gradients and an optimizer's per-parameter state.
#[derive(Clone, Debug, PartialEq)]
pub struct Mlp<const IN: usize, const HIDDEN: usize, const OUT: usize> {
    /// The ReLU layer.
    pub hidden: Dense<IN, HIDDEN>,
    /// The softmax layer (it produces logits; softmax is fused into the loss).
    pub output: Dense<HIDDEN, OUT>,
}

impl<const IN: usize, const HIDDEN: usize, const OUT: usize> Mlp<IN, HIDDEN, OUT> {
    /// Number of parameter tensors: two weight matrices and two bias vectors.
    pub const TENSORS: usize = 4;
    /// Total number of parameters.
    pub const PARAMETERS: usize = IN * HIDDEN + HIDDEN + HIDDEN * OUT + OUT;

    /// All parameters zero (small nets only; big ones belong in a zeroed heap allocation).
    pub const fn zeroed() -> Self {
        Self {
            hidden: Dense::zeroed(),
            output: Dense::zeroed(),
        }
    }

    /// Keras's default initialisation: Glorot-uniform weights, zero biases, hidden layer first.
    pub fn init_glorot<R: Rng + ?Sized>(&mut self, rng: &mut R) {
        self.layers_mut().init_glorot(rng);
    }

    /// The shape `IN-HIDDEN-OUT`.
    ///
    /// # Panics
    /// If the sizes are past [`Shape`]'s limits (a type no network can have).
    pub fn shape() -> Shape {
        Shape::new(IN, &[HIDDEN], OUT).expect("Mlp sizes within Shape's limits")
    }

    /// The parameters as a [`Layers`] view.
    pub fn layers(&self) -> Layers<&[f32]> {
        Layers::from_tensors(Self::shape(), self.tensors()).expect("tensors of the shape")
    }

    /// The parameters as a mutable [`Layers`] view.
    pub fn layers_mut(&mut self) -> Layers<&mut [f32]> {
        Layers::from_tensors(Self::shape(), self.tensors_mut()).expect("tensors of the shape")
    }

    /// The parameter tensors in file order: hidden weights, hidden bias, output weights, bias.
    pub fn tensors(&self) -> [&[f32]; 4] {
        [
            self.hidden.weights.as_flattened(),
            &self.hidden.bias,
            self.output.weights.as_flattened(),
            &self.output.bias,
        ]
    }

    /// Mutable parameter tensors, in the order of [`Mlp::tensors`].
    pub fn tensors_mut(&mut self) -> [&mut [f32]; 4] {
        [
            self.hidden.weights.as_flattened_mut(),
            &mut self.hidden.bias,
            self.output.weights.as_flattened_mut(),
            &mut self.output.bias,
        ]
    }

    /// Sets every parameter to zero in place.
    pub fn clear(&mut self) {
        for t in self.tensors_mut() {
            t.fill(0.0);
        }
    }

    /// True when no parameter is NaN or infinite.
    pub fn is_finite(&self) -> bool {
        self.tensors()
            .iter()
            .all(|t| t.iter().all(|v| v.is_finite()))
    }
}

/// A network's parameters (or their gradients, or an optimizer's state per parameter): a weight
/// tensor (`inputs x outputs`, row-major, as Keras stores a Dense kernel) and a bias per layer,
/// borrowed from storage the caller owns, `&[f32]` to read and `&mut [f32]` to train.
#[derive(Debug)]
pub struct Layers<T> {
    shape: Shape,
    /// Weights and bias of layer 0, then of layer 1, ...
    tensors: heapless::Vec<T, { 2 * MAX_LAYERS }>,
}

impl<T: Deref<Target = [f32]>> Layers<T> {
    /// The tensors of `shape` in file order (each layer's weights, then its bias); `None` when
    /// their count or a length does not fit the shape.
    pub fn from_tensors(shape: Shape, tensors: impl IntoIterator<Item = T>) -> Option<Self> {
        let mut list = heapless::Vec::new();
        for (i, t) in tensors.into_iter().enumerate() {
            if i >= 2 * shape.layers() {
                return None;
            }
            let (fan_in, fan_out) = shape.layer(i / 2);
            if t.len()
                != if i % 2 == 0 {
                    fan_in * fan_out
                } else {
                    fan_out
                }
            {
                return None;
            }
            list.push(t).ok()?;
        }
        (list.len() == 2 * shape.layers()).then_some(Self {
            shape,
            tensors: list,
        })
    }

    /// The layer list.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// Weights of layer `l`, row-major `inputs x outputs`.
    pub fn weights(&self, l: usize) -> &[f32] {
        &self.tensors[2 * l]
    }

    /// Bias of layer `l`.
    pub fn bias(&self, l: usize) -> &[f32] {
        &self.tensors[2 * l + 1]
    }

    /// Every tensor, in file order.
    pub fn tensors(&self) -> &[T] {
        &self.tensors
    }

    /// A read-only view of the same tensors.
    pub fn view(&self) -> Layers<&[f32]> {
        Layers {
            shape: self.shape,
            tensors: self.tensors.iter().map(|t| &**t).collect(),
        }
    }

    /// True when no parameter is NaN or infinite.
    pub fn is_finite(&self) -> bool {
        self.tensors.iter().all(|t| t.iter().all(|v| v.is_finite()))
    }
}

impl<'a> Layers<&'a [f32]> {
    /// The tensors of `shape` laid one after another in `flat`, in file order.
    pub fn split(shape: Shape, flat: &'a [f32]) -> Option<Self> {
        if flat.len() != shape.parameters() {
            return None;
        }
        let mut rest = flat;
        let tensors = (0..2 * shape.layers()).map(|i| {
            let (fan_in, fan_out) = shape.layer(i / 2);
            let (t, tail) = rest.split_at(if i % 2 == 0 {
                fan_in * fan_out
            } else {
                fan_out
            });
            rest = tail;
            t
        });
        Self::from_tensors(shape, tensors)
    }
}

impl<'a> Layers<&'a mut [f32]> {
    /// The tensors of `shape` laid one after another in `flat`, in file order.
    pub fn split_mut(shape: Shape, flat: &'a mut [f32]) -> Option<Self> {
        if flat.len() != shape.parameters() {
            return None;
        }
        let mut rest = flat;
        let mut tensors: heapless::Vec<&'a mut [f32], { 2 * MAX_LAYERS }> = heapless::Vec::new();
        for i in 0..2 * shape.layers() {
            let (fan_in, fan_out) = shape.layer(i / 2);
            let len = if i % 2 == 0 {
                fan_in * fan_out
            } else {
                fan_out
            };
            let (t, tail) = core::mem::take(&mut rest).split_at_mut(len);
            rest = tail;
            tensors.push(t).ok()?;
        }
        Self::from_tensors(shape, tensors)
    }

    /// Weights of layer `l`, to change.
    pub fn weights_mut(&mut self, l: usize) -> &mut [f32] {
        self.tensors[2 * l]
    }

    /// Bias of layer `l`, to change.
    pub fn bias_mut(&mut self, l: usize) -> &mut [f32] {
        self.tensors[2 * l + 1]
    }

    /// Every tensor, to change, in file order.
    pub fn tensors_mut(&mut self) -> &mut [&'a mut [f32]] {
        &mut self.tensors
    }

    /// A shorter-lived mutable view of the same tensors.
    pub fn reborrow(&mut self) -> Layers<&mut [f32]> {
        Layers {
            shape: self.shape,
            tensors: self.tensors.iter_mut().map(|t| &mut **t).collect(),
        }
    }

    /// Keras's default initialisation: Glorot-uniform weights drawn layer by layer from the
    /// first, zero biases.
    pub fn init_glorot<R: Rng + ?Sized>(&mut self, rng: &mut R) {
        for l in 0..self.shape.layers() {
            let (fan_in, fan_out) = self.shape.layer(l);
            fill_glorot(self.weights_mut(l), fan_in, fan_out, rng);
            self.bias_mut(l).fill(0.0);
        }
    }

    /// Sets every value to zero.
    pub fn clear(&mut self) {
        for t in self.tensors.iter_mut() {
            t.fill(0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;
    use rand_xorshift::XorShiftRng;

    #[test]
    fn glorot_limits_match_keras() {
        assert!((glorot_limit(784, 512) - 0.068041).abs() < 1e-6);
        assert!((glorot_limit(512, 10) - 0.107211).abs() < 1e-6);
    }

    #[test]
    fn glorot_fills_the_range_and_zeroes_biases() {
        let mut layer: Dense<64, 32> = Dense::zeroed();
        layer.bias = [1.0; 32];
        layer.init_glorot(&mut XorShiftRng::seed_from_u64(3));
        let limit = glorot_limit(64, 32);
        let w = layer.weights_flat();
        assert!(w.iter().all(|v| v.abs() <= limit));
        let max = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(max > 0.95 * limit, "draws should reach near the bound");
        let mean = w.iter().sum::<f32>() / w.len() as f32;
        assert!(mean.abs() < 0.1 * limit);
        assert_eq!(layer.bias, [0.0; 32]);
    }

    #[test]
    fn a_flat_network_initialises_as_the_fixed_one() {
        let mut fixed: Mlp<6, 5, 3> = Mlp::zeroed();
        fixed.init_glorot(&mut XorShiftRng::seed_from_u64(9));
        let mut flat = std::vec![1.0f32; Mlp::<6, 5, 3>::PARAMETERS];
        let shape = Mlp::<6, 5, 3>::shape();
        Layers::split_mut(shape, &mut flat)
            .unwrap()
            .init_glorot(&mut XorShiftRng::seed_from_u64(9));
        let fixed_flat: std::vec::Vec<f32> = fixed.tensors().concat();
        assert_eq!(flat, fixed_flat);
        assert!(Layers::split(shape, &flat[1..]).is_none());
    }
}
