//! Keras `.npz` archives: four `.npy` arrays in a zip, with the parser of their headers.

use std::io::{self, BufReader, Read, Seek};
use std::path::{Path, PathBuf};

use zip::result::ZipError;
use zip::{CompressionMethod, ZipArchive};

use super::{
    DEFLATE_MAX_RATIO, DataError, Dataset, ImageSize, MAX_INPUTS, Splits, io_err, open_file,
    read_exact_payload, read_full,
};

/// numpy itself refuses headers above 10 000 bytes by default; this leaves room.
const NPY_MAX_HEADER: usize = 65_536;

/// A value in the Python-literal dict of a `.npy` header.
#[derive(Debug, PartialEq)]
enum PyValue {
    Str(String),
    Bool(bool),
    Int(u64),
    Tuple(Vec<PyValue>),
    None,
}

/// Parser for the small Python-literal subset numpy writes into `.npy` headers.
struct PyParser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl PyParser<'_> {
    fn skip_ws(&mut self) {
        while self
            .s
            .get(self.pos)
            .is_some_and(|c| c.is_ascii_whitespace())
        {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.s.get(self.pos).copied()
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(format!("expected '{}' at byte {}", c as char, self.pos))
        }
    }

    fn string(&mut self) -> Result<String, String> {
        let quote = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => return Err(format!("expected a string at byte {}", self.pos)),
        };
        self.pos += 1;
        let start = self.pos;
        while let Some(&c) = self.s.get(self.pos) {
            if c == quote {
                let text = String::from_utf8_lossy(&self.s[start..self.pos]).into_owned();
                self.pos += 1;
                return Ok(text);
            }
            if c == b'\\' {
                return Err("escapes in header strings are not supported".to_owned());
            }
            self.pos += 1;
        }
        Err("unterminated string".to_owned())
    }

    fn value(&mut self) -> Result<PyValue, String> {
        match self.peek() {
            Some(b'\'' | b'"') => self.string().map(PyValue::Str),
            Some(b'(') => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    if self.peek() == Some(b')') {
                        self.pos += 1;
                        return Ok(PyValue::Tuple(items));
                    }
                    items.push(self.value()?);
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b')') => {}
                        _ => return Err(format!("expected ',' or ')' at byte {}", self.pos)),
                    }
                }
            }
            Some(c) if c.is_ascii_digit() => {
                let start = self.pos;
                while self.s.get(self.pos).is_some_and(u8::is_ascii_digit) {
                    self.pos += 1;
                }
                let digits = std::str::from_utf8(&self.s[start..self.pos]).unwrap_or_default();
                let n = digits
                    .parse::<u64>()
                    .map_err(|_| format!("number {digits} is too large"))?;
                // Python 2 wrote long integers with an L suffix.
                if matches!(self.s.get(self.pos), Some(b'L' | b'l')) {
                    self.pos += 1;
                }
                Ok(PyValue::Int(n))
            }
            Some(_) => {
                for (word, v) in [
                    ("True", PyValue::Bool(true)),
                    ("False", PyValue::Bool(false)),
                    ("None", PyValue::None),
                ] {
                    if self.s[self.pos..].starts_with(word.as_bytes()) {
                        self.pos += word.len();
                        return Ok(v);
                    }
                }
                Err(format!("unexpected value at byte {}", self.pos))
            }
            None => Err("unexpected end of header".to_owned()),
        }
    }

    fn dict(&mut self) -> Result<Vec<(String, PyValue)>, String> {
        self.expect(b'{')?;
        let mut entries = Vec::new();
        loop {
            if self.peek() == Some(b'}') {
                self.pos += 1;
                break;
            }
            let key = self.string()?;
            self.expect(b':')?;
            let value = self.value()?;
            entries.push((key, value));
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {}
                _ => return Err(format!("expected ',' or '}}' at byte {}", self.pos)),
            }
        }
        if self.peek().is_some() {
            return Err(format!(
                "unexpected text after the dict at byte {}",
                self.pos
            ));
        }
        Ok(entries)
    }
}

/// An integer or float element type from a `.npy` `descr` such as `'|u1'`, `'<i8'` or
/// `'<f4'`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct IntDtype {
    signed: bool,
    size: usize,
    big_endian: bool,
    /// An IEEE float (`f4` or `f8`) rather than an integer.
    float: bool,
}

impl IntDtype {
    fn parse(descr: &str) -> Option<IntDtype> {
        let bytes = descr.as_bytes();
        let (order, rest) = match bytes.first()? {
            c @ (b'<' | b'>' | b'|' | b'=') => (Some(*c), &bytes[1..]),
            _ => (None, bytes),
        };
        let (signed, float) = match rest.first()? {
            b'u' => (false, false),
            b'i' => (true, false),
            b'f' => (true, true),
            _ => return None,
        };
        let size = match &rest[1..] {
            b"1" if !float => 1,
            b"2" if !float => 2,
            b"4" => 4,
            b"8" => 8,
            _ => return None,
        };
        let big_endian = match order {
            Some(b'>') => true,
            Some(b'<') => false,
            // '|' means "byte order not applicable", which numpy only writes for one-byte types.
            Some(b'|') if size == 1 => false,
            Some(b'|') => return None,
            _ => cfg!(target_endian = "big"),
        };
        Some(IntDtype {
            signed,
            size,
            big_endian,
            float,
        })
    }

    /// A float element as f32 (`f8` rounded), `None` when it is not finite in f32.
    fn float_value(self, b: &[u8]) -> Option<f32> {
        let mut buf = [0u8; 8];
        buf[..self.size].copy_from_slice(b);
        if self.big_endian {
            buf[..self.size].reverse();
        }
        let v = match self.size {
            4 => f32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]),
            _ => f64::from_le_bytes(buf) as f32,
        };
        v.is_finite().then_some(v)
    }

    fn value(self, b: &[u8]) -> i128 {
        let mut buf = [0u8; 8];
        if self.big_endian {
            buf[8 - self.size..].copy_from_slice(b);
            buf.reverse();
        } else {
            buf[..self.size].copy_from_slice(b);
        }
        let raw = u64::from_le_bytes(buf);
        if self.signed {
            // Sign-extend from `size` bytes.
            let shift = 64 - 8 * self.size as u32;
            i128::from(((raw << shift) as i64) >> shift)
        } else {
            i128::from(raw)
        }
    }
}

/// The parts of a `.npy` header that matter here.
struct NpyHeader {
    dtype: IntDtype,
    shape: Vec<u64>,
    /// Bytes before the data: magic, version, length field and dict.
    len: u64,
}

fn parse_npy_header<R: Read>(r: &mut R, path: &Path) -> Result<NpyHeader, DataError> {
    let bad = |reason: String| DataError::Npy {
        path: path.to_path_buf(),
        reason,
    };
    let mut prefix = [0u8; 8];
    let got = read_full(r, &mut prefix).map_err(io_err(path))?;
    if got < 8 || &prefix[..6] != b"\x93NUMPY" {
        return Err(bad(
            "not a .npy array (bad magic, expected \\x93NUMPY)".to_owned()
        ));
    }
    let major = prefix[6];
    let len_field = match major {
        1 => 2,
        2 | 3 => 4,
        _ => {
            return Err(bad(format!(
                "unsupported .npy format version {major}.{}",
                prefix[7]
            )));
        }
    };
    let mut len_bytes = [0u8; 4];
    if read_full(r, &mut len_bytes[..len_field]).map_err(io_err(path))? < len_field {
        return Err(bad("truncated .npy header".to_owned()));
    }
    let dict_len = u32::from_le_bytes(len_bytes) as usize;
    if dict_len > NPY_MAX_HEADER {
        return Err(bad(format!("implausible .npy header length {dict_len}")));
    }
    let mut dict = vec![0u8; dict_len];
    if read_full(r, &mut dict).map_err(io_err(path))? < dict_len {
        return Err(bad("truncated .npy header".to_owned()));
    }
    let entries = PyParser { s: &dict, pos: 0 }
        .dict()
        .map_err(|e| bad(format!("malformed .npy header: {e}")))?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    for (key, value) in entries {
        match (key.as_str(), value) {
            ("descr", PyValue::Str(s)) => descr = Some(s),
            ("fortran_order", PyValue::Bool(b)) => fortran = Some(b),
            ("shape", PyValue::Tuple(items)) => {
                let dims = items
                    .into_iter()
                    .map(|v| match v {
                        PyValue::Int(n) => Ok(n),
                        _ => Err(bad("shape holds a non-integer".to_owned())),
                    })
                    .collect::<Result<Vec<u64>, _>>()?;
                shape = Some(dims);
            }
            (k, v) => return Err(bad(format!("unexpected .npy header entry '{k}': {v:?}"))),
        }
    }
    let (Some(descr), Some(fortran), Some(shape)) = (descr, fortran, shape) else {
        return Err(bad(
            ".npy header lacks one of 'descr', 'fortran_order', 'shape'".to_owned(),
        ));
    };
    if fortran {
        return Err(bad("fortran_order arrays are not supported".to_owned()));
    }
    let dtype = IntDtype::parse(&descr).ok_or_else(|| {
        bad(format!(
            "unsupported dtype '{descr}' (expected an integer type, float32 or float64)"
        ))
    })?;
    Ok(NpyHeader {
        dtype,
        shape,
        len: (6 + 2 + len_field + dict_len) as u64,
    })
}

fn shape_text(shape: &[u64]) -> String {
    match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// One array read from an `.npz` member: element count, dtype and raw little/big-endian bytes.
struct NpyArray {
    path: PathBuf,
    rows: usize,
    /// The shape of one sample.
    sample: Vec<u64>,
    dtype: IntDtype,
    data: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum NpyRole {
    Images,
    Labels,
}

fn read_npy_member<R: Read + Seek>(
    archive: &mut ZipArchive<R>,
    npz: &Path,
    archive_len: u64,
    member: &'static str,
    role: NpyRole,
) -> Result<NpyArray, DataError> {
    let path = npz.join(member);
    let mut zf = match archive.by_name(member) {
        Ok(f) => f,
        Err(ZipError::FileNotFound) => {
            return Err(DataError::MissingMember {
                path: npz.to_path_buf(),
                member,
            });
        }
        Err(error) => {
            return Err(DataError::Zip {
                path: npz.to_path_buf(),
                error,
            });
        }
    };
    let bad = |reason: String| DataError::Npy {
        path: path.clone(),
        reason,
    };
    let declared = zf.size();
    // What the member's compressed bytes can expand to bounds what we are willing to allocate.
    let ratio = if zf.compression() == CompressionMethod::Stored {
        1
    } else {
        DEFLATE_MAX_RATIO
    };
    let capacity = zf.compressed_size().min(archive_len).saturating_mul(ratio);
    let header = parse_npy_header(&mut zf, &path)?;
    let shape = &header.shape;
    let (rows, row_elems) = match (role, shape.as_slice()) {
        (NpyRole::Images, &[n, ref sample @ ..])
            if !sample.is_empty()
                && sample
                    .iter()
                    .try_fold(1u64, |p, &d| p.checked_mul(d))
                    .is_some_and(|w| (1..=MAX_INPUTS as u64).contains(&w)) =>
        {
            let d = header.dtype;
            if !(d.float || (d.size == 1 && !d.signed)) {
                return Err(bad(format!(
                    "features must be uint8 ('|u1') or float ('<f4', '<f8'), found a {}-byte {} \
                     integer type",
                    d.size,
                    if d.signed { "signed" } else { "unsigned" }
                )));
            }
            (n, sample.iter().product())
        }
        (NpyRole::Images, _) => {
            return Err(bad(format!(
                "features have shape {}, expected (N, ...) with 1 to {MAX_INPUTS} values a sample",
                shape_text(shape)
            )));
        }
        (NpyRole::Labels, &[n]) | (NpyRole::Labels, &[n, 1]) => (n, 1),
        (NpyRole::Labels, _) => {
            return Err(bad(format!(
                "labels have shape {}, expected (N,)",
                shape_text(shape)
            )));
        }
    };
    let expected = rows
        .checked_mul(row_elems)
        .and_then(|e| e.checked_mul(header.dtype.size as u64))
        .ok_or_else(|| bad(format!("shape {} is too large", shape_text(shape))))?;
    let actual = declared.saturating_sub(header.len);
    if actual < expected || header.len > declared {
        return Err(DataError::Truncated {
            path,
            count: rows,
            expected,
            actual,
        });
    }
    if actual > expected {
        return Err(DataError::TrailingData {
            path,
            count: rows,
            expected,
        });
    }
    if expected > capacity {
        return Err(DataError::ImplausibleSize {
            path,
            count: rows,
            expected,
            file_len: zf.compressed_size(),
        });
    }
    let map_err = |error: io::Error| DataError::Io {
        path: path.clone(),
        error,
    };
    let data = read_exact_payload(&mut zf, &path, rows, expected, &map_err)?;
    let rows = usize::try_from(rows).map_err(|_| DataError::OutOfMemory {
        path: path.clone(),
        bytes: expected,
    })?;
    Ok(NpyArray {
        path,
        rows,
        sample: shape.get(1..).unwrap_or_default().to_vec(),
        dtype: header.dtype,
        data,
    })
}

/// Converts integer labels of any supported width to u8, checking each is a class index.
fn npy_labels(array: NpyArray) -> Result<Vec<u8>, DataError> {
    if array.dtype.float {
        return Err(DataError::Npy {
            path: array.path,
            reason: "labels must be integers, found a float type".into(),
        });
    }
    if array.dtype.size == 1 && !array.dtype.signed {
        return Ok(array.data);
    }
    let mut labels = Vec::with_capacity(array.rows);
    for (index, chunk) in array.data.chunks_exact(array.dtype.size).enumerate() {
        let label = array.dtype.value(chunk);
        match u8::try_from(label) {
            Ok(l) => labels.push(l),
            _ => {
                return Err(DataError::BadLabel {
                    path: array.path,
                    index,
                    label,
                });
            }
        }
    }
    Ok(labels)
}

fn npz_split<R: Read + Seek>(
    archive: &mut ZipArchive<R>,
    npz: &Path,
    archive_len: u64,
    x: &'static str,
    y: &'static str,
) -> Result<(Dataset, Option<ImageSize>), DataError> {
    let images = read_npy_member(archive, npz, archive_len, x, NpyRole::Images)?;
    let labels = read_npy_member(archive, npz, archive_len, y, NpyRole::Labels)?;
    if images.rows == 0 {
        return Err(DataError::EmptySet {
            path: images.path,
            what: "rows",
        });
    }
    if images.rows != labels.rows {
        return Err(DataError::CountMismatch {
            images: images.path,
            image_count: images.rows,
            labels: labels.path,
            label_count: labels.rows,
        });
    }
    let width = images.data.len() / images.rows.max(1);
    // Only a sample of rows and columns is a picture: a flat row or channels (28 x 28 x 3)
    // have no layout a picture or a drawing could follow.
    let size = match images.sample.as_slice() {
        &[rows, cols] => Some(ImageSize {
            rows: rows as usize,
            cols: cols as usize,
        }),
        _ => None,
    };
    let labels = npy_labels(labels)?;
    if !images.dtype.float {
        return Ok((
            Dataset::from_images(width.max(1), images.data, labels),
            size,
        ));
    }
    let step = images.dtype.size;
    let width = width / step;
    let mut values = Vec::with_capacity(images.data.len() / step);
    for (index, bytes) in images.data.chunks_exact(step).enumerate() {
        values.push(
            images
                .dtype
                .float_value(bytes)
                .ok_or_else(|| DataError::Npy {
                    path: images.path.clone(),
                    reason: format!(
                        "value at index {index} (row {}) is not a finite f32",
                        index / width.max(1)
                    ),
                })?,
        );
    }
    let data = Dataset {
        width: width.max(1),
        values,
        labels,
        ..Dataset::default()
    };
    Ok((data, None))
}

/// Loads Keras's `mnist.npz` layout: `x_train`, `y_train`, `x_test`, `y_test` arrays.
///
/// Features may be uint8 images (kept as pixels) or floats (f32 features) of any shape, flattened
/// per sample; labels may be any integer type and are converted to u8 after a range check.
pub fn load_npz(path: &Path) -> Result<Splits, DataError> {
    let (file, len) = open_file(path)?;
    let mut archive = ZipArchive::new(BufReader::new(file)).map_err(|error| DataError::Zip {
        path: path.to_path_buf(),
        error,
    })?;
    let (train, size) = npz_split(&mut archive, path, len, "x_train.npy", "y_train.npy")?;
    let (test, test_size) = npz_split(&mut archive, path, len, "x_test.npy", "y_test.npy")?;
    if !train.is_empty() && !test.is_empty() && train.is_images() != test.is_images() {
        let kind = |d: &Dataset| if d.is_images() { "uint8" } else { "float" };
        return Err(DataError::Npy {
            path: path.join("x_test.npy"),
            reason: format!(
                "{} features, but the training features are {}",
                kind(&test),
                kind(&train)
            ),
        });
    }
    if test_size != size {
        let text =
            |s: Option<ImageSize>| s.map_or("flat".into(), |s| format!("{}x{}", s.rows, s.cols));
        return Err(DataError::SizeMismatch {
            path: path.join("x_test.npy"),
            found: text(test_size),
            expected: text(size),
        });
    }
    Ok(Splits {
        train,
        test,
        image: size,
        class_names: None,
    })
}

#[cfg(test)]
mod tests;
