//! Quantisation: the ranges seen on calibration images, and the int8 model file written from
//! an f32 network.

use byteorder::{ByteOrder, LittleEndian};

use super::scheme::{
    INPUT_SCALE, LayerLayout, ZERO_POINT, int8_layout, params_len, quantize_multiplier, unit_pixel,
};
use crate::format::{Dtype, FormatError, HEADER_LEN, Header, seal};
use crate::layers::{Layers, Mlp};
use crate::shape::{MAX_HIDDEN_LAYERS, MAX_LAYERS};

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

/// Quantises `model` with `calibration` and writes the int8 model file into `out`; returns the
/// bytes written ([`encoded_len`](super::encoded_len)). `dataset` goes into the header as in
/// [`crate::format`].
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
    seal(&mut out[..total]);
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
