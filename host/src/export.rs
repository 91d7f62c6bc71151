//! Flash images for microcontrollers (f32 and int8) and the test accuracy of any model file.

use picodense_core::format::{Dtype, FormatError, ModelView};
use picodense_core::loss::cross_entropy;
use picodense_core::quant::{self, Calibration, Int8View};
use picodense_core::{MnistMlp, Parallel, StepStats};

use crate::batch::epoch_rng;
use crate::compute::Threads;
use crate::data::{Dataset, IMAGE_PIXELS};
use crate::train::{ModelFileError, dataset_byte, model_bytes};

/// Images used to calibrate the int8 activation ranges (Keras-free TFLite-style export uses a
/// few hundred; more changes the scales by well under a percent).
pub const CALIBRATION_IMAGES: usize = 1000;

/// Storage of an exported model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// 32-bit floats: the trained weights, inference-only (1.6 MB for 784-512-10).
    F32,
    /// Post-training int8 quantisation (0.4 MB), integer-only inference.
    Int8,
}

/// The bytes of `model` exported as `format`; int8 is calibrated on a seeded sample of `train`.
pub fn export(
    model: &MnistMlp,
    format: ExportFormat,
    train: &Dataset,
    dataset: Option<crate::data::DatasetKind>,
) -> Vec<u8> {
    match format {
        ExportFormat::F32 => model_bytes(model, dataset),
        ExportFormat::Int8 => {
            let calibration = Calibration::from_images(model, &calibration_sample(train));
            let mut bytes = vec![0u8; quant::encoded_len::<784, 512, 10>()];
            quant::encode(model, &calibration, dataset_byte(dataset), &mut bytes)
                .expect("buffer sized by encoded_len");
            bytes
        }
    }
}

/// Up to [`CALIBRATION_IMAGES`] training images, drawn without replacement by a fixed seed.
fn calibration_sample(train: &Dataset) -> Vec<[u8; IMAGE_PIXELS]> {
    use rand_core::Rng;
    let mut rng = epoch_rng(0xCA11_B8A7, 0);
    let mut indices: Vec<usize> = (0..train.len()).collect();
    let take = CALIBRATION_IMAGES.min(train.len());
    for i in 0..take {
        let j = i + (rng.next_u64() % (train.len() - i) as u64) as usize;
        indices.swap(i, j);
    }
    indices[..take]
        .iter()
        .map(|&i| train.image(i).try_into().expect("784 pixels"))
        .collect()
}

/// Loss and accuracy of an int8 model file on `data`, as the firmware computes it (integer
/// inference, logits dequantised only for the loss); images split between `threads`.
pub fn evaluate_int8(
    bytes: &[u8],
    data: &Dataset,
    threads: usize,
) -> Result<StepStats, FormatError> {
    let view = Int8View::parse(bytes)?;
    let expected = [IMAGE_PIXELS as u32, 512, 10];
    if view.header().sizes != expected {
        return Err(FormatError::ShapeMismatch {
            file: view.header().sizes,
            expected,
        });
    }
    let threads = Threads::new(threads);
    let mut parts = vec![StepStats::default(); threads.count()];
    let chunk = data.len().div_ceil(parts.len()).max(1);
    threads.run(&mut parts, &|part, stats: &mut StepStats| {
        let mut scratch = vec![0u32; view.scratch_words()];
        let mut logits = [0i32; 10];
        for i in part * chunk..((part + 1) * chunk).min(data.len()) {
            let class = view.predict(data.image(i), &mut scratch, &mut logits);
            let real = logits.map(|z| z as f32 * view.logit_scale());
            let label = data.labels[i];
            stats.loss_sum += f64::from(cross_entropy(&real, label as usize));
            stats.correct += u32::from(class == label as usize);
            stats.rows += 1;
        }
    });
    let mut total = StepStats::default();
    for p in parts {
        total.merge(p);
    }
    Ok(total)
}

/// The storage type of a model file, after its checks pass.
pub fn file_dtype(path: &std::path::Path, bytes: &[u8]) -> Result<Dtype, ModelFileError> {
    ModelView::parse(bytes)
        .map(|v| v.header().dtype)
        .map_err(|error| ModelFileError::Format {
            path: path.to_owned(),
            error,
        })
}
