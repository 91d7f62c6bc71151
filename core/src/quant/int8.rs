//! Integer inference from an int8 model file borrowed from memory (flash).

use byteorder::{ByteOrder, LittleEndian};

use super::kernel;
use super::scheme::{LayerLayout, Rounding, int8_layout, params_len};
use crate::format::{Dtype, FormatError, Header, ModelView};
use crate::loss::argmax;
use crate::shape::{MAX_HIDDEN_LAYERS, MAX_LAYERS, Shape};

/// The int8 weights of a layer, four to a 32-bit word (little-endian, as in the file).
#[derive(Clone, Copy, Debug)]
pub(super) enum WeightWords<'a> {
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
pub(super) struct Int8Layer<'a> {
    layout: LayerLayout,
    rounding: Rounding,
    weights: &'a [u8],
    pub(super) words: WeightWords<'a>,
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
    pub(super) fn bias(&self, o: usize) -> i32 {
        LittleEndian::read_i32(&self.bias[4 * o..])
    }

    #[inline(always)]
    pub(super) fn requantize(&self, o: usize, acc: i32) -> i32 {
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
    pub(super) layers: heapless::Vec<Int8Layer<'a>, MAX_LAYERS>,
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

    /// Scale of the first hidden layer's activations (zero point
    /// [`ZERO_POINT`](super::ZERO_POINT)).
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

    /// Scale of hidden layer `l`'s int8 activations (zero point [`ZERO_POINT`](super::ZERO_POINT)).
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
    /// [`quantize_multiplier`](super::quantize_multiplier) made them.
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
