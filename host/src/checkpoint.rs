//! The training record a checkpoint carries beside the model and optimizer state, how a
//! checkpoint is encoded, and how one is read back and checked for resuming.

use std::path::Path;

use picodense_core::format::Sections;
use picodense_core::{Layers, RmsPropRule, Shape, StepStats};

use crate::data::Dataset;
use crate::model::{
    ModelFileError, Network, dataset_byte, encode_file, parse_model, read_model_file,
};
use crate::train::{EpochReport, OptimizerKind, TrainConfig, validate};

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
    /// Fraction held out for validation.
    #[serde(default)]
    pub validation_split: f64,
    /// CRC-32 of the training labels in file order: data with the same row count but other
    /// labels is not the run's data (absent from checkpoints of earlier versions).
    #[serde(default)]
    pub train_labels_crc32: Option<u32>,
    /// CRC-32 of the training pixels or (scaled) features in file order: likewise for other
    /// values under the same labels (absent from checkpoints of earlier versions).
    #[serde(default)]
    pub train_values_crc32: Option<u32>,
    /// Reports of the epochs finished so far (absent from checkpoints of earlier versions).
    #[serde(default)]
    pub history: Vec<EpochReport>,
}

impl CheckpointRecord {
    /// The record of a run of `config` on the data `train` identifies, standing at `position`
    /// after the epochs of `history`.
    pub fn new(
        position: Position,
        config: &TrainConfig,
        train: DataPrint,
        history: Vec<EpochReport>,
    ) -> Self {
        Self {
            position,
            seed: config.seed,
            epochs: config.epochs,
            batch_size: config.batch_size,
            optimizer: config.optimizer,
            learning_rate: config.learning_rate,
            train_rows: train.rows,
            validation_split: config.validation_split,
            train_labels_crc32: train.labels_crc32,
            train_values_crc32: train.values_crc32,
            history,
        }
    }
}

/// What identifies a run's training data in its checkpoints.
#[derive(Clone, Copy, Debug)]
pub struct DataPrint {
    rows: usize,
    labels_crc32: Option<u32>,
    values_crc32: Option<u32>,
}

impl DataPrint {
    /// The print of `train` (a pass over all its values: taken once a run).
    pub fn of(train: &Dataset) -> Self {
        let mut values = crc32fast::Hasher::new();
        values.update(&train.images);
        let mut bytes = Vec::with_capacity(4096);
        for chunk in train.values.chunks(1024) {
            bytes.clear();
            bytes.extend(chunk.iter().flat_map(|v| v.to_le_bytes()));
            values.update(&bytes);
        }
        Self {
            rows: train.len(),
            labels_crc32: Some(picodense_core::crc32(&train.labels)),
            values_crc32: Some(values.finalize()),
        }
    }

    /// The data `record`'s run trained on.
    pub(crate) fn of_record(record: &CheckpointRecord) -> Self {
        Self {
            rows: record.train_rows,
            labels_crc32: record.train_labels_crc32,
            values_crc32: record.train_values_crc32,
        }
    }

    /// Refuses `train` unless it is this data: other rows, labels or values.
    pub(crate) fn check_same(&self, train: &Dataset) -> Result<(), String> {
        let given = Self::of(train);
        if self.rows != given.rows {
            return Err(format!(
                "the checkpoint was trained on {} rows, this data has {}",
                self.rows, given.rows
            ));
        }
        for (recorded, now, what) in [
            (self.labels_crc32, given.labels_crc32, "labels"),
            (self.values_crc32, given.values_crc32, "values"),
        ] {
            if recorded.is_some_and(|crc| Some(crc) != now) {
                return Err(format!(
                    "the checkpoint was trained on other data: the {} rows have other {what}",
                    given.rows
                ));
            }
        }
        Ok(())
    }
}

/// A checkpoint read back and checked: the record, the network, and the RMSprop rule and
/// mean squares when the run used RMSprop.
pub struct Checkpoint {
    /// Where the run stood and its settings.
    pub record: CheckpointRecord,
    /// The weights.
    pub network: Network,
    /// RMSprop's rule and mean squares; `None` for SGD.
    pub rmsprop: Option<(RmsPropRule, Vec<f32>)>,
}

impl Checkpoint {
    /// Reads the checkpoint `path`, refusing a model file without a record and any record or
    /// optimizer state no run could have written.
    pub fn read(path: &Path) -> Result<Self, ModelFileError> {
        let bytes = read_model_file(path)?;
        let format_err = |error| ModelFileError::format(path, error);
        let view = parse_model(path, &bytes)?;
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
        let network = Network::from_view(path, &view)?;
        let shape = network.shape;
        let rmsprop = match record.optimizer {
            OptimizerKind::Rmsprop => {
                let mut velocity = vec![0.0; shape.parameters()];
                let rule = view
                    .load_optimizer(&mut Layers::split_mut(shape, &mut velocity).expect("sized"))
                    .map_err(format_err)?;
                check_optimizer(path, &rule, shape, &velocity, record.learning_rate)?;
                Some((rule, velocity))
            }
            OptimizerKind::Sgd => None,
        };
        Ok(Self {
            record,
            network,
            rmsprop,
        })
    }
}

/// The bytes of a checkpoint: `network`, the RMSprop rule and mean squares if any, and
/// `record`.
pub fn encode(
    network: &Network,
    record: &CheckpointRecord,
    rmsprop: Option<&(RmsPropRule, Layers<&[f32]>)>,
) -> Vec<u8> {
    let extra = serde_json::to_vec(record).expect("plain fields serialise");
    let meta = serde_json::to_vec(&network.meta).expect("plain fields serialise");
    let sections = Sections {
        optimizer: rmsprop.map(|(rule, v)| (*rule, v)),
        extra: Some(&extra),
        meta: Some(&meta),
        dataset: dataset_byte(network.meta.dataset_kind()),
    };
    encode_file(&network.layers(), &sections)
}

/// Refuses RMSprop state no run could have written: a mean of squares that is negative or not
/// finite, a decay outside [0, 1), an epsilon that is not positive, or a learning rate other
/// than the record's.
fn check_optimizer(
    path: &Path,
    rule: &RmsPropRule,
    shape: Shape,
    velocity: &[f32],
    learning_rate: f32,
) -> Result<(), ModelFileError> {
    let bad = |reason: String| ModelFileError::BadOptimizer {
        path: path.to_owned(),
        reason,
    };
    if !(0.0..1.0).contains(&rule.rho) {
        return Err(bad(format!("RMSprop rho {} is outside [0, 1)", rule.rho)));
    }
    if !(rule.epsilon.is_finite() && rule.epsilon > 0.0) {
        return Err(bad(format!(
            "RMSprop epsilon {} is not a positive number",
            rule.epsilon
        )));
    }
    if rule.learning_rate != learning_rate {
        return Err(bad(format!(
            "RMSprop learning rate {} differs from the record's {learning_rate}",
            rule.learning_rate
        )));
    }
    if let Some(at) = crate::model::first_non_finite(shape, velocity) {
        return Err(ModelFileError::NonFinite {
            path: path.to_owned(),
            what: format!("RMSprop mean square of {at}"),
        });
    }
    if let Some(i) = velocity.iter().position(|&v| v < 0.0) {
        return Err(bad(format!(
            "RMSprop mean square {} (value {i}) is negative",
            velocity[i]
        )));
    }
    Ok(())
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
        validation_split: r.validation_split,
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
