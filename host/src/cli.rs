//! Command-line arguments (clap); the work itself is in the library.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use picodense::compute::KernelChoice;
use picodense::data::DatasetKind;
use picodense::train::{Every, OptimizerKind};

/// Train the Keras MNIST example from scratch, evaluate it, and deploy it to a microcontroller.
#[derive(Parser, Debug)]
#[command(name = "picodense", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train Dense layers (default: Dense(512, relu) -> Dense(classes, softmax)), evaluate on
    /// the test set, save the model.
    Train(TrainArgs),
    /// Loss and accuracy of a saved model on the test set.
    Evaluate(EvaluateArgs),
    /// Classify a picture (PNG or JPEG), a test-set row (--index) or the rows of a CSV (--csv).
    Predict(PredictArgs),
    /// Describe a model file and check it.
    Inspect {
        /// The model file.
        path: PathBuf,
    },
    /// Write a flash image for a microcontroller (f32, or int8 quantised on training images),
    /// a .tflite for TensorFlow Lite Micro, or either as a C header (--out NAME.h).
    Export(ExportArgs),
    /// Time training, and with --compare the same model in Keras (TensorFlow, JAX) and numpy.
    Bench(BenchArgs),
    /// Fetch a dataset into the user cache, checking its published checksums.
    Download {
        /// Which dataset.
        #[arg(long, default_value = "mnist")]
        dataset: DatasetKind,
    },
}

#[derive(Args, Clone, Debug)]
pub struct DataArgs {
    /// Dataset to find in $PICODENSE_DATA, the user cache or /usr/share/datasets (downloaded
    /// on first use when absent). Default: mnist; with a model (--model, --resume), the data
    /// it was trained on.
    #[arg(long)]
    pub dataset: Option<DatasetKind>,
    /// A folder with the four IDX files or with train.csv and test.csv, a Keras-style .npz,
    /// or a training CSV (with --test-data). Read in place of --dataset's files; --dataset
    /// then only names the kind of data (class names, picture preparation).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The test CSV, when --data is a training CSV file.
    #[arg(long, requires = "data")]
    pub test_data: Option<PathBuf>,
    /// The CSV column holding the labels [default: label].
    #[arg(long)]
    pub label_column: Option<String>,
    /// How `train` scales CSV features: by the training set's mean and deviation, not at all,
    /// or divided by 255 (images are always divided by 255) [default: standard]. A model scales
    /// its inputs as it was trained.
    #[arg(long, value_enum)]
    pub normalize: Option<Normalize>,
}

impl DataArgs {
    /// `--normalize`, or its default.
    pub fn normalize_or_default(&self) -> Normalize {
        self.normalize.unwrap_or(Normalize::Standard)
    }
}

/// `--normalize`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Normalize {
    /// Subtract the training mean, divide by the training standard deviation.
    Standard,
    /// Use the features as they are.
    None,
    /// Divide by 255.
    Scale255,
}

#[derive(Args, Debug)]
pub struct ComputeArgs {
    /// Threads sharing each matrix product (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Matrix kernel.
    #[arg(long, value_enum, default_value = "auto")]
    pub kernel: KernelChoice,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub compute: ComputeArgs,
    // The run's settings are options without clap defaults: `--resume` takes them from the
    // checkpoint and refuses only those given, so it must know which were.
    /// Units of each hidden ReLU layer: one width or a list (`256,128`), 1 to 4 layers of 1 to
    /// 4096 units [default: 512].
    #[arg(long, value_delimiter = ',', value_parser = parse_units, allow_negative_numbers = true)]
    pub hidden: Option<Vec<usize>>,
    /// Passes over the training set [default: 5]; with `--resume`, more than the checkpoint's
    /// extends its run.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Rows per step [default: 128].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Optimizer [default: rmsprop].
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerKind>,
    /// Learning rate [default: 0.001].
    #[arg(long, allow_negative_numbers = true)]
    pub learning_rate: Option<f32>,
    /// Seed of the initial weights and of every epoch's shuffle [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Fraction of the training set held out (from its end, like Keras) for validation
    /// [default: 0].
    #[arg(long, allow_negative_numbers = true)]
    pub validation_split: Option<f64>,
    /// Where to write the trained model.
    #[arg(long, default_value = DEFAULT_SAVE)]
    pub save: PathBuf,
    /// Write one JSON object per epoch, then the test figures, to this file.
    #[arg(long)]
    pub log_json: Option<PathBuf>,
    /// Draw loss and accuracy per epoch (train and validation) to this .svg or .png file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Print nothing but errors.
    #[arg(long)]
    pub quiet: bool,
    /// Write checkpoints (model, optimizer state, position) to this file.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// How often to checkpoint: `N` steps, or `Nepoch` epochs.
    #[arg(long, default_value = "1epoch", value_parser = parse_every, requires = "checkpoint")]
    pub checkpoint_every: Every,
    /// Continue the run saved in this checkpoint, on its data and settings (a setting given
    /// that differs from the checkpoint's is an error).
    #[arg(long)]
    pub resume: Option<PathBuf>,
}

/// Where `train` saves the model unless told.
pub const DEFAULT_SAVE: &str = "picodense-model.pdn";

/// One width of `--hidden`; spaces around it are allowed (`--hidden "256, 128"`).
fn parse_units(text: &str) -> Result<usize, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("expected a number of units, got {text:?}"))
}

/// `500` means every 500 steps, `1epoch` (or `2epochs`) every epoch (or two).
fn parse_every(text: &str) -> Result<Every, String> {
    let bad = || format!("expected N (steps) or Nepoch (epochs), got {text:?}");
    let (digits, epochs) = match text.strip_suffix("epochs").or(text.strip_suffix("epoch")) {
        Some(d) => (d, true),
        None => (text, false),
    };
    let n: usize = digits.trim().parse().map_err(|_| bad())?;
    if n == 0 {
        return Err("checkpoint interval must be at least 1".into());
    }
    Ok(if epochs {
        Every::Epochs(n)
    } else {
        Every::Steps(n)
    })
}

#[derive(Args, Debug)]
pub struct EvaluateArgs {
    /// The model file.
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// Print one JSON object with test_loss and test_accuracy.
    #[arg(long)]
    pub json: bool,
    /// Print the confusion matrix and per-class precision and recall.
    #[arg(long)]
    pub confusion: bool,
    /// Write confusion.png and misclassified.png to this folder (created if missing).
    #[arg(long)]
    pub report: Option<PathBuf>,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["image", "index", "csv"])))]
pub struct PredictArgs {
    /// The model file.
    #[arg(long)]
    pub model: PathBuf,
    /// A PNG or JPEG of a digit or garment (any size, dark on light or light on dark),
    /// prepared the way the model's dataset was made.
    pub image: Option<PathBuf>,
    /// Index of the test image.
    #[arg(long)]
    pub index: Option<usize>,
    /// A CSV of feature rows (with the training columns; a label column is ignored): one
    /// prediction per row.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Print one JSON object per prediction: {"class": k, "probabilities": [...]}, with
    /// "name" where the data named its classes.
    #[arg(long)]
    pub json: bool,
    /// Draw the input the model sees (a picture or a test image; --index draws it anyway).
    #[arg(long, conflicts_with_all = ["csv", "json"])]
    pub show: bool,
    #[command(flatten)]
    pub data: DataArgs,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// Units of each hidden layer, as for `train`.
    #[arg(long, value_delimiter = ',', default_value = "512", value_parser = parse_units)]
    pub hidden: Vec<usize>,
    /// Epochs to time.
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Rows per step.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Seed of the initial weights and the shuffles.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also train the identical Keras model (TensorFlow and JAX backends) and a numpy version
    /// (creates a Python venv with tensorflow-cpu, jax and numpy in the user cache when missing;
    /// $PICODENSE_VENV overrides).
    #[arg(long)]
    pub compare: bool,
    /// Rounds to run (with --compare, each round runs all three in turn); the table gives
    /// each one's median, so a burst of load on a shared machine skews no ratio.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub repeat: u32,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The trained model (or a checkpoint).
    #[arg(long)]
    pub model: PathBuf,
    /// Storage of the exported weights.
    #[arg(long, value_enum)]
    pub format: picodense::export::ExportFormat,
    /// Where to write the image; a name ending in `.h` gets a C header holding it.
    #[arg(long)]
    pub out: PathBuf,
    /// Training images calibrate int8; test images measure both models' accuracy.
    #[command(flatten)]
    pub data: DataArgs,
}
