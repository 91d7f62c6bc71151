//! Post-training int8 quantisation, integer inference from a model file in flash, and the
//! matching zero-copy f32 inference path.
//!
//! Quantisation (TFLite/gemmlowp style, no float in the inference loops):
//! - weights: symmetric int8 per output unit, `w = scale[o] * q`, `q` in `-127..=127`;
//! - input: pixels, `x = (q + 128) / 255` (scale 1/255, zero point -128), so the `u8` pixel
//!   itself is `q - zero_point` and input quantisation is exact;
//! - hidden activations: int8 with zero point -128 and a scale of `max / 255`, `max` the largest
//!   ReLU output seen on the calibration images (the ReLU is the clamp at the zero point);
//! - biases: int32 at the accumulator's scale (`input scale * weight scale[o]`);
//! - requantisation: a per-unit fixed-point multiplier and shift chosen at export, applied as
//!   TensorFlow Lite's reference kernels apply it ([`requantize`]), so that the `.tflite`
//!   export runs bit for bit the same in TFLite Micro and LiteRT;
//! - logits: int8 like every activation (what a TFLite FULLY_CONNECTED int8 head writes), with
//!   a scale and zero point spanning the logits seen on the calibration images; the real logit
//!   is `(q - zero_point) * scale`, and the arg-max of the integers is the class.
//!
//! Int8 payload (after the 32-byte header of [`crate::format`]; little-endian, every section a
//! multiple of 4 bytes; `IN8`, `H8` are the inputs and hidden units rounded up to 8, `H2`, `O2`
//! the hidden units and outputs rounded up to 2; padding is zero):
//! ```text
//! size        field
//! 4           f32 input scale (1/255)
//! 4           i32 input zero point (-128)
//! 4           f32 hidden activation scale (one scale and zero point per hidden layer)
//! 4           i32 hidden zero point (-128)
//! 4           f32 logit scale
//! 4           i32 logit zero point (real logit = (int8 logit - zero point) * scale)
//! H2 * IN8    hidden weights, int8, transposed (output-unit major) and interleaved by pairs of
//!             units: for units 2p, 2p+1 and each block of 8 inputs, the 8 weights into unit 2p
//!             then the 8 into unit 2p+1
//! 4 * H2      hidden weight scales, f32
//! 4 * H2      hidden biases, i32
//! 4 * H2      hidden requantisation multipliers, i32 (Q31)
//! 4 * H2      hidden requantisation shifts, i32 (power of two applied to the multiplier)
//! O2 * H8     output weights, int8, laid out the same way
//! 4 * O2      output weight scales, biases, multipliers, shifts (four sections as above)
//! ```
//! Why pairs: the Cortex-M4 loop reads 8 weights of each of two units with one load per unit
//! from a single pointer, which frees the register that a second row pointer would need and
//! so saves instructions in the loop.

mod encode;
mod f32;
mod int8;
mod kernel;
mod scheme;
#[cfg(test)]
mod tests;

pub use encode::{Calibration, encode, encode_layers};
pub use f32::{F32View, predict_f32};
pub use int8::{Int8View, scratch_words};
pub use scheme::{
    INPUT_SCALE, Rounding, ZERO_POINT, encoded_len, encoded_len_of, quantize_multiplier,
    requantize, requantize_single, unit_pixel,
};
