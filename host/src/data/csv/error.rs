//! What can be wrong with a CSV data file, down to the cell.

use std::io;
use std::path::PathBuf;

use super::{DEFAULT_LABEL_COLUMN, MAX_CLASSES, MAX_COLUMNS};

/// What is wrong with a feature cell.
#[derive(thiserror::Error, Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum CellProblem {
    /// The cell is empty (or only spaces).
    #[error("empty cell, expected a number")]
    Empty,
    /// The cell's bytes are not UTF-8 text.
    #[error("not a number (the bytes are not UTF-8 text)")]
    NotUtf8,
    /// The cell does not parse as a decimal number.
    #[error("'{0}' is not a number")]
    NotANumber(String),
    /// The cell is a NaN.
    #[error("'{0}' is NaN; every feature must be a finite number")]
    NaN(String),
    /// The cell is an infinity.
    #[error("'{0}' is infinite; every feature must be a finite number")]
    Infinite(String),
    /// The number's magnitude is past what an f32 holds.
    #[error("'{0}' is out of f32 range (magnitudes up to 3.4028235e38)")]
    OutOfRange(String),
}

/// What is wrong with a label cell.
#[derive(thiserror::Error, Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum LabelProblem {
    /// The label is empty (or only spaces).
    #[error("empty label")]
    Empty,
    /// The label's bytes are not UTF-8 text.
    #[error("the label's bytes are not UTF-8 text")]
    NotUtf8,
    /// A distinct label past [`MAX_CLASSES`].
    #[error("label '{0}' is the 257th distinct label: at most {MAX_CLASSES} classes are supported")]
    TooManyClasses(String),
    /// A test label that no training row has.
    #[error("label '{label}' never appears in the training file (its classes: {classes})")]
    Unseen {
        /// The label.
        label: String,
        /// The training classes, listed for the message.
        classes: String,
    },
    /// A test label that is not an integer 0..=255 while the training labels are.
    #[error("label '{0}' is not an integer 0..=255, as the training file's labels are")]
    NotInteger(String),
}

/// Everything that can be wrong with a CSV data file; each variant names the file, and the
/// line and column where there is one.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum CsvError {
    /// The file could not be opened or read.
    #[error("{}: cannot read: {error}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        error: io::Error,
    },
    /// A FIFO, device or socket: reading it could block or never end.
    #[error("{}: not a regular file ({kind}), expected a CSV file", .path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// A directory stands where the file is expected.
    #[error("{}: is a directory, expected a CSV file", .path.display())]
    IsDirectory {
        /// The directory.
        path: PathBuf,
    },
    /// The file has no header row (no bytes, or only blank lines).
    #[error("{}: file is empty (expected a header row naming the columns)", .path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The file has a header and no data row.
    #[error("{}: no data rows after the header on line {line}", .path.display())]
    NoRows {
        /// The file.
        path: PathBuf,
        /// The header's line.
        line: u64,
    },
    /// The header has more than [`MAX_COLUMNS`] columns.
    #[error(
        "{}: line {line}: the header has {columns} columns, at most {MAX_COLUMNS} are supported",
        .path.display()
    )]
    TooManyColumns {
        /// The file.
        path: PathBuf,
        /// The header's line.
        line: u64,
        /// Columns in the header.
        columns: usize,
    },
    /// A header name that is empty, not UTF-8, or a duplicate.
    #[error("{}: line {line}, column {index}: {problem}", .path.display())]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// The header's line.
        line: u64,
        /// The column, counted from 1.
        index: usize,
        /// What is wrong with its name.
        problem: String,
    },
    /// No column has the label column's name.
    #[error(
        "{}: line {line}: no column named '{column}' holds the labels (the columns are {columns}); \
         name the label column '{DEFAULT_LABEL_COLUMN}' or give its name",
        .path.display()
    )]
    NoLabelColumn {
        /// The file.
        path: PathBuf,
        /// The header's line.
        line: u64,
        /// The label column's name that was looked for.
        column: String,
        /// The header's names, listed for the message.
        columns: String,
    },
    /// The label column is the only column.
    #[error(
        "{}: line {line}, column '{column}': the label column is the only column; there are no \
         features",
        .path.display()
    )]
    NoFeatures {
        /// The file.
        path: PathBuf,
        /// The header's line.
        line: u64,
        /// The label column's name.
        column: String,
    },
    /// The test file's header differs from the training file's (or, for [`read_features`](super::read_features),
    /// from the model's feature columns).
    #[error("{}: line {line}, column {index}: {problem}", .path.display())]
    HeaderMismatch {
        /// The file.
        path: PathBuf,
        /// The header's line.
        line: u64,
        /// The first column that differs, counted from 1.
        index: usize,
        /// How it differs.
        problem: String,
    },
    /// A row with more or fewer fields than the header has columns.
    #[error(
        "{}: line {line}, column {column}: ragged row: {fields} fields, the header has {columns} \
         columns",
        .path.display()
    )]
    Ragged {
        /// The file.
        path: PathBuf,
        /// The row's line.
        line: u64,
        /// The first missing column ('name') or the first extra field (number, from 1).
        column: String,
        /// Fields in the row.
        fields: usize,
        /// Columns in the header.
        columns: usize,
    },
    /// A feature cell that is not a finite f32.
    #[error("{}: line {line}, column '{column}': {problem}", .path.display())]
    BadCell {
        /// The file.
        path: PathBuf,
        /// The row's line.
        line: u64,
        /// The column's name.
        column: String,
        /// What is wrong with the cell.
        problem: CellProblem,
    },
    /// A label cell that cannot be a class.
    #[error("{}: line {line}, column '{column}': {problem}", .path.display())]
    BadLabel {
        /// The file.
        path: PathBuf,
        /// The row's line.
        line: u64,
        /// The label column's name.
        column: String,
        /// What is wrong with the label.
        problem: LabelProblem,
    },
    /// The training labels hold a single class.
    #[error(
        "{}: lines {first_line}-{last_line}, column '{column}': every label is '{label}'; \
         training needs at least 2 classes",
        .path.display()
    )]
    TooFewClasses {
        /// The file.
        path: PathBuf,
        /// The first data row's line.
        first_line: u64,
        /// The last data row's line.
        last_line: u64,
        /// The label column's name.
        column: String,
        /// The one label.
        label: String,
    },
    /// The CSV syntax could not be read (the parser's reason).
    #[error("{}: line {line}: {reason}", .path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The line where the parser stopped.
        line: u64,
        /// The parser's reason.
        reason: String,
    },
}
