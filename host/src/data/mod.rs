//! Datasets on disk: strict IDX (raw or gzip) and Keras `.npz` readers, and where to look for
//! the files.
//!
//! Every reader checks the sizes a header claims against what the file can hold before it
//! allocates anything, so a corrupt or hostile header costs an error message, not memory.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Seek};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use flate2::bufread::MultiGzDecoder;
use zip::result::ZipError;
use zip::{CompressionMethod, ZipArchive};

pub mod csv;

/// Side of a square image in pixels.
pub const IMAGE_SIDE: usize = 28;
/// Pixels in one image.
pub const IMAGE_PIXELS: usize = IMAGE_SIDE * IMAGE_SIDE;
/// Widest row a dataset may have.
pub const MAX_INPUTS: usize = picodense_core::shape::MAX_INPUTS;

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;
/// Deflate expands at most about 1032:1, which bounds what a compressed file can hold.
const DEFLATE_MAX_RATIO: u64 = 1032;
/// numpy itself refuses headers above 10 000 bytes by default; this leaves room.
const NPY_MAX_HEADER: usize = 65_536;
/// Where Debian's dataset packages install.
const SYSTEM_DATASETS: &str = "/usr/share/datasets";

/// Rows of features and their labels: images stay `u8` pixels, tabular features are `f32`.
///
/// Invariant kept by every loader: either `images.len() == labels.len() * width` and `values`
/// is empty, or `values.len() == labels.len() * width` and `images` is empty.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dataset {
    /// Values per row (an image's pixels, or a table's feature columns).
    pub width: usize,
    /// Pixels of all images, one after another (empty for tabular data).
    pub images: Vec<u8>,
    /// Features of all rows, one after another (empty for images).
    pub values: Vec<f32>,
    /// One label per row.
    pub labels: Vec<u8>,
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the dataset holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Images of `width` pixels each.
    pub fn from_images(width: usize, images: Vec<u8>, labels: Vec<u8>) -> Self {
        Self {
            width,
            images,
            labels,
            ..Self::default()
        }
    }

    /// Whether the rows are images (u8 pixels) rather than f32 features.
    pub fn is_images(&self) -> bool {
        self.values.is_empty() && !self.images.is_empty()
    }

    /// Pixels of image `i`.
    ///
    /// # Panics
    /// If `i >= self.len()` or the rows are not images, like slice indexing.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * self.width..(i + 1) * self.width]
    }

    /// Features of row `i` (tabular data).
    ///
    /// # Panics
    /// If `i >= self.len()` or the rows are images, like slice indexing.
    pub fn row_values(&self, i: usize) -> &[f32] {
        &self.values[i * self.width..(i + 1) * self.width]
    }

    /// Label of image `i`.
    ///
    /// # Panics
    /// If `i >= self.len()`, like slice indexing.
    pub fn label(&self, i: usize) -> u8 {
        self.labels[i]
    }

    /// How many rows each of `classes` classes has.
    pub fn class_counts(&self, classes: usize) -> Vec<usize> {
        let mut counts = vec![0; classes];
        for &label in &self.labels {
            if let Some(c) = counts.get_mut(usize::from(label)) {
                *c += 1;
            }
        }
        counts
    }

    /// One more than the largest label (0 for no rows).
    pub fn label_bound(&self) -> usize {
        self.labels.iter().max().map_or(0, |&l| usize::from(l) + 1)
    }

    /// Splits off the last `count` rows (Keras validation_split holds out the end of the
    /// training set).
    ///
    /// `count` larger than the dataset takes everything and leaves `self` empty.
    pub fn split_off_end(&mut self, count: usize) -> Dataset {
        let keep = self.len() - count.min(self.len());
        let at = |len: usize| (keep * self.width).min(len);
        Dataset {
            width: self.width,
            images: self.images.split_off(at(self.images.len())),
            values: self.values.split_off(at(self.values.len())),
            labels: self.labels.split_off(keep),
        }
    }
}

/// Rows and columns of the images of a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageSize {
    /// Pixel rows.
    pub rows: usize,
    /// Pixel columns.
    pub cols: usize,
}

/// The training and test sets of one dataset.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Splits {
    /// The training set (60 000 images for MNIST and Fashion-MNIST).
    pub train: Dataset,
    /// The test set (10 000 images).
    pub test: Dataset,
    /// The images' size, for image data.
    pub image: Option<ImageSize>,
    /// The classes' names, when the data names them (labels index this list).
    pub class_names: Option<Vec<String>>,
}

impl Splits {
    /// Image splits of `size` without class names.
    pub fn images(train: Dataset, test: Dataset, size: ImageSize) -> Self {
        Self {
            train,
            test,
            image: Some(size),
            class_names: None,
        }
    }

    /// The number of classes: the names' count, or one more than the largest label of either
    /// set.
    pub fn classes(&self) -> usize {
        match &self.class_names {
            Some(names) => names.len(),
            None => self.train.label_bound().max(self.test.label_bound()),
        }
    }

    /// Values per row.
    pub fn width(&self) -> usize {
        self.train.width
    }
}

/// The datasets picodense knows how to find and download.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DatasetKind {
    /// Handwritten digits.
    Mnist,
    /// Zalando's clothing images, a drop-in replacement for MNIST.
    FashionMnist,
}

impl DatasetKind {
    /// Every kind, in the order help texts list them.
    pub const ALL: [DatasetKind; 2] = [DatasetKind::Mnist, DatasetKind::FashionMnist];

    /// Name used on the command line and as the directory name.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Mnist => "mnist",
            DatasetKind::FashionMnist => "fashion-mnist",
        }
    }

    /// Human-readable name of each label value.
    pub fn class_names(self) -> [&'static str; 10] {
        match self {
            DatasetKind::Mnist => ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
            DatasetKind::FashionMnist => [
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ],
        }
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A dataset name that is not one of [`DatasetKind::ALL`].
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[error("unknown dataset '{0}' (valid: mnist, fashion-mnist)")]
pub struct UnknownDataset(pub String);

impl FromStr for DatasetKind {
    type Err = UnknownDataset;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "mnist" => Ok(DatasetKind::Mnist),
            "fashion-mnist" | "fashion_mnist" | "fashionmnist" => Ok(DatasetKind::FashionMnist),
            _ => Err(UnknownDataset(s.to_owned())),
        }
    }
}

/// Everything that can be wrong with dataset files; each variant names the file.
///
/// Messages are complete on their own (the underlying error is part of the text), so they
/// read well with a plain `{}`.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum DataError {
    /// The file or directory could not be opened or read.
    #[error("{}: cannot read: {error}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        error: io::Error,
    },
    /// A directory stands where a file is expected.
    #[error("{}: is a directory, expected a file", .path.display())]
    IsDirectory {
        /// The directory.
        path: PathBuf,
    },
    /// A set with no rows: it would give a loss and accuracy of nothing.
    #[error("{}: holds 0 {what}; training, evaluation and calibration need at least one", .path.display())]
    EmptySet {
        /// The file (or archive member).
        path: PathBuf,
        /// "images" or "rows".
        what: &'static str,
    },
    /// A FIFO, device or socket: reading it could block or never end.
    #[error("{}: not a regular file ({kind}), expected a dataset file", .path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// A file stands where a directory is expected.
    #[error("{}: not a directory", .path.display())]
    NotADirectory {
        /// The file.
        path: PathBuf,
    },
    /// The file has no bytes at all.
    #[error("{}: file is empty", .path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The first four bytes are not the expected IDX magic number.
    #[error(
        "{}: bad magic {found:#010x} (expected {expected:#010x}, {}){}",
        .path.display(), idx_description(*.expected), magic_hint(*.found)
    )]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The magic number found.
        found: u32,
        /// The magic number wanted.
        expected: u32,
    },
    /// The file ends inside the header.
    #[error("{}: truncated header ({len} bytes, an IDX {what} header needs {needed})", .path.display())]
    TruncatedHeader {
        /// The file.
        path: PathBuf,
        /// Bytes available (after decompression for gzip).
        len: u64,
        /// Header size.
        needed: u64,
        /// "image" or "label".
        what: &'static str,
    },
    /// Images of no pixels, or more than a row may have.
    #[error("{}: images are {rows}x{cols}, expected 1 to {MAX_INPUTS} pixels", .path.display())]
    BadDimensions {
        /// The file.
        path: PathBuf,
        /// Rows the header declares.
        rows: u32,
        /// Columns the header declares.
        cols: u32,
    },
    /// Fewer data bytes than the header declares.
    #[error(
        "{}: truncated: the header declares {count} items ({expected} bytes) but only {actual} bytes follow",
        .path.display()
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Items (images or labels) the header declares.
        count: u64,
        /// Data bytes those items need.
        expected: u64,
        /// Data bytes present.
        actual: u64,
    },
    /// The header declares more data than a compressed file of this size can possibly hold.
    #[error(
        "{}: the header declares {count} items ({expected} bytes), more than this {file_len}-byte compressed file can hold",
        .path.display()
    )]
    ImplausibleSize {
        /// The file.
        path: PathBuf,
        /// Items the header declares.
        count: u64,
        /// Data bytes those items need.
        expected: u64,
        /// Size of the compressed file.
        file_len: u64,
    },
    /// More data bytes than the header declares.
    #[error(
        "{}: trailing data after the {count} items ({expected} bytes) the header declares",
        .path.display()
    )]
    TrailingData {
        /// The file.
        path: PathBuf,
        /// Items the header declares.
        count: u64,
        /// Data bytes those items need.
        expected: u64,
    },
    /// The gzip stream is corrupt or cut short.
    #[error("{}: corrupt or truncated gzip data: {error}", .path.display())]
    Gzip {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        error: io::Error,
    },
    /// The data would not fit in memory.
    #[error("{}: cannot allocate {bytes} bytes for the data", .path.display())]
    OutOfMemory {
        /// The file.
        path: PathBuf,
        /// Bytes needed.
        bytes: u64,
    },
    /// The images and labels files disagree on how many items there are.
    #[error(
        "{}: {image_count} images, but {} has {label_count} labels",
        .images.display(), .labels.display()
    )]
    CountMismatch {
        /// The images file.
        images: PathBuf,
        /// Images it holds.
        image_count: usize,
        /// The labels file.
        labels: PathBuf,
        /// Labels it holds.
        label_count: usize,
    },
    /// The test images differ in size from the training images.
    #[error("{}: images of {found}, but the training images are {expected}", .path.display())]
    SizeMismatch {
        /// The test file.
        path: PathBuf,
        /// Its images' size.
        found: String,
        /// The training images' size.
        expected: String,
    },
    /// A label is not a class index.
    #[error("{}: label {label} at index {index} is out of range (expected 0..=255)", .path.display())]
    BadLabel {
        /// The file (for `.npz`, the archive path followed by the member name).
        path: PathBuf,
        /// Position of the first bad label.
        index: usize,
        /// Its value.
        label: i128,
    },
    /// A directory lacks one of the four IDX files.
    #[error("{}: no {role} file (looked for {})", .dir.display(), .names.join(", "))]
    MissingFile {
        /// The directory searched.
        dir: PathBuf,
        /// Which file, e.g. "training images".
        role: &'static str,
        /// The names tried.
        names: Vec<String>,
    },
    /// The `.npz` file is not a readable zip archive.
    #[error("{}: not a readable .npz (zip) archive: {error}", .path.display())]
    Zip {
        /// The archive.
        path: PathBuf,
        /// What the zip reader said.
        error: ZipError,
    },
    /// The `.npz` archive lacks one of its four arrays.
    #[error(
        "{}: no {member} in the archive (expected x_train.npy, y_train.npy, x_test.npy, y_test.npy)",
        .path.display()
    )]
    MissingMember {
        /// The archive.
        path: PathBuf,
        /// The missing member name.
        member: &'static str,
    },
    /// A `.npy` array inside the archive is malformed or of an unsupported kind.
    #[error("{}: {reason}", .path.display())]
    Npy {
        /// The archive path followed by the member name.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The path is neither a directory nor a `.npz` file.
    #[error(
        "{}: not a dataset (expected a directory with the four IDX files, or a Keras .npz file)",
        .path.display()
    )]
    NotADataset {
        /// The path.
        path: PathBuf,
    },
}

fn idx_description(magic: u32) -> &'static str {
    match magic {
        IMAGES_MAGIC => "an IDX image file",
        LABELS_MAGIC => "an IDX label file",
        _ => "an IDX file",
    }
}

/// Names the likely mix-up when the magic belongs to the other IDX kind or to a gzip file.
fn magic_hint(found: u32) -> &'static str {
    match found {
        IMAGES_MAGIC => "; this is an IDX image file",
        LABELS_MAGIC => "; this is an IDX label file",
        _ => "",
    }
}

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

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DataError + '_ {
    move |error| DataError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Opens a regular file, refusing directories with a clear error, and returns its length.
fn open_file(path: &Path) -> Result<(File, u64), DataError> {
    // Checked before opening: opening a FIFO blocks until someone writes to it.
    let before = fs::metadata(path).map_err(io_err(path))?;
    if !before.is_file() && !before.is_dir() {
        return Err(DataError::NotAFile {
            path: path.to_path_buf(),
            kind: crate::image_input::file_kind(&before.file_type()),
        });
    }
    let file = File::open(path).map_err(io_err(path))?;
    let meta = file.metadata().map_err(io_err(path))?;
    if meta.is_dir() {
        return Err(DataError::IsDirectory {
            path: path.to_path_buf(),
        });
    }
    Ok((file, meta.len()))
}

/// Reads until `buf` is full or the input ends; returns how many bytes were read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Allocates a zeroed buffer of `bytes`, failing with an error instead of aborting.
fn alloc_zeroed(path: &Path, bytes: u64) -> Result<Vec<u8>, DataError> {
    let oom = || DataError::OutOfMemory {
        path: path.to_path_buf(),
        bytes,
    };
    let n = usize::try_from(bytes).map_err(|_| oom())?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| oom())?;
    v.resize(n, 0);
    Ok(v)
}

/// Reads exactly `expected` payload bytes and proves the input ends right after them.
///
/// For gzip, reading to the end also makes the decoder check the CRC trailer.
fn read_exact_payload<R: Read>(
    r: &mut R,
    path: &Path,
    count: u64,
    expected: u64,
    map_err: &dyn Fn(io::Error) -> DataError,
) -> Result<Vec<u8>, DataError> {
    let mut data = alloc_zeroed(path, expected)?;
    let got = read_full(r, &mut data).map_err(map_err)?;
    if got < data.len() {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            count,
            expected,
            actual: got as u64,
        });
    }
    let mut extra = [0u8; 1];
    if read_full(r, &mut extra).map_err(map_err)? != 0 {
        return Err(DataError::TrailingData {
            path: path.to_path_buf(),
            count,
            expected,
        });
    }
    Ok(data)
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
fn resolve_dir(dir: &Path) -> Result<[PathBuf; 4], DataError> {
    let mut found: [PathBuf; 4] = Default::default();
    for (slot, &(prefix, kind, role)) in found.iter_mut().zip(IDX_ROLES.iter()) {
        let names = idx_names(prefix, kind);
        let mut hit = None;
        for name in &names {
            let candidate = dir.join(name);
            match fs::metadata(&candidate) {
                Ok(_) => {
                    hit = Some(candidate);
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
        *slot = hit.ok_or_else(|| DataError::MissingFile {
            dir: dir.to_path_buf(),
            role,
            names,
        })?;
    }
    Ok(found)
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
            "unsupported dtype '{descr}' (expected an integer or float type)"
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
) -> Result<(Dataset, ImageSize), DataError> {
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
    let size = match images.sample.as_slice() {
        &[rows, cols] => ImageSize {
            rows: rows as usize,
            cols: cols as usize,
        },
        _ => ImageSize {
            rows: 1,
            cols: width,
        },
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
    Ok((
        data,
        ImageSize {
            rows: 1,
            cols: width,
        },
    ))
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
        return Err(DataError::SizeMismatch {
            path: path.join("x_test.npy"),
            found: format!("{}x{}", test_size.rows, test_size.cols),
            expected: format!("{}x{}", size.rows, size.cols),
        });
    }
    let mut splits = Splits::images(train, test, size);
    if !splits.train.is_images() {
        splits.image = None;
    }
    Ok(splits)
}

/// Loads a dataset from a directory of IDX files or from a Keras `.npz` file.
pub fn load(path: &Path) -> Result<Splits, DataError> {
    let meta = fs::metadata(path).map_err(io_err(path))?;
    if meta.is_dir() {
        return load_dir(path);
    }
    let is_npz = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npz"));
    if is_npz {
        load_npz(path)
    } else {
        Err(DataError::NotADataset {
            path: path.to_path_buf(),
        })
    }
}

fn env_nonempty(name: &str) -> Option<OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

/// `$XDG_CACHE_HOME/picodense` if that is an absolute path (the spec says to ignore relative
/// ones), else `$HOME/.cache/picodense`.
fn user_cache_root(xdg_cache: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    if let Some(xdg) = xdg_cache.map(PathBuf::from).filter(|p| p.is_absolute()) {
        return Some(xdg.join("picodense"));
    }
    home.map(|h| PathBuf::from(h).join(".cache").join("picodense"))
}

/// The environment that decides where datasets live, read once so tests can supply their own.
struct DataEnv {
    data: Option<OsString>,
    xdg_cache: Option<OsString>,
    home: Option<OsString>,
}

impl DataEnv {
    fn from_process() -> DataEnv {
        DataEnv {
            data: env_nonempty("PICODENSE_DATA"),
            xdg_cache: env_nonempty("XDG_CACHE_HOME"),
            home: env_nonempty("HOME"),
        }
    }

    fn search_dirs(&self, kind: DatasetKind) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        if let Some(data) = &self.data {
            dirs.push(PathBuf::from(data).join(kind.name()));
        }
        if let Some(cache) = user_cache_root(self.xdg_cache.clone(), self.home.clone()) {
            dirs.push(cache.join(kind.name()));
        }
        dirs.push(Path::new(SYSTEM_DATASETS).join(kind.name()));
        dirs.dedup();
        dirs
    }

    fn cache_dir(&self, kind: DatasetKind) -> Option<PathBuf> {
        match &self.data {
            Some(data) => Some(PathBuf::from(data).join(kind.name())),
            None => user_cache_root(self.xdg_cache.clone(), self.home.clone())
                .map(|c| c.join(kind.name())),
        }
    }
}

/// Directories searched for a dataset, in order: `$PICODENSE_DATA/<name>`, the user cache
/// (`$XDG_CACHE_HOME` or `~/.cache`, then `picodense/<name>`), `/usr/share/datasets/<name>`.
pub fn search_dirs(kind: DatasetKind) -> Vec<PathBuf> {
    DataEnv::from_process().search_dirs(kind)
}

/// Where `download` writes: `$PICODENSE_DATA/<name>` if set, else the user cache.
pub fn cache_dir(kind: DatasetKind) -> Option<PathBuf> {
    DataEnv::from_process().cache_dir(kind)
}

/// The first of `dirs` that holds all four IDX files (by name; contents are checked on load).
fn find_in(dirs: &[PathBuf]) -> Option<PathBuf> {
    dirs.iter()
        .find(|d| d.is_dir() && resolve_dir(d).is_ok())
        .cloned()
}

/// The first of [`search_dirs`] that holds all four IDX files.
pub fn find(kind: DatasetKind) -> Option<PathBuf> {
    find_in(&search_dirs(kind))
}

fn not_found_message_for(kind: DatasetKind, dirs: &[PathBuf]) -> String {
    let name = kind.name();
    let mut msg = format!("no {name} dataset found; looked for its four IDX files in:\n");
    for dir in dirs {
        msg.push_str(&format!("  {}\n", dir.display()));
    }
    msg.push_str(&format!(
        "to get it, run `picodense download --dataset {name}`"
    ));
    if kind == DatasetKind::FashionMnist {
        msg.push_str(
            ",\nor on Debian `apt-get install dataset-fashion-mnist` \
             (it installs to /usr/share/datasets/fashion-mnist)",
        );
    }
    msg
}

/// Explains where a dataset was looked for and how to get it.
pub fn not_found_message(kind: DatasetKind) -> String {
    not_found_message_for(kind, &search_dirs(kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;
    use zip::write::SimpleFileOptions;

    fn idx_images(count: u32, rows: u32, cols: u32, data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [IMAGES_MAGIC, count, rows, cols] {
            v.extend_from_slice(&w.to_be_bytes());
        }
        v.extend_from_slice(data);
        v
    }

    fn idx_labels(count: u32, data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
        v.extend_from_slice(&count.to_be_bytes());
        v.extend_from_slice(data);
        v
    }

    /// `n` images whose pixels encode their index, so order mistakes show.
    fn pixels(n: usize, seed: u8) -> Vec<u8> {
        (0..n * IMAGE_PIXELS)
            .map(|i| ((i / IMAGE_PIXELS) as u8).wrapping_mul(31) ^ (i as u8) ^ seed)
            .collect()
    }

    fn good_images(n: usize) -> Vec<u8> {
        idx_images(n as u32, 28, 28, &pixels(n, 0))
    }

    fn good_labels(n: usize) -> Vec<u8> {
        let l: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        idx_labels(n as u32, &l)
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        fs::write(&p, bytes).unwrap();
        p
    }

    /// Writes a complete dataset directory with `train` and `test` images.
    fn write_dir(dir: &Path, names: [&str; 4], train: usize, test: usize, compress: bool) {
        let contents = [
            good_images(train),
            good_labels(train),
            good_images(test),
            good_labels(test),
        ];
        for (name, bytes) in names.iter().zip(contents) {
            let bytes = if compress { gz(&bytes) } else { bytes };
            write(dir, name, &bytes);
        }
    }

    const DASH_NAMES: [&str; 4] = [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ];

    #[test]
    fn reads_raw_and_gzip_images_and_labels() {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in [("raw", good_images(3)), ("z.gz", gz(&good_images(3)))] {
            let p = write(dir.path(), name, &bytes);
            let size = ImageSize { rows: 28, cols: 28 };
            assert_eq!(read_idx_images(&p).unwrap(), (pixels(3, 0), size));
        }
        // Gzip is detected by content, not by the name.
        let p = write(dir.path(), "labels-no-suffix", &gz(&good_labels(12)));
        assert_eq!(read_idx_labels(&p).unwrap()[11], 1);
    }

    #[test]
    fn zero_items_is_a_valid_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "i", &idx_images(0, 28, 28, &[]));
        assert!(read_idx_images(&p).unwrap().0.is_empty());
    }

    #[test]
    fn empty_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "i", &[]);
        let e = read_idx_images(&p).unwrap_err();
        assert!(matches!(e, DataError::Empty { .. }), "{e}");
        assert!(e.to_string().contains("file is empty"));
        assert!(e.to_string().contains(&*p.to_string_lossy()));
    }

    #[test]
    fn truncated_header() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "a", &[0, 0]);
        assert!(matches!(
            read_idx_labels(&p),
            Err(DataError::TruncatedHeader { len: 2, .. })
        ));
        let p = write(dir.path(), "b", &good_images(1)[..10]);
        let e = read_idx_images(&p).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::TruncatedHeader {
                    len: 10,
                    needed: 16,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("truncated header"), "{e}");
        // Same inside gzip.
        let p = write(dir.path(), "c.gz", &gz(&good_images(1)[..10]));
        assert!(matches!(
            read_idx_images(&p),
            Err(DataError::TruncatedHeader { len: 10, .. })
        ));
    }

    #[test]
    fn truncated_body() {
        let dir = tempfile::tempdir().unwrap();
        let full = good_images(2);
        let p = write(dir.path(), "a", &full[..full.len() - 1]);
        let e = read_idx_images(&p).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::Truncated {
                    count: 2,
                    expected: 1568,
                    actual: 1567,
                    ..
                }
            ),
            "{e}"
        );
        let p = write(dir.path(), "b.gz", &gz(&full[..full.len() - 1]));
        assert!(matches!(
            read_idx_images(&p),
            Err(DataError::Truncated { actual: 1567, .. })
        ));
        let p = write(dir.path(), "c", &idx_labels(5, &[1, 2]));
        assert!(matches!(
            read_idx_labels(&p),
            Err(DataError::Truncated {
                expected: 5,
                actual: 2,
                ..
            })
        ));
    }

    #[test]
    fn wrong_magic() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = good_images(1);
        bytes[3] = 0x04;
        let p = write(dir.path(), "a", &bytes);
        let e = read_idx_images(&p).unwrap_err();
        assert!(matches!(e, DataError::BadMagic { found: 0x804, .. }), "{e}");
        assert!(
            e.to_string()
                .contains("bad magic 0x00000804 (expected 0x00000803, an IDX image file)"),
            "{e}"
        );
        // A labels file passed as images says what it is.
        let p = write(dir.path(), "b", &good_labels(3));
        let e = read_idx_images(&p).unwrap_err();
        assert!(e.to_string().contains("this is an IDX label file"), "{e}");
        // A short file with the wrong magic reports the magic, not the length.
        let p = write(dir.path(), "c", b"hello");
        assert!(matches!(
            read_idx_labels(&p),
            Err(DataError::BadMagic { .. })
        ));
    }

    #[test]
    fn images_of_any_size_but_none_empty_or_too_wide() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "a", &idx_images(2, 27, 3, &[5; 2 * 27 * 3]));
        let (pixels, size) = read_idx_images(&p).unwrap();
        assert_eq!((pixels.len(), size), (162, ImageSize { rows: 27, cols: 3 }));
        for (rows, cols) in [(0, 28), (28, 0), (2048, 1024)] {
            let p = write(dir.path(), "b", &idx_images(0, rows, cols, &[]));
            let e = read_idx_images(&p).unwrap_err();
            assert!(
                matches!(e, DataError::BadDimensions { rows: r, cols: c, .. } if (r, c) == (rows, cols)),
                "{e}"
            );
            let shown = format!("images are {rows}x{cols}, expected 1 to {MAX_INPUTS} pixels");
            assert!(e.to_string().contains(&shown), "{e}");
        }
    }

    #[test]
    fn test_images_of_another_size_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let write_named = |name: &str, bytes: Vec<u8>| write(dir.path(), name, &bytes);
        write_named("train-images-idx3-ubyte", idx_images(2, 4, 5, &[1; 40]));
        write_named("train-labels-idx1-ubyte", idx_labels(2, &[0, 1]));
        write_named("t10k-images-idx3-ubyte", idx_images(1, 5, 4, &[1; 20]));
        write_named("t10k-labels-idx1-ubyte", idx_labels(1, &[1]));
        let e = load_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("t10k-images-idx3-ubyte"), "{e}");
        assert!(
            e.contains("images of 5x4, but the training images are 4x5"),
            "{e}"
        );
    }

    #[test]
    fn labels_are_any_byte_and_classes_come_from_both_sets() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "l", &idx_labels(4, &[0, 9, 255, 3]));
        assert_eq!(read_idx_labels(&p).unwrap(), [0, 9, 255, 3]);
        let set = |labels: Vec<u8>| Dataset::from_images(1, vec![0; labels.len()], labels);
        let splits = Splits::images(
            set(vec![0, 2]),
            set(vec![4]),
            ImageSize { rows: 1, cols: 1 },
        );
        assert_eq!(splits.classes(), 5);
    }

    #[test]
    fn corrupted_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let good = gz(&good_images(4));
        // A flipped CRC trailer.
        let mut bad_crc = good.clone();
        let n = bad_crc.len();
        bad_crc[n - 8] ^= 0xff;
        // The compressed stream cut in half.
        let cut = good[..good.len() / 2].to_vec();
        // Garbage in the middle of the deflate data.
        let mut mangled = good.clone();
        for b in &mut mangled[12..40] {
            *b = 0xff;
        }
        for (name, bytes) in [
            ("crc.gz", bad_crc),
            ("cut.gz", cut),
            ("mangled.gz", mangled),
        ] {
            let p = write(dir.path(), name, &bytes);
            let e = read_idx_images(&p).unwrap_err();
            assert!(
                matches!(e, DataError::Gzip { .. } | DataError::Truncated { .. }),
                "{name}: {e}"
            );
        }
        // A header-only gzip start.
        let p = write(dir.path(), "stub.gz", &[0x1f, 0x8b, 8]);
        assert!(matches!(read_idx_images(&p), Err(DataError::Gzip { .. })));
    }

    #[test]
    fn trailing_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let mut raw = good_images(2);
        raw.push(7);
        let p = write(dir.path(), "raw", &raw);
        let e = read_idx_images(&p).unwrap_err();
        assert!(matches!(e, DataError::TrailingData { count: 2, .. }), "{e}");
        // Extra data inside the gzip stream.
        let p = write(dir.path(), "in.gz", &gz(&raw));
        assert!(matches!(
            read_idx_images(&p),
            Err(DataError::TrailingData { .. })
        ));
        // Garbage after the gzip stream.
        let mut after = gz(&good_labels(3));
        after.extend_from_slice(b"garbage!");
        let p = write(dir.path(), "after.gz", &after);
        let e = read_idx_labels(&p).unwrap_err();
        assert!(matches!(e, DataError::Gzip { .. }), "{e}");
    }

    #[test]
    fn huge_count_is_refused_before_allocating() {
        let dir = tempfile::tempdir().unwrap();
        // Raw: checked against the file length.
        let p = write(dir.path(), "raw", &idx_images(u32::MAX, 28, 28, &[0; 100]));
        let e = read_idx_images(&p).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::Truncated {
                    count: 4_294_967_295,
                    actual: 100,
                    ..
                }
            ),
            "{e}"
        );
        let p = write(dir.path(), "rawl", &idx_labels(u32::MAX, &[0; 100]));
        assert!(matches!(
            read_idx_labels(&p),
            Err(DataError::Truncated { .. })
        ));
        // Gzip: checked against what the compressed size can possibly expand to.
        let p = write(
            dir.path(),
            "z.gz",
            &gz(&idx_images(u32::MAX, 28, 28, &[0; 100])),
        );
        let e = read_idx_images(&p).unwrap_err();
        assert!(matches!(e, DataError::ImplausibleSize { .. }), "{e}");
        let p = write(dir.path(), "zl.gz", &gz(&idx_labels(4_000_000_000, &[])));
        assert!(matches!(
            read_idx_labels(&p),
            Err(DataError::ImplausibleSize { .. })
        ));
    }

    #[test]
    fn directory_where_a_file_is_expected() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_idx_images(dir.path()).unwrap_err();
        assert!(matches!(e, DataError::IsDirectory { .. }), "{e}");
        assert!(e.to_string().contains("is a directory"));
        // Inside a dataset directory too.
        write_dir(dir.path(), DASH_NAMES, 2, 1, false);
        fs::remove_file(dir.path().join(DASH_NAMES[1])).unwrap();
        fs::create_dir(dir.path().join(DASH_NAMES[1])).unwrap();
        assert!(matches!(
            load_dir(dir.path()),
            Err(DataError::IsDirectory { path, .. }) if path.ends_with(DASH_NAMES[1])
        ));
    }

    #[test]
    fn missing_file_lists_names_tried() {
        let dir = tempfile::tempdir().unwrap();
        write_dir(dir.path(), DASH_NAMES, 2, 1, false);
        fs::remove_file(dir.path().join("t10k-labels-idx1-ubyte")).unwrap();
        let e = load_dir(dir.path()).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(
                e,
                DataError::MissingFile {
                    role: "test labels",
                    ..
                }
            ),
            "{msg}"
        );
        for name in [
            "t10k-labels-idx1-ubyte",
            "t10k-labels-idx1-ubyte.gz",
            "t10k-labels.idx1-ubyte",
        ] {
            assert!(msg.contains(name), "{msg}");
        }
        // A missing file read directly.
        let e = read_idx_images(&dir.path().join("nope")).unwrap_err();
        assert!(matches!(e, DataError::Io { .. }), "{e}");
        assert!(e.to_string().contains("nope: cannot read"), "{e}");
        // A missing or non-directory dataset directory.
        assert!(matches!(
            load_dir(&dir.path().join("absent")),
            Err(DataError::Io { .. })
        ));
        let f = write(dir.path(), "plain", b"x");
        assert!(matches!(load_dir(&f), Err(DataError::NotADirectory { .. })));
    }

    #[cfg(unix)]
    #[test]
    fn unreadable_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "secret", &good_labels(2));
        fs::set_permissions(&p, fs::Permissions::from_mode(0o000)).unwrap();
        // Root reads anything; only check the error when the OS really refuses.
        if File::open(&p).is_err() {
            let e = read_idx_labels(&p).unwrap_err();
            assert!(matches!(e, DataError::Io { .. }), "{e}");
            assert!(e.to_string().contains("cannot read"), "{e}");
        }
    }

    #[test]
    fn count_mismatch_between_images_and_labels() {
        let dir = tempfile::tempdir().unwrap();
        write_dir(dir.path(), DASH_NAMES, 3, 2, false);
        write(dir.path(), DASH_NAMES[1], &good_labels(4));
        let e = load_dir(dir.path()).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::CountMismatch {
                    image_count: 3,
                    label_count: 4,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("3 images, but"), "{e}");
    }

    #[test]
    fn loads_both_spellings_raw_and_gz() {
        let dotted = [
            "train-images.idx3-ubyte",
            "train-labels.idx1-ubyte",
            "t10k-images.idx3-ubyte",
            "t10k-labels.idx1-ubyte",
        ];
        let gz_names = DASH_NAMES.map(|n| format!("{n}.gz"));
        let gz_names = [
            gz_names[0].as_str(),
            gz_names[1].as_str(),
            gz_names[2].as_str(),
            gz_names[3].as_str(),
        ];
        for (names, compress) in [(DASH_NAMES, false), (dotted, false), (gz_names, true)] {
            let dir = tempfile::tempdir().unwrap();
            write_dir(dir.path(), names, 5, 3, compress);
            let s = load_dir(dir.path()).unwrap();
            assert_eq!(s.train.len(), 5);
            assert_eq!(s.test.len(), 3);
            assert_eq!(s.train.images, pixels(5, 0));
            assert_eq!(s.test.labels, vec![0, 1, 2]);
            assert_eq!(
                find_in(&[dir.path().to_path_buf()]),
                Some(dir.path().into())
            );
            // load() dispatches a directory to load_dir.
            assert_eq!(load(dir.path()).unwrap(), s);
        }
    }

    #[test]
    fn dataset_accessors_and_split() {
        let mut d = Dataset::from_images(IMAGE_PIXELS, pixels(5, 9), vec![3, 1, 4, 1, 5]);
        assert_eq!(d.len(), 5);
        assert!(!d.is_empty());
        assert_eq!(
            d.image(2),
            &pixels(5, 9)[2 * IMAGE_PIXELS..3 * IMAGE_PIXELS]
        );
        assert_eq!(d.label(4), 5);
        assert_eq!(d.class_counts(10)[1], 2);
        let tail = d.split_off_end(2);
        assert_eq!(tail.labels, vec![1, 5]);
        assert_eq!(tail.images, pixels(5, 9)[3 * IMAGE_PIXELS..].to_vec());
        assert_eq!(d.labels, vec![3, 1, 4]);
        assert_eq!(d.images.len(), 3 * IMAGE_PIXELS);
        let all = d.split_off_end(100);
        assert_eq!(all.len(), 3);
        assert!(d.is_empty());
    }

    #[test]
    fn dataset_kind_names() {
        assert_eq!(DatasetKind::Mnist.name(), "mnist");
        assert_eq!(DatasetKind::FashionMnist.to_string(), "fashion-mnist");
        for kind in DatasetKind::ALL {
            assert_eq!(kind.name().parse::<DatasetKind>(), Ok(kind));
        }
        assert_eq!("Fashion_MNIST".parse(), Ok(DatasetKind::FashionMnist));
        let e = "cifar".parse::<DatasetKind>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown dataset 'cifar' (valid: mnist, fashion-mnist)"
        );
        assert_eq!(DatasetKind::Mnist.class_names()[7], "7");
        assert_eq!(DatasetKind::FashionMnist.class_names()[0], "T-shirt/top");
        assert_eq!(DatasetKind::FashionMnist.class_names()[9], "Ankle boot");
    }

    #[test]
    fn search_and_cache_dirs() {
        let env = DataEnv {
            data: Some("/data".into()),
            xdg_cache: Some("/xdg".into()),
            home: Some("/home/u".into()),
        };
        assert_eq!(
            env.search_dirs(DatasetKind::FashionMnist),
            vec![
                PathBuf::from("/data/fashion-mnist"),
                PathBuf::from("/xdg/picodense/fashion-mnist"),
                PathBuf::from("/usr/share/datasets/fashion-mnist"),
            ]
        );
        assert_eq!(
            env.cache_dir(DatasetKind::Mnist),
            Some(PathBuf::from("/data/mnist"))
        );
        // Relative XDG_CACHE_HOME is ignored, per the spec.
        let env = DataEnv {
            data: None,
            xdg_cache: Some("rel".into()),
            home: Some("/home/u".into()),
        };
        assert_eq!(
            env.cache_dir(DatasetKind::Mnist),
            Some(PathBuf::from("/home/u/.cache/picodense/mnist"))
        );
        assert_eq!(env.search_dirs(DatasetKind::Mnist).len(), 2);
        let env = DataEnv {
            data: None,
            xdg_cache: None,
            home: None,
        };
        assert_eq!(env.cache_dir(DatasetKind::Mnist), None);
        assert_eq!(
            env.search_dirs(DatasetKind::Mnist),
            vec![PathBuf::from("/usr/share/datasets/mnist")]
        );
    }

    #[test]
    fn find_skips_incomplete_dirs() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        write_dir(a.path(), DASH_NAMES, 1, 1, false);
        fs::remove_file(a.path().join(DASH_NAMES[0])).unwrap();
        write_dir(b.path(), DASH_NAMES, 1, 1, true);
        let dirs = [
            a.path().join("absent"),
            a.path().to_path_buf(),
            b.path().to_path_buf(),
        ];
        assert_eq!(find_in(&dirs), Some(b.path().to_path_buf()));
        assert_eq!(find_in(&dirs[..2]), None);
    }

    #[test]
    fn not_found_message_says_where_and_how() {
        let dirs = [PathBuf::from("/x/mnist"), PathBuf::from("/y/mnist")];
        let m = not_found_message_for(DatasetKind::Mnist, &dirs);
        assert!(m.contains("/x/mnist") && m.contains("/y/mnist"), "{m}");
        assert!(m.contains("picodense download --dataset mnist"), "{m}");
        assert!(!m.contains("apt-get"), "{m}");
        let m = not_found_message_for(DatasetKind::FashionMnist, &dirs);
        assert!(
            m.contains("picodense download --dataset fashion-mnist"),
            "{m}"
        );
        assert!(m.contains("apt-get install dataset-fashion-mnist"), "{m}");
        assert!(m.contains("/usr/share/datasets/fashion-mnist"), "{m}");
        assert!(not_found_message(DatasetKind::Mnist).contains("/usr/share/datasets/mnist"));
    }

    /// A version 1.0 `.npy` file as numpy writes it: header padded to 64 bytes with a newline.
    fn npy(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
        let fortran = if fortran { "True" } else { "False" };
        let mut dict =
            format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}");
        while (10 + dict.len() + 1) % 64 != 0 {
            dict.push(' ');
        }
        dict.push('\n');
        let mut v = b"\x93NUMPY\x01\x00".to_vec();
        v.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        v.extend_from_slice(dict.as_bytes());
        v.extend_from_slice(data);
        v
    }

    fn write_npz(path: &Path, members: &[(&str, Vec<u8>)]) {
        let mut w = zip::ZipWriter::new(File::create(path).unwrap());
        for (i, (name, bytes)) in members.iter().enumerate() {
            // Mix stored and deflated members, as real archives do either.
            let method = if i % 2 == 0 {
                CompressionMethod::Stored
            } else {
                CompressionMethod::Deflated
            };
            w.start_file(
                *name,
                SimpleFileOptions::default().compression_method(method),
            )
            .unwrap();
            w.write_all(bytes).unwrap();
        }
        w.finish().unwrap();
    }

    /// Twelve f32 values, the sixth NaN.
    fn nan_at_5() -> Vec<u8> {
        (0..12)
            .flat_map(|i| if i == 5 { f32::NAN } else { i as f32 }.to_le_bytes())
            .collect()
    }

    #[test]
    fn npz_float_features_of_any_shape() {
        let dir = tempfile::tempdir().unwrap();
        let floats = |n: usize| -> Vec<u8> {
            (0..n * 6)
                .flat_map(|i| (i as f32 * 0.5).to_le_bytes())
                .collect()
        };
        let members = replace(
            replace(
                good_members(3, 2, false),
                "x_train.npy",
                npy("<f4", false, "(3, 6)", &floats(3)),
            ),
            "x_test.npy",
            npy("<f4", false, "(2, 3, 2)", &floats(2)),
        );
        let p = dir.path().join("f.npz");
        write_npz(&p, &members);
        let splits = load(&p).unwrap();
        assert_eq!(splits.width(), 6);
        assert!(!splits.train.is_images());
        assert_eq!(splits.train.row_values(1), &[3.0, 3.5, 4.0, 4.5, 5.0, 5.5]);
        assert_eq!(splits.test.len(), 2);
        assert_eq!(splits.image, None);
        // Float features beside uint8 images in the other split are refused.
        let mixed = replace(
            good_members(3, 2, false),
            "x_train.npy",
            npy("<f4", false, "(3, 28, 28)", &[0; 3 * 784 * 4]),
        );
        let p = dir.path().join("mixed.npz");
        write_npz(&p, &mixed);
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("x_test.npy") && e.contains("float"), "{e}");
    }

    fn labels_i8(labels: &[i64]) -> Vec<u8> {
        labels.iter().flat_map(|l| l.to_le_bytes()).collect()
    }

    fn good_members(train: usize, test: usize, i8_labels: bool) -> Members {
        let y = |n: usize| -> Vec<u8> {
            let l: Vec<i64> = (0..n as i64).map(|i| (i * 7) % 10).collect();
            if i8_labels {
                npy("<i8", false, &format!("({n},)"), &labels_i8(&l))
            } else {
                let b: Vec<u8> = l.iter().map(|&x| x as u8).collect();
                npy("|u1", false, &format!("({n},)"), &b)
            }
        };
        vec![
            (
                "x_train.npy",
                npy(
                    "|u1",
                    false,
                    &format!("({train}, 28, 28)"),
                    &pixels(train, 1),
                ),
            ),
            ("y_train.npy", y(train)),
            (
                "x_test.npy",
                npy("|u1", false, &format!("({test}, 28, 28)"), &pixels(test, 2)),
            ),
            ("y_test.npy", y(test)),
        ]
    }

    #[test]
    fn npz_round_trip_u1_and_i8_labels() {
        let dir = tempfile::tempdir().unwrap();
        for i8_labels in [false, true] {
            let p = dir.path().join(format!("m{i8_labels}.npz"));
            write_npz(&p, &good_members(6, 4, i8_labels));
            let s = load(&p).unwrap();
            assert_eq!(s.train.images, pixels(6, 1));
            assert_eq!(s.test.images, pixels(4, 2));
            assert_eq!(s.train.labels, vec![0, 7, 4, 1, 8, 5]);
            assert_eq!(s.test.labels, vec![0, 7, 4, 1]);
        }
    }

    #[test]
    fn npy_header_variants() {
        // Python 2 long integers, version 2 headers, big-endian and narrow label types.
        let mut v2 = npy("<i4", false, "(3L,)", &[1, 0, 0, 0, 2, 0, 0, 0, 9, 0, 0, 0]);
        v2[6] = 2;
        let dict_len = u16::from_le_bytes([v2[8], v2[9]]);
        v2.splice(8..10, (u32::from(dict_len)).to_le_bytes());
        let h = parse_npy_header(&mut v2.as_slice(), Path::new("v2")).unwrap();
        assert_eq!(h.shape, vec![3]);
        assert_eq!(h.len, 12 + u64::from(dict_len));
        let be = IntDtype::parse(">u2").unwrap();
        assert_eq!(be.value(&[0x01, 0x02]), 0x0102);
        let le = IntDtype::parse("<i2").unwrap();
        assert_eq!(le.value(&[0xff, 0xff]), -1);
        assert_eq!(
            IntDtype::parse("<i8")
                .unwrap()
                .value(&(-5i64).to_le_bytes()),
            -5
        );
        assert!(IntDtype::parse("|i2").is_none());
        assert!(IntDtype::parse("<f4").is_some_and(|d| d.float && d.size == 4));
        assert!(IntDtype::parse("<f2").is_none());
        assert!(IntDtype::parse("").is_none());
    }

    fn npz_error(members: &[(&str, Vec<u8>)]) -> DataError {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.npz");
        write_npz(&p, members);
        load_npz(&p).unwrap_err()
    }

    /// Members of a test `.npz`: name and bytes.
    type Members = Vec<(&'static str, Vec<u8>)>;

    fn replace(mut members: Members, name: &str, bytes: Vec<u8>) -> Members {
        for m in &mut members {
            if m.0 == name {
                m.1 = bytes.clone();
            }
        }
        members
    }

    #[test]
    fn npz_errors() {
        let good = || good_members(3, 2, false);
        let cases: Vec<(Members, &str)> = vec![
            (good()[1..].to_vec(), "no x_train.npy in the archive"),
            (
                replace(good(), "x_test.npy", b"NUMPY not really".to_vec()),
                "bad magic",
            ),
            (
                replace(good(), "y_test.npy", npy("|u1", true, "(2,)", &[1, 2])),
                "fortran_order",
            ),
            (
                replace(
                    good(),
                    "x_train.npy",
                    npy("<f4", false, "(3, 2, 2)", &nan_at_5()),
                ),
                "value at index 5 (row 1) is not a finite f32",
            ),
            (
                replace(
                    good(),
                    "x_train.npy",
                    npy("<f2", false, "(3, 28, 28)", &[0; 6]),
                ),
                "unsupported dtype '<f2'",
            ),
            (
                replace(
                    good(),
                    "x_train.npy",
                    npy("<i8", false, "(3, 28, 28)", &[0; 3 * 784 * 8]),
                ),
                "features must be uint8 ('|u1') or float",
            ),
            (
                replace(
                    good(),
                    "x_train.npy",
                    npy("|u1", false, "(3, 27, 28)", &[0; 3 * 27 * 28]),
                ),
                "the training images are 27x28",
            ),
            (
                replace(good(), "y_train.npy", npy("|u1", false, "(3, 2)", &[0; 6])),
                "labels have shape (3, 2)",
            ),
            (
                replace(good(), "y_train.npy", npy("|u1", false, "(3,)", &[0, 1])),
                "truncated",
            ),
            (
                replace(
                    good(),
                    "y_train.npy",
                    npy("|u1", false, "(3,)", &[0, 1, 2, 3]),
                ),
                "trailing data",
            ),
            (
                replace(good(), "y_train.npy", npy("|u1", false, "(2,)", &[0, 1])),
                "3 images, but",
            ),
            (
                replace(
                    good(),
                    "y_test.npy",
                    npy("<i8", false, "(2,)", &labels_i8(&[0, 300])),
                ),
                "label 300 at index 1",
            ),
            (
                replace(
                    good(),
                    "y_train.npy",
                    npy("<i8", false, "(3,)", &labels_i8(&[1, -1, 2])),
                ),
                "label -1 at index 1",
            ),
            (
                replace(
                    good(),
                    "y_train.npy",
                    npy("<i8", false, "(3,)", &labels_i8(&[1, 2, 300])),
                ),
                "label 300 at index 2",
            ),
            (
                replace(good(), "y_train.npy", {
                    let mut v = npy("|u1", false, "(3,)", &[0, 1, 2]);
                    v[6] = 9;
                    v
                }),
                "unsupported .npy format version 9",
            ),
            (
                replace(good(), "y_train.npy", {
                    let mut v = b"\x93NUMPY\x01\x00".to_vec();
                    let d = b"{'descr': '|u1', 'shape': (3,)}\n";
                    v.extend_from_slice(&(d.len() as u16).to_le_bytes());
                    v.extend_from_slice(d);
                    v.extend_from_slice(&[0, 1, 2]);
                    v
                }),
                "lacks one of",
            ),
            (
                replace(good(), "y_train.npy", {
                    let mut v = b"\x93NUMPY\x01\x00".to_vec();
                    let d = b"{'descr': '|u1', 'fortran_order': False, 'shape': (3,\n";
                    v.extend_from_slice(&(d.len() as u16).to_le_bytes());
                    v.extend_from_slice(d);
                    v
                }),
                "malformed .npy header",
            ),
            (
                replace(
                    good(),
                    "x_train.npy",
                    npy("|u1", false, "(4000000000, 28, 28)", &[0; 10]),
                ),
                "truncated",
            ),
        ];
        for (members, want) in cases {
            let e = npz_error(&members);
            let msg = e.to_string();
            assert!(msg.contains(want), "wanted '{want}' in: {msg}");
            assert!(msg.contains("bad.npz"), "{msg}");
        }
    }

    #[test]
    fn npz_file_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "junk.npz", b"this is not a zip archive at all");
        assert!(matches!(load_npz(&p), Err(DataError::Zip { .. })));
        let p = write(dir.path(), "empty.npz", b"");
        assert!(matches!(load(&p), Err(DataError::Zip { .. })));
        assert!(matches!(
            load_npz(dir.path()),
            Err(DataError::IsDirectory { .. })
        ));
        let p = write(dir.path(), "data.csv", b"1,2,3");
        let e = load(&p).unwrap_err();
        assert!(matches!(e, DataError::NotADataset { .. }), "{e}");
        assert!(matches!(
            load(&dir.path().join("absent.npz")),
            Err(DataError::Io { .. })
        ));
    }
}
