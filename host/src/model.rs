//! A trained network on the host: its parameters, the preprocessing and classes its data had,
//! and its model file on disk.

use std::path::{Path, PathBuf};

use picodense_core::format::{self, Dtype, FormatError, Header, ModelView, Sections};
use picodense_core::{Layers, Shape};
use serde::{Deserialize, Serialize};

use crate::batch::init_rng;
use crate::data::DatasetKind;

/// How raw inputs become the network's inputs: applied by training, evaluation, prediction
/// and export alike.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Scaling {
    /// Pixels (u8) divided by 255, as the Keras example does.
    #[default]
    Scale255,
    /// Features as they are.
    None,
    /// Each feature less the training set's mean, over its standard deviation.
    Standard {
        /// Per-feature means.
        mean: Vec<f32>,
        /// Per-feature standard deviations (1 where a feature is constant).
        std: Vec<f32>,
    },
}

impl Scaling {
    /// Scales one row of features in place.
    pub fn apply(&self, row: &mut [f32]) {
        match self {
            Scaling::Scale255 => row.iter_mut().for_each(|v| *v /= 255.0),
            Scaling::None => {}
            Scaling::Standard { mean, std } => {
                for ((v, m), s) in row.iter_mut().zip(mean).zip(std) {
                    *v = (*v - m) / s;
                }
            }
        }
    }

    /// Its name on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Scaling::Scale255 => "scale255",
            Scaling::None => "none",
            Scaling::Standard { .. } => "standard",
        }
    }
}

/// What a model records beside its weights, so that every command can run it on new data.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// Class names, when the data named them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
    /// How inputs were scaled.
    #[serde(default)]
    pub scaling: Scaling,
    /// The named dataset it was trained on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// The `--data` path it was trained on (absolute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<PathBuf>,
    /// The `--test-data` path of a CSV run (absolute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_data: Option<PathBuf>,
    /// The CSV feature columns' names, for tabular data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<String>>,
    /// The CSV label column, when it was not `label`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_column: Option<String>,
    /// Rows and columns of the input images, for image data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<[usize; 2]>,
}

impl ModelMeta {
    /// The dataset it names, if it is one picodense knows.
    pub fn dataset_kind(&self) -> Option<DatasetKind> {
        self.dataset.as_deref().and_then(|d| d.parse().ok())
    }

    /// What a file without a metadata record (version 1, or an int8 export) says of its model:
    /// the dataset byte, and MNIST-shaped images scaled by /255 for 784 inputs.
    pub fn of_header(header: &Header) -> Self {
        let side = crate::data::IMAGE_SIDE;
        Self {
            dataset: dataset_from_byte(header.dataset).map(|k| k.name().to_string()),
            image: (header.shape.inputs() == side * side).then_some([side, side]),
            ..Self::default()
        }
    }

    /// Whether a file's header alone, without this record, says as much of the model: images
    /// of 28 x 28 pixels / 255 (for 784 inputs), classes numbered or named by the dataset.
    pub fn header_suffices(&self, shape: Shape) -> bool {
        let implied = Self::of_header(&Header::new(Dtype::F32, shape, 0));
        self.scaling == implied.scaling && self.image == implied.image && self.classes.is_none()
    }

    /// The name of class `c`: the data's, the known dataset's, or the number.
    pub fn class_name(&self, c: usize) -> String {
        if let Some(name) = self.classes.as_ref().and_then(|n| n.get(c)) {
            return name.clone();
        }
        match self.dataset_kind() {
            Some(kind) if c < 10 => kind.class_names()[c].to_string(),
            _ => c.to_string(),
        }
    }

    /// Whether the classes have names of their own (the data's, or a known dataset's) rather
    /// than only numbers.
    pub fn names_classes(&self) -> bool {
        self.classes.is_some() || self.dataset_kind().is_some()
    }

    /// Every class's name.
    pub fn class_names(&self, classes: usize) -> Vec<String> {
        (0..classes).map(|c| self.class_name(c)).collect()
    }
}

/// A network: its layer list, its parameters (each layer's weights, then bias, in file
/// order) and its [`ModelMeta`].
#[derive(Clone, Debug, PartialEq)]
pub struct Network {
    /// The layers.
    pub shape: Shape,
    /// Every parameter.
    pub params: Vec<f32>,
    /// Classes and preprocessing.
    pub meta: ModelMeta,
}

impl Network {
    /// Keras's initialisation (Glorot-uniform weights from `seed`, zero biases).
    pub fn glorot(shape: Shape, seed: u64, meta: ModelMeta) -> Self {
        let mut network = Self {
            shape,
            params: vec![0.0; shape.parameters()],
            meta,
        };
        network.layers_mut().init_glorot(&mut init_rng(seed));
        network
    }

    /// The parameters as layers.
    pub fn layers(&self) -> Layers<&[f32]> {
        Layers::split(self.shape, &self.params).expect("parameters of the shape")
    }

    /// The parameters as layers, to change.
    pub fn layers_mut(&mut self) -> Layers<&mut [f32]> {
        Layers::split_mut(self.shape, &mut self.params).expect("parameters of the shape")
    }

    /// True when no parameter is NaN or infinite.
    pub fn is_finite(&self) -> bool {
        self.params.iter().all(|v| v.is_finite())
    }

    /// The model file bytes: weights and metadata.
    pub fn file_bytes(&self) -> Vec<u8> {
        let meta = serde_json::to_vec(&self.meta).expect("plain fields serialise");
        let sections = Sections {
            meta: Some(&meta),
            dataset: dataset_byte(self.meta.dataset_kind()),
            ..Sections::default()
        };
        encode_file(&self.layers(), &sections)
    }

    /// The network of a model file (f32).
    pub fn from_view(path: &Path, view: &ModelView) -> Result<Self, ModelFileError> {
        let format_err = |error| ModelFileError::format(path, error);
        // Before anything sized by the header is allocated: only an f32 file's length was
        // checked against its layers (an int8 header may declare any sizes).
        if view.header().dtype != Dtype::F32 {
            return Err(ModelFileError::Int8Export(path.to_owned()));
        }
        let shape = view.header().shape;
        let meta = match view.meta().map_err(format_err)? {
            Some(bytes) => {
                serde_json::from_slice(bytes).map_err(|e| ModelFileError::BadRecord {
                    path: path.to_owned(),
                    reason: format!("metadata: {e}"),
                })?
            }
            None => ModelMeta::of_header(view.header()),
        };
        let mut network = Self {
            shape,
            params: vec![0.0; shape.parameters()],
            meta,
        };
        view.load_into(&mut network.layers_mut())
            .map_err(format_err)?;
        // A NaN or infinity under a valid CRC would evaluate to NaN, predict class 0 and
        // export to flash without a word.
        if let Some(at) = first_non_finite(shape, &network.params) {
            return Err(ModelFileError::NonFinite {
                path: path.to_owned(),
                what: at,
            });
        }
        check_meta(&network).map_err(|reason| ModelFileError::BadRecord {
            path: path.to_owned(),
            reason,
        })?;
        Ok(network)
    }
}

/// Where the first NaN or infinity of `params` (a network of `shape`, in file order) is: e.g.
/// `layer 2 weights, value 17 (NaN)`; `None` when every value is finite.
pub fn first_non_finite(shape: Shape, params: &[f32]) -> Option<String> {
    let index = params.iter().position(|v| !v.is_finite())?;
    let mut start = 0;
    for l in 0..shape.layers() {
        let (_, units) = shape.layer(l);
        let len = shape.layer_parameters(l);
        if index < start + len {
            let weights = len - units;
            let (part, at) = if index - start < weights {
                ("weights", index - start)
            } else {
                ("bias", index - start - weights)
            };
            return Some(format!(
                "layer {} {part}, value {at} ({})",
                l + 1,
                params[index]
            ));
        }
        start += len;
    }
    Some(format!("value {index} ({})", params[index]))
}

/// Refuses metadata that does not fit the network.
fn check_meta(network: &Network) -> Result<(), String> {
    let (inputs, classes) = (network.shape.inputs(), network.shape.classes());
    if let Some(names) = &network.meta.classes
        && names.len() != classes
    {
        return Err(format!("{} class names for {classes} classes", names.len()));
    }
    if let Scaling::Standard { mean, std } = &network.meta.scaling
        && (mean.len() != inputs
            || std.len() != inputs
            || !mean.iter().chain(std).all(|v| v.is_finite())
            || std.iter().any(|&s| s <= 0.0))
    {
        return Err(format!(
            "standard scaling needs {inputs} finite means and positive deviations"
        ));
    }
    if let Some([r, c]) = network.meta.image
        && r.checked_mul(c) != Some(inputs)
    {
        return Err(format!("images of {r}x{c} for {inputs} inputs"));
    }
    Ok(())
}

/// An f32 model file of `params` with `sections`.
pub fn encode_file(params: &Layers<&[f32]>, sections: &Sections) -> Vec<u8> {
    let mut bytes = vec![0u8; format::encoded_len(params.shape(), sections)];
    format::encode(params, sections, &mut bytes).expect("buffer sized by encoded_len");
    bytes
}

/// Dataset byte recorded in model files.
pub fn dataset_byte(kind: Option<DatasetKind>) -> u8 {
    match kind {
        None => 0,
        Some(DatasetKind::Mnist) => 1,
        Some(DatasetKind::FashionMnist) => 2,
    }
}

/// Dataset kind from a model file's byte.
pub fn dataset_from_byte(byte: u8) -> Option<DatasetKind> {
    match byte {
        1 => Some(DatasetKind::Mnist),
        2 => Some(DatasetKind::FashionMnist),
        _ => None,
    }
}

/// Why a model file could not be read or written.
///
/// The underlying errors are fields named `error`, not `source`: the message already includes
/// them, and as a `source` they would be printed twice by an error chain (`{:#}`).
#[derive(thiserror::Error, Debug)]
pub enum ModelFileError {
    /// The file could not be read or written.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The bytes are not a valid model of the expected shape.
    #[error("{}: {error}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        error: Box<format::FormatError>,
    },
    /// The checkpoint's training record is malformed or out of range.
    #[error("{}: bad training record: {reason}", path.display())]
    BadRecord {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A weight, bias or optimizer value is NaN or infinite, or the optimizer's settings are
    /// impossible: nothing sensible can be computed from it.
    #[error("{}: {what} is not finite: the file holds no usable model", path.display())]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// Which value.
        what: String,
    },
    /// The optimizer state of a checkpoint is one no run could have written.
    #[error("{}: impossible optimizer state: {reason}", path.display())]
    BadOptimizer {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A FIFO, device or socket given as a model file.
    #[error("{}: not a regular file ({kind}), expected a model file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// A model file without a training record was given to `--resume`.
    #[error("{}: not a checkpoint (no training record); use a file written by --checkpoint", .0.display())]
    NotCheckpoint(PathBuf),
    /// An int8 export given where the f32 model is needed.
    #[error(
        "{}: an int8 export, which only `evaluate` and the firmware read: give the f32 model that `train` saved",
        .0.display()
    )]
    Int8Export(PathBuf),
}

impl From<crate::fs::WriteError> for ModelFileError {
    fn from(e: crate::fs::WriteError) -> Self {
        Self::Io {
            path: e.path,
            error: e.error,
        }
    }
}

impl ModelFileError {
    /// `error` in the model file `path`.
    pub fn format(path: &Path, error: FormatError) -> Self {
        Self::Format {
            path: path.to_owned(),
            error: Box::new(error),
        }
    }
}

/// Reads a model file, checking before reading: a regular file (a FIFO would block, a device
/// never end), a valid header, and a length equal to the one the header declares. Only that
/// length is read, so memory is bounded by the declared payload (a `u32`: at most 4 GiB), and a
/// file that is not a model costs its first bytes only.
pub fn read_model_file(path: &Path) -> Result<Vec<u8>, ModelFileError> {
    use std::io::Read;
    let io_err = |error| ModelFileError::Io {
        path: path.to_owned(),
        error,
    };
    let format_err = |error| ModelFileError::format(path, error);
    let meta = std::fs::metadata(path).map_err(io_err)?;
    if !meta.is_file() && !meta.is_dir() {
        return Err(ModelFileError::NotAFile {
            path: path.to_owned(),
            kind: crate::image_input::file_kind(&meta.file_type()),
        });
    }
    let file = std::fs::File::open(path).map_err(io_err)?;
    let len = file.metadata().map_err(io_err)?.len();
    // The longest header: the fixed part, the widths of the deepest network, the checksum.
    let header_max = format::HEADER_LEN + 4 * (picodense_core::shape::MAX_LAYERS + 1) + 4;
    let mut head = Vec::with_capacity(header_max);
    let mut file = file;
    (&mut file)
        .take(header_max as u64)
        .read_to_end(&mut head)
        .map_err(io_err)?;
    let header = format::Header::parse(&head).map_err(format_err)?;
    let total = (format::HEADER_LEN + header.payload_len + 4) as u64;
    if len < total {
        return Err(format_err(format::FormatError::Truncated {
            needed: total as usize,
            got: len.try_into().unwrap_or(usize::MAX),
        }));
    }
    if len > total {
        return Err(format_err(format::FormatError::TrailingBytes {
            extra: (len - total).try_into().unwrap_or(usize::MAX),
        }));
    }
    let mut bytes = head;
    bytes.reserve_exact(total as usize - bytes.len().min(total as usize));
    // One byte more than declared: a file that grew since its length was read is refused.
    file.take(total + 1 - bytes.len() as u64)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    if bytes.len() as u64 != total {
        return Err(io_err(std::io::Error::other(format!(
            "the file changed while it was read ({} bytes, the header declares {total})",
            bytes.len()
        ))));
    }
    Ok(bytes)
}

/// Reads an f32 model file.
pub fn load_network(path: &Path) -> Result<Network, ModelFileError> {
    network_from_bytes(path, &read_model_file(path)?)
}

/// [`load_network`] on the bytes of `path`, already read.
pub fn network_from_bytes(path: &Path, bytes: &[u8]) -> Result<Network, ModelFileError> {
    Network::from_view(path, &parse_model(path, bytes)?)
}

/// The checked view of the model file `path`, whose bytes are `bytes`.
pub fn parse_model<'a>(path: &Path, bytes: &'a [u8]) -> Result<ModelView<'a>, ModelFileError> {
    ModelView::parse(bytes).map_err(|error| ModelFileError::format(path, error))
}
