//! Flash images for microcontrollers (f32 and int8) and the test accuracy of any model file.

use picodense_core::format::{FormatError, Sections};
use picodense_core::loss::cross_entropy;
use picodense_core::quant::{self, Calibration, Int8View};
use picodense_core::{Parallel, StepStats};

use crate::batch::epoch_rng;
use crate::compute::Threads;
use crate::data::Dataset;
use crate::model::{Network, Scaling, dataset_byte, encode_file};

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
    /// The int8 model as a TensorFlow Lite flatbuffer for TFLite Micro and LiteRT (int8
    /// logits, no softmax), their outputs bit for bit those of the int8 file.
    Tflite,
}

impl ExportFormat {
    /// Its name, as `--format` takes it.
    pub fn name(self) -> &'static str {
        match self {
            ExportFormat::F32 => "f32",
            ExportFormat::Int8 => "int8",
            ExportFormat::Tflite => "tflite",
        }
    }
}

/// Why a network cannot be exported.
#[derive(thiserror::Error, Debug)]
pub enum ExportError {
    /// Layers too large for an int8 file.
    #[error("the model {0} is too large for an int8 file")]
    TooLarge(picodense_core::Shape),
    /// The int8 scheme quantises u8 pixels scaled by 1/255.
    #[error(
        "int8 export takes models of images (inputs divided by 255); this model's inputs are scaled by `{0}`"
    )]
    Inputs(&'static str),
}

/// The bytes of `network` exported as `format`; int8 is calibrated on a seeded sample of
/// `train`.
pub fn export(
    network: &Network,
    format: ExportFormat,
    train: &Dataset,
) -> Result<Vec<u8>, ExportError> {
    match format {
        ExportFormat::F32 => {
            // A flash image needs no metadata, and one hidden layer then stays version 1. The
            // header only says "28 x 28 pixels / 255 of this dataset": a model it does not
            // describe keeps its record, or the file would be read as one of pixels.
            let record = (!network.meta.header_suffices(network.shape))
                .then(|| serde_json::to_vec(&network.meta).expect("metadata serialises"));
            Ok(encode_file(
                &network.layers(),
                &Sections {
                    meta: record.as_deref(),
                    dataset: dataset_byte(network.meta.dataset_kind()),
                    ..Sections::default()
                },
            ))
        }
        ExportFormat::Tflite => {
            let int8 = export(network, ExportFormat::Int8, train)?;
            Ok(crate::tflite::from_int8(&int8).expect("a valid int8 file"))
        }
        ExportFormat::Int8 => {
            let shape = network.shape;
            let len = quant::encoded_len_of(shape).ok_or(ExportError::TooLarge(shape))?;
            if network.meta.scaling != Scaling::Scale255 || !train.is_images() {
                return Err(ExportError::Inputs(network.meta.scaling.name()));
            }
            let layers = network.layers();
            let mut calibration = Calibration::new();
            let widest = shape.widest_hidden();
            let (mut a, mut b) = (vec![0.0; widest], vec![0.0; widest]);
            let mut logits = vec![0.0; shape.classes()];
            for i in calibration_sample(train) {
                let scratch = [&mut a[..], &mut b[..]];
                calibration.observe_into(&layers, train.image(i), scratch, &mut logits);
            }
            let mut bytes = vec![0u8; len];
            let dataset = dataset_byte(network.meta.dataset_kind());
            quant::encode_layers(&layers, &calibration, dataset, &mut bytes)
                .expect("buffer sized by encoded_len_of");
            Ok(bytes)
        }
    }
}

/// `bytes` (an exported model of `shape`) as a C header: the bytes as `const unsigned char
/// picodense_model[]`, 16-byte aligned (the zero-copy views read sections as words), their
/// length, and each layer width as a macro, behind an include guard.
pub fn c_header(bytes: &[u8], shape: picodense_core::Shape, format: ExportFormat) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 6 + 1024);
    let widths = shape.widths();
    let name = format.name();
    let what = match format {
        ExportFormat::Tflite => "a TensorFlow Lite flatbuffer for TFLite Micro",
        ExportFormat::F32 | ExportFormat::Int8 => "a .pdn file for picodense-core's views",
    };
    let _ = write!(
        out,
        "/* picodense model {shape} ({name}), {} bytes: {what}. */\n\
         #ifndef PICODENSE_MODEL_H\n#define PICODENSE_MODEL_H\n\n\
         #define PICODENSE_MODEL_INPUTS {}\n#define PICODENSE_MODEL_CLASSES {}\n\
         #define PICODENSE_MODEL_HIDDEN_LAYERS {}\n",
        bytes.len(),
        shape.inputs(),
        shape.classes(),
        widths.len() - 2
    );
    for (l, w) in shape.hidden().iter().enumerate() {
        let _ = writeln!(out, "#define PICODENSE_MODEL_HIDDEN_{} {w}", l + 1);
    }
    let _ = write!(
        out,
        "\n#define PICODENSE_MODEL_LEN {}u\n\n\
         static const unsigned int picodense_model_len = {}u;\n\
         static const unsigned char picodense_model[{}] __attribute__((aligned(16))) = {{\n",
        bytes.len(),
        bytes.len(),
        bytes.len()
    );
    for line in bytes.chunks(16) {
        out.push_str("   ");
        for b in line {
            let _ = write!(out, " 0x{b:02x},");
        }
        out.push('\n');
    }
    out.push_str("};\n\n#endif /* PICODENSE_MODEL_H */\n");
    out
}

/// Up to [`CALIBRATION_IMAGES`] training images' indices, drawn without replacement by a
/// fixed seed.
fn calibration_sample(train: &Dataset) -> Vec<usize> {
    use rand_core::Rng;
    let mut rng = epoch_rng(0xCA11_B8A7, 0);
    let mut indices: Vec<usize> = (0..train.len()).collect();
    let take = CALIBRATION_IMAGES.min(train.len());
    for i in 0..take {
        let j = i + (rng.next_u64() % (train.len() - i) as u64) as usize;
        indices.swap(i, j);
    }
    indices.truncate(take);
    indices
}

/// Loss and accuracy of an int8 model file on `data`, as the firmware computes it (integer
/// inference, logits dequantised only for the loss); images split between `threads`.
pub fn evaluate_int8(
    bytes: &[u8],
    data: &Dataset,
    threads: usize,
) -> Result<StepStats, FormatError> {
    let view = Int8View::parse(bytes)?;
    let shape = view.shape();
    let outputs = shape.classes();
    if shape.inputs() != data.width || !data.is_images() {
        return Err(FormatError::ShapeMismatch {
            file: shape,
            expected: picodense_core::Shape::new(data.width, shape.hidden(), outputs)
                .unwrap_or(shape),
        });
    }
    let threads = Threads::new(threads);
    let mut parts = vec![StepStats::default(); threads.count()];
    let chunk = data.len().div_ceil(parts.len()).max(1);
    threads.run(&mut parts, &|part, stats: &mut StepStats| {
        let mut scratch = vec![0u32; view.scratch_words()];
        let mut logits = vec![0i32; outputs];
        for i in part * chunk..((part + 1) * chunk).min(data.len()) {
            let class = view.predict(data.image(i), &mut scratch, &mut logits);
            let real: Vec<f32> = logits
                .iter()
                .map(|&z| (z - view.logit_zero_point()) as f32 * view.logit_scale())
                .collect();
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
