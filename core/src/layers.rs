//! Layers on fixed-size arrays, and Glorot-uniform initialisation (Keras's default).

use rand_core::Rng;

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
        let limit = glorot_limit(IN, OUT);
        for w in self.weights.as_flattened_mut() {
            *w = (2.0 * unit_f32(rng) - 1.0) * limit;
        }
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
        self.hidden.init_glorot(rng);
        self.output.init_glorot(rng);
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
}
