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
//! brings the loop to 21 instructions per 16 multiply-adds (23 with separate rows).

use byteorder::{ByteOrder, LittleEndian};

use crate::crc::crc32;
use crate::format::{Dtype, F32Le, FormatError, HEADER_LEN, Header, ModelView};
use crate::layers::{Layers, Mlp};
use crate::loss::argmax;
use crate::shape::{MAX_HIDDEN_LAYERS, MAX_LAYERS, Shape};

/// Scale of the quantised input: a pixel `p` stands for `p / 255`.
pub const INPUT_SCALE: f32 = 1.0 / 255.0;
/// Zero point of the quantised input (and of the hidden activations): `q = p - 128`.
pub const ZERO_POINT: i32 = -128;
/// Bytes of the scale/zero-point block at the start of the payload.
const PARAMS_LEN: usize = params_len(1);

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

/// Ranges seen on calibration images: what fixes the activation and logit scales.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Calibration {
    /// Largest ReLU output of each hidden layer.
    pub hidden_max: [f32; MAX_HIDDEN_LAYERS],
    /// Largest logit (zero or more: the int8 range holds zero, as TFLite requires).
    pub logit_max: f32,
    /// Smallest logit (zero or less).
    pub logit_min: f32,
    /// Images observed.
    pub images: u32,
}

impl Default for Calibration {
    fn default() -> Self {
        Self::new()
    }
}

impl Calibration {
    /// Nothing observed yet.
    pub const fn new() -> Self {
        Self {
            hidden_max: [0.0; MAX_HIDDEN_LAYERS],
            logit_max: 0.0,
            logit_min: 0.0,
            images: 0,
        }
    }

    /// Runs `model` in f32 on one image (pixels, `0..=255`) and widens the ranges.
    ///
    /// Keeps `HIDDEN + OUT` floats on the stack (2 KB for the MNIST network).
    pub fn observe<const I: usize, const H: usize, const O: usize>(
        &mut self,
        model: &Mlp<I, H, O>,
        pixels: &[u8; I],
    ) {
        let (mut a, mut b) = (model.hidden.bias, model.hidden.bias);
        let mut logits = model.output.bias;
        self.observe_into(&model.layers(), pixels, [&mut a, &mut b], &mut logits);
    }

    /// [`Calibration::observe`] for any network: the activations are computed in the two
    /// buffers of `scratch` in turn (each at least as long as the widest hidden layer), the
    /// logits in `logits`.
    ///
    /// # Panics
    /// If a buffer is too short or `pixels` shorter than one input row.
    pub fn observe_into(
        &mut self,
        net: &Layers<&[f32]>,
        pixels: &[u8],
        scratch: [&mut [f32]; 2],
        logits: &mut [f32],
    ) {
        let shape = net.shape();
        let [mut a, mut b] = scratch;
        let (inputs, first) = shape.layer(0);
        a[..first].copy_from_slice(net.bias(0));
        for (&p, row) in pixels[..inputs]
            .iter()
            .zip(net.weights(0).chunks_exact(first))
        {
            // Most pixels are 0; calibration needs ranges, not bit-exact sums.
            if p != 0 {
                let x = unit_pixel(p);
                for (h, &w) in a.iter_mut().zip(row) {
                    *h += x * w;
                }
            }
        }
        let last = shape.layers() - 1;
        for l in 1..=last {
            let (fan_in, fan_out) = shape.layer(l);
            let out = if l == last { &mut *logits } else { &mut *b };
            out[..fan_out].copy_from_slice(net.bias(l));
            // ReLU: only positive activations reach the next layer.
            for (&h, row) in a[..fan_in].iter().zip(net.weights(l).chunks_exact(fan_out)) {
                if h > 0.0 {
                    self.hidden_max[l - 1] = self.hidden_max[l - 1].max(h);
                    for (z, &w) in out.iter_mut().zip(row) {
                        *z += h * w;
                    }
                }
            }
            core::mem::swap(&mut a, &mut b);
        }
        for &z in logits[..shape.classes()].iter() {
            self.logit_max = self.logit_max.max(z);
            self.logit_min = self.logit_min.min(z);
        }
        self.images += 1;
    }

    /// Observes every image.
    pub fn observe_all<const I: usize, const H: usize, const O: usize>(
        &mut self,
        model: &Mlp<I, H, O>,
        images: &[[u8; I]],
    ) {
        for image in images {
            self.observe(model, image);
        }
    }

    /// A calibration from `images` (a few hundred representative ones are plenty).
    pub fn from_images<const I: usize, const H: usize, const O: usize>(
        model: &Mlp<I, H, O>,
        images: &[[u8; I]],
    ) -> Self {
        let mut c = Self::new();
        c.observe_all(model, images);
        c
    }

    /// Scale of the int8 hidden activations (`max / 255`; a positive fallback if none fired).
    pub fn hidden_scale(&self) -> f32 {
        self.activation_scale(0)
    }

    /// Scale of hidden layer `l`'s int8 activations (`max / 255`; a positive fallback if none
    /// fired).
    pub fn activation_scale(&self, l: usize) -> f32 {
        let max = self.hidden_max[l];
        if max.is_finite() && max > 0.0 {
            max / 255.0
        } else {
            INPUT_SCALE
        }
    }

    /// Real value of one step of the int8 logits: the calibrated range over 255 steps (a
    /// positive fallback if the logits were all zero).
    pub fn logit_scale(&self) -> f32 {
        let range = self.logit_max - self.logit_min;
        if range.is_finite() && range > 0.0 {
            range / 255.0
        } else {
            INPUT_SCALE
        }
    }

    /// The int8 logit that stands for a real zero: the smallest logit at -128, rounded as
    /// TFLite's converter nudges a zero point.
    pub fn logit_zero_point(&self) -> i32 {
        let min = if self.logit_min.is_finite() {
            self.logit_min
        } else {
            0.0
        };
        let zp = f64::from(ZERO_POINT) - f64::from(min) / f64::from(self.logit_scale());
        libm::round(zp).clamp(-128.0, 127.0) as i32
    }
}

/// Sizes of one int8 layer's sections.
#[derive(Clone, Copy, Debug)]
struct LayerLayout {
    /// Output units stored (rounded up to a pair).
    units: usize,
    /// Inputs stored per unit (rounded up to 8).
    depth: usize,
}

impl LayerLayout {
    fn new(inputs: usize, outputs: usize) -> Option<Self> {
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

    fn weight_bytes(&self) -> usize {
        self.units * self.depth
    }

    fn bytes(&self) -> usize {
        self.weight_bytes() + 16 * self.units
    }

    /// Where the weight from input `i` into unit `o` is stored.
    fn weight_index(&self, o: usize, i: usize) -> usize {
        o / 2 * 2 * self.depth + i / 8 * 16 + o % 2 * 8 + i % 8
    }
}

/// Bytes of the scales section of an int8 file with `hidden` hidden layers: the input scale
/// and zero point, each hidden layer's activation scale and zero point, the logits'.
const fn params_len(hidden: usize) -> usize {
    8 + 8 * hidden + 8
}

/// Each layer's sections and the int8 payload's length (the widths of a version 2 file
/// excluded); `None` when it would not fit.
fn int8_layout(shape: Shape) -> Option<(heapless::Vec<LayerLayout, MAX_LAYERS>, usize)> {
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

/// Quantises `model` with `calibration` and writes the int8 model file into `out`; returns the
/// bytes written ([`encoded_len`]). `dataset` goes into the header as in [`crate::format`].
pub fn encode<const I: usize, const H: usize, const O: usize>(
    model: &Mlp<I, H, O>,
    calibration: &Calibration,
    dataset: u8,
    out: &mut [u8],
) -> Result<usize, FormatError> {
    encode_layers(&model.layers(), calibration, dataset, out)
}

/// [`encode`] for any network.
pub fn encode_layers(
    net: &Layers<&[f32]>,
    calibration: &Calibration,
    dataset: u8,
    out: &mut [u8],
) -> Result<usize, FormatError> {
    let shape = net.shape();
    let (layouts, payload_len) = int8_layout(shape).ok_or(FormatError::TooLarge)?;
    let header = Header::new(Dtype::Int8, shape, dataset);
    let header = Header {
        payload_len: header.widths_len() + payload_len,
        ..header
    };
    let total = HEADER_LEN + header.payload_len + 4;
    if out.len() < total {
        return Err(FormatError::BufferTooSmall {
            needed: total,
            got: out.len(),
        });
    }
    header.write(out);

    let hidden = shape.hidden().len();
    // The scale of each layer's input: the pixels', then each hidden layer's activations;
    // the logits' last.
    let mut scales: heapless::Vec<f32, { MAX_LAYERS + 1 }> = heapless::Vec::new();
    let _ = scales.push(INPUT_SCALE);
    for l in 0..hidden {
        let _ = scales.push(calibration.activation_scale(l));
    }
    let _ = scales.push(calibration.logit_scale());
    let start = HEADER_LEN + header.widths_len();
    let payload = &mut out[start..start + payload_len];
    let (params, mut rest) = payload.split_at_mut(params_len(hidden));
    for (l, &scale) in scales.iter().enumerate() {
        LittleEndian::write_f32(&mut params[8 * l..8 * l + 4], scale);
        let zero_point = if l < scales.len() - 1 {
            ZERO_POINT
        } else {
            calibration.logit_zero_point()
        };
        LittleEndian::write_i32(&mut params[8 * l + 4..8 * l + 8], zero_point);
    }
    for (l, layout) in layouts.iter().enumerate() {
        let (bytes, tail) = rest.split_at_mut(layout.bytes());
        rest = tail;
        quantise_layer(
            net.weights(l),
            net.bias(l),
            scales[l],
            scales[l + 1],
            *layout,
            bytes,
        );
    }
    let end = HEADER_LEN + header.payload_len;
    let crc = crc32(&out[..end]);
    LittleEndian::write_u32(&mut out[end..end + 4], crc);
    Ok(total)
}

/// Writes one layer's sections: int8 weights in the pair-interleaved transposed layout, then
/// per-unit scale, bias, multiplier and shift. `out_scale` is the scale of what the layer's
/// requantisation produces (hidden activations or logits).
fn quantise_layer(
    weights: &[f32],
    bias: &[f32],
    in_scale: f32,
    out_scale: f32,
    layout: LayerLayout,
    out: &mut [u8],
) {
    let (w_bytes, rest) = out.split_at_mut(layout.weight_bytes());
    let n = 4 * layout.units;
    let (scales, rest) = rest.split_at_mut(n);
    let (biases, rest) = rest.split_at_mut(n);
    let (multipliers, shifts) = rest.split_at_mut(n);
    // Padding (inputs beyond IN, a unit beyond OUT) stays zero: it adds nothing to any sum.
    w_bytes.fill(0);
    for t in [&mut *biases, &mut *multipliers, &mut *shifts] {
        t.fill(0);
    }
    for s in scales.chunks_exact_mut(4) {
        LittleEndian::write_f32(s, 1.0);
    }
    let outputs = bias.len();
    for o in 0..outputs {
        let column = || weights.iter().skip(o).step_by(outputs);
        let max = column().fold(0.0f32, |m, w| m.max(w.abs()));
        let scale = if max.is_finite() && max > 0.0 {
            max / 127.0
        } else {
            1.0
        };
        for (i, w) in column().enumerate() {
            let q = libm::roundf(w / scale).clamp(-127.0, 127.0) as i8;
            w_bytes[layout.weight_index(o, i)] = q as u8;
        }
        let acc_scale = f64::from(in_scale) * f64::from(scale);
        let q_bias = libm::round(f64::from(bias[o]) / acc_scale)
            .clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32;
        let (multiplier, shift) = quantize_multiplier(acc_scale / f64::from(out_scale));
        LittleEndian::write_f32(&mut scales[4 * o..4 * o + 4], scale);
        LittleEndian::write_i32(&mut biases[4 * o..4 * o + 4], q_bias);
        LittleEndian::write_i32(&mut multipliers[4 * o..4 * o + 4], multiplier);
        LittleEndian::write_i32(&mut shifts[4 * o..4 * o + 4], shift);
    }
}

/// The int8 weights of a layer, four to a 32-bit word (little-endian, as in the file).
#[derive(Clone, Copy, Debug)]
enum WeightWords<'a> {
    /// 4-byte aligned in memory: read as `u32`, so the compiler can pair loads (LDRD).
    Aligned(&'a [u32]),
    /// Anywhere else: read bytewise, same values.
    Bytes(&'a [[u8; 4]]),
}

impl<'a> WeightWords<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        // SAFETY: every bit pattern is a valid u32; `align_to` puts only whole, aligned words in
        // the middle slice, used only when nothing is left over. Native words equal the file's
        // little-endian ones only on little-endian targets.
        let (head, words, tail) = unsafe { bytes.align_to::<u32>() };
        if cfg!(target_endian = "little") && head.is_empty() && tail.is_empty() {
            WeightWords::Aligned(words)
        } else {
            WeightWords::Bytes(bytes.as_chunks::<4>().0)
        }
    }
}

/// One int8 layer borrowed from the file.
#[derive(Clone, Copy, Debug)]
struct Int8Layer<'a> {
    layout: LayerLayout,
    rounding: Rounding,
    weights: &'a [u8],
    words: WeightWords<'a>,
    scales: &'a [u8],
    bias: &'a [u8],
    multiplier: &'a [u8],
    shift: &'a [u8],
}

impl<'a> Int8Layer<'a> {
    fn split(bytes: &'a [u8], layout: LayerLayout) -> Self {
        let n = 4 * layout.units;
        let (weights, rest) = bytes.split_at(layout.weight_bytes());
        let (scales, rest) = rest.split_at(n);
        let (bias, rest) = rest.split_at(n);
        let (multiplier, shift) = rest.split_at(n);
        Self {
            layout,
            rounding: Rounding::default(),
            weights,
            words: WeightWords::new(weights),
            scales,
            bias,
            multiplier,
            shift: &shift[..n],
        }
    }

    #[inline(always)]
    fn bias(&self, o: usize) -> i32 {
        LittleEndian::read_i32(&self.bias[4 * o..])
    }

    #[inline(always)]
    fn requantize(&self, o: usize, acc: i32) -> i32 {
        self.rounding.apply(
            acc,
            LittleEndian::read_i32(&self.multiplier[4 * o..]),
            LittleEndian::read_i32(&self.shift[4 * o..]),
        )
    }

    /// Requantised outputs of every stored unit for the packed input `x`, passed to `emit`
    /// four units at a time with the first unit's index (a last pair padded with zeros).
    #[inline(always)]
    fn for_each_group(&self, x: &[u32], mut emit: impl FnMut(usize, [i32; 4])) {
        match self.words {
            WeightWords::Aligned(w) => self.groups(w, x, &mut emit),
            WeightWords::Bytes(w) => self.groups(w, x, &mut emit),
        }
    }

    #[inline(always)]
    fn groups<W: kernel::Word>(&self, w: &[W], x: &[u32], emit: &mut impl FnMut(usize, [i32; 4])) {
        let pair = self.layout.depth / 2;
        // Per-unit parameters four at a time, zipped with the weights: no index checks.
        let params = self.bias.as_chunks::<16>().0.iter().zip(
            self.multiplier
                .as_chunks::<16>()
                .0
                .iter()
                .zip(self.shift.as_chunks::<16>().0),
        );
        let mut o = 0;
        for (g, (bias, (multiplier, shift))) in params.enumerate() {
            // Two pairs of units; empty when the layer has no inputs.
            let w4 = w.get(2 * g * pair..2 * (g + 1) * pair).unwrap_or(&[]);
            let (p0, p1) = w4.split_at(w4.len() / 2);
            let [b0, b1, b2, b3] = le_i32x4(bias);
            let [a0, a1] = kernel::dot_pair(p0, x, [b0, b1]);
            let [a2, a3] = kernel::dot_pair(p1, x, [b2, b3]);
            let (m, s, r) = (le_i32x4(multiplier), le_i32x4(shift), self.rounding);
            emit(
                o,
                [
                    r.apply(a0, m[0], s[0]),
                    r.apply(a1, m[1], s[1]),
                    r.apply(a2, m[2], s[2]),
                    r.apply(a3, m[3], s[3]),
                ],
            );
            o += 4;
        }
        // Units come in pairs, so at most one pair is left.
        if o < self.layout.units {
            let p = w.get(o / 2 * pair..(o / 2 + 1) * pair).unwrap_or(&[]);
            let [a0, a1] = kernel::dot_pair(p, x, [self.bias(o), self.bias(o + 1)]);
            emit(
                o,
                [self.requantize(o, a0), self.requantize(o + 1, a1), 0, 0],
            );
        }
    }
}

/// Four little-endian `i32`s.
#[inline(always)]
fn le_i32x4(b: &[u8; 16]) -> [i32; 4] {
    core::array::from_fn(|i| LittleEndian::read_i32(&b[4 * i..4 * i + 4]))
}

/// A checked int8 model file borrowed from memory (flash): weights are read in place.
#[derive(Clone, Debug)]
pub struct Int8View<'a> {
    header: Header,
    /// The scale of each hidden layer's activations (zero point [`ZERO_POINT`]).
    activation_scales: heapless::Vec<f32, MAX_HIDDEN_LAYERS>,
    logit_scale: f32,
    logit_zero_point: i32,
    layers: heapless::Vec<Int8Layer<'a>, MAX_LAYERS>,
}

impl<'a> Int8View<'a> {
    /// Checks the file (magic, version, CRC via [`ModelView::parse`]), that it is int8, and
    /// that its payload has exactly the int8 layout's length; borrows the sections.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, FormatError> {
        Self::new(&ModelView::parse(bytes)?)
    }

    /// The int8 view of an already checked file.
    pub fn new(view: &ModelView<'a>) -> Result<Self, FormatError> {
        let header = *view.header();
        if header.dtype != Dtype::Int8 {
            return Err(FormatError::WrongDtype(header.dtype));
        }
        let (layouts, expected) = int8_layout(header.shape).ok_or(FormatError::TooLarge)?;
        let payload = &view.payload()[header.widths_len()..];
        if payload.len() != expected {
            return Err(FormatError::LengthMismatch {
                declared: payload.len(),
                expected,
            });
        }
        let hidden = header.shape.hidden().len();
        let (params, mut rest) = payload.split_at(params_len(hidden));
        let scale = |l: usize| LittleEndian::read_f32(&params[8 * l..8 * l + 4]);
        let mut layers = heapless::Vec::new();
        for layout in layouts {
            let (bytes, tail) = rest.split_at(layout.bytes());
            rest = tail;
            // As many as `int8_layout` made: within the capacity.
            let _ = layers.push(Int8Layer::split(bytes, layout));
        }
        Ok(Self {
            header,
            activation_scales: (1..=hidden).map(scale).collect(),
            logit_scale: scale(hidden + 1),
            // A crafted zero point outside int8 would only move every logit to a bound.
            logit_zero_point: LittleEndian::read_i32(&params[8 * hidden + 12..]),
            layers,
        })
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The layers.
    pub fn shape(&self) -> Shape {
        self.header.shape
    }

    /// Scale of the first hidden layer's activations (zero point [`ZERO_POINT`]).
    pub fn hidden_scale(&self) -> f32 {
        self.activation_scales[0]
    }

    /// Real value of one step of the int8 logits [`Int8View::predict`] writes.
    pub fn logit_scale(&self) -> f32 {
        self.logit_scale
    }

    /// The int8 logit that stands for zero: a logit `q` is `(q - zero point) * scale`.
    pub fn logit_zero_point(&self) -> i32 {
        self.logit_zero_point
    }

    /// The same view computing as a runtime that rounds by `rounding` does (the default is
    /// [`Rounding::Double`], TensorFlow Lite Micro's).
    pub fn with_rounding(mut self, rounding: Rounding) -> Self {
        for layer in self.layers.iter_mut() {
            layer.rounding = rounding;
        }
        self
    }

    /// Scale of hidden layer `l`'s int8 activations (zero point [`ZERO_POINT`]).
    ///
    /// # Panics
    /// If there is no hidden layer `l`.
    pub fn activation_scale(&self, l: usize) -> f32 {
        self.activation_scales[l]
    }

    /// The int32 bias of unit `o` of layer `layer` (at the scale of its accumulator: the
    /// layer's input scale times the unit's weight scale).
    ///
    /// # Panics
    /// If the layer or unit does not exist.
    pub fn bias(&self, layer: usize, o: usize) -> i32 {
        self.layers[layer].bias(o)
    }

    /// The requantisation multiplier (Q31) and shift of unit `o` of layer `layer`, as
    /// [`quantize_multiplier`] made them.
    ///
    /// # Panics
    /// If the layer or unit does not exist.
    pub fn requantisation(&self, layer: usize, o: usize) -> (i32, i32) {
        let l = &self.layers[layer];
        (
            LittleEndian::read_i32(&l.multiplier[4 * o..]),
            LittleEndian::read_i32(&l.shift[4 * o..]),
        )
    }

    /// Scale of the int8 weights into unit `o` of layer `layer` (the head is the last).
    ///
    /// # Panics
    /// If the layer or unit does not exist.
    pub fn weight_scale(&self, layer: usize, o: usize) -> f32 {
        let l = &self.layers[layer];
        LittleEndian::read_f32(&l.scales[4 * o..4 * o + 4])
    }

    /// The int8 weights into unit `o` of layer `layer` in input order, zero-padded to a
    /// multiple of 8.
    ///
    /// # Panics
    /// If the layer or unit does not exist.
    pub fn weights(&self, layer: usize, o: usize) -> impl Iterator<Item = i8> + 'a {
        let l = &self.layers[layer];
        let depth = l.layout.depth;
        let half = 8 * (o % 2);
        l.weights[o / 2 * 2 * depth..(o / 2 + 1) * 2 * depth]
            .chunks_exact(16)
            .flat_map(move |block| &block[half..half + 8])
            .map(|&b| b as i8)
    }

    /// Words of scratch [`Int8View::predict`] needs: the input and hidden activations packed
    /// as 16-bit pairs (2.6 KB for the MNIST network), two buffers of activations taking turns
    /// where there is more than one hidden layer.
    pub fn scratch_words(&self) -> usize {
        let inputs = self.layers[0].layout.depth / 2;
        let (activations, buffers) = self.activation_words();
        inputs + buffers * activations
    }

    /// Words of the widest activation buffer, and how many buffers take turns.
    fn activation_words(&self) -> (usize, usize) {
        let widest = self.layers[1..].iter().map(|l| l.layout.depth / 2).max();
        (widest.unwrap_or(0), (self.layers.len() - 1).min(2))
    }

    /// Classifies one image of `u8` pixels: writes the int8 logits (as `i32`, in -128..=127;
    /// scale [`Int8View::logit_scale`], zero point [`Int8View::logit_zero_point`]) and returns
    /// the arg-max (the first on ties). Integer arithmetic only, so every target computes the
    /// same bits, and they are those of TFLite's FULLY_CONNECTED int8 kernels.
    ///
    /// # Panics
    /// If `pixels` is not one image, `scratch` is shorter than [`Int8View::scratch_words`] or
    /// `logits` shorter than the outputs.
    pub fn predict(&self, pixels: &[u8], scratch: &mut [u32], logits: &mut [i32]) -> usize {
        let (inputs, outputs) = (self.shape().inputs(), self.shape().classes());
        assert_eq!(
            pixels.len(),
            inputs,
            "one image of {inputs} pixels expected"
        );
        assert!(
            scratch.len() >= self.scratch_words(),
            "scratch of {} words, {} needed",
            scratch.len(),
            self.scratch_words()
        );
        assert!(logits.len() >= outputs, "logits shorter than {outputs}");
        let (x, rest) = scratch.split_at_mut(self.layers[0].layout.depth / 2);
        let (words, _) = self.activation_words();
        let (a, b) = rest.split_at_mut(words);
        pack_pixels(pixels, x);

        // Each hidden layer from the previous one's packed activations into the other buffer.
        let (last, hidden) = self.layers.split_last().expect("a head");
        for (l, layer) in hidden.iter().enumerate() {
            let out_words = self.layers[l + 1].layout.depth / 2;
            match l % 2 {
                _ if l == 0 => requantise(layer, x, &mut a[..out_words]),
                1 => requantise(layer, a, &mut b[..out_words]),
                _ => requantise(layer, b, &mut a[..out_words]),
            }
        }
        let top = if hidden.len() % 2 == 1 { &*a } else { &*b };

        let logits = &mut logits[..outputs];
        let zero_point = self.logit_zero_point;
        last.for_each_group(&top[..last.layout.depth / 2], |o, v| {
            for (z, v) in logits[o..].iter_mut().zip(v) {
                *z = v.saturating_add(zero_point).clamp(-128, 127);
            }
        });
        argmax(logits)
    }
}

/// A hidden layer: requantise to the activation's int8 range; the lower clamp at the zero
/// point is the ReLU. Activations are kept as `q - zero_point` in 0..=255 and packed like the
/// pixels: units 4g..4g+3 in words 2g (units 4g, 4g+2) and 2g+1 (4g+1, 4g+3).
#[inline(always)]
fn requantise(layer: &Int8Layer, x: &[u32], h: &mut [u32]) {
    let (packed, _) = h.as_chunks_mut::<2>();
    let written = layer.layout.units.div_ceil(4);
    let written = written.min(packed.len());
    packed[written..].fill([0; 2]);
    layer.for_each_group(&x[..layer.layout.depth / 2], |o, v| {
        let v = v.map(|v| v.clamp(0, 255) as u32);
        if let Some(words) = packed.get_mut(o / 4) {
            *words = [v[0] | v[2] << 16, v[1] | v[3] << 16];
        }
    });
}

/// Words of scratch the int8 inference of an `inputs`-`hidden` network needs.
pub const fn scratch_words(inputs: usize, hidden: usize) -> usize {
    (inputs.next_multiple_of(8) + hidden.next_multiple_of(8)) / 2
}

/// Packs pixels (`q - zero_point`, 0..=255) as the kernel reads them: for every 4 inputs,
/// one word with inputs 0 and 2 in its 16-bit halves and one with 1 and 3.
fn pack_pixels(pixels: &[u8], x: &mut [u32]) {
    let (chunks, tail) = pixels.as_chunks::<4>();
    let mut words = x.as_chunks_mut::<2>().0.iter_mut();
    for (c, w) in chunks.iter().zip(words.by_ref()) {
        *w = spread(u32::from_le_bytes(*c));
    }
    let mut last = [0u8; 4];
    last[..tail.len()].copy_from_slice(tail);
    for w in words {
        *w = spread(u32::from_le_bytes(last));
        last = [0; 4];
    }
}

/// Bytes `b0 b1 b2 b3` to the pair words `(b0, b2)` and `(b1, b3)` (UXTB16 on Cortex-M4).
#[inline(always)]
fn spread(w: u32) -> [u32; 2] {
    [w & 0x00FF_00FF, (w >> 8) & 0x00FF_00FF]
}

/// The int8 dot products: four weights (one word) against two packed input words at a time.
///
/// The arithmetic is that of the Cortex-M4 `SMLAD` instruction (two signed 16x16 products added
/// to a 32-bit accumulator, wrapping); the portable version computes the same bits.
mod kernel {
    /// Four int8 weights as one word: bytes in file order, `w0` lowest.
    pub(super) trait Word: Copy {
        /// Whether slices of this type are 4-byte aligned (what LDRD needs).
        #[cfg_attr(not(all(feature = "dsp", target_arch = "arm")), allow(dead_code))]
        const ALIGNED: bool;
        fn get(self) -> u32;
    }

    impl Word for u32 {
        const ALIGNED: bool = true;
        #[inline(always)]
        fn get(self) -> u32 {
            self
        }
    }

    impl Word for [u8; 4] {
        const ALIGNED: bool = false;
        #[inline(always)]
        fn get(self) -> u32 {
            u32::from_le_bytes(self)
        }
    }

    /// `bias + Σ x[i] * w[i]` for a pair of units whose weights `pair` holds in the file's
    /// layout: per 8 inputs, two words of the first unit then two of the second.
    #[inline(always)]
    pub(super) fn dot_pair<W: Word>(pair: &[W], x: &[u32], bias: [i32; 2]) -> [i32; 2] {
        #[cfg(all(feature = "dsp", target_arch = "arm"))]
        if W::ALIGNED {
            let steps = (pair.len() / 4).min(x.len() / 4);
            // SAFETY: `W::ALIGNED` holds only for `u32`, so the words are 4-byte aligned;
            // `steps` blocks of 4 words exist in both slices.
            return unsafe { dot_pair_m4(pair.as_ptr().cast(), x.as_ptr(), steps, bias) };
        }
        let [mut a0, mut a1] = bias;
        for (w, xs) in pair.as_chunks::<4>().0.iter().zip(x.as_chunks::<4>().0) {
            let [xa, xb, xc, xd] = *xs;
            a0 = mac4(mac4(a0, w[0].get(), xa, xb), w[1].get(), xc, xd);
            a1 = mac4(mac4(a1, w[2].get(), xa, xb), w[3].get(), xc, xd);
        }
        [a0, a1]
    }

    /// [`dot_pair`] as one Cortex-M4 loop, 21 instructions per 16 multiply-adds: LDM of four
    /// input words, LDRD of each unit's eight weights, SXTB16 and SMLAD. (The compiler's own
    /// schedule of the same operations spills registers and takes 28.)
    ///
    /// # Safety
    /// `w` and `x` are 4-byte aligned and `steps * 4` words are readable from each.
    #[cfg(all(feature = "dsp", target_arch = "arm"))]
    #[inline(always)]
    unsafe fn dot_pair_m4(w: *const u32, x: *const u32, steps: usize, bias: [i32; 2]) -> [i32; 2] {
        let [mut a0, mut a1] = bias;
        if steps == 0 {
            return [a0, a1];
        }
        // SAFETY: the caller guarantees the reads; pointer and counter registers are scratch
        // copies; no stack use; the input words (r0-r3) and temporaries are declared clobbered.
        unsafe {
            core::arch::asm!(
                "2:",
                "ldm {x}!, {{r0, r1, r2, r3}}",
                "ldrd {w0}, {w1}, [{w}], #8",
                "sxtb16 {t}, {w0}",
                "smlad {a0}, r0, {t}, {a0}",
                "sxtb16 {w0}, {w0}, ror #8",
                "smlad {a0}, r1, {w0}, {a0}",
                "sxtb16 {t}, {w1}",
                "smlad {a0}, r2, {t}, {a0}",
                "sxtb16 {w1}, {w1}, ror #8",
                "smlad {a0}, r3, {w1}, {a0}",
                "ldrd {w0}, {w1}, [{w}], #8",
                "sxtb16 {t}, {w0}",
                "smlad {a1}, r0, {t}, {a1}",
                "sxtb16 {w0}, {w0}, ror #8",
                "smlad {a1}, r1, {w0}, {a1}",
                "sxtb16 {t}, {w1}",
                "smlad {a1}, r2, {t}, {a1}",
                "sxtb16 {w1}, {w1}, ror #8",
                "smlad {a1}, r3, {w1}, {a1}",
                "subs {n}, {n}, #1",
                "bne 2b",
                x = inout(reg) x => _,
                w = inout(reg) w => _,
                n = inout(reg) steps => _,
                a0 = inout(reg) a0,
                a1 = inout(reg) a1,
                w0 = out(reg) _,
                w1 = out(reg) _,
                t = out(reg) _,
                out("r0") _,
                out("r1") _,
                out("r2") _,
                out("r3") _,
                options(nostack, readonly),
            );
        }
        [a0, a1]
    }

    /// `acc + x0*w0 + x2*w2 + x1*w1 + x3*w3` where `w` holds int8 weights `w0..w3` and
    /// `xa = (x0, x2)`, `xb = (x1, x3)` hold 16-bit inputs.
    #[cfg(not(all(feature = "dsp", target_arch = "arm")))]
    #[inline(always)]
    fn mac4(acc: i32, w: u32, xa: u32, xb: u32) -> i32 {
        let [w0, w1, w2, w3] = w.to_le_bytes().map(|b| i32::from(b as i8));
        let lo = |v: u32| i32::from(v as i16);
        let hi = |v: u32| i32::from((v >> 16) as i16);
        acc.wrapping_add(lo(xa) * w0 + hi(xa) * w2)
            .wrapping_add(lo(xb) * w1 + hi(xb) * w3)
    }

    /// As the portable `mac4`, with `SXTB16` splitting the weight word into the two 16-bit
    /// pairs and `SMLAD` doing two multiply-adds each (the intrinsics are unstable; LLVM does
    /// not form `SXTB16` from plain code).
    #[cfg(all(feature = "dsp", target_arch = "arm"))]
    #[inline(always)]
    fn mac4(acc: i32, w: u32, xa: u32, xb: u32) -> i32 {
        smlad(xb, sxtb16_ror8(w), smlad(xa, sxtb16(w), acc))
    }

    // One instruction per asm block so that LLVM schedules and allocates freely.
    // SAFETY (all three): register-only DSP instructions, which the `dsp` feature promises the
    // CPU has; no memory, stack or condition flags touched.

    /// Bytes 0 and 2 of `w`, sign-extended into the two 16-bit halves.
    #[cfg(all(feature = "dsp", target_arch = "arm"))]
    #[inline(always)]
    fn sxtb16(w: u32) -> u32 {
        let r: u32;
        unsafe {
            core::arch::asm!("sxtb16 {r}, {w}", w = in(reg) w, r = lateout(reg) r,
                options(pure, nomem, nostack, preserves_flags));
        }
        r
    }

    /// Bytes 1 and 3 of `w`, sign-extended into the two 16-bit halves.
    #[cfg(all(feature = "dsp", target_arch = "arm"))]
    #[inline(always)]
    fn sxtb16_ror8(w: u32) -> u32 {
        let r: u32;
        unsafe {
            core::arch::asm!("sxtb16 {r}, {w}, ror #8", w = in(reg) w, r = lateout(reg) r,
                options(pure, nomem, nostack, preserves_flags));
        }
        r
    }

    /// `acc + lo(x) * lo(y) + hi(x) * hi(y)` on signed 16-bit halves, wrapping.
    #[cfg(all(feature = "dsp", target_arch = "arm"))]
    #[inline(always)]
    fn smlad(x: u32, y: u32, acc: i32) -> i32 {
        let r: i32;
        // Not `preserves_flags`: on overflow SMLAD sets the sticky Q flag (nothing reads it).
        unsafe {
            core::arch::asm!("smlad {r}, {x}, {y}, {a}", x = in(reg) x, y = in(reg) y,
                a = in(reg) acc, r = lateout(reg) r, options(pure, nomem, nostack));
        }
        r
    }
}

/// One f32 weight matrix read in place: as `&[f32]` when the bytes are 4-byte aligned (so the
/// compiler may use wide loads), otherwise through [`F32Le`]. Both give the same values.
#[derive(Clone, Copy, Debug)]
enum F32Matrix<'a> {
    Aligned(&'a [f32]),
    Bytes(F32Le<'a>),
}

impl<'a> F32Matrix<'a> {
    fn new(t: F32Le<'a>) -> Self {
        let bytes = t.bytes();
        // SAFETY: every bit pattern is a valid f32; `align_to` puts only whole, aligned f32
        // values in the middle slice, and we use it only when nothing is left over. The
        // little-endian file matches the in-memory layout only on little-endian targets.
        let (head, mid, tail) = unsafe { bytes.align_to::<f32>() };
        if cfg!(target_endian = "little") && head.is_empty() && tail.is_empty() {
            F32Matrix::Aligned(mid)
        } else {
            F32Matrix::Bytes(t)
        }
    }
}

/// A checked f32 model file borrowed from memory (flash), for inference without copying it.
#[derive(Clone, Copy, Debug)]
pub struct F32View<'a> {
    sizes: [usize; 3],
    hidden_weights: F32Matrix<'a>,
    hidden_bias: F32Le<'a>,
    output_weights: F32Matrix<'a>,
    output_bias: F32Le<'a>,
}

impl<'a> F32View<'a> {
    /// Checks the file ([`ModelView::parse`]) and that it is f32.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, FormatError> {
        Self::new(&ModelView::parse(bytes)?)
    }

    /// The f32 inference view of an already checked file.
    pub fn new(view: &ModelView<'a>) -> Result<Self, FormatError> {
        let shape = view.header().shape;
        let (Some(sizes), &[w1, b1, w2, b2]) = (view.header().sizes(), &*view.f32_tensors()?)
        else {
            return Err(FormatError::OneHiddenLayerOnly(shape));
        };
        Ok(Self {
            sizes,
            hidden_weights: F32Matrix::new(w1),
            hidden_bias: b1,
            output_weights: F32Matrix::new(w2),
            output_bias: b2,
        })
    }

    /// Inputs, hidden units, outputs.
    pub fn sizes(&self) -> [usize; 3] {
        self.sizes
    }

    /// True when the weights are read as aligned `f32` slices (the fast path).
    pub fn is_aligned(&self) -> bool {
        matches!(
            (self.hidden_weights, self.output_weights),
            (F32Matrix::Aligned(_), F32Matrix::Aligned(_))
        )
    }

    /// Classifies one input (pixels as [`unit_pixel`]): fills `hidden` and `logits` and returns
    /// the arg-max (the first on ties).
    ///
    /// Each sum runs over the inputs in order from 0.0, then adds the bias, with a separate
    /// multiply and add: the bits of [`Mlp::forward`] with [`crate::Kernel::NAIVE`] on any IEEE
    /// target. The blocked and FMA kernels sum in another order, so they can differ in the last
    /// bits (and, on a near tie, in the class).
    ///
    /// # Panics
    /// If `input`, `hidden` or `logits` is shorter than the model's layer.
    pub fn predict(&self, input: &[f32], hidden: &mut [f32], logits: &mut [f32]) -> usize {
        let [i, h, o] = self.sizes;
        let hidden = &mut hidden[..h];
        let logits = &mut logits[..o];
        dense_f32(
            &self.hidden_weights,
            &input[..i],
            self.hidden_bias,
            hidden,
            true,
        );
        dense_f32(
            &self.output_weights,
            hidden,
            self.output_bias,
            logits,
            false,
        );
        argmax(logits)
    }
}

/// Classifies `input` with the f32 model in `view`, reading the weights in place; see
/// [`F32View::predict`]. Fails if the file is not f32.
pub fn predict_f32(
    view: &ModelView,
    input: &[f32],
    hidden: &mut [f32],
    logits: &mut [f32],
) -> Result<usize, FormatError> {
    Ok(F32View::new(view)?.predict(input, hidden, logits))
}

/// `out = act(input · W + bias)` for `W` stored `input.len() x out.len()` row-major, a register
/// tile of output columns at a time.
fn dense_f32(w: &F32Matrix, input: &[f32], bias: F32Le, out: &mut [f32], relu: bool) {
    let cols = out.len();
    let mut o = 0;
    while o < cols {
        let left = cols - o;
        let n = if left >= 8 {
            tile_f32::<8>(w, input, cols, o, &mut out[o..])
        } else if left >= 4 {
            tile_f32::<4>(w, input, cols, o, &mut out[o..])
        } else {
            tile_f32::<1>(w, input, cols, o, &mut out[o..])
        };
        for (t, v) in out[o..o + n].iter_mut().enumerate() {
            let z = *v + bias.get(o + t);
            // The kernels' epilogue: NaN and -0.0 become 0.0 too.
            *v = if relu { crate::kernels::relu(z) } else { z };
        }
        o += n;
    }
}

/// `N` output columns from `o` of `input · W`, each summed in input order from 0.0.
#[inline(always)]
fn tile_f32<const N: usize>(
    w: &F32Matrix,
    input: &[f32],
    cols: usize,
    o: usize,
    out: &mut [f32],
) -> usize {
    let mut acc = [0.0f32; N];
    match *w {
        F32Matrix::Aligned(s) => {
            // Whole rows of W (each `cols` long, so the column check is loop-invariant).
            for (row, &x) in s.chunks_exact(cols).zip(input) {
                if let Some(row) = row.get(o..).and_then(|r| r.first_chunk::<N>()) {
                    for (a, &v) in acc.iter_mut().zip(row) {
                        *a += x * v;
                    }
                }
            }
        }
        F32Matrix::Bytes(b) => {
            for (i, &x) in input.iter().enumerate() {
                for (t, a) in acc.iter_mut().enumerate() {
                    *a += x * b.get(i * cols + o + t);
                }
            }
        }
    }
    out[..N].copy_from_slice(&acc);
    N
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format;
    use crate::kernels::{Kernel, Scratch, Serial};
    use crate::optim::RmsProp;
    use crate::{Compute, Workspace};
    use crate::{zeroed_box, zeroed_slice};
    use rand_core::{Rng, SeedableRng};
    use rand_xorshift::XorShiftRng;
    use std::boxed::Box;
    use std::vec;
    use std::vec::Vec;

    const I: usize = 50;
    const H: usize = 30;
    const O: usize = 6;
    type Net = Mlp<I, H, O>;

    /// Images of class `c` are brighter on the `c`-th band of inputs, noise elsewhere.
    fn synthetic(seed: u64, rows: usize) -> (Vec<[u8; I]>, Vec<u8>) {
        let mut rng = XorShiftRng::seed_from_u64(seed);
        let mut images = Vec::new();
        let mut labels = Vec::new();
        for _ in 0..rows {
            let label = (rng.next_u32() % O as u32) as usize;
            // Heavy noise, so that some images are ambiguous and the two paths can disagree.
            let image = core::array::from_fn(|i| {
                let noise = (rng.next_u32() % 200) as u8;
                if i * O / I == label {
                    55 + noise
                } else if rng.next_u32() % 2 == 0 {
                    noise
                } else {
                    0
                }
            });
            images.push(image);
            labels.push(label as u8);
        }
        (images, labels)
    }

    fn as_f32(images: &[[u8; I]]) -> Vec<[f32; I]> {
        images.iter().map(|im| im.map(unit_pixel)).collect()
    }

    fn trained() -> Box<Net> {
        let mut model = zeroed_box::<Net>();
        model.init_glorot(&mut XorShiftRng::seed_from_u64(3));
        let mut opt = RmsProp::<I, H, O>::new(3e-3);
        let mut ws: Box<Workspace<32, I, H, O>> = zeroed_box();
        let mut scratch = zeroed_slice::<Scratch>(1);
        let mut compute = Compute::new(Kernel::PORTABLE, &Serial, &mut scratch);
        let (images, labels) = synthetic(1, 320);
        let images = as_f32(&images);
        for _ in 0..5 {
            for (x, y) in images.chunks(32).zip(labels.chunks(32)) {
                let batch = crate::Batch::new(x.as_flattened(), y);
                model.train_step(&mut opt, batch, None, &mut ws, &mut compute);
            }
        }
        model
    }

    fn int8_file(model: &Net, calibration: &[[u8; I]]) -> Vec<u8> {
        let cal = Calibration::from_images(model, calibration);
        let mut buf = vec![0u8; encoded_len::<I, H, O>()];
        assert_eq!(encode(model, &cal, 1, &mut buf), Ok(buf.len()));
        buf
    }

    fn f32_file(model: &Net) -> Vec<u8> {
        let sections = format::Sections {
            dataset: 1,
            ..Default::default()
        };
        let mut buf = vec![0u8; format::encoded_len(Net::shape(), &sections)];
        format::encode(&model.layers(), &sections, &mut buf).unwrap();
        buf
    }

    #[test]
    fn encoded_len_matches_layout() {
        let (_, payload) = int8_layout(Net::shape()).unwrap();
        assert_eq!(encoded_len::<I, H, O>(), HEADER_LEN + payload + 4);
        let (_, payload) = int8_layout(Mlp::<784, 512, 10>::shape()).unwrap();
        assert_eq!(encoded_len::<784, 512, 10>(), HEADER_LEN + payload + 4);
        // 401 KB of weights plus per-unit parameters: fits a 512 KB flash budget.
        assert!(encoded_len::<784, 512, 10>() < 415_000);
    }

    #[test]
    fn round_trip_encode_parse() {
        let model = trained();
        let (cal_images, _) = synthetic(2, 64);
        let bytes = int8_file(&model, &cal_images);
        let view = Int8View::parse(&bytes).unwrap();
        assert_eq!(view.shape(), Net::shape());
        assert_eq!(view.header().dtype, Dtype::Int8);
        assert_eq!(view.header().dataset, 1);
        let cal = Calibration::from_images(&*model, &cal_images);
        assert_eq!(view.hidden_scale(), cal.hidden_scale());
        assert_eq!(view.logit_scale(), cal.logit_scale());
        // Dequantised weights are within half a step of the originals; padding is zero.
        for o in 0..H {
            let s = view.weight_scale(0, o);
            let q: Vec<i8> = view.weights(0, o).collect();
            assert_eq!(q.len(), I.next_multiple_of(8));
            assert!(q[I..].iter().all(|&v| v == 0));
            assert!(
                q.iter().any(|&v| v.unsigned_abs() == 127),
                "scale from the max"
            );
            for (i, &qv) in q[..I].iter().enumerate() {
                let w = model.hidden.weights[i][o];
                assert!((f32::from(qv) * s - w).abs() <= 0.5 * s + 1e-7);
            }
        }
        for o in 0..O {
            let s = view.weight_scale(1, o);
            for (j, qv) in view.weights(1, o).take(H).enumerate() {
                assert!((f32::from(qv) * s - model.output.weights[j][o]).abs() <= 0.5 * s + 1e-7);
            }
        }
        // The buffer check, and an f32 file is not int8.
        let mut small = vec![0u8; bytes.len() - 1];
        assert!(matches!(
            encode(&*model, &cal, 0, &mut small),
            Err(FormatError::BufferTooSmall { .. })
        ));
        assert_eq!(
            Int8View::parse(&f32_file(&model)).unwrap_err(),
            FormatError::WrongDtype(Dtype::F32)
        );
        assert_eq!(
            F32View::parse(&bytes).unwrap_err(),
            FormatError::WrongDtype(Dtype::Int8)
        );
    }

    #[test]
    fn corrupted_int8_file_is_refused() {
        let model = trained();
        let bytes = int8_file(&model, &synthetic(2, 16).0);
        for byte in (0..bytes.len()).step_by(7) {
            let mut bad = bytes.clone();
            bad[byte] ^= 0x10;
            assert!(Int8View::parse(&bad).is_err(), "flip at {byte} accepted");
        }
        assert!(matches!(
            Int8View::parse(&bytes[..bytes.len() - 1]),
            Err(FormatError::Truncated { .. })
        ));
        // A size changed and the CRC recomputed: the int8 length check catches it.
        let mut lying = bytes.clone();
        LittleEndian::write_u32(&mut lying[12..16], H as u32 + 1);
        let end = lying.len() - 4;
        let crc = crc32(&lying[..end]);
        LittleEndian::write_u32(&mut lying[end..], crc);
        assert!(matches!(
            Int8View::parse(&lying),
            Err(FormatError::LengthMismatch { .. })
        ));
        lying[8..20].fill(0xFF);
        let crc = crc32(&lying[..end]);
        LittleEndian::write_u32(&mut lying[end..], crc);
        assert!(Int8View::parse(&lying).is_err());
    }

    /// The int8 semantics written out plainly, in i64, through the view's accessors.
    fn reference_int8(view: &Int8View, pixels: &[u8]) -> Vec<i32> {
        let shape = view.shape();
        let run = |index: usize, l: &Int8Layer, x: &[i64], rows: usize| -> Vec<i32> {
            (0..rows)
                .map(|o| {
                    let dot: i64 = x
                        .iter()
                        .zip(view.weights(index, o))
                        .map(|(&x, w)| x * i64::from(w))
                        .sum();
                    l.requantize(o, (dot + i64::from(l.bias(o))) as i32)
                })
                .collect()
        };
        let mut x: Vec<i64> = pixels.iter().map(|&p| i64::from(p)).collect();
        let last = shape.layers() - 1;
        for l in 0..last {
            x = run(l, &view.layers[l], &x, shape.layer(l).1)
                .iter()
                .map(|&v| i64::from(v.clamp(0, 255)))
                .collect();
        }
        run(last, &view.layers[last], &x, shape.classes())
            .iter()
            .map(|&v| (i64::from(v) + i64::from(view.logit_zero_point())).clamp(-128, 127) as i32)
            .collect()
    }

    /// A deep network's int8 file: every layer quantised, the version 2 header, predictions
    /// equal to the plain reference, classes mostly those of f32.
    #[test]
    fn deep_networks_quantise_every_layer() {
        let shape = Shape::new(I, &[24, 16, 12], O).unwrap();
        let mut flat = vec![0.0f32; shape.parameters()];
        Layers::split_mut(shape, &mut flat)
            .unwrap()
            .init_glorot(&mut XorShiftRng::seed_from_u64(8));
        let net = Layers::split(shape, &flat).unwrap();
        let (images, _) = synthetic(4, 200);
        let mut cal = Calibration::new();
        let (mut a, mut b, mut z) = ([0.0; 24], [0.0; 24], [0.0; O]);
        for image in &images[..100] {
            cal.observe_into(&net, image, [&mut a, &mut b], &mut z);
        }
        assert!(cal.hidden_max[..3].iter().all(|&m| m > 0.0), "{cal:?}");
        let mut bytes = vec![0u8; encoded_len_of(shape).unwrap()];
        assert_eq!(encode_layers(&net, &cal, 0, &mut bytes), Ok(bytes.len()));
        let view = Int8View::parse(&bytes).unwrap();
        assert_eq!((view.header().version, view.shape()), (2, shape));
        let mut scratch = vec![0u32; view.scratch_words()];
        let mut agree = 0;
        for image in &images[100..] {
            let mut logits = [0i32; O];
            let class = view.predict(image, &mut scratch, &mut logits);
            assert_eq!(logits.to_vec(), reference_int8(&view, image));
            let mut f = [0.0f32; O];
            let (mut a, mut b) = ([0.0; 24], [0.0; 24]);
            Calibration::new().observe_into(&net, image, [&mut a, &mut b], &mut f);
            agree += usize::from(class == argmax(&f));
        }
        assert!(agree >= 90, "int8 agrees with f32 on {agree}/100");
    }

    /// `bytes` copied to an address that is not 4-byte aligned.
    fn misaligned(bytes: &[u8]) -> (Vec<u8>, usize) {
        let mut buf = vec![0u8; bytes.len() + 4];
        let off = if (buf.as_ptr() as usize + 1).is_multiple_of(4) {
            2
        } else {
            1
        };
        buf[off..off + bytes.len()].copy_from_slice(bytes);
        (buf, off)
    }

    #[test]
    fn int8_matches_plain_reference_and_mostly_agrees_with_f32() {
        let model = trained();
        let (cal_images, _) = synthetic(2, 100);
        let bytes = int8_file(&model, &cal_images);
        let view = Int8View::parse(&bytes).unwrap();
        assert!(matches!(view.layers[0].words, WeightWords::Aligned(_)));
        let (shifted, off) = misaligned(&bytes);
        let unaligned_view = Int8View::parse(&shifted[off..off + bytes.len()]).unwrap();
        assert!(matches!(
            unaligned_view.layers[0].words,
            WeightWords::Bytes(_)
        ));
        let f32_bytes = f32_file(&model);
        let f32_view = F32View::parse(&f32_bytes).unwrap();
        let dequantise = |q: i32| (q - view.logit_zero_point()) as f32 * view.logit_scale();
        let (images, labels) = synthetic(9, 400);
        let mut scratch = vec![0u32; view.scratch_words()];
        let (mut agree, mut correct8, mut correct32) = (0, 0, 0);
        for (image, &label) in images.iter().zip(&labels) {
            let mut logits = [0i32; O];
            let class = view.predict(image, &mut scratch, &mut logits);
            assert_eq!(logits.to_vec(), reference_int8(&view, image));
            assert_eq!(class, argmax(&logits));
            let mut unaligned_logits = [0i32; O];
            let unaligned_class =
                unaligned_view.predict(image, &mut scratch, &mut unaligned_logits);
            assert_eq!((unaligned_class, unaligned_logits), (class, logits));
            let (mut hidden, mut z) = ([0.0; H], [0.0; O]);
            let class32 = f32_view.predict(&image.map(unit_pixel), &mut hidden, &mut z);
            // Dequantised logits track the f32 ones.
            for (&q, &f) in logits.iter().zip(&z) {
                // int8 logits saturate beyond the calibrated range.
                let real = dequantise(q);
                let f = f.clamp(dequantise(-128), dequantise(127));
                assert!((real - f).abs() < 0.1 + 0.05 * f.abs(), "{real} vs {f}");
            }
            agree += usize::from(class == class32);
            correct8 += usize::from(class == label as usize);
            correct32 += usize::from(class32 == label as usize);
        }
        assert!(agree >= 390, "int8 and f32 agree on {agree}/400");
        assert!(
            correct32 >= 360,
            "f32 model learnt the task: {correct32}/400"
        );
        assert!(correct8 + 4 >= correct32, "{correct8} vs {correct32}");
    }

    #[test]
    fn odd_sizes_pad_rows_and_tails() {
        // Inputs, hidden and outputs not multiples of 4: padding and the single-row tail.
        let mut model = Mlp::<13, 7, 3>::zeroed();
        model.init_glorot(&mut XorShiftRng::seed_from_u64(5));
        model.hidden.bias = [0.1, -0.2, 0.3, 0.0, 0.05, -0.1, 0.2];
        let mut rng = XorShiftRng::seed_from_u64(6);
        let images: Vec<[u8; 13]> = (0..40)
            .map(|_| core::array::from_fn(|_| rng.next_u32() as u8))
            .collect();
        let cal = Calibration::from_images(&model, &images);
        let mut bytes = vec![0u8; encoded_len::<13, 7, 3>()];
        encode(&model, &cal, 0, &mut bytes).unwrap();
        let view = Int8View::parse(&bytes).unwrap();
        assert_eq!(view.scratch_words(), scratch_words(13, 7));
        let single = view.clone().with_rounding(Rounding::Single);
        let dequantise = |q: i32| (q - view.logit_zero_point()) as f32 * view.logit_scale();
        let sections = format::Sections::default();
        let mut f32_bytes = vec![0u8; format::encoded_len(Mlp::<13, 7, 3>::shape(), &sections)];
        format::encode(&model.layers(), &sections, &mut f32_bytes).unwrap();
        let f32_view = F32View::parse(&f32_bytes).unwrap();
        let mut agree = 0;
        for image in &images {
            let mut scratch = vec![0u32; view.scratch_words()];
            let mut logits = [0i32; 3];
            let class = view.predict(image, &mut scratch, &mut logits);
            assert_eq!(logits.to_vec(), reference_int8(&view, image));
            let mut single_logits = [0i32; 3];
            single.predict(image, &mut scratch, &mut single_logits);
            assert_eq!(single_logits.to_vec(), reference_int8(&single, image));
            let (mut h, mut z) = ([0.0; 7], [0.0; 3]);
            let expected = f32_view.predict(&image.map(unit_pixel), &mut h, &mut z);
            agree += usize::from(class == expected);
            for (&q, &f) in logits.iter().zip(&z) {
                // int8 logits saturate beyond the calibrated range.
                let real = dequantise(q);
                let f = f.clamp(dequantise(-128), dequantise(127));
                assert!((real - f).abs() < 0.05 + 0.05 * f.abs(), "{real} vs {f}");
            }
        }
        assert!(agree >= 36, "{agree}/40");
    }

    #[test]
    fn files_declaring_empty_layers_are_refused() {
        let model = Mlp::<5, 4, 3>::zeroed();
        let cal = Calibration::from_images(&model, &[[7u8; 5]]);
        let mut good = vec![0u8; encoded_len::<5, 4, 3>()];
        encode(&model, &cal, 0, &mut good).unwrap();
        // Sizes a crafted (but checksummed) file may declare.
        for sizes in [[0u32, 4, 2], [5, 0, 3], [5, 4, 0], [0, 0, 0]] {
            let mut bytes = good.clone();
            for (i, s) in sizes.iter().enumerate() {
                LittleEndian::write_u32(&mut bytes[8 + 4 * i..12 + 4 * i], *s);
            }
            let end = bytes.len() - 4;
            let crc = crate::crc32(&bytes[..end]);
            LittleEndian::write_u32(&mut bytes[end..], crc);
            assert!(
                matches!(Int8View::parse(&bytes), Err(FormatError::BadShape(_))),
                "{sizes:?}"
            );
        }
    }

    /// TFLite's `MultiplyByQuantizedMultiplier` written out in i128: `x = acc * 2^left`
    /// (wrapping to i32 as C does), `h = floor((x * q + 2^30) / 2^31)`, then `h / 2^right` with
    /// halves away from zero.
    fn tflite_reference(acc: i32, q: i32, shift: i32) -> i32 {
        let (left, right) = (shift.max(0), (-shift).max(0));
        let x = i128::from(acc.wrapping_shl(left as u32));
        let h = (x * i128::from(q) + (1 << 30)).div_euclid(1 << 31);
        let h = h.clamp(i128::from(i32::MIN), i128::from(i32::MAX));
        let d = 1i128 << right;
        let (quot, rem) = (h.div_euclid(d), h.rem_euclid(d));
        // floor quotient, then round: above half up; exactly half away from zero.
        let r = match (2 * rem).cmp(&d) {
            core::cmp::Ordering::Greater => quot + 1,
            core::cmp::Ordering::Equal if h >= 0 => quot + 1,
            _ => quot,
        };
        r as i32
    }

    #[test]
    fn requantize_matches_wide_reference() {
        let mut rng = XorShiftRng::seed_from_u64(11);
        for _ in 0..20_000 {
            // Multipliers over 2^-31 .. 2^8 (both paths of `requantize`), accumulators over the
            // whole i32 range.
            let e = (rng.next_u32() % 39) as i32 - 31;
            let m = libm::ldexp(1.0 + f64::from(rng.next_u32()) / 4294967296.0, e);
            let (q, shift) = quantize_multiplier(m);
            let represented = f64::from(q) * libm::ldexp(1.0, shift - 31);
            assert!(
                (represented - m).abs() <= m * libm::ldexp(1.0, -31),
                "{m} -> {q} {shift}"
            );
            assert!((1 << 30..=i32::MAX).contains(&q));
            let acc = match rng.next_u32() % 3 {
                0 => rng.next_u32() as i32,
                1 => (rng.next_u32() % 2_000_001) as i32 - 1_000_000,
                _ => (rng.next_u32() % 201) as i32 - 100,
            };
            let got = requantize(acc, q, shift);
            assert_eq!(
                got,
                tflite_reference(acc, q, shift),
                "acc {acc} q {q} shift {shift}"
            );
            // One rounding: floor(acc * q / 2^n + 1/2) in i128.
            let n = 31 - shift;
            let exact = (i128::from(acc) * i128::from(q) + (1i128 << (n - 1))) >> n;
            let exact = exact.clamp(i128::from(i32::MIN), i128::from(i32::MAX)) as i32;
            assert_eq!(requantize_single(acc, q, shift), exact);
            assert_eq!(Rounding::Single.apply(acc, q, shift), exact);
            if acc.checked_mul(1 << shift.max(0)).is_some() {
                assert!((i64::from(got) - i64::from(exact)).abs() <= 1);
            }
            // Within one step of the real product computed in f64 (two roundings), where the
            // left shift does not wrap.
            let real = f64::from(acc) * represented;
            if acc.checked_mul(1 << shift.max(0)).is_some() && real.abs() < 2e9 {
                assert!((f64::from(got) - real).abs() <= 1.0 + real.abs() * 1e-15);
            }
        }
        // Halves: up in the high multiply, away from zero in the shift.
        assert_eq!(requantize(3, 1 << 30, 0), 2); // 1.5
        assert_eq!(requantize(-3, 1 << 30, 0), -1); // -1.5
        assert_eq!(requantize(-2, 1 << 30, -1), -1); // -0.5
        // Two roundings: 3 * 0.125 = 0.375 goes to 1.5 -> 2, then 0.5 -> 1 (not 0).
        assert_eq!(requantize(3, 1 << 30, -2), 1);
        for (acc, q, shift) in [
            (i32::MAX, i32::MAX, 30),
            (i32::MIN, i32::MAX, 30),
            (i32::MIN, i32::MIN, 0),
            (i32::MIN, 1 << 30, -31),
            (i32::MAX, i32::MAX, -31),
        ] {
            assert_eq!(requantize(acc, q, shift), tflite_reference(acc, q, shift));
        }
        assert_eq!(requantize(i32::MIN, i32::MIN, 0), i32::MAX); // the one saturating product
        // Out-of-range shifts from a crafted file are clamped, not a panic.
        assert_eq!(requantize(5, 1 << 30, i32::MIN), 0);
        let _ = requantize(5, 1 << 30, i32::MAX);
        assert_eq!(quantize_multiplier(0.0), (0, 0));
        assert_eq!(quantize_multiplier(f64::NAN), (0, 0));
        assert_eq!(quantize_multiplier(1e-12), (0, 0));
        assert_eq!(quantize_multiplier(1e12), (i32::MAX, 30));
        assert_eq!(quantize_multiplier(1.0), (1 << 30, 1));
    }

    #[test]
    fn f32_view_is_bit_exact_with_naive_forward_aligned_or_not() {
        let model = trained();
        let bytes = f32_file(&model);
        // The same file at an odd address takes the unaligned path.
        let view = F32View::parse(&bytes).unwrap();
        assert!(view.is_aligned());
        let (shifted, off) = misaligned(&bytes);
        let unaligned = F32View::parse(&shifted[off..off + bytes.len()]).unwrap();
        assert!(!unaligned.is_aligned());
        let (images, _) = synthetic(4, 64);
        let images = as_f32(&images);
        let mut ws: Box<Workspace<64, I, H, O>> = zeroed_box();
        let mut scratch = zeroed_slice::<Scratch>(1);
        let mut compute = Compute::new(Kernel::NAIVE, &Serial, &mut scratch);
        let reference = model.forward(&images, &mut ws, &mut compute);
        for (x, expected) in images.iter().zip(reference) {
            for v in [&view, &unaligned] {
                let (mut h, mut z) = ([0.0; H], [0.0; O]);
                let class = v.predict(x, &mut h, &mut z);
                assert_eq!(z.map(f32::to_bits), expected.map(f32::to_bits));
                assert_eq!(class, argmax(expected));
            }
        }
        let model_view = ModelView::parse(&bytes).unwrap();
        let (mut h, mut z) = ([0.0; H], [0.0; O]);
        assert!(predict_f32(&model_view, &images[0], &mut h, &mut z).is_ok());
    }
}
