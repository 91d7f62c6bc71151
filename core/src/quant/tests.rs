//! Tests of quantisation and of both inference paths against plain references.

use super::encode::*;
use super::f32::*;
use super::int8::*;
use super::scheme::*;
use byteorder::{ByteOrder, LittleEndian};

use crate::format;
use crate::format::{Dtype, FormatError, HEADER_LEN, ModelView, seal};
use crate::gemm::{Kernel, Scratch, Serial};
use crate::layers::{Layers, Mlp};
use crate::loss::argmax;
use crate::optim::RmsProp;
use crate::shape::Shape;
use crate::{Compute, Workspace};
use crate::{zeroed_box, zeroed_slice};
use rand_core::{Rng, SeedableRng};
use rand_xorshift::XorShiftRng;
use std::boxed::Box;
use std::vec;
use std::vec::Vec;

const I: usize = 50;
const H: usize = 30;
const O: usize = 6;
type Net = Mlp<I, H, O>;

/// Images of class `c` are brighter on the `c`-th band of inputs, noise elsewhere.
fn synthetic(seed: u64, rows: usize) -> (Vec<[u8; I]>, Vec<u8>) {
    let mut rng = XorShiftRng::seed_from_u64(seed);
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for _ in 0..rows {
        let label = (rng.next_u32() % O as u32) as usize;
        // Heavy noise, so that some images are ambiguous and the two paths can disagree.
        let image = core::array::from_fn(|i| {
            let noise = (rng.next_u32() % 200) as u8;
            if i * O / I == label {
                55 + noise
            } else if rng.next_u32() % 2 == 0 {
                noise
            } else {
                0
            }
        });
        images.push(image);
        labels.push(label as u8);
    }
    (images, labels)
}

fn as_f32(images: &[[u8; I]]) -> Vec<[f32; I]> {
    images.iter().map(|im| im.map(unit_pixel)).collect()
}

fn trained() -> Box<Net> {
    let mut model = zeroed_box::<Net>();
    model.init_glorot(&mut XorShiftRng::seed_from_u64(3));
    let mut opt = RmsProp::<I, H, O>::new(3e-3);
    let mut ws: Box<Workspace<32, I, H, O>> = zeroed_box();
    let mut scratch = zeroed_slice::<Scratch>(1);
    let mut compute = Compute::new(Kernel::PORTABLE, &Serial, &mut scratch);
    let (images, labels) = synthetic(1, 320);
    let images = as_f32(&images);
    let mut learner = model.learner(&mut opt, None, &mut ws);
    for _ in 0..5 {
        for (x, y) in images.chunks(32).zip(labels.chunks(32)) {
            let batch = crate::Batch::new(x.as_flattened(), y);
            learner.train_step(batch, &mut compute);
        }
    }
    drop(learner);
    model
}

/// Images to calibrate on: `rows` of the second synthetic set.
fn calibration_images(rows: usize) -> Vec<[u8; I]> {
    synthetic(2, rows).0
}

/// `model` quantised with a calibration on `rows` images.
fn int8_file(model: &Net, rows: usize) -> Vec<u8> {
    let cal = Calibration::from_images(model, &calibration_images(rows));
    let mut buf = vec![0u8; encoded_len::<I, H, O>()];
    assert_eq!(encode(model, &cal, 1, &mut buf), Ok(buf.len()));
    buf
}

fn f32_file(model: &Net) -> Vec<u8> {
    let sections = format::Sections {
        dataset: 1,
        ..Default::default()
    };
    let mut buf = vec![0u8; format::encoded_len(Net::shape(), &sections)];
    format::encode(&model.layers(), &sections, &mut buf).unwrap();
    buf
}

#[test]
fn encoded_len_matches_layout() {
    let (_, payload) = int8_layout(Net::shape()).unwrap();
    assert_eq!(encoded_len::<I, H, O>(), HEADER_LEN + payload + 4);
    let (_, payload) = int8_layout(Mlp::<784, 512, 10>::shape()).unwrap();
    assert_eq!(encoded_len::<784, 512, 10>(), HEADER_LEN + payload + 4);
    // 401 KB of weights plus per-unit parameters: fits a 512 KB flash budget.
    assert!(encoded_len::<784, 512, 10>() < 415_000);
}

#[test]
fn round_trip_encode_parse() {
    let model = trained();
    let bytes = int8_file(&model, 64);
    let view = Int8View::parse(&bytes).unwrap();
    assert_eq!(view.shape(), Net::shape());
    assert_eq!(view.header().dtype, Dtype::Int8);
    assert_eq!(view.header().dataset, 1);
    let cal = Calibration::from_images(&*model, &calibration_images(64));
    assert_eq!(view.hidden_scale(), cal.hidden_scale());
    assert_eq!(view.logit_scale(), cal.logit_scale());
    // Dequantised weights are within half a step of the originals; padding is zero.
    for o in 0..H {
        let s = view.weight_scale(0, o);
        let q: Vec<i8> = view.weights(0, o).collect();
        assert_eq!(q.len(), I.next_multiple_of(8));
        assert!(q[I..].iter().all(|&v| v == 0));
        assert!(
            q.iter().any(|&v| v.unsigned_abs() == 127),
            "scale from the max"
        );
        for (i, &qv) in q[..I].iter().enumerate() {
            let w = model.hidden.weights[i][o];
            assert!((f32::from(qv) * s - w).abs() <= 0.5 * s + 1e-7);
        }
    }
    for o in 0..O {
        let s = view.weight_scale(1, o);
        for (j, qv) in view.weights(1, o).take(H).enumerate() {
            assert!((f32::from(qv) * s - model.output.weights[j][o]).abs() <= 0.5 * s + 1e-7);
        }
    }
    // The buffer check, and an f32 file is not int8.
    let mut small = vec![0u8; bytes.len() - 1];
    assert!(matches!(
        encode(&*model, &cal, 0, &mut small),
        Err(FormatError::BufferTooSmall { .. })
    ));
    assert_eq!(
        Int8View::parse(&f32_file(&model)).unwrap_err(),
        FormatError::WrongDtype(Dtype::F32)
    );
    assert_eq!(
        F32View::parse(&bytes).unwrap_err(),
        FormatError::WrongDtype(Dtype::Int8)
    );
}

#[test]
fn corrupted_int8_file_is_refused() {
    let model = trained();
    let bytes = int8_file(&model, 16);
    for byte in (0..bytes.len()).step_by(7) {
        let mut bad = bytes.clone();
        bad[byte] ^= 0x10;
        assert!(Int8View::parse(&bad).is_err(), "flip at {byte} accepted");
    }
    assert!(matches!(
        Int8View::parse(&bytes[..bytes.len() - 1]),
        Err(FormatError::Truncated { .. })
    ));
    // A size changed and the CRC recomputed: the int8 length check catches it.
    let parse = |bytes: &[u8]| Int8View::parse(bytes).map(drop);
    format::assert_lying_sizes_refused(&bytes, H as u32 + 1, parse);
}

/// The int8 semantics written out plainly, in i64, through the view's accessors.
fn reference_int8(view: &Int8View, pixels: &[u8]) -> Vec<i32> {
    let shape = view.shape();
    let run = |index: usize, l: &Int8Layer, x: &[i64], rows: usize| -> Vec<i32> {
        (0..rows)
            .map(|o| {
                let dot: i64 = x
                    .iter()
                    .zip(view.weights(index, o))
                    .map(|(&x, w)| x * i64::from(w))
                    .sum();
                l.requantize(o, (dot + i64::from(l.bias(o))) as i32)
            })
            .collect()
    };
    let mut x: Vec<i64> = pixels.iter().map(|&p| i64::from(p)).collect();
    let last = shape.layers() - 1;
    for l in 0..last {
        x = run(l, &view.layers[l], &x, shape.layer(l).1)
            .iter()
            .map(|&v| i64::from(v.clamp(0, 255)))
            .collect();
    }
    run(last, &view.layers[last], &x, shape.classes())
        .iter()
        .map(|&v| (i64::from(v) + i64::from(view.logit_zero_point())).clamp(-128, 127) as i32)
        .collect()
}

/// A deep network's int8 file: every layer quantised, the version 2 header, predictions
/// equal to the plain reference, classes mostly those of f32.
#[test]
fn deep_networks_quantise_every_layer() {
    let shape = Shape::new(I, &[24, 16, 12], O).unwrap();
    let mut flat = vec![0.0f32; shape.parameters()];
    Layers::split_mut(shape, &mut flat)
        .unwrap()
        .init_glorot(&mut XorShiftRng::seed_from_u64(8));
    let net = Layers::split(shape, &flat).unwrap();
    let (images, _) = synthetic(4, 200);
    let mut cal = Calibration::new();
    let (mut a, mut b, mut z) = ([0.0; 24], [0.0; 24], [0.0; O]);
    for image in &images[..100] {
        cal.observe_into(&net, image, [&mut a, &mut b], &mut z);
    }
    assert!(cal.hidden_max[..3].iter().all(|&m| m > 0.0), "{cal:?}");
    let mut bytes = vec![0u8; encoded_len_of(shape).unwrap()];
    assert_eq!(encode_layers(&net, &cal, 0, &mut bytes), Ok(bytes.len()));
    let view = Int8View::parse(&bytes).unwrap();
    assert_eq!((view.header().version, view.shape()), (2, shape));
    let mut scratch = vec![0u32; view.scratch_words()];
    let mut agree = 0;
    for image in &images[100..] {
        let mut logits = [0i32; O];
        let class = view.predict(image, &mut scratch, &mut logits);
        assert_eq!(logits.to_vec(), reference_int8(&view, image));
        let mut f = [0.0f32; O];
        let (mut a, mut b) = ([0.0; 24], [0.0; 24]);
        Calibration::new().observe_into(&net, image, [&mut a, &mut b], &mut f);
        agree += usize::from(class == argmax(&f));
    }
    assert!(agree >= 90, "int8 agrees with f32 on {agree}/100");
}

/// `bytes` copied to an address that is not 4-byte aligned.
fn misaligned(bytes: &[u8]) -> (Vec<u8>, usize) {
    let mut buf = vec![0u8; bytes.len() + 4];
    let off = if (buf.as_ptr() as usize + 1).is_multiple_of(4) {
        2
    } else {
        1
    };
    buf[off..off + bytes.len()].copy_from_slice(bytes);
    (buf, off)
}

#[test]
fn int8_matches_plain_reference_and_mostly_agrees_with_f32() {
    let model = trained();
    let bytes = int8_file(&model, 100);
    let view = Int8View::parse(&bytes).unwrap();
    assert!(matches!(view.layers[0].words, WeightWords::Aligned(_)));
    let (shifted, off) = misaligned(&bytes);
    let unaligned_view = Int8View::parse(&shifted[off..off + bytes.len()]).unwrap();
    assert!(matches!(
        unaligned_view.layers[0].words,
        WeightWords::Bytes(_)
    ));
    let f32_bytes = f32_file(&model);
    let f32_view = F32View::parse(&f32_bytes).unwrap();
    let dequantise = |q: i32| (q - view.logit_zero_point()) as f32 * view.logit_scale();
    let (images, labels) = synthetic(9, 400);
    let mut scratch = vec![0u32; view.scratch_words()];
    let (mut agree, mut correct8, mut correct32) = (0, 0, 0);
    for (image, &label) in images.iter().zip(&labels) {
        let mut logits = [0i32; O];
        let class = view.predict(image, &mut scratch, &mut logits);
        assert_eq!(logits.to_vec(), reference_int8(&view, image));
        assert_eq!(class, argmax(&logits));
        let mut unaligned_logits = [0i32; O];
        let unaligned_class = unaligned_view.predict(image, &mut scratch, &mut unaligned_logits);
        assert_eq!((unaligned_class, unaligned_logits), (class, logits));
        let (mut hidden, mut z) = ([0.0; H], [0.0; O]);
        let class32 = f32_view.predict(&image.map(unit_pixel), &mut hidden, &mut z);
        // Dequantised logits track the f32 ones.
        for (&q, &f) in logits.iter().zip(&z) {
            // int8 logits saturate beyond the calibrated range.
            let real = dequantise(q);
            let f = f.clamp(dequantise(-128), dequantise(127));
            assert!((real - f).abs() < 0.1 + 0.05 * f.abs(), "{real} vs {f}");
        }
        agree += usize::from(class == class32);
        correct8 += usize::from(class == label as usize);
        correct32 += usize::from(class32 == label as usize);
    }
    assert!(agree >= 390, "int8 and f32 agree on {agree}/400");
    assert!(
        correct32 >= 360,
        "f32 model learnt the task: {correct32}/400"
    );
    assert!(correct8 + 4 >= correct32, "{correct8} vs {correct32}");
}

#[test]
fn odd_sizes_pad_rows_and_tails() {
    // Inputs, hidden and outputs not multiples of 4: padding and the single-row tail.
    let mut model = Mlp::<13, 7, 3>::zeroed();
    model.init_glorot(&mut XorShiftRng::seed_from_u64(5));
    model.hidden.bias = [0.1, -0.2, 0.3, 0.0, 0.05, -0.1, 0.2];
    let mut rng = XorShiftRng::seed_from_u64(6);
    let images: Vec<[u8; 13]> = (0..40)
        .map(|_| core::array::from_fn(|_| rng.next_u32() as u8))
        .collect();
    let cal = Calibration::from_images(&model, &images);
    let mut bytes = vec![0u8; encoded_len::<13, 7, 3>()];
    encode(&model, &cal, 0, &mut bytes).unwrap();
    let view = Int8View::parse(&bytes).unwrap();
    assert_eq!(view.scratch_words(), scratch_words(13, 7));
    let single = view.clone().with_rounding(Rounding::Single);
    let dequantise = |q: i32| (q - view.logit_zero_point()) as f32 * view.logit_scale();
    let sections = format::Sections::default();
    let mut f32_bytes = vec![0u8; format::encoded_len(Mlp::<13, 7, 3>::shape(), &sections)];
    format::encode(&model.layers(), &sections, &mut f32_bytes).unwrap();
    let f32_view = F32View::parse(&f32_bytes).unwrap();
    let mut agree = 0;
    for image in &images {
        let mut scratch = vec![0u32; view.scratch_words()];
        let mut logits = [0i32; 3];
        let class = view.predict(image, &mut scratch, &mut logits);
        assert_eq!(logits.to_vec(), reference_int8(&view, image));
        let mut single_logits = [0i32; 3];
        single.predict(image, &mut scratch, &mut single_logits);
        assert_eq!(single_logits.to_vec(), reference_int8(&single, image));
        let (mut h, mut z) = ([0.0; 7], [0.0; 3]);
        let expected = f32_view.predict(&image.map(unit_pixel), &mut h, &mut z);
        agree += usize::from(class == expected);
        for (&q, &f) in logits.iter().zip(&z) {
            // int8 logits saturate beyond the calibrated range.
            let real = dequantise(q);
            let f = f.clamp(dequantise(-128), dequantise(127));
            assert!((real - f).abs() < 0.05 + 0.05 * f.abs(), "{real} vs {f}");
        }
    }
    assert!(agree >= 36, "{agree}/40");
}

#[test]
fn files_declaring_empty_layers_are_refused() {
    let model = Mlp::<5, 4, 3>::zeroed();
    let cal = Calibration::from_images(&model, &[[7u8; 5]]);
    let mut good = vec![0u8; encoded_len::<5, 4, 3>()];
    encode(&model, &cal, 0, &mut good).unwrap();
    // Sizes a crafted (but checksummed) file may declare.
    for sizes in [[0u32, 4, 2], [5, 0, 3], [5, 4, 0], [0, 0, 0]] {
        let mut bytes = good.clone();
        for (i, s) in sizes.iter().enumerate() {
            LittleEndian::write_u32(&mut bytes[8 + 4 * i..12 + 4 * i], *s);
        }
        seal(&mut bytes);
        assert!(
            matches!(Int8View::parse(&bytes), Err(FormatError::BadShape(_))),
            "{sizes:?}"
        );
    }
}

/// TFLite's `MultiplyByQuantizedMultiplier` written out in i128: `x = acc * 2^left`
/// (wrapping to i32 as C does), `h = floor((x * q + 2^30) / 2^31)`, then `h / 2^right` with
/// halves away from zero.
fn tflite_reference(acc: i32, q: i32, shift: i32) -> i32 {
    let (left, right) = (shift.max(0), (-shift).max(0));
    let x = i128::from(acc.wrapping_shl(left as u32));
    let h = (x * i128::from(q) + (1 << 30)).div_euclid(1 << 31);
    let h = h.clamp(i128::from(i32::MIN), i128::from(i32::MAX));
    let d = 1i128 << right;
    let (quot, rem) = (h.div_euclid(d), h.rem_euclid(d));
    // floor quotient, then round: above half up; exactly half away from zero.
    let r = match (2 * rem).cmp(&d) {
        core::cmp::Ordering::Greater => quot + 1,
        core::cmp::Ordering::Equal if h >= 0 => quot + 1,
        _ => quot,
    };
    r as i32
}

#[test]
fn requantize_matches_wide_reference() {
    let mut rng = XorShiftRng::seed_from_u64(11);
    for _ in 0..20_000 {
        // Multipliers over 2^-31 .. 2^8 (both paths of `requantize`), accumulators over the
        // whole i32 range.
        let e = (rng.next_u32() % 39) as i32 - 31;
        let m = libm::ldexp(1.0 + f64::from(rng.next_u32()) / 4294967296.0, e);
        let (q, shift) = quantize_multiplier(m);
        let represented = f64::from(q) * libm::ldexp(1.0, shift - 31);
        assert!(
            (represented - m).abs() <= m * libm::ldexp(1.0, -31),
            "{m} -> {q} {shift}"
        );
        assert!((1 << 30..=i32::MAX).contains(&q));
        let acc = match rng.next_u32() % 3 {
            0 => rng.next_u32() as i32,
            1 => (rng.next_u32() % 2_000_001) as i32 - 1_000_000,
            _ => (rng.next_u32() % 201) as i32 - 100,
        };
        let got = requantize(acc, q, shift);
        assert_eq!(
            got,
            tflite_reference(acc, q, shift),
            "acc {acc} q {q} shift {shift}"
        );
        // One rounding: floor(acc * q / 2^n + 1/2) in i128.
        let n = 31 - shift;
        let exact = (i128::from(acc) * i128::from(q) + (1i128 << (n - 1))) >> n;
        let exact = exact.clamp(i128::from(i32::MIN), i128::from(i32::MAX)) as i32;
        assert_eq!(requantize_single(acc, q, shift), exact);
        assert_eq!(Rounding::Single.apply(acc, q, shift), exact);
        if acc.checked_mul(1 << shift.max(0)).is_some() {
            assert!((i64::from(got) - i64::from(exact)).abs() <= 1);
        }
        // Within one step of the real product computed in f64 (two roundings), where the
        // left shift does not wrap.
        let real = f64::from(acc) * represented;
        if acc.checked_mul(1 << shift.max(0)).is_some() && real.abs() < 2e9 {
            assert!((f64::from(got) - real).abs() <= 1.0 + real.abs() * 1e-15);
        }
    }
    // Halves: up in the high multiply, away from zero in the shift.
    assert_eq!(requantize(3, 1 << 30, 0), 2); // 1.5
    assert_eq!(requantize(-3, 1 << 30, 0), -1); // -1.5
    assert_eq!(requantize(-2, 1 << 30, -1), -1); // -0.5
    // Two roundings: 3 * 0.125 = 0.375 goes to 1.5 -> 2, then 0.5 -> 1 (not 0).
    assert_eq!(requantize(3, 1 << 30, -2), 1);
    for (acc, q, shift) in [
        (i32::MAX, i32::MAX, 30),
        (i32::MIN, i32::MAX, 30),
        (i32::MIN, i32::MIN, 0),
        (i32::MIN, 1 << 30, -31),
        (i32::MAX, i32::MAX, -31),
    ] {
        assert_eq!(requantize(acc, q, shift), tflite_reference(acc, q, shift));
    }
    assert_eq!(requantize(i32::MIN, i32::MIN, 0), i32::MAX); // the one saturating product
    // Out-of-range shifts from a crafted file are clamped, not a panic.
    assert_eq!(requantize(5, 1 << 30, i32::MIN), 0);
    let _ = requantize(5, 1 << 30, i32::MAX);
    assert_eq!(quantize_multiplier(0.0), (0, 0));
    assert_eq!(quantize_multiplier(f64::NAN), (0, 0));
    assert_eq!(quantize_multiplier(1e-12), (0, 0));
    assert_eq!(quantize_multiplier(1e12), (i32::MAX, 30));
    assert_eq!(quantize_multiplier(1.0), (1 << 30, 1));
}

/// The forward pass with a separate multiply and add per step, each sum from 0.0 in input
/// order, then the bias and ReLU: F32View's arithmetic (and the firmware's). The kernels fuse
/// their multiply-adds, so theirs may differ in the last bits.
fn unfused_forward(model: &Net, x: &[f32]) -> [f32; O] {
    let [w1, b1, w2, b2] = model.tensors();
    let layer = |input: &[f32], w: &[f32], bias: &[f32], out: &mut [f32], relu: bool| {
        let n = out.len();
        for (j, out) in out.iter_mut().enumerate() {
            let mut sum = 0.0f32;
            for (i, &x) in input.iter().enumerate() {
                sum += x * w[i * n + j];
            }
            let z = sum + bias[j];
            *out = if relu { crate::gemm::relu(z) } else { z };
        }
    };
    let (mut h, mut z) = ([0.0; H], [0.0; O]);
    layer(x, w1, b1, &mut h, true);
    layer(&h, w2, b2, &mut z, false);
    z
}

#[test]
fn f32_view_is_bit_exact_with_unfused_forward_aligned_or_not() {
    let model = trained();
    let bytes = f32_file(&model);
    // The same file at an odd address takes the unaligned path.
    let view = F32View::parse(&bytes).unwrap();
    assert!(view.is_aligned());
    let (shifted, off) = misaligned(&bytes);
    let unaligned = F32View::parse(&shifted[off..off + bytes.len()]).unwrap();
    assert!(!unaligned.is_aligned());
    let (images, _) = synthetic(4, 64);
    let images = as_f32(&images);
    let mut ws: Box<Workspace<64, I, H, O>> = zeroed_box();
    let mut scratch = zeroed_slice::<Scratch>(1);
    let mut compute = Compute::new(Kernel::NAIVE, &Serial, &mut scratch);
    let fused = model.forward(&images, &mut ws, &mut compute);
    for (x, fused) in images.iter().zip(fused) {
        let expected = unfused_forward(&model, x);
        for (z, f) in expected.iter().zip(fused) {
            assert!((z - f).abs() <= 1e-5 * (1.0 + f.abs()), "{z} vs fused {f}");
        }
        for v in [&view, &unaligned] {
            let (mut h, mut z) = ([0.0; H], [0.0; O]);
            let class = v.predict(x, &mut h, &mut z);
            assert_eq!(z.map(f32::to_bits), expected.map(f32::to_bits));
            assert_eq!(class, argmax(&expected));
        }
    }
    let model_view = ModelView::parse(&bytes).unwrap();
    let (mut h, mut z) = ([0.0; H], [0.0; O]);
    assert!(predict_f32(&model_view, &images[0], &mut h, &mut z).is_ok());
}
