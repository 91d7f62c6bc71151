//! The int8 model as a TensorFlow Lite flatbuffer (`.tflite`) that TensorFlow Lite Micro and
//! LiteRT run unchanged, computing the same int8 logits as [`Int8View::predict`].
//!
//! The graph is one FULLY_CONNECTED operator per layer (int8 in, int8 out, int32 bias; fused
//! ReLU on the hidden layers) and ends in the int8 logits, not a SOFTMAX: TFLite's int8 softmax
//! has its own table-driven arithmetic that picodense does not reproduce, and the class is the
//! arg-max of the logits either way. Every number the interpreters use is taken from the int8
//! `.pdn` file: the weights (per-channel scales, zero points 0, quantised dimension 0), the
//! biases, and the activation scales and zero points. The interpreters derive each unit's
//! requantisation multiplier from those f32 scales exactly as the export did
//! (`input scale * weight scale / output scale` in f64, then `QuantizeMultiplier`), and round
//! as [`picodense_core::quant::requantize`] does, so the outputs agree bit for bit.
//!
//! The few tables of TFLite's `schema.fbs` needed here are written with the `flatbuffers`
//! builder directly; the field numbers below are that schema's.

use flatbuffers::{FlatBufferBuilder, Push, PushAlignment, WIPOffset};
use picodense_core::format::FormatError;
use picodense_core::quant::{self, Int8View, ZERO_POINT};

/// `TensorType` values.
const INT8: i8 = 9;
const INT32: i8 = 2;
/// `BuiltinOperator::FULLY_CONNECTED`.
const FULLY_CONNECTED: i32 = 9;
/// `BuiltinOptions::FullyConnectedOptions`.
const FULLY_CONNECTED_OPTIONS: u8 = 8;
/// `ActivationFunctionType` values.
const NONE: i8 = 0;
const RELU: i8 = 1;
/// The schema version TFLite readers expect.
const SCHEMA_VERSION: u32 = 3;
/// The operator version: int8 FULLY_CONNECTED kernels exist from version 4 (both interpreters
/// register every later version; neither branches on it).
const FULLY_CONNECTED_VERSION: i32 = 4;

/// The vtable offset of field `id` of a table.
const fn field(id: u16) -> u16 {
    4 + 2 * id
}

/// A byte of a buffer's data: pushed as a `u8`, but the vector it starts is 16-byte aligned,
/// so that the interpreters may read int32 biases and weight words in place.
#[derive(Clone, Copy)]
struct AlignedByte(u8);

impl Push for AlignedByte {
    type Output = u8;

    unsafe fn push(&self, dst: &mut [u8], _written_len: usize) {
        dst[0] = self.0;
    }

    fn size() -> usize {
        1
    }

    fn alignment() -> PushAlignment {
        PushAlignment::new(16)
    }
}

/// One tensor of the graph before it is written.
struct TensorSpec {
    name: String,
    shape: Vec<i32>,
    dtype: i8,
    /// Index into the model's buffers (0: the empty buffer of activations).
    buffer: u32,
    scales: Vec<f32>,
    zero_points: Vec<i64>,
}

/// Builds the model table by table.
struct Writer<'a> {
    fbb: FlatBufferBuilder<'a>,
    tensors: Vec<TensorSpec>,
    /// Constant data of buffers 1.. (buffer 0 is the empty one the schema reserves).
    buffers: Vec<Vec<u8>>,
}

impl Writer<'_> {
    fn tensor(&mut self, spec: TensorSpec) -> i32 {
        self.tensors.push(spec);
        (self.tensors.len() - 1) as i32
    }

    fn buffer(&mut self, data: Vec<u8>) -> u32 {
        self.buffers.push(data);
        self.buffers.len() as u32
    }

    /// `QuantizationParameters { scale, zero_point, quantized_dimension: 0 }`.
    fn quantization(&mut self, scales: &[f32], zero_points: &[i64]) -> WIPOffset<()> {
        let scale = self.fbb.create_vector(scales);
        let zero_point = self.fbb.create_vector(zero_points);
        let t = self.fbb.start_table();
        self.fbb.push_slot_always(field(2), scale);
        self.fbb.push_slot_always(field(3), zero_point);
        WIPOffset::new(self.fbb.end_table(t).value())
    }

    fn write_tensor(&mut self, spec: &TensorSpec) -> WIPOffset<()> {
        let shape = self.fbb.create_vector(&spec.shape);
        let name = self.fbb.create_string(&spec.name);
        let quantization = self.quantization(&spec.scales, &spec.zero_points);
        let t = self.fbb.start_table();
        self.fbb.push_slot_always(field(0), shape);
        self.fbb.push_slot_always(field(1), spec.dtype);
        self.fbb.push_slot_always(field(2), spec.buffer);
        self.fbb.push_slot_always(field(3), name);
        self.fbb.push_slot_always(field(4), quantization);
        WIPOffset::new(self.fbb.end_table(t).value())
    }

    /// `Operator` running FULLY_CONNECTED (opcode 0) on `inputs` into `output`.
    fn fully_connected(&mut self, inputs: [i32; 3], output: i32, relu: bool) -> WIPOffset<()> {
        let t = self.fbb.start_table();
        // FullyConnectedOptions: fused activation; weights format DEFAULT, keep_num_dims false.
        self.fbb
            .push_slot_always(field(0), if relu { RELU } else { NONE });
        let options = self.fbb.end_table(t);
        let inputs = self.fbb.create_vector(&inputs);
        let outputs = self.fbb.create_vector(&[output]);
        let t = self.fbb.start_table();
        self.fbb.push_slot_always(field(0), 0u32);
        self.fbb.push_slot_always(field(1), inputs);
        self.fbb.push_slot_always(field(2), outputs);
        self.fbb.push_slot_always(field(3), FULLY_CONNECTED_OPTIONS);
        self.fbb.push_slot_always(field(4), options);
        WIPOffset::new(self.fbb.end_table(t).value())
    }
}

/// The `.tflite` flatbuffer of an int8 model file (`bytes`, checked as [`Int8View::parse`]
/// does).
pub fn from_int8(bytes: &[u8]) -> Result<Vec<u8>, FormatError> {
    let view = Int8View::parse(bytes)?;
    let shape = view.shape();
    let layers = shape.layers();
    let mut w = Writer {
        fbb: FlatBufferBuilder::with_capacity(bytes.len() + 64 * 1024),
        tensors: Vec::new(),
        buffers: Vec::new(),
    };

    // The input: pixels minus 128 (scale 1/255, zero point -128), so the int8 value the
    // interpreter takes is the u8 pixel picodense takes, shifted.
    let mut x = w.tensor(TensorSpec {
        name: "input".into(),
        shape: vec![1, shape.inputs() as i32],
        dtype: INT8,
        buffer: 0,
        scales: vec![quant::INPUT_SCALE],
        zero_points: vec![i64::from(ZERO_POINT)],
    });
    let mut in_scale = quant::INPUT_SCALE;
    let mut operators = Vec::with_capacity(layers);
    for l in 0..layers {
        let (fan_in, fan_out) = shape.layer(l);
        let last = l + 1 == layers;
        let mut weights = Vec::with_capacity(fan_in * fan_out);
        for o in 0..fan_out {
            weights.extend(view.weights(l, o).take(fan_in).map(|q| q as u8));
        }
        let weight_scales: Vec<f32> = (0..fan_out).map(|o| view.weight_scale(l, o)).collect();
        let bias: Vec<u8> = (0..fan_out)
            .flat_map(|o| view.bias(l, o).to_le_bytes())
            .collect();
        // The bias is at the accumulator's scale; the kernels check it against this product.
        let bias_scales: Vec<f32> = weight_scales
            .iter()
            .map(|&s| (f64::from(in_scale) * f64::from(s)) as f32)
            .collect();
        let (out_scale, out_zero_point) = if last {
            (view.logit_scale(), view.logit_zero_point())
        } else {
            (view.activation_scale(l), ZERO_POINT)
        };
        let weight_buffer = w.buffer(weights);
        let wt = w.tensor(TensorSpec {
            name: format!("dense_{l}/weights"),
            shape: vec![fan_out as i32, fan_in as i32],
            dtype: INT8,
            buffer: weight_buffer,
            scales: weight_scales,
            zero_points: vec![0; fan_out],
        });
        let bias_buffer = w.buffer(bias);
        let bt = w.tensor(TensorSpec {
            name: format!("dense_{l}/bias"),
            shape: vec![fan_out as i32],
            dtype: INT32,
            buffer: bias_buffer,
            scales: bias_scales,
            zero_points: vec![0; fan_out],
        });
        let y = w.tensor(TensorSpec {
            name: if last {
                "logits".into()
            } else {
                format!("dense_{l}/relu")
            },
            shape: vec![1, fan_out as i32],
            dtype: INT8,
            buffer: 0,
            scales: vec![out_scale],
            zero_points: vec![i64::from(out_zero_point)],
        });
        operators.push(([x, wt, bt], y, !last));
        x = y;
        in_scale = out_scale;
    }

    // Flatbuffers are built back to front: the leaves (buffers, tensors, operators) first.
    let buffers = std::mem::take(&mut w.buffers);
    let mut buffer_tables = Vec::with_capacity(buffers.len() + 1);
    let t = w.fbb.start_table();
    buffer_tables.push(w.fbb.end_table(t));
    for data in &buffers {
        let data: Vec<AlignedByte> = data.iter().map(|&b| AlignedByte(b)).collect();
        let data = w.fbb.create_vector(&data);
        let t = w.fbb.start_table();
        w.fbb.push_slot_always(field(0), data);
        buffer_tables.push(w.fbb.end_table(t));
    }
    let tensors = std::mem::take(&mut w.tensors);
    let tensor_tables: Vec<_> = tensors.iter().map(|t| w.write_tensor(t)).collect();
    let operator_tables: Vec<_> = operators
        .iter()
        .map(|&(inputs, output, relu)| w.fully_connected(inputs, output, relu))
        .collect();

    let fbb = &mut w.fbb;
    let tensors = fbb.create_vector(&tensor_tables);
    let inputs = fbb.create_vector(&[0i32]);
    let outputs = fbb.create_vector(&[x]);
    let operators = fbb.create_vector(&operator_tables);
    let name = fbb.create_string("main");
    let t = fbb.start_table();
    fbb.push_slot_always(field(0), tensors);
    fbb.push_slot_always(field(1), inputs);
    fbb.push_slot_always(field(2), outputs);
    fbb.push_slot_always(field(3), operators);
    fbb.push_slot_always(field(4), name);
    let subgraph = fbb.end_table(t);

    let t = fbb.start_table();
    // The byte code for operators below 127, the int32 code for every operator.
    fbb.push_slot_always(field(0), FULLY_CONNECTED as i8);
    fbb.push_slot_always(field(2), FULLY_CONNECTED_VERSION);
    fbb.push_slot_always(field(3), FULLY_CONNECTED);
    let opcode = fbb.end_table(t);

    let opcodes = fbb.create_vector(&[opcode]);
    let subgraphs = fbb.create_vector(&[subgraph]);
    let description = fbb.create_string(&format!("picodense int8 {shape}"));
    let buffers = fbb.create_vector(&buffer_tables);
    let t = fbb.start_table();
    fbb.push_slot_always(field(0), SCHEMA_VERSION);
    fbb.push_slot_always(field(1), opcodes);
    fbb.push_slot_always(field(2), subgraphs);
    fbb.push_slot_always(field(3), description);
    fbb.push_slot_always(field(4), buffers);
    let model = fbb.end_table(t);
    fbb.finish(model, Some("TFL3"));
    Ok(fbb.finished_data().to_vec())
}
