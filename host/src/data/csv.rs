//! Tabular data from CSV files: a header row names the columns, one column holds the class
//! label, every other column is an f32 feature.
//!
//! The rules, all checked on every cell (a bad one is a [`CsvError`] naming the file, the line
//! as an editor numbers it, blank ones included, and the column):
//! - Fields may be quoted (`"a, b"`, `""` for a quote), lines may end in LF or CRLF, and a
//!   UTF-8 byte order mark before the header is skipped. Blank lines are skipped. Spaces and
//!   tabs around a number or a label are ignored.
//! - The label column is the one named [`DEFAULT_LABEL_COLUMN`] (`label`), or the name given.
//!   Column names are unique and non-empty; at most [`MAX_COLUMNS`] columns, label included,
//!   checked on the header before anything is allocated per column.
//! - Features are finite numbers in f32 range (`1`, `-2.5`, `3e-4`); NaN, infinities and
//!   numbers whose magnitude rounds past `f32::MAX` (e.g. `1e39`) are refused.
//! - Labels: when every distinct label of the training file is a plain decimal integer 0..=255
//!   (digits only: no sign, point or exponent), labels are class numbers and the number of
//!   classes K is the largest label in either file plus one; the test file's labels must then
//!   be such integers too. Otherwise every label is a class name (so `-1`/`1` or `0`/`300`
//!   are names, not numbers): the classes are the distinct training names in sorted (byte)
//!   order, and a test label never seen in training is an error. The training file must hold
//!   at least 2 distinct classes and at most [`MAX_CLASSES`] (labels are stored as `u8`).
//! - The test file's header must be the training file's, column for column.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read as _;
use std::path::Path;

use csv::ByteRecord;

/// The most columns (label included) a CSV file may have, checked on the header before any
/// per-column allocation.
pub const MAX_COLUMNS: usize = 65_536;

/// The most classes a CSV file may have: labels are stored as `u8`.
pub const MAX_CLASSES: usize = 256;

/// The label column's name when none is given.
pub const DEFAULT_LABEL_COLUMN: &str = "label";

/// Longest piece of a cell or column name quoted in an error message, in characters.
const SHOWN_CHARS: usize = 40;

/// A training and a test set read from two CSV files with the same header.
#[derive(Debug, Clone, PartialEq)]
pub struct Tabular {
    /// Number of feature columns (the label column excluded).
    pub width: usize,
    /// The header names of the feature columns, in file order.
    pub feature_names: Vec<String>,
    /// Training features, row-major: rows x `width`.
    pub train: Vec<f32>,
    /// Training labels, one class index (below `classes`) per row.
    pub train_labels: Vec<u8>,
    /// Test features, row-major: rows x `width`.
    pub test: Vec<f32>,
    /// Test labels, one class index (below `classes`) per row.
    pub test_labels: Vec<u8>,
    /// The class names in class-index order when the labels were names; `None` when they were
    /// integers.
    pub class_names: Option<Vec<String>>,
    /// Number of classes K: the largest integer label in either file plus one, or the number
    /// of class names.
    pub classes: usize,
}

impl Tabular {
    /// Number of training rows.
    pub fn train_rows(&self) -> usize {
        self.train_labels.len()
    }

    /// Number of test rows.
    pub fn test_rows(&self) -> usize {
        self.test_labels.len()
    }
}

mod error;

pub use error::{CellProblem, CsvError, LabelProblem};

/// Reads a training and a test CSV file with the same header; the labels are in the column
/// named `label_column` (default [`DEFAULT_LABEL_COLUMN`]). See the module docs for the rules.
pub fn read_train_test(
    train: &Path,
    test: &Path,
    label_column: Option<&str>,
) -> Result<Tabular, CsvError> {
    let train_bytes = load(train)?;
    let test_bytes = load(test)?;
    parse_train_test(train, &train_bytes, test, &test_bytes, label_column)
}

/// [`read_train_test`] on the files' contents; the paths name them in errors.
pub(crate) fn parse_train_test(
    train: &Path,
    train_bytes: &[u8],
    test: &Path,
    test_bytes: &[u8],
    label_column: Option<&str>,
) -> Result<Tabular, CsvError> {
    let label_name = label_column.unwrap_or(DEFAULT_LABEL_COLUMN);

    // Training file: labels are interned as text until all are seen, since whether they are
    // integers or names is decided on the whole file.
    let mut records = Records::new(train_bytes);
    let header = read_header(&mut records, train)?;
    let label = header.label_index(train, label_name)?;
    let mut train_features = Vec::new();
    let mut seen: HashMap<String, u16> = HashMap::new();
    let mut distinct: Vec<String> = Vec::new();
    let mut ids: Vec<u16> = Vec::new();
    let lines = read_rows(
        &mut records,
        train,
        &header,
        Some(label),
        &mut train_features,
        |text, line| {
            let text = label_text(text)
                .map_err(|problem| label_error(train, line, &header.names[label], problem))?;
            let id = match seen.get(text) {
                Some(&id) => id,
                None => {
                    if distinct.len() == MAX_CLASSES {
                        return Err(label_error(
                            train,
                            line,
                            &header.names[label],
                            LabelProblem::TooManyClasses(shown(text)),
                        ));
                    }
                    let id = distinct.len() as u16;
                    seen.insert(text.to_owned(), id);
                    distinct.push(text.to_owned());
                    id
                }
            };
            ids.push(id);
            Ok(())
        },
    )?;
    drop(seen);

    // Integers or names, decided on the distinct training labels.
    let integers: Option<Vec<u8>> = distinct.iter().map(|s| integer_label(s)).collect();
    let (class_of_id, class_names, mut classes, distinct_classes): (Vec<u8>, _, usize, usize) =
        match &integers {
            Some(values) => {
                let mut set = values.clone();
                set.sort_unstable();
                set.dedup();
                let max = values.iter().copied().max().unwrap_or(0);
                (values.clone(), None, usize::from(max) + 1, set.len())
            }
            None => {
                let mut sorted = distinct.clone();
                sorted.sort_unstable();
                let class_of_id = distinct
                    .iter()
                    .map(|name| sorted.binary_search(name).unwrap_or(0) as u8)
                    .collect();
                let count = sorted.len();
                (class_of_id, Some(sorted), count, count)
            }
        };
    if distinct_classes < 2 {
        return Err(CsvError::TooFewClasses {
            path: train.to_owned(),
            first_line: lines.first,
            last_line: lines.last,
            column: shown(&header.names[label]),
            label: distinct.first().map(|s| shown(s)).unwrap_or_default(),
        });
    }
    let train_labels: Vec<u8> = ids.iter().map(|&id| class_of_id[usize::from(id)]).collect();
    drop(ids);

    // Test file: same header, labels mapped as they are read.
    let mut records = Records::new(test_bytes);
    let test_header = read_header(&mut records, test)?;
    if let Some((index, problem)) = header_difference(&test_header.names, &header.names, train) {
        return Err(CsvError::HeaderMismatch {
            path: test.to_owned(),
            line: test_header.line,
            index,
            problem,
        });
    }
    let lookup: HashMap<&str, u8> = match &class_names {
        Some(names) => names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i as u8))
            .collect(),
        None => HashMap::new(),
    };
    let mut test_features = Vec::new();
    let mut test_labels = Vec::new();
    let mut test_max = 0u8;
    read_rows(
        &mut records,
        test,
        &test_header,
        Some(label),
        &mut test_features,
        |text, line| {
            let bad = |problem| label_error(test, line, &header.names[label], problem);
            let text = label_text(text).map_err(bad)?;
            let class = match &class_names {
                None => {
                    let value = integer_label(text)
                        .ok_or_else(|| bad(LabelProblem::NotInteger(shown(text))))?;
                    test_max = test_max.max(value);
                    value
                }
                Some(names) => *lookup.get(text).ok_or_else(|| {
                    bad(LabelProblem::Unseen {
                        label: shown(text),
                        classes: list(names),
                    })
                })?,
            };
            test_labels.push(class);
            Ok(())
        },
    )?;
    if class_names.is_none() {
        classes = classes.max(usize::from(test_max) + 1);
    }

    let feature_names = header
        .names
        .into_iter()
        .enumerate()
        .filter(|&(i, _)| i != label)
        .map(|(_, name)| name)
        .collect::<Vec<_>>();
    Ok(Tabular {
        width: feature_names.len(),
        feature_names,
        train: train_features,
        train_labels,
        test: test_features,
        test_labels,
        class_names,
        classes,
    })
}

/// Reads the feature rows of a CSV file for prediction: its header must hold `feature_names`
/// in that order, plus, anywhere, the label column `label_column` (default
/// [`DEFAULT_LABEL_COLUMN`]) if it has one, whose cells are then ignored. Returns the rows,
/// row-major, `feature_names.len()` wide.
pub fn read_features(
    path: &Path,
    feature_names: &[String],
    label_column: Option<&str>,
) -> Result<Vec<f32>, CsvError> {
    let label_name = label_column.unwrap_or(DEFAULT_LABEL_COLUMN);
    let bytes = load(path)?;
    let mut records = Records::new(&bytes);
    let header = read_header(&mut records, path)?;
    let label = header.names.iter().position(|n| n == label_name);
    let features: Vec<(usize, &String)> = header
        .names
        .iter()
        .enumerate()
        .filter(|&(i, _)| Some(i) != label)
        .collect();
    let mismatch = |index: usize, problem: String| CsvError::HeaderMismatch {
        path: path.to_owned(),
        line: header.line,
        index,
        problem,
    };
    for (k, want) in feature_names.iter().enumerate() {
        match features.get(k) {
            Some(&(i, name)) if name != want => {
                return Err(mismatch(
                    i + 1,
                    format!(
                        "the column is '{}', the model's feature {} is '{}'",
                        shown(name),
                        k + 1,
                        shown(want)
                    ),
                ));
            }
            Some(_) => {}
            None => {
                return Err(mismatch(
                    header.names.len() + 1,
                    format!(
                        "the header has {} feature columns, the model takes {} (next: '{}')",
                        features.len(),
                        feature_names.len(),
                        shown(want)
                    ),
                ));
            }
        }
    }
    if let Some(&(i, name)) = features.get(feature_names.len()) {
        return Err(mismatch(
            i + 1,
            format!(
                "extra column '{}': the model takes {} features",
                shown(name),
                feature_names.len()
            ),
        ));
    }
    let mut rows = Vec::new();
    read_rows(&mut records, path, &header, label, &mut rows, |_, _| Ok(()))?;
    Ok(rows)
}

/// Per-feature mean and standard deviation over row-major `rows` of `width` features, summed
/// in f64. The deviation is the population one (divided by the row count, as numpy's `std` and
/// Keras's `Normalization`); a zero (or subnormal) deviation becomes 1, so a constant column
/// passes through standardization as zeros. No rows gives means 0 and deviations 1; a ragged
/// tail shorter than `width` is ignored.
pub fn standardize_stats(rows: &[f32], width: usize) -> (Vec<f32>, Vec<f32>) {
    if width == 0 {
        return (Vec::new(), Vec::new());
    }
    let mut sum = vec![0f64; width];
    let mut count = 0usize;
    for row in rows.chunks_exact(width) {
        for (s, &x) in sum.iter_mut().zip(row) {
            *s += f64::from(x);
        }
        count += 1;
    }
    if count == 0 {
        return (vec![0.0; width], vec![1.0; width]);
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / count as f64).collect();
    let mut squares = vec![0f64; width];
    for row in rows.chunks_exact(width) {
        for ((q, &x), m) in squares.iter_mut().zip(row).zip(&mean) {
            let d = f64::from(x) - m;
            *q += d * d;
        }
    }
    let std = squares
        .iter()
        .map(|q| {
            let s = (q / count as f64).sqrt() as f32;
            if s.is_normal() { s } else { 1.0 }
        })
        .collect();
    (mean.iter().map(|&m| m as f32).collect(), std)
}

/// The header row: names trimmed, and the line it is on.
struct Header {
    names: Vec<String>,
    line: u64,
}

impl Header {
    /// Index of the label column, or the error listing the columns there are.
    fn label_index(&self, path: &Path, label_name: &str) -> Result<usize, CsvError> {
        let index = self
            .names
            .iter()
            .position(|n| n == label_name)
            .ok_or_else(|| CsvError::NoLabelColumn {
                path: path.to_owned(),
                line: self.line,
                column: shown(label_name),
                columns: list(&self.names),
            })?;
        if self.names.len() < 2 {
            return Err(CsvError::NoFeatures {
                path: path.to_owned(),
                line: self.line,
                column: shown(label_name),
            });
        }
        Ok(index)
    }
}

/// The first and last data lines of a file.
struct Lines {
    first: u64,
    last: u64,
}

/// The bytes of the file at `path`.
fn load(path: &Path) -> Result<Vec<u8>, CsvError> {
    let io_error = |error| CsvError::Io {
        path: path.to_owned(),
        error,
    };
    // Checked before opening: opening a FIFO blocks until someone writes to it.
    let before = std::fs::metadata(path).map_err(io_error)?;
    if !before.is_file() && !before.is_dir() {
        return Err(CsvError::NotAFile {
            path: path.to_owned(),
            kind: crate::image_input::file_kind(&before.file_type()),
        });
    }
    let mut file = File::open(path).map_err(io_error)?;
    if file.metadata().map_err(io_error)?.is_dir() {
        return Err(CsvError::IsDirectory {
            path: path.to_owned(),
        });
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io_error)?;
    Ok(bytes)
}

/// A file's records with the line each starts on.
struct Records<'a> {
    /// The file's bytes after a byte order mark.
    bytes: &'a [u8],
    /// The parser, which leaves the header to [`read_header`] and lets rows of any length
    /// through, so that a ragged row gets a message of ours.
    reader: csv::Reader<&'a [u8]>,
    /// Bytes before this offset are counted in `line`.
    at: usize,
    /// The line at `at`, from 1.
    line: u64,
}

impl<'a> Records<'a> {
    /// The records of a file's `bytes`, after a UTF-8 byte order mark if there is one.
    fn new(bytes: &'a [u8]) -> Self {
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(bytes);
        Records {
            bytes,
            reader,
            at: 0,
            line: 1,
        }
    }

    /// Reads the next record into `record` and returns the line it starts on, as an editor
    /// numbers lines (LF, CRLF or a lone CR ends one); `None` at the end. The parser's own
    /// count dates a record from the end of the one before, ahead of the blank lines it
    /// skipped, and counts LF only, so lines are counted here from the record's offset.
    fn next(&mut self, record: &mut ByteRecord) -> Result<Option<u64>, csv::Error> {
        if !self.reader.read_byte_record(record)? {
            return Ok(None);
        }
        let from = record
            .position()
            .and_then(|p| usize::try_from(p.byte()).ok())
            .unwrap_or(self.at)
            .clamp(self.at, self.bytes.len());
        let blank = self.bytes[from..]
            .iter()
            .take_while(|&&b| b == b'\n' || b == b'\r')
            .count();
        let start = from + blank;
        for (i, &b) in self.bytes[self.at..start].iter().enumerate() {
            let crlf = b == b'\r' && self.bytes.get(self.at + i + 1) == Some(&b'\n');
            if b == b'\n' || (b == b'\r' && !crlf) {
                self.line += 1;
            }
        }
        self.at = start;
        Ok(Some(self.line))
    }
}

/// The file's error for a parser error.
fn csv_error(path: &Path, error: csv::Error) -> CsvError {
    let line = error.position().map_or(0, |p| p.line());
    let reason = error.to_string();
    match error.into_kind() {
        csv::ErrorKind::Io(error) => CsvError::Io {
            path: path.to_owned(),
            error,
        },
        _ => CsvError::Malformed {
            path: path.to_owned(),
            line,
            reason,
        },
    }
}

/// Reads and checks the header row: at most [`MAX_COLUMNS`] columns (before any per-column
/// allocation), every name UTF-8, non-empty after trimming, and unique.
fn read_header(records: &mut Records<'_>, path: &Path) -> Result<Header, CsvError> {
    let mut record = ByteRecord::new();
    let Some(line) = records.next(&mut record).map_err(|e| csv_error(path, e))? else {
        return Err(CsvError::Empty {
            path: path.to_owned(),
        });
    };
    if record.len() > MAX_COLUMNS {
        return Err(CsvError::TooManyColumns {
            path: path.to_owned(),
            line,
            columns: record.len(),
        });
    }
    let bad = |index: usize, problem: String| CsvError::BadHeader {
        path: path.to_owned(),
        line,
        index: index + 1,
        problem,
    };
    let mut names = Vec::with_capacity(record.len());
    let mut first_of: HashMap<&str, usize> = HashMap::with_capacity(record.len());
    for (i, field) in record.iter().enumerate() {
        let name = std::str::from_utf8(field)
            .map_err(|_| bad(i, "the column name is not UTF-8 text".to_owned()))?
            .trim();
        if name.is_empty() {
            return Err(bad(i, "the column has no name".to_owned()));
        }
        if let Some(&j) = first_of.get(name) {
            return Err(bad(
                i,
                format!(
                    "column '{}' is named twice (columns {} and {})",
                    shown(name),
                    j + 1,
                    i + 1
                ),
            ));
        }
        first_of.insert(name, i);
        names.push(name.to_owned());
    }
    Ok(Header { names, line })
}

/// Reads every data row: checks its length against the header, parses each feature cell into
/// `features` and hands the label cell (column `label`, if any) to `on_label` with its line.
/// Fails on a file without data rows.
fn read_rows(
    records: &mut Records<'_>,
    path: &Path,
    header: &Header,
    label: Option<usize>,
    features: &mut Vec<f32>,
    mut on_label: impl FnMut(&[u8], u64) -> Result<(), CsvError>,
) -> Result<Lines, CsvError> {
    let columns = header.names.len();
    let mut record = ByteRecord::new();
    let mut lines: Option<Lines> = None;
    while let Some(line) = records.next(&mut record).map_err(|e| csv_error(path, e))? {
        if record.len() != columns {
            let column = match header.names.get(record.len()) {
                Some(name) => format!("'{}'", shown(name)),
                None => (columns + 1).to_string(),
            };
            return Err(CsvError::Ragged {
                path: path.to_owned(),
                line,
                column,
                fields: record.len(),
                columns,
            });
        }
        for (i, field) in record.iter().enumerate() {
            if Some(i) == label {
                on_label(field, line)?;
            } else {
                let value = parse_feature(field).map_err(|problem| CsvError::BadCell {
                    path: path.to_owned(),
                    line,
                    column: shown(&header.names[i]),
                    problem,
                })?;
                features.push(value);
            }
        }
        match &mut lines {
            Some(l) => l.last = line,
            None => {
                lines = Some(Lines {
                    first: line,
                    last: line,
                })
            }
        }
    }
    lines.ok_or_else(|| CsvError::NoRows {
        path: path.to_owned(),
        line: header.line,
    })
}

/// A feature cell as a finite f32.
fn parse_feature(field: &[u8]) -> Result<f32, CellProblem> {
    let text = std::str::from_utf8(field)
        .map_err(|_| CellProblem::NotUtf8)?
        .trim();
    if text.is_empty() {
        return Err(CellProblem::Empty);
    }
    let value: f32 = text
        .parse()
        .map_err(|_| CellProblem::NotANumber(shown(text)))?;
    if value.is_nan() {
        return Err(CellProblem::NaN(shown(text)));
    }
    if value.is_infinite() {
        // Rust spells infinity `inf` or `infinity` in any case; any other text that parses to
        // an infinity is a finite number too large for an f32.
        let word = text.trim_start_matches(['+', '-']).to_ascii_lowercase();
        return Err(if word.starts_with("inf") {
            CellProblem::Infinite(shown(text))
        } else {
            CellProblem::OutOfRange(shown(text))
        });
    }
    Ok(value)
}

/// A label cell as trimmed, non-empty text.
fn label_text(field: &[u8]) -> Result<&str, LabelProblem> {
    let text = std::str::from_utf8(field)
        .map_err(|_| LabelProblem::NotUtf8)?
        .trim();
    if text.is_empty() {
        return Err(LabelProblem::Empty);
    }
    Ok(text)
}

/// The class number of an integer label: decimal digits only, 0..=255.
fn integer_label(text: &str) -> Option<u8> {
    if text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse().ok()
    } else {
        None
    }
}

fn label_error(path: &Path, line: u64, column: &str, problem: LabelProblem) -> CsvError {
    CsvError::BadLabel {
        path: path.to_owned(),
        line,
        column: shown(column),
        problem,
    }
}

/// How `names` (a test header) differs from `train` (the training header): the first column
/// that differs, counted from 1, and what is there.
fn header_difference(
    names: &[String],
    train: &[String],
    train_path: &Path,
) -> Option<(usize, String)> {
    let train_path = train_path.display();
    for (i, (name, want)) in names.iter().zip(train).enumerate() {
        if name != want {
            return Some((
                i + 1,
                format!(
                    "the column is '{}', the training file {train_path} has '{}' there",
                    shown(name),
                    shown(want)
                ),
            ));
        }
    }
    if names.len() != train.len() {
        let index = names.len().min(train.len()) + 1;
        return Some((
            index,
            format!(
                "the header has {} columns, the training file {train_path} has {}",
                names.len(),
                train.len()
            ),
        ));
    }
    None
}

/// `text` cut to [`SHOWN_CHARS`] characters with control characters escaped, for messages.
fn shown(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == SHOWN_CHARS {
            out.push_str("...");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// Up to 10 names, quoted, for messages.
fn list(names: &[String]) -> String {
    let mut out: Vec<String> = names
        .iter()
        .take(10)
        .map(|n| format!("'{}'", shown(n)))
        .collect();
    if names.len() > 10 {
        out.push(format!("... ({} in all)", names.len()));
    }
    out.join(", ")
}

#[cfg(test)]
mod tests;
