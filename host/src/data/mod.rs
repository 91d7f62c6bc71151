//! Datasets on disk: strict IDX (raw or gzip), Keras `.npz` and CSV readers, and where to look
//! for the files.
//!
//! Every reader checks the sizes a header claims against what the file can hold before it
//! allocates anything, so a corrupt or hostile header costs an error message, not memory.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub mod csv;
mod idx;
mod locate;
mod npz;

pub use idx::{load_dir, read_idx_images, read_idx_labels};
pub use locate::{cache_dir, find, not_found_message, search_dirs};
pub use npz::load_npz;

/// Side of a square image in pixels.
pub const IMAGE_SIDE: usize = 28;
/// Pixels in one image.
pub const IMAGE_PIXELS: usize = IMAGE_SIDE * IMAGE_SIDE;
/// Widest row a dataset may have.
pub const MAX_INPUTS: usize = picodense_core::shape::MAX_INPUTS;

pub(super) const IMAGES_MAGIC: u32 = 0x0000_0803;
pub(super) const LABELS_MAGIC: u32 = 0x0000_0801;
/// Deflate expands at most about 1032:1, which bounds what a compressed file can hold.
pub(super) const DEFLATE_MAX_RATIO: u64 = 1032;

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
    pub const fn class_names(self) -> [&'static str; 10] {
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
        error: zip::result::ZipError,
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
    /// The path is not a folder of IDX files nor a `.npz` file.
    #[error(
        "{}: not a dataset (expected a folder with the four IDX files or with train.csv and \
         test.csv, a Keras .npz file, or a training CSV with its test CSV)",
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

pub(super) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DataError + '_ {
    move |error| DataError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Opens a regular file, refusing directories with a clear error, and returns its length.
pub(super) fn open_file(path: &Path) -> Result<(File, u64), DataError> {
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
pub(super) fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
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
pub(super) fn alloc_zeroed(path: &Path, bytes: u64) -> Result<Vec<u8>, DataError> {
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
pub(super) fn read_exact_payload<R: Read>(
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

#[cfg(test)]
mod tests;
