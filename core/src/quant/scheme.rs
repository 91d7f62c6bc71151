//! The int8 scheme: scales and zero points, the requantisation arithmetic TensorFlow Lite
//! applies, and the layout of the int8 payload.

use crate::format::{Dtype, HEADER_LEN, Header};
use crate::shape::{MAX_LAYERS, Shape};

/// Scale of the quantised input: a pixel `p` stands for `p / 255`.
pub const INPUT_SCALE: f32 = 1.0 / 255.0;
/// Zero point of the quantised input (and of the hidden activations): `q = p - 128`.
pub const ZERO_POINT: i32 = -128;
/// Bytes of the scale/zero-point block at the start of the payload.
pub(super) const PARAMS_LEN: usize = params_len(1);

/// The input value a pixel stands for, as the f32 paths compute it.
#[inline]
pub fn unit_pixel(p: u8) -> f32 {
    f32::from(p) / 255.0
}

/// A real multiplier `m` as a Q31 `multiplier` and a power-of-two `shift`:
/// `m ≈ multiplier * 2^(shift - 31)`, relative error at most 2^-31.
///
/// Zero, negative, non-finite and tiny (`< 2^-32`) values give `(0, 0)`, which requantises
/// everything to zero; values of `2^30` and more saturate.
pub fn quantize_multiplier(m: f64) -> (i32, i32) {
    if !(m.is_finite() && m >= libm::ldexp(1.0, -32)) {
        return (0, 0);
    }
    let (fraction, mut exponent) = libm::frexp(m);
    // fraction in [0.5, 1): the Q31 multiplier is in [2^30, 2^31].
    let mut q = libm::round(fraction * (1u64 << 31) as f64) as i64;
    if q == 1 << 31 {
        q /= 2;
        exponent += 1;
    }
    if exponent > 30 {
        return (i32::MAX, 30);
    }
    (q as i32, exponent)
}

/// `acc * multiplier * 2^(shift - 31)` rounded as TensorFlow Lite's reference kernels round it
/// (`MultiplyByQuantizedMultiplier` in tflite-micro's `kernels/internal/common.h`), so that an
/// exported `.tflite` model computes the same int8 values in TFLite Micro and LiteRT:
/// a left shift for a multiplier above one, a saturating rounding doubling high multiply
/// (`round(a * b / 2^31)`, halves up), then a rounding right shift (halves away from zero).
///
/// Two roundings rather than one: the result can differ by one from the exactly rounded
/// product, which is what the interpreters compute and so what this matches. Shifts outside
/// the range [`quantize_multiplier`] produces are clamped, so a crafted file cannot make this
/// panic; the left shift wraps as the C code does on every target it runs on.
#[inline]
pub fn requantize(acc: i32, multiplier: i32, shift: i32) -> i32 {
    let left = shift.clamp(0, 31) as u32;
    let right = shift.saturating_neg().clamp(0, 31) as u32;
    let high = rounding_doubling_high_mul(acc.wrapping_shl(left), multiplier);
    rounding_divide_by_pot(high, right)
}

/// `round(acc * multiplier * 2^(shift - 31))` with one rounding, halves up, saturated to
/// `i32`: what LiteRT computes when built with `TFLITE_SINGLE_ROUNDING` (its PyPI wheels are).
///
/// Shifts outside the range [`quantize_multiplier`] produces are clamped.
#[inline]
pub fn requantize_single(acc: i32, multiplier: i32, shift: i32) -> i32 {
    let product = i64::from(acc) * i64::from(multiplier);
    let n = 31i32.saturating_sub(shift).clamp(1, 62) as u32;
    // |product| <= 2^62, so adding 2^61 cannot overflow.
    let rounded = (product + (1i64 << (n - 1))) >> n;
    rounded.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

/// How an int8 runtime rounds the requantisation: the same model file gives outputs that
/// differ by one in a few units between the two, so inference takes the runtime's rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rounding {
    /// TFLite's reference kernels as TensorFlow Lite Micro (and CMSIS-NN) build them: two
    /// roundings ([`requantize`]).
    #[default]
    Double,
    /// One rounding ([`requantize_single`]): LiteRT's kernels as its wheels build them.
    Single,
}

impl Rounding {
    /// Requantises `acc` by this rule.
    #[inline(always)]
    pub fn apply(self, acc: i32, multiplier: i32, shift: i32) -> i32 {
        match self {
            Rounding::Double => requantize(acc, multiplier, shift),
            Rounding::Single => requantize_single(acc, multiplier, shift),
        }
    }
}

/// `round(a * b / 2^31)` with halves rounded up, saturated: gemmlowp's
/// `SaturatingRoundingDoublingHighMul` (ARM's SQRDMULH).
#[inline(always)]
fn rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let ab = i64::from(a) * i64::from(b);
    let nudge = if ab >= 0 { 1 << 30 } else { 1 - (1 << 30) };
    // Division truncates toward zero, as in C; |ab + nudge| / 2^31 < 2^31.
    ((ab + nudge) / (1i64 << 31)) as i32
}

/// `x / 2^exponent` rounded to nearest, halves away from zero: gemmlowp's
/// `RoundingDivideByPOT` (`exponent` at most 31).
#[inline(always)]
fn rounding_divide_by_pot(x: i32, exponent: u32) -> i32 {
    let mask = ((1i64 << exponent) - 1) as i32;
    let remainder = x & mask;
    let threshold = (mask >> 1) + i32::from(x < 0);
    (x >> exponent) + i32::from(remainder > threshold)
}

/// Sizes of one int8 layer's sections.
#[derive(Clone, Copy, Debug)]
pub(super) struct LayerLayout {
    /// Output units stored (rounded up to a pair).
    pub(super) units: usize,
    /// Inputs stored per unit (rounded up to 8).
    pub(super) depth: usize,
}

impl LayerLayout {
    pub(super) fn new(inputs: usize, outputs: usize) -> Option<Self> {
        let layout = Self {
            units: outputs.checked_next_multiple_of(2)?,
            depth: inputs.checked_next_multiple_of(8)?,
        };
        // All sections of the layer must be addressable.
        layout
            .units
            .checked_mul(layout.depth)?
            .checked_add(layout.units.checked_mul(16)?)?;
        Some(layout)
    }

    pub(super) fn weight_bytes(&self) -> usize {
        self.units * self.depth
    }

    pub(super) fn bytes(&self) -> usize {
        self.weight_bytes() + 16 * self.units
    }

    /// Where the weight from input `i` into unit `o` is stored.
    pub(super) fn weight_index(&self, o: usize, i: usize) -> usize {
        o / 2 * 2 * self.depth + i / 8 * 16 + o % 2 * 8 + i % 8
    }
}

/// Bytes of the scales section of an int8 file with `hidden` hidden layers: the input scale
/// and zero point, each hidden layer's activation scale and zero point, the logits'.
pub(super) const fn params_len(hidden: usize) -> usize {
    8 + 8 * hidden + 8
}

/// Each layer's sections and the int8 payload's length (the widths of a version 2 file
/// excluded); `None` when it would not fit.
pub(super) fn int8_layout(shape: Shape) -> Option<(heapless::Vec<LayerLayout, MAX_LAYERS>, usize)> {
    let mut layouts = heapless::Vec::new();
    let mut payload = params_len(shape.hidden().len());
    for l in 0..shape.layers() {
        let (fan_in, fan_out) = shape.layer(l);
        let layout = LayerLayout::new(fan_in, fan_out)?;
        payload = payload.checked_add(layout.bytes())?;
        layouts.push(layout).ok()?;
    }
    // The header stores the payload length as u32.
    u32::try_from(payload.checked_add(4 * shape.widths().len())?).ok()?;
    Some((layouts, payload))
}

/// Bytes of the int8 model file for an `I`-`H`-`O` network.
///
/// # Panics
/// If the sizes overflow (no real network comes near).
pub const fn encoded_len<const I: usize, const H: usize, const O: usize>() -> usize {
    let (h2, o2) = (H.next_multiple_of(2), O.next_multiple_of(2));
    let (in8, h8) = (I.next_multiple_of(8), H.next_multiple_of(8));
    HEADER_LEN + PARAMS_LEN + h2 * in8 + 16 * h2 + o2 * h8 + 16 * o2 + 4
}

/// Bytes of the int8 model file of `shape`, `None` for sizes whose file would be too large.
pub fn encoded_len_of(shape: Shape) -> Option<usize> {
    let (_, payload) = int8_layout(shape)?;
    let header = Header::new(Dtype::Int8, shape, 0);
    Some(HEADER_LEN + header.widths_len() + payload + 4)
}
