//! The `fit` loop, evaluation, and the model file on disk.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use picodense_core::format::{self, ModelView};
use picodense_core::{
    Compute, HiddenPanels, Kernel, MnistMlp, Optimizer, RmsProp, Scratch, Sgd, StepStats, Workspace,
};

use crate::batch::{BatchInfo, epoch_order, fill_batch, init_rng};
use crate::compute::{Threads, zeroed_box, zeroed_slice};
use crate::data::{Dataset, DatasetKind, IMAGE_PIXELS};

/// Largest batch the host trains with (Keras's default is 128).
pub const MAX_BATCH: usize = 1024;
type HostWorkspace = Workspace<MAX_BATCH, 784, 512, 10>;

/// Which optimizer updates the weights.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Keras's RMSprop (rho 0.9, epsilon 1e-7).
    Rmsprop,
    /// Plain gradient descent.
    Sgd,
}

/// Everything `fit` needs to know; the defaults are the Keras example's.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Rows per step (the last batch of an epoch may be shorter).
    pub batch_size: usize,
    /// The optimizer.
    pub optimizer: OptimizerKind,
    /// Step size.
    pub learning_rate: f32,
    /// Fixes initial weights and every epoch's shuffle.
    pub seed: u64,
    /// Threads sharing each product.
    pub threads: usize,
    /// Kernel for the products.
    pub kernel: Kernel,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 5,
            batch_size: 128,
            optimizer: OptimizerKind::Rmsprop,
            learning_rate: 1e-3,
            seed: 0,
            threads: 1,
            kernel: Kernel::PORTABLE,
        }
    }
}

/// Why training stopped early or could not start.
#[derive(thiserror::Error, Debug)]
pub enum TrainError {
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    Invalid(String),
    /// A checkpoint could not be written or read.
    #[error(transparent)]
    Checkpoint(#[from] ModelFileError),
    /// The loss or a weight stopped being a finite number.
    #[error(
        "training diverged at epoch {epoch}, step {step}: the {what} is not finite; \
         try a smaller learning rate (now {learning_rate})"
    )]
    Diverged {
        /// 1-based epoch.
        epoch: usize,
        /// 1-based step within the epoch.
        step: usize,
        /// "loss" or "weights".
        what: &'static str,
        /// The learning rate in use.
        learning_rate: f32,
    },
}

/// What one epoch scored.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochReport {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches, weighted by batch size (as Keras reports).
    pub loss: f64,
    /// Training accuracy, likewise.
    pub accuracy: f64,
    /// Validation loss, with a validation split.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    /// Validation accuracy, with a validation split.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_accuracy: Option<f64>,
    /// Wall time of the epoch, validation included.
    pub seconds: f64,
}

/// Progress of training, for reporting.
pub enum Event<'a> {
    /// An epoch begins.
    EpochStart {
        /// 1-based.
        epoch: usize,
        /// Steps it will take.
        steps: usize,
    },
    /// A step finished; `running` sums the epoch so far.
    Step {
        /// 1-based step.
        step: usize,
        /// Epoch totals so far.
        running: &'a StepStats,
    },
    /// An epoch finished.
    EpochEnd(&'a EpochReport),
}

/// Where training stands: the next step to run, and the figures of the epoch so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    /// 0-based epoch.
    pub epoch: usize,
    /// Steps of that epoch already taken.
    pub step: usize,
    /// The epoch's figures so far.
    #[serde(with = "stats_serde")]
    pub stats: StepStats,
}

mod stats_serde {
    use picodense_core::StepStats;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Stats {
        loss_sum: f64,
        correct: u32,
        rows: u32,
    }

    pub fn serialize<S: Serializer>(s: &StepStats, ser: S) -> Result<S::Ok, S::Error> {
        Stats {
            loss_sum: s.loss_sum,
            correct: s.correct,
            rows: s.rows,
        }
        .serialize(ser)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<StepStats, D::Error> {
        let s = Stats::deserialize(de)?;
        Ok(StepStats {
            loss_sum: s.loss_sum,
            correct: s.correct,
            rows: s.rows,
        })
    }
}

/// What a checkpoint records beside the model and optimizer state. The shuffle generator of
/// each epoch is derived from `seed` and the epoch, so the seed and the position are its state.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct CheckpointRecord {
    /// Next step to run.
    pub position: Position,
    /// Seed of the run.
    pub seed: u64,
    /// Epochs the run was asked for.
    pub epochs: usize,
    /// Rows per step.
    pub batch_size: usize,
    /// Optimizer of the run.
    pub optimizer: OptimizerKind,
    /// Learning rate of the run.
    pub learning_rate: f32,
    /// Training rows (after any validation split): resuming on other data is refused.
    pub train_rows: usize,
    /// Reports of the epochs finished so far (absent from checkpoints of earlier versions).
    #[serde(default)]
    pub history: Vec<EpochReport>,
}

/// How often to write checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Every {
    /// Never (an interrupt still writes one).
    Never,
    /// Every N optimizer steps.
    Steps(usize),
    /// Every N epochs.
    Epochs(usize),
}

/// Checkpoints and early stopping for [`Trainer::fit`].
#[derive(Debug)]
pub struct RunControl<'a> {
    /// Where checkpoints go.
    pub checkpoint: Option<PathBuf>,
    /// When they are written.
    pub every: Every,
    /// Where an interrupted run writes its checkpoint when `checkpoint` is unset.
    pub interrupt_checkpoint: Option<PathBuf>,
    /// Set (by a signal handler) to stop after the current step.
    pub stop: Option<&'a AtomicBool>,
}

impl RunControl<'_> {
    /// No checkpoints, no stopping.
    pub fn none() -> Self {
        Self {
            checkpoint: None,
            every: Every::Never,
            interrupt_checkpoint: None,
            stop: None,
        }
    }

    fn stop_requested(&self) -> bool {
        self.stop.is_some_and(|s| s.load(Ordering::Relaxed))
    }

    fn interrupt_path(&self) -> Option<&Path> {
        self.checkpoint
            .as_deref()
            .or(self.interrupt_checkpoint.as_deref())
    }
}

/// How `fit` ended.
#[derive(Debug)]
pub enum Outcome {
    /// Every epoch ran.
    Finished(Vec<EpochReport>),
    /// Stopped on request after a step.
    Interrupted {
        /// Where it stopped.
        position: Position,
        /// The checkpoint written, if any.
        checkpoint: Option<PathBuf>,
    },
}

enum OptimizerState {
    RmsProp(Box<RmsProp<784, 512, 10>>),
    Sgd(Sgd),
}

/// A model with its optimizer and the buffers training and inference use.
pub struct Trainer {
    /// The network.
    pub model: Box<MnistMlp>,
    optimizer: OptimizerState,
    workspace: Box<HostWorkspace>,
    /// The hidden weights while `fit` runs, in the kernel's panels: the forward product reads
    /// them in place instead of packing W1 every step, and the optimizer updates them there.
    /// `fit` copies them back into `model` before anything reads it and when it returns.
    panels: Box<HiddenPanels<784, 512>>,
    scratches: Box<[Scratch]>,
    threads: Threads,
    batch: Box<[[f32; IMAGE_PIXELS]; MAX_BATCH]>,
    /// The batch's labels and grouping keys.
    info: BatchInfo,
    /// The dataset rows of the batch being filled.
    indices: Vec<usize>,
    kernel: Kernel,
    position: Position,
    resumed_rows: Option<usize>,
    /// Reports of the run's finished epochs, those before a resume included.
    history: Vec<EpochReport>,
    /// Dataset recorded in saved files.
    pub dataset: Option<DatasetKind>,
}

impl Trainer {
    /// A freshly initialised model (Glorot-uniform from `seed`, like Keras) and optimizer.
    pub fn new(config: &TrainConfig) -> Result<Self, TrainError> {
        validate(config)?;
        let mut trainer = Self::with_model(zeroed_box(), config.threads, config.kernel);
        trainer.model.init_glorot(&mut init_rng(config.seed));
        trainer.optimizer = match config.optimizer {
            OptimizerKind::Rmsprop => {
                let mut opt: Box<RmsProp<784, 512, 10>> = zeroed_box();
                opt.reset(config.learning_rate);
                OptimizerState::RmsProp(opt)
            }
            OptimizerKind::Sgd => OptimizerState::Sgd(Sgd {
                learning_rate: config.learning_rate,
            }),
        };
        Ok(trainer)
    }

    /// Restores a run from a checkpoint written by [`Trainer::fit`]; returns the trainer and
    /// the run's settings (`threads` and `kernel` are the caller's).
    pub fn resume(
        path: &Path,
        threads: usize,
        kernel: Kernel,
    ) -> Result<(Self, TrainConfig), ModelFileError> {
        let bytes = read_file(path)?;
        let format_err = |error| ModelFileError::Format {
            path: path.to_owned(),
            error,
        };
        let view = ModelView::parse(&bytes).map_err(format_err)?;
        let extra = view
            .extra()
            .map_err(format_err)?
            .ok_or_else(|| ModelFileError::NotCheckpoint(path.to_owned()))?;
        let bad_record = |reason: String| ModelFileError::BadRecord {
            path: path.to_owned(),
            reason,
        };
        let record: CheckpointRecord =
            serde_json::from_slice(extra).map_err(|e| bad_record(e.to_string()))?;
        check_record(&record).map_err(bad_record)?;
        let mut trainer = Self::with_model(zeroed_box(), threads, kernel);
        view.load_into(&mut trainer.model).map_err(format_err)?;
        if record.optimizer == OptimizerKind::Rmsprop {
            let mut opt: Box<RmsProp<784, 512, 10>> = zeroed_box();
            view.load_optimizer(&mut opt).map_err(format_err)?;
            trainer.optimizer = OptimizerState::RmsProp(opt);
        } else {
            trainer.optimizer = OptimizerState::Sgd(Sgd {
                learning_rate: record.learning_rate,
            });
        }
        trainer.position = record.position;
        trainer.dataset = dataset_from_byte(view.header().dataset);
        let config = TrainConfig {
            epochs: record.epochs,
            batch_size: record.batch_size,
            optimizer: record.optimizer,
            learning_rate: record.learning_rate,
            seed: record.seed,
            threads,
            kernel,
        };
        trainer.resumed_rows = Some(record.train_rows);
        trainer.history = record.history;
        Ok((trainer, config))
    }

    /// Training rows the resumed checkpoint was made with.
    pub fn resumed_rows(&self) -> Option<usize> {
        self.resumed_rows
    }

    /// Reports of the run's finished epochs, those before a resume included.
    pub fn history(&self) -> &[EpochReport] {
        &self.history
    }

    /// Where the run stands.
    pub fn position(&self) -> Position {
        self.position
    }

    /// Wraps an existing model for inference (and training with SGD unless replaced).
    pub fn with_model(model: Box<MnistMlp>, threads: usize, kernel: Kernel) -> Self {
        Self {
            model,
            optimizer: OptimizerState::Sgd(Sgd { learning_rate: 0.0 }),
            workspace: zeroed_box(),
            panels: zeroed_box(),
            scratches: zeroed_slice(threads.max(1)),
            threads: Threads::new(threads),
            batch: zeroed_box_batch(),
            info: BatchInfo::default(),
            indices: Vec::with_capacity(MAX_BATCH),
            kernel,
            position: Position::default(),
            resumed_rows: None,
            history: Vec::new(),
            dataset: None,
        }
    }

    /// Trains until `config.epochs` epochs are done (from where a resumed checkpoint left
    /// off), writing checkpoints and stopping early as `control` asks, reporting through
    /// `on_event`.
    pub fn fit(
        &mut self,
        config: &TrainConfig,
        train: &Dataset,
        validation: Option<&Dataset>,
        control: &RunControl,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<Outcome, TrainError> {
        validate(config)?;
        if train.is_empty() {
            return Err(TrainError::Invalid("the training set is empty".into()));
        }
        // The model is a public field: it may have changed since the last fit.
        self.panels.copy_from(&self.model, self.kernel);
        let outcome = self.run_epochs(config, train, validation, control, on_event);
        self.panels.copy_to(&mut self.model);
        outcome
    }

    /// `fit`'s epochs, the hidden weights in `panels`.
    fn run_epochs(
        &mut self,
        config: &TrainConfig,
        train: &Dataset,
        validation: Option<&Dataset>,
        control: &RunControl,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<Outcome, TrainError> {
        let steps = train.len().div_ceil(config.batch_size);
        let start = self.position;
        self.history.truncate(start.epoch);
        let earlier = self.history.len();
        for epoch in start.epoch..config.epochs {
            let started = Instant::now();
            let order = epoch_order(config.seed, epoch, train.len());
            on_event(Event::EpochStart {
                epoch: epoch + 1,
                steps,
            });
            let resumed = epoch == start.epoch;
            let mut running = if resumed {
                start.stats
            } else {
                StepStats::default()
            };
            let first_step = if resumed { start.step } else { 0 };
            for (step, chunk) in order.chunks(config.batch_size).enumerate().skip(first_step) {
                let stats = self.step(train, chunk.iter().map(|&i| i as usize));
                if !stats.loss_sum.is_finite() {
                    return Err(self.diverged(epoch, step, "loss"));
                }
                running.merge(stats);
                self.position = Position {
                    epoch,
                    step: step + 1,
                    stats: running,
                };
                on_event(Event::Step {
                    step: step + 1,
                    running: &running,
                });
                // u128: a huge epoch count cannot overflow the step number.
                let global_step = epoch as u128 * steps as u128 + step as u128 + 1;
                let due = matches!(
                    control.every,
                    Every::Steps(n) if global_step.is_multiple_of(n as u128)
                );
                if control.stop_requested() {
                    let written = self.write_checkpoint(config, train, control.interrupt_path())?;
                    return Ok(Outcome::Interrupted {
                        position: self.position,
                        checkpoint: written,
                    });
                }
                if due {
                    self.write_checkpoint(config, train, control.checkpoint.as_deref())?;
                }
            }
            // Validation and checkpoints read the model.
            self.panels.copy_to(&mut self.model);
            if !self.model.is_finite() {
                return Err(self.diverged(epoch, steps - 1, "weights"));
            }
            let val = validation.map(|v| self.evaluate(v));
            let report = EpochReport {
                epoch: epoch + 1,
                loss: running.mean_loss(),
                accuracy: running.accuracy(),
                val_loss: val.map(|s| s.mean_loss()),
                val_accuracy: val.map(|s| s.accuracy()),
                seconds: started.elapsed().as_secs_f64(),
            };
            self.position = Position {
                epoch: epoch + 1,
                ..Position::default()
            };
            on_event(Event::EpochEnd(&report));
            self.history.push(report);
            if matches!(control.every, Every::Epochs(n) if (epoch + 1).is_multiple_of(n)) {
                self.write_checkpoint(config, train, control.checkpoint.as_deref())?;
            }
        }
        Ok(Outcome::Finished(self.history[earlier..].to_vec()))
    }

    /// Writes a checkpoint (model, optimizer state, position) to `path` if there is one.
    fn write_checkpoint(
        &mut self,
        config: &TrainConfig,
        train: &Dataset,
        path: Option<&Path>,
    ) -> Result<Option<PathBuf>, TrainError> {
        let Some(path) = path else { return Ok(None) };
        self.panels.copy_to(&mut self.model);
        // A checkpoint must always be a state worth resuming from.
        if !self.model.is_finite() {
            return Err(self.diverged(self.position.epoch, self.position.step, "weights"));
        }
        let record = CheckpointRecord {
            position: self.position,
            seed: config.seed,
            epochs: config.epochs,
            batch_size: config.batch_size,
            optimizer: config.optimizer,
            learning_rate: config.learning_rate,
            train_rows: train.len(),
            history: self.history.clone(),
        };
        let extra = serde_json::to_vec(&record).expect("plain fields serialise");
        let optimizer = match &self.optimizer {
            OptimizerState::RmsProp(o) => Some(&**o),
            OptimizerState::Sgd(_) => None,
        };
        let mut bytes =
            vec![0u8; format::encoded_len::<784, 512, 10>(optimizer.is_some(), Some(&extra))];
        format::encode(
            &self.model,
            optimizer,
            dataset_byte(self.dataset),
            Some(&extra),
            &mut bytes,
        )
        .expect("buffer sized by encoded_len");
        write_atomic(path, &bytes)?;
        Ok(Some(path.to_owned()))
    }

    fn diverged(&self, epoch: usize, step: usize, what: &'static str) -> TrainError {
        TrainError::Diverged {
            epoch: epoch + 1,
            step: step + 1,
            what,
            learning_rate: match &self.optimizer {
                OptimizerState::RmsProp(o) => o.learning_rate,
                OptimizerState::Sgd(o) => o.learning_rate,
            },
        }
    }

    /// Loads the rows at `indices` into the batch and their labels (and, `keyed`, their
    /// grouping keys); returns how many.
    fn fill(
        &mut self,
        data: &Dataset,
        indices: impl IntoIterator<Item = usize>,
        keyed: bool,
    ) -> usize {
        self.indices.clear();
        self.indices.extend(indices);
        fill_batch(
            &self.threads,
            data,
            &self.indices,
            &mut self.batch[..],
            &mut self.info,
            keyed,
        )
    }

    /// One optimizer step on the rows at `indices`.
    fn step(&mut self, data: &Dataset, indices: impl Iterator<Item = usize>) -> StepStats {
        let rows = self.fill(data, indices, true);
        let mut compute = Compute::new(self.kernel, &self.threads, &mut self.scratches);
        let images = &self.batch[..rows];
        let optimizer: &mut dyn StepOptimizer = match &mut self.optimizer {
            OptimizerState::RmsProp(o) => &mut **o,
            OptimizerState::Sgd(o) => o,
        };
        optimizer.train_step(
            &mut self.model,
            images,
            &self.info.labels,
            &self.info.keys,
            &mut self.panels,
            &mut self.workspace,
            &mut compute,
        )
    }

    /// Loss and accuracy over a whole dataset, in batches, without training.
    pub fn evaluate(&mut self, data: &Dataset) -> StepStats {
        self.scored_batches(data, |_| {})
    }

    /// Like [`Trainer::evaluate`], also returning every image's class probabilities, from the
    /// same forward pass.
    pub fn evaluate_with_probabilities(&mut self, data: &Dataset) -> (StepStats, Vec<[f32; 10]>) {
        let mut probabilities = Vec::with_capacity(data.len());
        let stats = self.scored_batches(data, |z| {
            let mut p = [0.0; 10];
            picodense_core::loss::softmax(z, &mut p);
            probabilities.push(p);
        });
        (stats, probabilities)
    }

    /// Loss and accuracy over `data`, handing each image's logits to `on_logits` in order.
    fn scored_batches(
        &mut self,
        data: &Dataset,
        mut on_logits: impl FnMut(&[f32; 10]),
    ) -> StepStats {
        let mut total = StepStats::default();
        self.for_each_batch(data, |logits, labels| {
            for (z, &label) in logits.iter().zip(labels) {
                total.loss_sum += f64::from(picodense_core::loss::cross_entropy(z, label.into()));
                total.correct += u32::from(picodense_core::loss::argmax(z) == usize::from(label));
                total.rows += 1;
                on_logits(z);
            }
        });
        total
    }

    /// Runs the forward pass over `data` in batches of [`MAX_BATCH`], handing each batch's
    /// logits and labels to `on_batch`.
    fn for_each_batch(&mut self, data: &Dataset, mut on_batch: impl FnMut(&[[f32; 10]], &[u8])) {
        for start in (0..data.len()).step_by(MAX_BATCH) {
            let end = (start + MAX_BATCH).min(data.len());
            let rows = self.fill(data, start..end, false);
            let mut compute = Compute::new(self.kernel, &self.threads, &mut self.scratches);
            let logits = self
                .model
                .forward(&self.batch[..rows], &mut self.workspace, &mut compute);
            on_batch(logits, &self.info.labels);
        }
    }

    /// Class probabilities of one image.
    pub fn probabilities(&mut self, pixels: &[u8]) -> [f32; 10] {
        crate::batch::to_unit(pixels, &mut self.batch[0]);
        let mut compute = Compute::new(self.kernel, &self.threads, &mut self.scratches);
        let logits = self
            .model
            .forward(&self.batch[..1], &mut self.workspace, &mut compute);
        let mut p = [0.0; 10];
        picodense_core::loss::softmax(&logits[0], &mut p);
        p
    }

    /// The model file bytes (weights only).
    pub fn to_bytes(&self) -> Vec<u8> {
        model_bytes(&self.model, self.dataset)
    }
}

/// Object-safe wrapper so the step can pick the optimizer at run time.
trait StepOptimizer {
    #[allow(clippy::too_many_arguments)]
    fn train_step(
        &mut self,
        model: &mut MnistMlp,
        images: &[[f32; IMAGE_PIXELS]],
        labels: &[u8],
        keys: &[u16],
        panels: &mut HiddenPanels<784, 512>,
        ws: &mut HostWorkspace,
        compute: &mut Compute<Threads>,
    ) -> StepStats;
}

impl<T: Optimizer<784, 512, 10>> StepOptimizer for T {
    fn train_step(
        &mut self,
        model: &mut MnistMlp,
        images: &[[f32; IMAGE_PIXELS]],
        labels: &[u8],
        keys: &[u16],
        panels: &mut HiddenPanels<784, 512>,
        ws: &mut HostWorkspace,
        compute: &mut Compute<Threads>,
    ) -> StepStats {
        model.train_step_with_panels(self, images, labels, keys, panels, ws, compute)
    }
}

fn zeroed_box_batch() -> Box<[[f32; IMAGE_PIXELS]; MAX_BATCH]> {
    let batch: Box<[[f32; IMAGE_PIXELS]]> = vec![[0.0; IMAGE_PIXELS]; MAX_BATCH].into_boxed_slice();
    batch.try_into().expect("MAX_BATCH rows")
}

/// Refuses a checkpoint record that no run could have written: settings `fit` rejects, or a
/// position outside the run (which would otherwise skip or overflow in the loop).
fn check_record(r: &CheckpointRecord) -> Result<(), String> {
    let config = TrainConfig {
        epochs: r.epochs,
        batch_size: r.batch_size,
        optimizer: r.optimizer,
        learning_rate: r.learning_rate,
        seed: r.seed,
        ..TrainConfig::default()
    };
    validate(&config).map_err(|e| e.to_string())?;
    let at = &r.position;
    let steps = r.train_rows.div_ceil(r.batch_size);
    let rows = u64::from(at.stats.rows);
    if r.history.len() > at.epoch {
        return Err(format!(
            "{} epoch reports for a run at epoch {}",
            r.history.len(),
            at.epoch
        ));
    }
    if at.epoch > r.epochs
        || at.step > steps
        || rows > r.train_rows as u64
        || at.stats.correct > at.stats.rows
    {
        return Err(format!(
            "position (epoch {}, step {}, {} rows) is outside a run of {} epochs of {steps} steps \
             over {} rows",
            at.epoch, at.step, at.stats.rows, r.epochs, r.train_rows
        ));
    }
    Ok(())
}

fn validate(config: &TrainConfig) -> Result<(), TrainError> {
    let invalid = |m: String| Err(TrainError::Invalid(m));
    if config.epochs == 0 {
        return invalid("epochs must be at least 1".into());
    }
    if config.batch_size == 0 || config.batch_size > MAX_BATCH {
        return invalid(format!(
            "batch size must be between 1 and {MAX_BATCH}, not {}",
            config.batch_size
        ));
    }
    if !(config.learning_rate.is_finite() && config.learning_rate > 0.0) {
        return invalid(format!(
            "learning rate must be a positive number, not {}",
            config.learning_rate
        ));
    }
    if config.threads == 0 {
        return invalid("threads must be at least 1".into());
    }
    Ok(())
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

/// An f32 model file holding `model`.
pub fn model_bytes(model: &MnistMlp, dataset: Option<DatasetKind>) -> Vec<u8> {
    let mut bytes = vec![0u8; format::encoded_len::<784, 512, 10>(false, None)];
    format::encode(model, None, dataset_byte(dataset), None, &mut bytes)
        .expect("buffer sized by encoded_len");
    bytes
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
        error: format::FormatError,
    },
    /// The checkpoint's training record is malformed or out of range.
    #[error("{}: bad training record: {reason}", path.display())]
    BadRecord {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A model file without a training record was given to `--resume`.
    #[error("{}: not a checkpoint (no training record); use a file written by --checkpoint", .0.display())]
    NotCheckpoint(PathBuf),
}

fn read_file(path: &Path) -> Result<Vec<u8>, ModelFileError> {
    std::fs::read(path).map_err(|error| ModelFileError::Io {
        path: path.to_owned(),
        error,
    })
}

/// Reads an f32 model file into a boxed model; also returns the dataset it was trained on.
pub fn load_model(path: &Path) -> Result<(Box<MnistMlp>, Option<DatasetKind>), ModelFileError> {
    model_from_bytes(path, &read_file(path)?)
}

/// [`load_model`] on the bytes of `path`, already read.
pub fn model_from_bytes(
    path: &Path,
    bytes: &[u8],
) -> Result<(Box<MnistMlp>, Option<DatasetKind>), ModelFileError> {
    let format_err = |error| ModelFileError::Format {
        path: path.to_owned(),
        error,
    };
    let view = ModelView::parse(bytes).map_err(format_err)?;
    let mut model: Box<MnistMlp> = zeroed_box();
    view.load_into(&mut model).map_err(format_err)?;
    Ok((model, dataset_from_byte(view.header().dataset)))
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the new one, never a
/// mix: a temporary file in the same directory, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ModelFileError> {
    use std::io::Write;
    let io_err = |error| ModelFileError::Io {
        path: path.to_owned(),
        error,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io_err(std::io::Error::other("not a file name")))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        // The rename itself must reach the disk too.
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io_err)
}
