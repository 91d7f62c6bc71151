//! The `fit` loop and evaluation; the checkpoints it writes are [`crate::checkpoint`]'s.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use picodense_core::model::forward;
use picodense_core::{
    Batch, Compute, FirstLayerStep, Kernel, Layers, Learner, Optimizer, PanelState, Panels,
    Parallel, RmsPropRule, RmsPropState, Scratch, Sgd, Shape, StepStats, Update, WorkspaceLen,
    WorkspaceMut,
};

use crate::batch::{BatchInfo, epoch_order, fill_batch};
use crate::checkpoint::{self, Checkpoint, DataPrint};
pub use crate::checkpoint::{CheckpointRecord, Position};
use crate::compute::{Threads, zeroed_slice};
use crate::data::Dataset;
use crate::fs::write_atomic;
pub use crate::model::ModelFileError;
use crate::model::{ModelMeta, Network};

/// Largest batch the host trains with (Keras's default is 128).
pub const MAX_BATCH: usize = 1024;

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
    /// Units of each hidden layer.
    pub hidden: Vec<usize>,
    /// Fraction of the data the caller held out for validation (recorded in checkpoints).
    pub validation_split: f64,
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
            hidden: vec![512],
            validation_split: 0.0,
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

/// As `--checkpoint-every` spells it.
impl std::fmt::Display for Every {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Every::Never => f.write_str("never"),
            Every::Steps(n) => write!(f, "{n}"),
            Every::Epochs(n) => write!(f, "{n}epoch"),
        }
    }
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
    RmsProp {
        rule: RmsPropRule,
        velocity: Vec<f32>,
    },
    Sgd(Sgd),
}

impl OptimizerState {
    fn learning_rate(&self) -> f32 {
        match self {
            OptimizerState::RmsProp { rule, .. } => rule.learning_rate,
            OptimizerState::Sgd(o) => o.learning_rate,
        }
    }

    /// The core's view of RMSprop's state over a network of `shape`; `None` for SGD.
    fn rmsprop(&mut self, shape: Shape) -> Option<RmsPropState<'_>> {
        match self {
            OptimizerState::RmsProp { rule, velocity } => Some(RmsPropState {
                rule: *rule,
                velocity: Layers::split_mut(shape, velocity).expect("sized"),
            }),
            OptimizerState::Sgd(_) => None,
        }
    }
}

impl Optimizer for OptimizerState {
    fn update<P: Parallel>(&mut self, step: Update, compute: &Compute<P>) {
        match self {
            OptimizerState::Sgd(o) => o.update(step, compute),
            OptimizerState::RmsProp { .. } => {
                let shape = step.params.shape();
                let mut state = self.rmsprop(shape).expect("RMSprop");
                state.update(step, compute);
            }
        }
    }

    fn first_layer_step(&mut self, shape: Shape) -> Option<FirstLayerStep<'_>> {
        self.rmsprop(shape)
            .map(|state| state.into_first_layer_step(shape))
    }
}

/// The storage of a core workspace.
struct Buffers {
    rows: usize,
    floats: Vec<f32>,
    masks: Vec<u128>,
    order: Vec<u16>,
    correct: Vec<bool>,
}

impl Buffers {
    fn new(shape: Shape, rows: usize) -> Self {
        let len = WorkspaceLen::of(shape, rows);
        Self {
            rows,
            floats: vec![0.0; len.floats],
            masks: vec![0; len.masks],
            order: vec![0; len.rows],
            correct: vec![false; len.rows],
        }
    }

    fn view(&mut self, shape: Shape) -> WorkspaceMut<'_> {
        WorkspaceMut::new(
            shape,
            self.rows,
            &mut self.floats,
            &mut self.masks,
            &mut self.order,
            &mut self.correct,
        )
        .expect("buffers sized by WorkspaceLen")
    }
}

/// Rows a batch of inference holds: up to [`MAX_BATCH`], fewer for wide rows.
fn inference_rows(width: usize) -> usize {
    (MAX_BATCH_FLOATS / width.max(1)).clamp(1, MAX_BATCH)
}

/// Floats of input a batch of inference holds at most.
const MAX_BATCH_FLOATS: usize = 1 << 22;

/// A network with its optimizer and the buffers training and inference use.
pub struct Trainer {
    /// The network.
    pub network: Network,
    optimizer: OptimizerState,
    buffers: Buffers,
    /// The first layer's weights while `fit` runs, in the kernel's panels: the forward
    /// product reads them in place instead of packing W1 every step, and the optimizer
    /// updates them there. `fit` copies them back into `network` before anything reads it and
    /// when it returns.
    panels: Vec<f32>,
    panel_state: PanelState,
    scratches: Box<[Scratch]>,
    threads: Threads,
    batch: Vec<f32>,
    /// The batch's labels and grouping keys.
    info: BatchInfo,
    /// The dataset rows of the batch being filled.
    indices: Vec<usize>,
    kernel: Kernel,
    position: Position,
    /// The training data a resumed checkpoint was made with.
    resumed_data: Option<DataPrint>,
    /// The print of the data `fit` trains on, taken at its first checkpoint.
    data_print: Option<DataPrint>,
    /// Reports of the run's finished epochs, those before a resume included.
    history: Vec<EpochReport>,
}

impl Trainer {
    /// A freshly initialised network of `shape` (Glorot-uniform from `seed`, like Keras) and
    /// its optimizer.
    pub fn new(config: &TrainConfig, shape: Shape, meta: ModelMeta) -> Result<Self, TrainError> {
        validate(config)?;
        let network = Network::glorot(shape, config.seed, meta);
        let mut trainer = Self::with_network(network, config.threads, config.kernel);
        trainer.optimizer = match config.optimizer {
            OptimizerKind::Rmsprop => OptimizerState::RmsProp {
                rule: RmsPropRule::keras(config.learning_rate),
                velocity: vec![0.0; shape.parameters()],
            },
            OptimizerKind::Sgd => OptimizerState::Sgd(Sgd {
                learning_rate: config.learning_rate,
            }),
        };
        trainer.grow_for(config.batch_size);
        Ok(trainer)
    }

    /// Restores a run from a checkpoint written by [`Trainer::fit`]; returns the trainer and
    /// the run's settings (`threads` and `kernel` are the caller's).
    pub fn resume(
        path: &Path,
        threads: usize,
        kernel: Kernel,
    ) -> Result<(Self, TrainConfig), ModelFileError> {
        let Checkpoint {
            record,
            network,
            rmsprop,
        } = Checkpoint::read(path)?;
        let shape = network.shape;
        let mut trainer = Self::with_network(network, threads, kernel);
        trainer.optimizer = match rmsprop {
            Some((rule, velocity)) => OptimizerState::RmsProp { rule, velocity },
            None => OptimizerState::Sgd(Sgd {
                learning_rate: record.learning_rate,
            }),
        };
        trainer.position = record.position;
        let config = TrainConfig {
            epochs: record.epochs,
            batch_size: record.batch_size,
            optimizer: record.optimizer,
            learning_rate: record.learning_rate,
            seed: record.seed,
            threads,
            kernel,
            hidden: shape.hidden().to_vec(),
            validation_split: record.validation_split,
        };
        trainer.grow_for(record.batch_size);
        trainer.resumed_data = Some(DataPrint::of_record(&record));
        trainer.history = record.history;
        Ok((trainer, config))
    }

    /// Refuses training data other than the resumed checkpoint's: other rows or labels.
    pub fn check_resumed_data(&self, train: &Dataset) -> Result<(), String> {
        let Some(recorded) = self.resumed_data else {
            return Ok(());
        };
        recorded.check_same(train)
    }

    /// Reports of the run's finished epochs, those before a resume included.
    pub fn history(&self) -> &[EpochReport] {
        &self.history
    }

    /// Where the run stands.
    pub fn position(&self) -> Position {
        self.position
    }

    /// Wraps an existing network for inference (and training with SGD unless replaced).
    pub fn with_network(network: Network, threads: usize, kernel: Kernel) -> Self {
        let shape = network.shape;
        let rows = inference_rows(shape.inputs());
        Self {
            optimizer: OptimizerState::Sgd(Sgd { learning_rate: 0.0 }),
            buffers: Buffers::new(shape, rows),
            panels: vec![0.0; shape.layer_parameters(0) - shape.layer(0).1],
            panel_state: PanelState::default(),
            scratches: zeroed_slice(threads.max(1)),
            threads: Threads::new(threads),
            batch: vec![0.0; rows * shape.inputs()],
            info: BatchInfo::default(),
            indices: Vec::with_capacity(rows),
            kernel,
            position: Position::default(),
            resumed_data: None,
            data_print: None,
            history: Vec::new(),
            network,
        }
    }

    /// Makes room for batches of `rows` rows.
    fn grow_for(&mut self, rows: usize) {
        if rows > self.buffers.rows {
            let shape = self.network.shape;
            self.buffers = Buffers::new(shape, rows);
            self.batch = vec![0.0; rows * shape.inputs()];
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
        self.check_resumed_data(train)
            .map_err(TrainError::Invalid)?;
        if train.width != self.network.shape.inputs() {
            return Err(TrainError::Invalid(format!(
                "the data has {} values a row, the network {} inputs",
                train.width,
                self.network.shape.inputs()
            )));
        }
        self.grow_for(config.batch_size);
        self.data_print = None;
        // The network is a public field: it may have changed since the last fit.
        let (rows, cols) = self.network.shape.layer(0);
        Panels::new(&mut self.panels, &mut self.panel_state).copy_from(
            self.network.layers().weights(0),
            rows,
            cols,
            self.kernel,
        );
        let outcome = self.run_epochs(config, train, validation, control, on_event);
        self.sync_panels();
        outcome
    }

    /// Copies the first layer's weights back from the panels.
    fn sync_panels(&mut self) {
        let shape = self.network.shape;
        let mut layers = Layers::split_mut(shape, &mut self.network.params).expect("sized");
        Panels::new(&mut self.panels, &mut self.panel_state).copy_to(layers.weights_mut(0));
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
            // Validation and checkpoints read the network.
            self.sync_panels();
            if !self.network.is_finite() {
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
        self.sync_panels();
        // A checkpoint must always be a state worth resuming from.
        if !self.network.is_finite() {
            return Err(self.diverged(self.position.epoch, self.position.step, "weights"));
        }
        let print = *self.data_print.get_or_insert_with(|| DataPrint::of(train));
        let record = CheckpointRecord::new(self.position, config, print, self.history.clone());
        let shape = self.network.shape;
        let rmsprop = match &self.optimizer {
            OptimizerState::RmsProp { rule, velocity } => {
                Some((*rule, Layers::split(shape, velocity).expect("sized")))
            }
            OptimizerState::Sgd(_) => None,
        };
        let bytes = checkpoint::encode(&self.network, &record, rmsprop.as_ref());
        write_atomic(path, &bytes).map_err(ModelFileError::from)?;
        Ok(Some(path.to_owned()))
    }

    fn diverged(&self, epoch: usize, step: usize, what: &'static str) -> TrainError {
        TrainError::Diverged {
            epoch: epoch + 1,
            step: step + 1,
            what,
            learning_rate: self.optimizer.learning_rate(),
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
            self.kernel,
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
        let shape = self.network.shape;
        let mut compute = Compute::new(self.kernel, &self.threads, &mut self.scratches);
        let batch = Batch {
            inputs: &self.batch[..rows * shape.inputs()],
            labels: &self.info.labels,
            keys: &self.info.keys,
        };
        let mut learner = Learner {
            params: Layers::split_mut(shape, &mut self.network.params).expect("sized"),
            optimizer: &mut self.optimizer,
            panels: Some(Panels::new(&mut self.panels, &mut self.panel_state)),
            workspace: self.buffers.view(shape),
        };
        learner.train_step(batch, &mut compute)
    }

    /// Loss and accuracy over a whole dataset, in batches, without training.
    pub fn evaluate(&mut self, data: &Dataset) -> StepStats {
        self.scored_batches(data, |_| {})
    }

    /// Like [`Trainer::evaluate`], also returning every row's class probabilities, from the
    /// same forward pass.
    pub fn evaluate_with_probabilities(&mut self, data: &Dataset) -> (StepStats, Vec<Vec<f32>>) {
        let mut probabilities = Vec::with_capacity(data.len());
        let stats = self.scored_batches(data, |z| {
            let mut p = vec![0.0; z.len()];
            picodense_core::loss::softmax(z, &mut p);
            probabilities.push(p);
        });
        (stats, probabilities)
    }

    /// Loss and accuracy over `data`, handing each image's logits to `on_logits` in order.
    fn scored_batches(&mut self, data: &Dataset, mut on_logits: impl FnMut(&[f32])) -> StepStats {
        let mut total = StepStats::default();
        let classes = self.network.shape.classes();
        self.for_each_batch(data, |logits, labels| {
            for (z, &label) in logits.chunks_exact(classes).zip(labels) {
                total.loss_sum += f64::from(picodense_core::loss::cross_entropy(z, label.into()));
                total.correct += u32::from(picodense_core::loss::argmax(z) == usize::from(label));
                total.rows += 1;
                on_logits(z);
            }
        });
        total
    }

    /// Runs the forward pass over `data` in batches, handing each batch's logits (row after
    /// row) and labels to `on_batch`.
    fn for_each_batch(&mut self, data: &Dataset, mut on_batch: impl FnMut(&[f32], &[u8])) {
        let shape = self.network.shape;
        let step = self.buffers.rows;
        for start in (0..data.len()).step_by(step) {
            let end = (start + step).min(data.len());
            let rows = self.fill(data, start..end, false);
            let mut compute = Compute::new(self.kernel, &self.threads, &mut self.scratches);
            let mut ws = self.buffers.view(shape);
            let inputs = &self.batch[..rows * shape.inputs()];
            let logits = forward(&self.network.layers(), inputs, &mut ws, &mut compute);
            on_batch(logits, &self.info.labels);
        }
    }

    /// Class probabilities of one row of inputs, already scaled.
    pub fn probabilities(&mut self, inputs: &[f32]) -> Vec<f32> {
        let shape = self.network.shape;
        let mut compute = Compute::new(self.kernel, &self.threads, &mut self.scratches);
        let mut ws = self.buffers.view(shape);
        let logits = forward(&self.network.layers(), inputs, &mut ws, &mut compute);
        let mut p = vec![0.0; shape.classes()];
        picodense_core::loss::softmax(logits, &mut p);
        p
    }

    /// Class probabilities of one image's pixels.
    pub fn image_probabilities(&mut self, pixels: &[u8]) -> Vec<f32> {
        let mut row = vec![0.0; pixels.len()];
        crate::batch::to_unit(self.kernel, pixels, &mut row);
        self.probabilities(&row)
    }

    /// The model file bytes (weights and metadata).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.network.file_bytes()
    }
}

/// Refuses settings no run can train with.
pub fn validate(config: &TrainConfig) -> Result<(), TrainError> {
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
    if !(0.0..1.0).contains(&config.validation_split) {
        return invalid(format!(
            "validation-split must be in [0, 1), not {}",
            config.validation_split
        ));
    }
    Ok(())
}
