//! The `.pdn` model file: little-endian, checksummed, readable in place from flash.
//!
//! ```text
//! offset size
//!  0     4    magic "PDN1"
//!  4     2    format version (1 or 2)
//!  6     1    dtype: 0 = f32 (the trained model), 1 = int8 (quantised for microcontrollers)
//!  7     1    flags: bit 0 = optimizer state follows, bit 1 = an extra record follows,
//!             bit 2 (version 2) = a metadata record follows
//!  8     4    version 1: inputs; version 2: the number n of widths (3 to 6)
//! 12     4    version 1: hidden units; version 2: zero
//! 16     4    version 1: outputs; version 2: zero
//! 20     1    dataset: 0 = unknown, 1 = MNIST, 2 = Fashion-MNIST
//! 21     3    zero
//! 24     4    payload length in bytes (from offset 32 to the checksum)
//! 28     4    zero
//! 32     -    payload (every section a multiple of 4 bytes, so sections stay 4-byte aligned)
//!  end   4    CRC-32 of every byte before it
//! ```
//! A version 2 payload starts with the n widths (`u32`: inputs, each hidden layer, classes).
//! The f32 payload then holds each layer's weights (`inputs x outputs`, row-major) and bias,
//! first layer first; then, with flag 0, the RMSprop learning rate, rho, epsilon and the
//! velocity of each tensor in the same order; then, with flag 1, a `u32` length and that many
//! bytes of a record the host defines (a checkpoint's training position), padded with zeros to
//! a multiple of 4; then, with flag 2, a second such record (the host's metadata: class names,
//! input scaling, where the data came from). Writers emit version 1 for a network of one
//! hidden layer without metadata (the images firmware reads), version 2 otherwise.

use byteorder::{ByteOrder, LittleEndian};

use crate::crc::crc32;
use crate::layers::Layers;
use crate::optim::RmsPropRule;
use crate::shape::{MAX_LAYERS, Shape, ShapeError};

/// First four bytes of every model file.
pub const MAGIC: [u8; 4] = *b"PDN1";
/// The newest format version this code reads and writes (it reads version 1 too).
pub const VERSION: u16 = 2;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 32;
const FLAG_OPTIMIZER: u8 = 1;
const FLAG_EXTRA: u8 = 2;
const FLAG_META: u8 = 4;

/// Why a model file was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatError {
    /// Shorter than its header says (or than a header).
    Truncated {
        /// Bytes the header implies.
        needed: usize,
        /// Bytes present.
        got: usize,
    },
    /// Not a picodense model file.
    BadMagic([u8; 4]),
    /// Written by a format version this code does not read.
    UnsupportedVersion(u16),
    /// A dtype byte this code does not know.
    UnknownDtype(u8),
    /// The declared payload length disagrees with the layer sizes.
    LengthMismatch {
        /// Payload bytes the header declares.
        declared: usize,
        /// Payload bytes the sizes imply.
        expected: usize,
    },
    /// Bytes follow the checksum: the file was appended to, or is not one model.
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// The stored CRC-32 differs from the bytes: the file is corrupted.
    ChecksumMismatch {
        /// CRC in the file.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// Layer sizes differ from the model being loaded.
    ShapeMismatch {
        /// The file's layers.
        file: Shape,
        /// The layers expected.
        expected: Shape,
    },
    /// The layer list is not one a network can have.
    BadShape(ShapeError),
    /// A reader of networks of one hidden layer was given another.
    OneHiddenLayerOnly(Shape),
    /// The operation needs the other dtype (an f32 reader given an int8 file, say).
    WrongDtype(Dtype),
    /// No optimizer state in the file.
    NoOptimizerState,
    /// The output buffer is too small to encode into.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        got: usize,
    },
    /// A section is not 4-byte aligned in memory (zero-copy views need aligned flash).
    Misaligned,
    /// Sizes so large that the length overflows.
    TooLarge,
}

impl core::fmt::Display for FormatError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            FormatError::Truncated { needed, got } => {
                write!(f, "truncated: {got} bytes where {needed} are needed")
            }
            FormatError::BadMagic(m) => write!(
                f,
                "not a picodense model (magic {:02x} {:02x} {:02x} {:02x}, expected \"PDN1\")",
                m[0], m[1], m[2], m[3]
            ),
            FormatError::UnsupportedVersion(v) => {
                write!(
                    f,
                    "format version {v} is not supported (this build reads 1 to {VERSION})"
                )
            }
            FormatError::UnknownDtype(d) => write!(f, "unknown dtype {d}"),
            FormatError::LengthMismatch { declared, expected } => write!(
                f,
                "payload length {declared} disagrees with the {expected} bytes the sizes imply"
            ),
            FormatError::TrailingBytes { extra } => write!(
                f,
                "{extra} bytes follow the checksum: the file is longer than its header says"
            ),
            FormatError::ChecksumMismatch { stored, computed } => write!(
                f,
                "checksum mismatch (stored {stored:08x}, computed {computed:08x}): file is corrupted"
            ),
            FormatError::ShapeMismatch { file, expected } => {
                write!(f, "model is {file}, expected {expected}")
            }
            FormatError::BadShape(e) => write!(f, "bad layer list: {e}"),
            FormatError::OneHiddenLayerOnly(shape) => write!(
                f,
                "model is {shape}: this reader takes networks of one hidden layer"
            ),
            FormatError::WrongDtype(d) => write!(f, "model dtype is {}", d.name()),
            FormatError::NoOptimizerState => write!(f, "file holds no optimizer state"),
            FormatError::BufferTooSmall { needed, got } => {
                write!(f, "buffer of {got} bytes, {needed} needed")
            }
            FormatError::Misaligned => write!(f, "model bytes are not 4-byte aligned"),
            FormatError::TooLarge => write!(f, "layer sizes too large"),
        }
    }
}

impl core::error::Error for FormatError {}

/// How the weights are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    /// 32-bit floats.
    F32,
    /// Quantised 8-bit integers with scales.
    Int8,
}

impl Dtype {
    /// Lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::Int8 => "int8",
        }
    }

    fn from_byte(b: u8) -> Result<Self, FormatError> {
        match b {
            0 => Ok(Dtype::F32),
            1 => Ok(Dtype::Int8),
            other => Err(FormatError::UnknownDtype(other)),
        }
    }

    fn byte(self) -> u8 {
        match self {
            Dtype::F32 => 0,
            Dtype::Int8 => 1,
        }
    }
}

/// The header of a model file (with a version 2 file's widths).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Format version: 1 (one hidden layer, no metadata) or 2.
    pub version: u16,
    /// Weight storage.
    pub dtype: Dtype,
    /// Whether RMSprop state follows the weights.
    pub has_optimizer: bool,
    /// Whether a host-defined record follows.
    pub has_extra: bool,
    /// Whether a host-defined metadata record follows (version 2).
    pub has_meta: bool,
    /// The layers.
    pub shape: Shape,
    /// Dataset the model was trained on (0 unknown, 1 MNIST, 2 Fashion-MNIST).
    pub dataset: u8,
    /// Payload bytes between header and checksum (a version 2 file's widths included).
    pub payload_len: usize,
}

impl Header {
    /// Reads and checks magic, version and dtype (not lengths or the checksum).
    pub fn parse(bytes: &[u8]) -> Result<Self, FormatError> {
        if bytes.len() < HEADER_LEN + 4 {
            return Err(FormatError::Truncated {
                needed: HEADER_LEN + 4,
                got: bytes.len(),
            });
        }
        let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
        if magic != MAGIC {
            return Err(FormatError::BadMagic(magic));
        }
        let version = LittleEndian::read_u16(&bytes[4..6]);
        let word = |at: usize| LittleEndian::read_u32(&bytes[at..at + 4]) as usize;
        let mut widths = [0usize; MAX_LAYERS + 1];
        let count = match version {
            1 => {
                widths[..3].copy_from_slice(&[word(8), word(12), word(16)]);
                3
            }
            2 => {
                let n = word(8);
                if !(3..=MAX_LAYERS + 1).contains(&n) {
                    return Err(FormatError::BadShape(ShapeError::HiddenLayers(
                        n.saturating_sub(2),
                    )));
                }
                if bytes.len() < HEADER_LEN + 4 * n + 4 {
                    return Err(FormatError::Truncated {
                        needed: HEADER_LEN + 4 * n + 4,
                        got: bytes.len(),
                    });
                }
                for (i, w) in widths[..n].iter_mut().enumerate() {
                    *w = word(HEADER_LEN + 4 * i);
                }
                n
            }
            _ => return Err(FormatError::UnsupportedVersion(version)),
        };
        let shape = Shape::from_widths(&widths[..count]).map_err(FormatError::BadShape)?;
        let flags = bytes[7];
        Ok(Header {
            version,
            dtype: Dtype::from_byte(bytes[6])?,
            has_optimizer: flags & FLAG_OPTIMIZER != 0,
            has_extra: flags & FLAG_EXTRA != 0,
            has_meta: version >= 2 && flags & FLAG_META != 0,
            shape,
            dataset: bytes[20],
            payload_len: word(24),
        })
    }

    /// A header for `shape`: version 1 when one hidden layer and no metadata allow it.
    pub fn new(dtype: Dtype, shape: Shape, dataset: u8) -> Self {
        Self {
            version: 1,
            dtype,
            has_optimizer: false,
            has_extra: false,
            has_meta: false,
            shape,
            dataset,
            payload_len: 0,
        }
        .with_version()
    }

    /// The same header with the oldest version that can hold it.
    fn with_version(self) -> Self {
        let version = if self.shape.layers() == 2 && !self.has_meta {
            1
        } else {
            2
        };
        Self { version, ..self }
    }

    /// Payload bytes before the tensors: a version 2 file's widths.
    pub fn widths_len(&self) -> usize {
        match self.version {
            1 => 0,
            _ => 4 * self.shape.widths().len(),
        }
    }

    /// Inputs, hidden units and outputs, for a network of one hidden layer.
    pub fn sizes(&self) -> Option<[usize; 3]> {
        match *self.shape.widths() {
            [i, h, o] => Some([i, h, o]),
            _ => None,
        }
    }

    /// Writes the header (and a version 2 file's widths) into the start of `out`.
    pub fn write(&self, out: &mut [u8]) {
        out[..HEADER_LEN].fill(0);
        out[0..4].copy_from_slice(&MAGIC);
        LittleEndian::write_u16(&mut out[4..6], self.version);
        out[6] = self.dtype.byte();
        out[7] = [
            (self.has_optimizer, FLAG_OPTIMIZER),
            (self.has_extra, FLAG_EXTRA),
            (self.has_meta, FLAG_META),
        ]
        .iter()
        .fold(0, |flags, &(on, bit)| if on { flags | bit } else { flags });
        let widths = self.shape.widths();
        match self.version {
            1 => {
                for (i, &w) in widths.iter().enumerate() {
                    LittleEndian::write_u32(&mut out[8 + 4 * i..12 + 4 * i], w as u32);
                }
            }
            _ => {
                LittleEndian::write_u32(&mut out[8..12], widths.len() as u32);
                for (i, &w) in widths.iter().enumerate() {
                    let at = HEADER_LEN + 4 * i;
                    LittleEndian::write_u32(&mut out[at..at + 4], w as u32);
                }
            }
        }
        out[20] = self.dataset;
        LittleEndian::write_u32(&mut out[24..28], self.payload_len as u32);
    }

    /// Number of parameters of each tensor, in file order.
    pub fn tensor_lens(&self) -> heapless::Vec<usize, { 2 * MAX_LAYERS }> {
        (0..2 * self.shape.layers())
            .map(|t| {
                let (i, o) = self.shape.layer(t / 2);
                if t % 2 == 0 { i * o } else { o }
            })
            .collect()
    }

    fn f32_weight_bytes(&self) -> usize {
        4 * self.shape.parameters()
    }
}

/// A little-endian `f32` array read in place (no copy, no alignment needed).
#[derive(Clone, Copy, Debug)]
pub struct F32Le<'a>(&'a [u8]);

impl<'a> F32Le<'a> {
    /// Number of values.
    pub fn len(&self) -> usize {
        self.0.len() / 4
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Value `i`.
    #[inline]
    pub fn get(&self, i: usize) -> f32 {
        LittleEndian::read_f32(&self.0[4 * i..4 * i + 4])
    }

    /// All values in order.
    pub fn iter(&self) -> impl Iterator<Item = f32> + 'a {
        self.0.chunks_exact(4).map(LittleEndian::read_f32)
    }

    /// The raw bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.0
    }
}

/// A checked model file borrowed from memory (a file read by the host, or flash).
#[derive(Clone, Copy, Debug)]
pub struct ModelView<'a> {
    header: Header,
    payload: &'a [u8],
}

impl<'a> ModelView<'a> {
    /// Checks magic, version, dtype, lengths and the CRC, then borrows the payload.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, FormatError> {
        let header = Header::parse(bytes)?;
        let total = HEADER_LEN
            .checked_add(header.payload_len)
            .and_then(|n| n.checked_add(4))
            .ok_or(FormatError::TooLarge)?;
        if bytes.len() < total {
            return Err(FormatError::Truncated {
                needed: total,
                got: bytes.len(),
            });
        }
        if bytes.len() > total {
            return Err(FormatError::TrailingBytes {
                extra: bytes.len() - total,
            });
        }
        let body = &bytes[..total - 4];
        let stored = LittleEndian::read_u32(&bytes[total - 4..]);
        let computed = crc32(body);
        if stored != computed {
            return Err(FormatError::ChecksumMismatch { stored, computed });
        }
        let view = ModelView {
            header,
            payload: &body[HEADER_LEN..],
        };
        if header.dtype == Dtype::F32 {
            let expected = view.f32_layout()?.end;
            if expected != header.payload_len {
                return Err(FormatError::LengthMismatch {
                    declared: header.payload_len,
                    expected,
                });
            }
        }
        Ok(view)
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The payload (everything between header and checksum).
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    fn f32_layout(&self) -> Result<F32Layout, FormatError> {
        // `parse` checks the f32 layout only for f32 files: another dtype has none to use.
        if self.header.dtype != Dtype::F32 {
            return Err(FormatError::WrongDtype(self.header.dtype));
        }
        let weights = self.header.f32_weight_bytes();
        let mut end = self.header.widths_len() + weights;
        let optimizer = if self.header.has_optimizer {
            let start = end;
            end += weights + 12;
            Some(start)
        } else {
            None
        };
        let extra = self.record(&mut end, self.header.has_extra)?;
        let meta = self.record(&mut end, self.header.has_meta)?;
        Ok(F32Layout {
            optimizer,
            extra,
            meta,
            end,
        })
    }

    /// The place of a host record that starts at `end` when `present`, moving `end` past it.
    fn record(
        &self,
        end: &mut usize,
        present: bool,
    ) -> Result<Option<(usize, usize)>, FormatError> {
        Ok(if present {
            let len_at = *end;
            // Sizes near usize::MAX must fail here, not wrap to a small offset.
            let start = len_at.checked_add(4).ok_or(FormatError::TooLarge)?;
            if self.payload.len() < start {
                return Err(FormatError::LengthMismatch {
                    declared: self.header.payload_len,
                    expected: start,
                });
            }
            let len = LittleEndian::read_u32(&self.payload[len_at..start]) as usize;
            *end = len
                .checked_next_multiple_of(4)
                .and_then(|padded| start.checked_add(padded))
                .ok_or(FormatError::TooLarge)?;
            Some((start, len))
        } else {
            None
        })
    }

    /// The f32 parameter tensors in file order.
    pub fn f32_tensors(&self) -> Result<heapless::Vec<F32Le<'a>, { 2 * MAX_LAYERS }>, FormatError> {
        if self.header.dtype != Dtype::F32 {
            return Err(FormatError::WrongDtype(self.header.dtype));
        }
        let lens = self.header.tensor_lens();
        Ok(split_tensors(
            &self.payload[self.header.widths_len()..],
            &lens,
        ))
    }

    /// Copies the weights into `params`, checking their shape.
    pub fn load_into(&self, params: &mut Layers<&mut [f32]>) -> Result<(), FormatError> {
        self.check_shape(params.shape())?;
        for (dst, src) in params.tensors_mut().iter_mut().zip(self.f32_tensors()?) {
            for (d, s) in dst.iter_mut().zip(src.iter()) {
                *d = s;
            }
        }
        Ok(())
    }

    /// Copies the RMSprop velocity into `velocity`, checking its shape; returns the rule.
    pub fn load_optimizer(
        &self,
        velocity: &mut Layers<&mut [f32]>,
    ) -> Result<RmsPropRule, FormatError> {
        self.check_shape(velocity.shape())?;
        let start = self
            .f32_layout()?
            .optimizer
            .ok_or(FormatError::NoOptimizerState)?;
        let section = &self.payload[start..];
        let hyper = F32Le(&section[..12]);
        let lens = self.header.tensor_lens();
        for (dst, src) in velocity
            .tensors_mut()
            .iter_mut()
            .zip(split_tensors(&section[12..], &lens))
        {
            for (d, s) in dst.iter_mut().zip(src.iter()) {
                *d = s;
            }
        }
        Ok(RmsPropRule {
            learning_rate: hyper.get(0),
            rho: hyper.get(1),
            epsilon: hyper.get(2),
        })
    }

    /// The host-defined record, if any.
    pub fn extra(&self) -> Result<Option<&'a [u8]>, FormatError> {
        self.host_record(|layout| layout.extra)
    }

    /// The host-defined metadata record, if any.
    pub fn meta(&self) -> Result<Option<&'a [u8]>, FormatError> {
        self.host_record(|layout| layout.meta)
    }

    /// The record `which` picks from an f32 file's layout.
    fn host_record(
        &self,
        which: impl Fn(&F32Layout) -> Option<(usize, usize)>,
    ) -> Result<Option<&'a [u8]>, FormatError> {
        if self.header.dtype != Dtype::F32 {
            return Ok(None);
        }
        Ok(which(&self.f32_layout()?).map(|(start, len)| &self.payload[start..start + len]))
    }

    /// Fails unless the file's layers are `expected`.
    pub fn check_shape(&self, expected: Shape) -> Result<(), FormatError> {
        if self.header.shape != expected {
            return Err(FormatError::ShapeMismatch {
                file: self.header.shape,
                expected,
            });
        }
        Ok(())
    }
}

struct F32Layout {
    optimizer: Option<usize>,
    extra: Option<(usize, usize)>,
    meta: Option<(usize, usize)>,
    end: usize,
}

fn split_tensors<'a>(
    mut bytes: &'a [u8],
    lens: &[usize],
) -> heapless::Vec<F32Le<'a>, { 2 * MAX_LAYERS }> {
    lens.iter()
        .map(|&len| {
            let (head, rest) = bytes.split_at(4 * len);
            bytes = rest;
            F32Le(head)
        })
        .collect()
}

/// What an f32 model file holds beside the weights.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sections<'a> {
    /// RMSprop's rule and velocity (a checkpoint).
    pub optimizer: Option<(RmsPropRule, &'a Layers<&'a [f32]>)>,
    /// A host record (a checkpoint's training position).
    pub extra: Option<&'a [u8]>,
    /// The host's metadata (class names, scaling, data source).
    pub meta: Option<&'a [u8]>,
    /// Dataset byte of the header.
    pub dataset: u8,
}

/// The header an f32 file of `shape` with `sections` gets.
fn f32_header(shape: Shape, sections: &Sections) -> Header {
    let weights = 4 * shape.parameters();
    let record = |r: Option<&[u8]>| r.map_or(0, |e| 4 + e.len().next_multiple_of(4));
    let header = Header {
        has_optimizer: sections.optimizer.is_some(),
        has_extra: sections.extra.is_some(),
        has_meta: sections.meta.is_some(),
        ..Header::new(Dtype::F32, shape, sections.dataset)
    }
    .with_version();
    let optimizer = if header.has_optimizer {
        12 + weights
    } else {
        0
    };
    Header {
        payload_len: header.widths_len()
            + weights
            + optimizer
            + record(sections.extra)
            + record(sections.meta),
        ..header
    }
}

/// Bytes an f32 model file of `shape` with `sections` takes.
pub fn encoded_len(shape: Shape, sections: &Sections) -> usize {
    HEADER_LEN + f32_header(shape, sections).payload_len + 4
}

/// Writes an f32 model file of `params` and `sections` into `out`; returns the bytes written
/// ([`encoded_len`]).
pub fn encode(
    params: &Layers<&[f32]>,
    sections: &Sections,
    out: &mut [u8],
) -> Result<usize, FormatError> {
    let header = f32_header(params.shape(), sections);
    let total = HEADER_LEN + header.payload_len + 4;
    if out.len() < total {
        return Err(FormatError::BufferTooSmall {
            needed: total,
            got: out.len(),
        });
    }
    if let Some((_, velocity)) = sections.optimizer
        && velocity.shape() != params.shape()
    {
        return Err(FormatError::ShapeMismatch {
            file: params.shape(),
            expected: velocity.shape(),
        });
    }
    header.write(out);
    let mut at = HEADER_LEN + header.widths_len();
    let mut put = |values: &[f32], at: &mut usize| {
        let end = *at + 4 * values.len();
        LittleEndian::write_f32_into(values, &mut out[*at..end]);
        *at = end;
    };
    for t in params.tensors() {
        put(t, &mut at);
    }
    if let Some((rule, velocity)) = sections.optimizer {
        put(&[rule.learning_rate, rule.rho, rule.epsilon], &mut at);
        for t in velocity.tensors() {
            put(t, &mut at);
        }
    }
    for record in [sections.extra, sections.meta].into_iter().flatten() {
        LittleEndian::write_u32(&mut out[at..at + 4], record.len() as u32);
        at += 4;
        out[at..at + record.len()].copy_from_slice(record);
        let padded = at + record.len().next_multiple_of(4);
        out[at + record.len()..padded].fill(0);
        at = padded;
    }
    seal(&mut out[..at + 4]);
    Ok(at + 4)
}

/// Writes the CRC-32 of everything before a file's last four bytes into them.
pub(crate) fn seal(file: &mut [u8]) {
    let (body, crc) = file.split_at_mut(file.len() - 4);
    LittleEndian::write_u32(crc, crc32(body));
}

/// Checks that `parse` refuses `file` with its first hidden size set to `hidden` (by its
/// length), then with every size `0xFFFF_FFFF`, the CRC recomputed each time: what the CRC
/// cannot catch, the length checks must.
#[cfg(test)]
pub(crate) fn assert_lying_sizes_refused(
    file: &[u8],
    hidden: u32,
    parse: impl Fn(&[u8]) -> Result<(), FormatError>,
) {
    let mut lying = std::vec::Vec::from(file);
    LittleEndian::write_u32(&mut lying[12..16], hidden);
    seal(&mut lying);
    assert!(matches!(
        parse(&lying),
        Err(FormatError::LengthMismatch { .. })
    ));
    lying[8..20].fill(0xFF);
    seal(&mut lying);
    assert!(parse(&lying).is_err());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::Mlp;
    use crate::optim::RmsProp;
    use rand_core::SeedableRng;
    use rand_xorshift::XorShiftRng;
    use std::vec;

    type Small = Mlp<5, 7, 3>;

    fn model() -> Small {
        let mut m = Small::zeroed();
        m.init_glorot(&mut XorShiftRng::seed_from_u64(4));
        m.output.bias = [0.5, -1.0, 2.0];
        m
    }

    fn encoded(opt: Option<&RmsProp<5, 7, 3>>, extra: Option<&[u8]>) -> std::vec::Vec<u8> {
        let velocity = opt.map(|o| o.velocity.layers());
        let sections = Sections {
            optimizer: opt.zip(velocity.as_ref()).map(|(o, v)| (o.rule, v)),
            extra,
            meta: None,
            dataset: 2,
        };
        let mut buf = vec![0u8; encoded_len(Small::shape(), &sections)];
        let n = encode(&model().layers(), &sections, &mut buf).unwrap();
        assert_eq!(n, buf.len());
        buf
    }

    #[test]
    fn deep_networks_and_metadata_take_version_2() {
        let shape = Shape::new(6, &[5, 4, 3], 2).unwrap();
        let mut flat = vec![0.0f32; shape.parameters()];
        Layers::split_mut(shape, &mut flat)
            .unwrap()
            .init_glorot(&mut XorShiftRng::seed_from_u64(1));
        let params = Layers::split(shape, &flat).unwrap();
        let sections = Sections {
            meta: Some(b"{\"classes\":[\"a\",\"b\"]}"),
            ..Sections::default()
        };
        let mut buf = vec![0u8; encoded_len(shape, &sections)];
        encode(&params, &sections, &mut buf).unwrap();
        let view = ModelView::parse(&buf).unwrap();
        assert_eq!(view.header().version, 2);
        assert_eq!(view.header().shape, shape);
        assert_eq!(view.meta().unwrap(), sections.meta);
        let mut back = vec![1.0f32; shape.parameters()];
        view.load_into(&mut Layers::split_mut(shape, &mut back).unwrap())
            .unwrap();
        assert_eq!(back, flat);
        // One hidden layer without metadata stays version 1.
        assert_eq!(
            ModelView::parse(&encoded(None, None))
                .unwrap()
                .header()
                .version,
            1
        );
    }

    #[test]
    fn round_trip_weights_optimizer_and_extra() {
        let mut opt = RmsProp::<5, 7, 3>::new(0.01);
        opt.velocity = model();
        let bytes = encoded(Some(&opt), Some(b"epoch 3"));
        let view = ModelView::parse(&bytes).unwrap();
        assert_eq!(view.header().sizes(), Some([5, 7, 3]));
        assert_eq!(view.header().dataset, 2);
        let mut back = Small::zeroed();
        view.load_into(&mut back.layers_mut()).unwrap();
        assert_eq!(back, model());
        let mut opt_back = RmsProp::<5, 7, 3>::new(0.0);
        let rule = view
            .load_optimizer(&mut opt_back.velocity.layers_mut())
            .unwrap();
        assert_eq!(rule, RmsPropRule::keras(0.01));
        assert_eq!(opt_back.velocity, opt.velocity);
        assert_eq!(view.extra().unwrap(), Some(&b"epoch 3"[..]));
    }

    #[test]
    fn plain_model_has_no_optimizer_state() {
        let bytes = encoded(None, None);
        let view = ModelView::parse(&bytes).unwrap();
        let mut opt = RmsProp::<5, 7, 3>::new(0.0);
        assert_eq!(
            view.load_optimizer(&mut opt.velocity.layers_mut()),
            Err(FormatError::NoOptimizerState)
        );
        assert_eq!(view.extra().unwrap(), None);
    }

    #[test]
    fn every_single_bit_flip_is_caught() {
        let bytes = encoded(None, None);
        for byte in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    ModelView::parse(&bad).is_err(),
                    "flip at {byte}.{bit} accepted"
                );
            }
        }
    }

    #[test]
    fn truncation_and_trailing_bytes_are_refused() {
        let bytes = encoded(None, None);
        for len in [0, 10, HEADER_LEN + 3, bytes.len() - 1] {
            assert!(matches!(
                ModelView::parse(&bytes[..len]),
                Err(FormatError::Truncated { .. })
            ));
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            ModelView::parse(&long),
            Err(FormatError::TrailingBytes { extra: 1 })
        ));
    }

    #[test]
    fn wrong_magic_version_and_shape_are_named() {
        let mut bytes = encoded(None, None);
        bytes[0] = b'X';
        assert!(matches!(
            ModelView::parse(&bytes),
            Err(FormatError::BadMagic(_))
        ));
        let mut bytes = encoded(None, None);
        bytes[4] = 9;
        assert_eq!(
            ModelView::parse(&bytes).unwrap_err(),
            FormatError::UnsupportedVersion(9)
        );
        let bytes = encoded(None, None);
        let mut other = Mlp::<5, 8, 3>::zeroed();
        assert!(matches!(
            ModelView::parse(&bytes)
                .unwrap()
                .load_into(&mut other.layers_mut()),
            Err(FormatError::ShapeMismatch { .. })
        ));
    }

    #[test]
    fn lying_sizes_with_valid_crc_are_refused() {
        let parse = |bytes: &[u8]| ModelView::parse(bytes).map(drop);
        assert_lying_sizes_refused(&encoded(None, None), 200, parse);
    }
}
