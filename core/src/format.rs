//! The `.pdn` model file: little-endian, checksummed, readable in place from flash.
//!
//! ```text
//! offset size
//!  0     4    magic "PDN1"
//!  4     2    format version (1)
//!  6     1    dtype: 0 = f32 (the trained model), 1 = int8 (quantised for microcontrollers)
//!  7     1    flags: bit 0 = optimizer state follows, bit 1 = an extra record follows
//!  8     4    inputs
//! 12     4    hidden units
//! 16     4    outputs
//! 20     1    dataset: 0 = unknown, 1 = MNIST, 2 = Fashion-MNIST
//! 21     3    zero
//! 24     4    payload length in bytes (from offset 32 to the checksum)
//! 28     4    zero
//! 32     -    payload (every section a multiple of 4 bytes, so sections stay 4-byte aligned)
//!  end   4    CRC-32 of every byte before it
//! ```
//! The f32 payload is the hidden weights (`inputs x hidden`, row-major), hidden bias, output
//! weights (`hidden x outputs`), output bias; then, with flag 0, the RMSprop learning rate, rho,
//! epsilon and the velocity of each tensor in the same order; then, with flag 1, a `u32` length
//! and that many bytes of a record the host defines (a checkpoint's training position), padded
//! with zeros to a multiple of 4.

use byteorder::{ByteOrder, LittleEndian};

use crate::crc::crc32;
use crate::layers::Mlp;
use crate::optim::RmsProp;

/// First four bytes of every model file.
pub const MAGIC: [u8; 4] = *b"PDN1";
/// The format version this code reads and writes.
pub const VERSION: u16 = 1;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 32;
const FLAG_OPTIMIZER: u8 = 1;
const FLAG_EXTRA: u8 = 2;

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
    /// The declared payload length disagrees with the sizes or the file length.
    LengthMismatch {
        /// Payload bytes the header declares.
        declared: usize,
        /// Payload bytes the sizes (or the file) imply.
        expected: usize,
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
        /// Inputs, hidden, outputs in the file.
        file: [u32; 3],
        /// Inputs, hidden, outputs expected.
        expected: [u32; 3],
    },
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
                write!(f, "truncated: {got} bytes, the header needs {needed}")
            }
            FormatError::BadMagic(m) => write!(
                f,
                "not a picodense model (magic {:02x} {:02x} {:02x} {:02x}, expected \"PDN1\")",
                m[0], m[1], m[2], m[3]
            ),
            FormatError::UnsupportedVersion(v) => {
                write!(
                    f,
                    "format version {v} is not supported (this build reads {VERSION})"
                )
            }
            FormatError::UnknownDtype(d) => write!(f, "unknown dtype {d}"),
            FormatError::LengthMismatch { declared, expected } => write!(
                f,
                "payload length {declared} disagrees with the {expected} bytes the sizes imply"
            ),
            FormatError::ChecksumMismatch { stored, computed } => write!(
                f,
                "checksum mismatch (stored {stored:08x}, computed {computed:08x}): file is corrupted"
            ),
            FormatError::ShapeMismatch { file, expected } => write!(
                f,
                "model is {}-{}-{}, expected {}-{}-{}",
                file[0], file[1], file[2], expected[0], expected[1], expected[2]
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

/// The fixed-size header of a model file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Weight storage.
    pub dtype: Dtype,
    /// Whether RMSprop state follows the weights.
    pub has_optimizer: bool,
    /// Whether a host-defined record follows.
    pub has_extra: bool,
    /// Inputs, hidden units, outputs.
    pub sizes: [u32; 3],
    /// Dataset the model was trained on (0 unknown, 1 MNIST, 2 Fashion-MNIST).
    pub dataset: u8,
    /// Payload bytes between header and checksum.
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
        if version != VERSION {
            return Err(FormatError::UnsupportedVersion(version));
        }
        let flags = bytes[7];
        Ok(Header {
            dtype: Dtype::from_byte(bytes[6])?,
            has_optimizer: flags & FLAG_OPTIMIZER != 0,
            has_extra: flags & FLAG_EXTRA != 0,
            sizes: [
                LittleEndian::read_u32(&bytes[8..12]),
                LittleEndian::read_u32(&bytes[12..16]),
                LittleEndian::read_u32(&bytes[16..20]),
            ],
            dataset: bytes[20],
            payload_len: LittleEndian::read_u32(&bytes[24..28]) as usize,
        })
    }

    /// Writes the header into the first [`HEADER_LEN`] bytes of `out`.
    pub fn write(&self, out: &mut [u8]) {
        out[..HEADER_LEN].fill(0);
        out[0..4].copy_from_slice(&MAGIC);
        LittleEndian::write_u16(&mut out[4..6], VERSION);
        out[6] = self.dtype.byte();
        out[7] = if self.has_optimizer {
            FLAG_OPTIMIZER
        } else {
            0
        } | if self.has_extra { FLAG_EXTRA } else { 0 };
        for (i, &s) in self.sizes.iter().enumerate() {
            LittleEndian::write_u32(&mut out[8 + 4 * i..12 + 4 * i], s);
        }
        out[20] = self.dataset;
        LittleEndian::write_u32(&mut out[24..28], self.payload_len as u32);
    }

    /// Number of parameters of each tensor, in file order.
    pub fn tensor_lens(&self) -> Option<[usize; 4]> {
        let [i, h, o] = self.sizes.map(|s| s as usize);
        Some([i.checked_mul(h)?, h, h.checked_mul(o)?, o])
    }

    fn f32_weight_bytes(&self) -> Option<usize> {
        let lens = self.tensor_lens()?;
        lens.iter()
            .try_fold(0usize, |acc, &n| acc.checked_add(n))?
            .checked_mul(4)
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
            return Err(FormatError::LengthMismatch {
                declared: header.payload_len,
                expected: bytes.len() - HEADER_LEN - 4,
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
        let weights = self
            .header
            .f32_weight_bytes()
            .ok_or(FormatError::TooLarge)?;
        let mut end = weights;
        let optimizer = if self.header.has_optimizer {
            let start = end;
            end = weights
                .checked_mul(2)
                .and_then(|n| n.checked_add(12))
                .ok_or(FormatError::TooLarge)?;
            Some(start)
        } else {
            None
        };
        let extra = if self.header.has_extra {
            let len_at = end;
            // Sizes near usize::MAX must fail here, not wrap to a small offset.
            let start = len_at.checked_add(4).ok_or(FormatError::TooLarge)?;
            if self.payload.len() < start {
                return Err(FormatError::LengthMismatch {
                    declared: self.header.payload_len,
                    expected: start,
                });
            }
            let len = LittleEndian::read_u32(&self.payload[len_at..start]) as usize;
            end = len
                .checked_next_multiple_of(4)
                .and_then(|padded| start.checked_add(padded))
                .ok_or(FormatError::TooLarge)?;
            Some((start, len))
        } else {
            None
        };
        Ok(F32Layout {
            optimizer,
            extra,
            end,
        })
    }

    /// The four f32 parameter tensors in file order.
    pub fn f32_tensors(&self) -> Result<[F32Le<'a>; 4], FormatError> {
        if self.header.dtype != Dtype::F32 {
            return Err(FormatError::WrongDtype(self.header.dtype));
        }
        let lens = self.header.tensor_lens().ok_or(FormatError::TooLarge)?;
        Ok(split_tensors(self.payload, lens))
    }

    /// Copies the weights into `model`, checking its sizes.
    pub fn load_into<const I: usize, const H: usize, const O: usize>(
        &self,
        model: &mut Mlp<I, H, O>,
    ) -> Result<(), FormatError> {
        self.check_shape([I, H, O])?;
        for (dst, src) in model.tensors_mut().into_iter().zip(self.f32_tensors()?) {
            for (d, s) in dst.iter_mut().zip(src.iter()) {
                *d = s;
            }
        }
        Ok(())
    }

    /// Copies the RMSprop state into `optimizer`, checking sizes.
    pub fn load_optimizer<const I: usize, const H: usize, const O: usize>(
        &self,
        optimizer: &mut RmsProp<I, H, O>,
    ) -> Result<(), FormatError> {
        self.check_shape([I, H, O])?;
        let start = self
            .f32_layout()?
            .optimizer
            .ok_or(FormatError::NoOptimizerState)?;
        let section = &self.payload[start..];
        let hyper = F32Le(&section[..12]);
        optimizer.learning_rate = hyper.get(0);
        optimizer.rho = hyper.get(1);
        optimizer.epsilon = hyper.get(2);
        let lens = self.header.tensor_lens().ok_or(FormatError::TooLarge)?;
        for (dst, src) in optimizer
            .velocity
            .tensors_mut()
            .into_iter()
            .zip(split_tensors(&section[12..], lens))
        {
            for (d, s) in dst.iter_mut().zip(src.iter()) {
                *d = s;
            }
        }
        Ok(())
    }

    /// The host-defined record, if any.
    pub fn extra(&self) -> Result<Option<&'a [u8]>, FormatError> {
        if self.header.dtype != Dtype::F32 {
            return Ok(None);
        }
        Ok(self
            .f32_layout()?
            .extra
            .map(|(start, len)| &self.payload[start..start + len]))
    }

    /// Fails unless the file's sizes are `expected`.
    pub fn check_shape(&self, expected: [usize; 3]) -> Result<(), FormatError> {
        let expected = expected.map(|s| s as u32);
        if self.header.sizes != expected {
            return Err(FormatError::ShapeMismatch {
                file: self.header.sizes,
                expected,
            });
        }
        Ok(())
    }
}

struct F32Layout {
    optimizer: Option<usize>,
    extra: Option<(usize, usize)>,
    end: usize,
}

fn split_tensors(mut bytes: &[u8], lens: [usize; 4]) -> [F32Le<'_>; 4] {
    lens.map(|len| {
        let (head, rest) = bytes.split_at(4 * len);
        bytes = rest;
        F32Le(head)
    })
}

/// Bytes an f32 model file takes.
pub fn encoded_len<const I: usize, const H: usize, const O: usize>(
    with_optimizer: bool,
    extra: Option<&[u8]>,
) -> usize {
    let weights = 4 * Mlp::<I, H, O>::PARAMETERS;
    let optimizer = if with_optimizer { 12 + weights } else { 0 };
    let extra = extra.map_or(0, |e| 4 + e.len().next_multiple_of(4));
    HEADER_LEN + weights + optimizer + extra + 4
}

/// Writes an f32 model file (with optimizer state and a host record when given) into `out`;
/// returns the bytes written ([`encoded_len`]).
pub fn encode<const I: usize, const H: usize, const O: usize>(
    model: &Mlp<I, H, O>,
    optimizer: Option<&RmsProp<I, H, O>>,
    dataset: u8,
    extra: Option<&[u8]>,
    out: &mut [u8],
) -> Result<usize, FormatError> {
    let total = encoded_len::<I, H, O>(optimizer.is_some(), extra);
    if out.len() < total {
        return Err(FormatError::BufferTooSmall {
            needed: total,
            got: out.len(),
        });
    }
    let header = Header {
        dtype: Dtype::F32,
        has_optimizer: optimizer.is_some(),
        has_extra: extra.is_some(),
        sizes: [I as u32, H as u32, O as u32],
        dataset,
        payload_len: total - HEADER_LEN - 4,
    };
    header.write(out);
    let mut at = HEADER_LEN;
    let mut put = |values: &[f32], at: &mut usize| {
        let end = *at + 4 * values.len();
        LittleEndian::write_f32_into(values, &mut out[*at..end]);
        *at = end;
    };
    for t in model.tensors() {
        put(t, &mut at);
    }
    if let Some(opt) = optimizer {
        put(&[opt.learning_rate, opt.rho, opt.epsilon], &mut at);
        for t in opt.velocity.tensors() {
            put(t, &mut at);
        }
    }
    if let Some(extra) = extra {
        LittleEndian::write_u32(&mut out[at..at + 4], extra.len() as u32);
        at += 4;
        out[at..at + extra.len()].copy_from_slice(extra);
        let padded = at + extra.len().next_multiple_of(4);
        out[at + extra.len()..padded].fill(0);
        at = padded;
    }
    let crc = crc32(&out[..at]);
    LittleEndian::write_u32(&mut out[at..at + 4], crc);
    Ok(at + 4)
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let mut buf = vec![0u8; encoded_len::<5, 7, 3>(opt.is_some(), extra)];
        let n = encode(&model(), opt, 2, extra, &mut buf).unwrap();
        assert_eq!(n, buf.len());
        buf
    }

    #[test]
    fn round_trip_weights_optimizer_and_extra() {
        let mut opt = RmsProp::<5, 7, 3>::new(0.01);
        opt.velocity = model();
        let bytes = encoded(Some(&opt), Some(b"epoch 3"));
        let view = ModelView::parse(&bytes).unwrap();
        assert_eq!(view.header().sizes, [5, 7, 3]);
        assert_eq!(view.header().dataset, 2);
        let mut back = Small::zeroed();
        view.load_into(&mut back).unwrap();
        assert_eq!(back, model());
        let mut opt_back = RmsProp::<5, 7, 3>::new(0.0);
        view.load_optimizer(&mut opt_back).unwrap();
        assert_eq!(opt_back, opt);
        assert_eq!(view.extra().unwrap(), Some(&b"epoch 3"[..]));
    }

    #[test]
    fn plain_model_has_no_optimizer_state() {
        let bytes = encoded(None, None);
        let view = ModelView::parse(&bytes).unwrap();
        let mut opt = RmsProp::<5, 7, 3>::new(0.0);
        assert_eq!(
            view.load_optimizer(&mut opt),
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
            Err(FormatError::LengthMismatch { .. })
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
            ModelView::parse(&bytes).unwrap().load_into(&mut other),
            Err(FormatError::ShapeMismatch { .. })
        ));
    }

    #[test]
    fn lying_sizes_with_valid_crc_are_refused() {
        // Recompute the CRC after changing a size: the length check must still catch it.
        let mut bytes = encoded(None, None);
        bytes[12] = 200;
        let end = bytes.len() - 4;
        let crc = crc32(&bytes[..end]);
        LittleEndian::write_u32(&mut bytes[end..], crc);
        assert!(matches!(
            ModelView::parse(&bytes),
            Err(FormatError::LengthMismatch { .. })
        ));
        bytes[8..20].fill(0xFF);
        let crc = crc32(&bytes[..end]);
        LittleEndian::write_u32(&mut bytes[end..], crc);
        assert!(ModelView::parse(&bytes).is_err());
    }
}
