//! IDX files (raw or gzip, detected by content) and the dataset folder of four of them.

use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::bufread::MultiGzDecoder;

use super::{
    DEFLATE_MAX_RATIO, DataError, Dataset, IMAGES_MAGIC, ImageSize, LABELS_MAGIC, MAX_INPUTS,
    Splits, io_err, open_file, read_exact_payload, read_full,
};

#[derive(Clone, Copy)]
enum IdxKind {
    Images,
    Labels,
}

impl IdxKind {
    fn magic(self) -> u32 {
        match self {
            IdxKind::Images => IMAGES_MAGIC,
            IdxKind::Labels => LABELS_MAGIC,
        }
    }

    fn header_len(self) -> usize {
        match self {
            IdxKind::Images => 16,
            IdxKind::Labels => 8,
        }
    }

    fn what(self) -> &'static str {
        match self {
            IdxKind::Images => "image",
            IdxKind::Labels => "label",
        }
    }
}

/// What is known about the payload size before reading it.
enum Source {
    /// An uncompressed file: exactly this many bytes follow the header.
    Raw { len: u64 },
    /// A gzip file of this compressed size.
    Gzip { file_len: u64 },
}

/// Parses and checks an IDX header, then reads the payload it declares.
fn read_idx_stream<R: Read>(
    r: &mut R,
    path: &Path,
    kind: IdxKind,
    source: Source,
) -> Result<(Vec<u8>, ImageSize), DataError> {
    let map_err = |error: io::Error| match source {
        Source::Raw { .. } => DataError::Io {
            path: path.to_path_buf(),
            error,
        },
        Source::Gzip { .. } => DataError::Gzip {
            path: path.to_path_buf(),
            error,
        },
    };
    let header_len = kind.header_len();
    let mut header = [0u8; 16];
    let got = read_full(r, &mut header[..header_len]).map_err(map_err)?;
    let truncated_header = || DataError::TruncatedHeader {
        path: path.to_path_buf(),
        len: got as u64,
        needed: header_len as u64,
        what: kind.what(),
    };
    if got < 4 {
        return Err(truncated_header());
    }
    let word =
        |i: usize| u32::from_be_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let magic = word(0);
    if magic != kind.magic() {
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            found: magic,
            expected: kind.magic(),
        });
    }
    if got < header_len {
        return Err(truncated_header());
    }
    let count = u64::from(word(4));
    let size = match kind {
        IdxKind::Images => {
            let (rows, cols) = (word(8), word(12));
            let pixels = u64::from(rows) * u64::from(cols);
            if pixels == 0 || pixels > MAX_INPUTS as u64 {
                return Err(DataError::BadDimensions {
                    path: path.to_path_buf(),
                    rows,
                    cols,
                });
            }
            ImageSize {
                rows: rows as usize,
                cols: cols as usize,
            }
        }
        IdxKind::Labels => ImageSize { rows: 1, cols: 1 },
    };
    // A u32 count times at most 2^20 bytes cannot overflow u64.
    let expected = count * (size.rows * size.cols) as u64;
    // Refuse impossible sizes here, before anything sized by the header is allocated.
    match source {
        Source::Raw { len } => {
            let actual = len.saturating_sub(header_len as u64);
            if actual < expected {
                return Err(DataError::Truncated {
                    path: path.to_path_buf(),
                    count,
                    expected,
                    actual,
                });
            }
            if actual > expected {
                return Err(DataError::TrailingData {
                    path: path.to_path_buf(),
                    count,
                    expected,
                });
            }
        }
        Source::Gzip { file_len } => {
            if expected > file_len.saturating_mul(DEFLATE_MAX_RATIO) {
                return Err(DataError::ImplausibleSize {
                    path: path.to_path_buf(),
                    count,
                    expected,
                    file_len,
                });
            }
        }
    }
    let data = read_exact_payload(r, path, count, expected, &map_err)?;
    Ok((data, size))
}

fn read_idx(path: &Path, kind: IdxKind) -> Result<(Vec<u8>, ImageSize), DataError> {
    let (file, len) = open_file(path)?;
    if len == 0 {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    let mut reader = BufReader::with_capacity(1 << 16, file);
    // Detect gzip by content: files get renamed, magic bytes do not.
    let is_gzip = reader
        .fill_buf()
        .map_err(io_err(path))?
        .starts_with(&[0x1f, 0x8b]);
    if is_gzip {
        // Multi-member so that concatenated gzip files work and garbage after the stream is
        // reported as a bad gzip header instead of being silently ignored.
        let mut decoder = MultiGzDecoder::new(reader);
        read_idx_stream(&mut decoder, path, kind, Source::Gzip { file_len: len })
    } else {
        read_idx_stream(&mut reader, path, kind, Source::Raw { len })
    }
}

/// Reads an IDX image file (raw or gzip); returns the pixels and the images' size.
pub fn read_idx_images(path: &Path) -> Result<(Vec<u8>, ImageSize), DataError> {
    read_idx(path, IdxKind::Images)
}

/// Reads an IDX label file (raw or gzip): one byte, a class index, per image.
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    Ok(read_idx(path, IdxKind::Labels)?.0)
}

/// The four IDX files of a dataset: (split prefix, kind, description).
const IDX_ROLES: [(&str, IdxKind, &str); 4] = [
    ("train", IdxKind::Images, "training images"),
    ("train", IdxKind::Labels, "training labels"),
    ("t10k", IdxKind::Images, "test images"),
    ("t10k", IdxKind::Labels, "test labels"),
];

/// The file names accepted for one role, in order of preference.
fn idx_names(prefix: &str, kind: IdxKind) -> Vec<String> {
    let (what, idx) = match kind {
        IdxKind::Images => ("images", "idx3"),
        IdxKind::Labels => ("labels", "idx1"),
    };
    vec![
        format!("{prefix}-{what}-{idx}-ubyte"),
        format!("{prefix}-{what}-{idx}-ubyte.gz"),
        format!("{prefix}-{what}.{idx}-ubyte"),
        format!("{prefix}-{what}.{idx}-ubyte.gz"),
    ]
}

/// Finds the four IDX files in `dir` (train images, train labels, test images, test labels).
pub(super) fn resolve_dir(dir: &Path) -> Result<[PathBuf; 4], DataError> {
    let mut found: [Option<PathBuf>; 4] = Default::default();
    for (slot, &(prefix, kind, _)) in found.iter_mut().zip(IDX_ROLES.iter()) {
        for name in idx_names(prefix, kind) {
            let candidate = dir.join(name);
            match fs::metadata(&candidate) {
                Ok(_) => {
                    *slot = Some(candidate);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(DataError::Io {
                        path: candidate,
                        error,
                    });
                }
            }
        }
    }
    // No IDX file at all: the folder is not a dataset of this kind, and naming one file would
    // hide the other forms a dataset can take.
    if found.iter().all(Option::is_none) {
        return Err(DataError::NotADataset {
            path: dir.to_path_buf(),
        });
    }
    let mut paths: [PathBuf; 4] = Default::default();
    for ((path, slot), &(prefix, kind, role)) in paths.iter_mut().zip(found).zip(IDX_ROLES.iter()) {
        *path = slot.ok_or_else(|| DataError::MissingFile {
            dir: dir.to_path_buf(),
            role,
            names: idx_names(prefix, kind),
        })?;
    }
    Ok(paths)
}

fn load_idx_pair(
    images_path: &Path,
    labels_path: &Path,
) -> Result<(Dataset, ImageSize), DataError> {
    let (images, size) = read_idx_images(images_path)?;
    let labels = read_idx_labels(labels_path)?;
    let width = size.rows * size.cols;
    let image_count = images.len() / width;
    if image_count == 0 {
        return Err(DataError::EmptySet {
            path: images_path.to_path_buf(),
            what: "images",
        });
    }
    if image_count != labels.len() {
        return Err(DataError::CountMismatch {
            images: images_path.to_path_buf(),
            image_count,
            labels: labels_path.to_path_buf(),
            label_count: labels.len(),
        });
    }
    Ok((Dataset::from_images(width, images, labels), size))
}

/// Loads the four IDX files (raw or `.gz`, either naming convention) from a directory.
pub fn load_dir(dir: &Path) -> Result<Splits, DataError> {
    let meta = fs::metadata(dir).map_err(io_err(dir))?;
    if !meta.is_dir() {
        return Err(DataError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    let [train_images, train_labels, test_images, test_labels] = resolve_dir(dir)?;
    let (train, size) = load_idx_pair(&train_images, &train_labels)?;
    let (test, test_size) = load_idx_pair(&test_images, &test_labels)?;
    if test_size != size {
        return Err(DataError::SizeMismatch {
            path: test_images,
            found: format!("{}x{}", test_size.rows, test_size.cols),
            expected: format!("{}x{}", size.rows, size.cols),
        });
    }
    Ok(Splits::images(train, test, size))
}

#[cfg(test)]
pub(super) mod tests;
