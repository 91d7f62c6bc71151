//! The C API called from Rust on the host: the same bits as the core's views, and a status
//! (never a panic) for every bad image, pointer and buffer.

use super::*;
use picodense_core::format::{self, Sections};
use picodense_core::quant::{self, Calibration};
use picodense_core::{Layers, Shape};
use rand_core::{Rng, SeedableRng};
use rand_xorshift::XorShiftRng;

/// A small network with fixed pseudo-random weights.
fn flat(shape: Shape) -> Vec<f32> {
    let n: usize = shape.widths().windows(2).map(|w| w[0] * w[1] + w[1]).sum();
    let mut rng = XorShiftRng::seed_from_u64(0x2545_f491);
    (0..n)
        .map(|_| (rng.next_u32() % 2001) as f32 / 1000.0 - 1.0)
        .collect()
}

/// [`picodense_int8_predict`] on slices; `None` passes a NULL class output.
fn int8_predict(
    view: &PicodenseView,
    pixels: &[u8],
    scratch: &mut [u32],
    logits: &mut [i32],
    class: Option<&mut u32>,
) -> i32 {
    let class = class.map_or(core::ptr::null_mut(), core::ptr::from_mut);
    // SAFETY: each pointer is valid for its slice's length (or NULL, which is refused), and
    // the buffers are disjoint.
    unsafe {
        picodense_int8_predict(
            view,
            pixels.as_ptr(),
            pixels.len(),
            scratch.as_mut_ptr(),
            scratch.len(),
            logits.as_mut_ptr(),
            logits.len(),
            class,
        )
    }
}

/// [`picodense_f32_predict`] on slices.
fn f32_predict(
    view: &PicodenseView,
    input: &[f32],
    hidden: &mut [f32],
    logits: &mut [f32],
    class: &mut u32,
) -> i32 {
    // SAFETY: each pointer is valid for its slice's length, and the buffers are disjoint.
    unsafe {
        picodense_f32_predict(
            view,
            input.as_ptr(),
            input.len(),
            hidden.as_mut_ptr(),
            hidden.len(),
            logits.as_mut_ptr(),
            logits.len(),
            class,
        )
    }
}

fn images(n: usize, inputs: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|k| {
            (0..inputs)
                .map(|i| ((i * 37 + k * 101) % 256) as u8)
                .collect()
        })
        .collect()
}

/// Model images leaked to `'static`, as firmware flash would be.
fn int8_model(shape: Shape) -> &'static [u8] {
    let weights = flat(shape);
    let net = Layers::split(shape, &weights).unwrap();
    let mut calibration = Calibration::new();
    let widest = shape.widest_hidden();
    let (mut a, mut b, mut z) = (
        vec![0.0; widest],
        vec![0.0; widest],
        vec![0.0; shape.classes()],
    );
    for image in images(20, shape.inputs()) {
        calibration.observe_into(&net, &image, [&mut a, &mut b], &mut z);
    }
    let mut bytes = vec![0u8; quant::encoded_len_of(shape).unwrap()];
    quant::encode_layers(&net, &calibration, 2, &mut bytes).unwrap();
    Vec::leak(bytes)
}

fn f32_model(shape: Shape) -> &'static [u8] {
    let weights = flat(shape);
    let net = Layers::split(shape, &weights).unwrap();
    let sections = Sections::default();
    let mut bytes = vec![0u8; format::encoded_len(shape, &sections)];
    format::encode(&net, &sections, &mut bytes).unwrap();
    words(&bytes)
}

/// `bytes` copied to 4-byte aligned, leaked memory (sections 4-byte aligned, as in flash).
fn words(bytes: &[u8]) -> &'static [u8] {
    let words: &'static [u32] = Vec::leak(
        bytes
            .chunks(4)
            .map(|c| {
                let mut w = [0u8; 4];
                w[..c.len()].copy_from_slice(c);
                u32::from_ne_bytes(w)
            })
            .collect(),
    );
    // SAFETY: the leaked words live for the rest of the process and hold at least
    // `bytes.len()` bytes, in memory order equal to `bytes`.
    unsafe { core::slice::from_raw_parts(words.as_ptr().cast::<u8>(), bytes.len()) }
}

fn closed() -> Box<PicodenseView> {
    Box::new(PicodenseView {
        opaque: [0; PICODENSE_VIEW_WORDS],
    })
}

fn open(model: &'static [u8]) -> (Box<PicodenseView>, PicodenseInfo) {
    let mut view = closed();
    let mut info = PicodenseInfo::default();
    // SAFETY: valid view, model and info; the model is 'static.
    let s = unsafe { picodense_open(&mut *view, model.as_ptr(), model.len(), &mut info) };
    assert_eq!(s, PICODENSE_OK);
    (view, info)
}

fn check(model: &[u8]) -> i32 {
    // SAFETY: a valid slice; no info.
    unsafe { picodense_check(model.as_ptr(), model.len(), core::ptr::null_mut()) }
}

#[test]
fn the_view_fits_its_storage() {
    eprintln!(
        "Stored: {} bytes, storage {} bytes",
        size_of::<Stored>(),
        size_of::<PicodenseView>()
    );
}

#[test]
fn int8_predictions_equal_the_core_bit_for_bit() {
    for hidden in [&[16][..], &[12, 8], &[9, 7, 5]] {
        let shape = Shape::new(50, hidden, 7).unwrap();
        let model = int8_model(shape);
        let (view, info) = open(model);
        assert_eq!(info.dtype, PICODENSE_DTYPE_INT8);
        assert_eq!(info.inputs, 50);
        assert_eq!(info.classes, 7);
        assert_eq!(info.n_widths as usize, hidden.len() + 2);
        assert_eq!(info.widths[1] as usize, hidden[0]);
        let core = Int8View::parse(model).unwrap();
        assert_eq!(info.scratch_words as usize, core.scratch_words());
        assert_eq!(info.scratch_bytes, 4 * info.scratch_words);
        // SAFETY: an opened view.
        let words = unsafe { picodense_scratch_words(&*view) };
        assert_eq!(words, core.scratch_words());
        let mut scratch = vec![0u32; core.scratch_words()];
        for image in images(30, 50) {
            let mut want = [0i32; 7];
            let class = core.predict(&image, &mut scratch, &mut want);
            let (mut got, mut got_class) = ([0i32; 8], u32::MAX);
            let s = int8_predict(&view, &image, &mut scratch, &mut got, Some(&mut got_class));
            assert_eq!(s, PICODENSE_OK);
            assert_eq!((got_class as usize, &got[..7]), (class, &want[..]));
        }
    }
}

#[test]
fn f32_predictions_equal_the_core_bit_for_bit() {
    let shape = Shape::new(40, &[24], 5).unwrap();
    let model = f32_model(shape);
    let (view, info) = open(model);
    assert_eq!(info.dtype, PICODENSE_DTYPE_F32);
    assert_eq!(info.scratch_words, 24);
    let core = F32View::parse(model).unwrap();
    assert!(core.is_aligned());
    for image in images(20, 40) {
        let x: Vec<f32> = image.iter().map(|&p| picodense_unit_pixel(p)).collect();
        let (mut h, mut want) = (vec![0.0f32; 24], [0.0f32; 5]);
        let class = core.predict(&x, &mut h, &mut want);
        let (mut h2, mut got, mut got_class) = (vec![0.0f32; 24], [0.0f32; 5], 0u32);
        let s = f32_predict(&view, &x, &mut h2, &mut got, &mut got_class);
        assert_eq!(s, PICODENSE_OK);
        assert_eq!(got_class as usize, class);
        assert_eq!(got.map(f32::to_bits), want.map(f32::to_bits));
    }
}

#[test]
fn bad_images_are_named() {
    let shape = Shape::new(50, &[16], 7).unwrap();
    let good = int8_model(shape);
    assert_eq!(check(good), PICODENSE_OK);
    let altered = |at: usize, v: u8| {
        let mut b = good.to_vec();
        b[at] = v;
        b
    };
    assert_eq!(check(&altered(0, b'X')), PICODENSE_ERR_MAGIC);
    assert_eq!(check(&altered(4, 9)), PICODENSE_ERR_VERSION);
    assert_eq!(check(&altered(6, 7)), PICODENSE_ERR_DTYPE);
    assert_eq!(check(&altered(100, good[100] ^ 1)), PICODENSE_ERR_CRC);
    assert_eq!(check(&good[..20]), PICODENSE_ERR_TRUNCATED);
    assert_eq!(check(&good[..good.len() - 1]), PICODENSE_ERR_TRUNCATED);
    let mut longer = good.to_vec();
    longer.push(0);
    assert_eq!(check(&longer), PICODENSE_ERR_LENGTH);
    // A deep f32 model is a valid file that f32 inference here cannot run.
    let deep = f32_model(Shape::new(10, &[6, 4], 3).unwrap());
    assert_eq!(check(deep), PICODENSE_ERR_ONE_HIDDEN_LAYER_ONLY);
    // SAFETY: NULL model.
    let s = unsafe { picodense_check(core::ptr::null(), 10, core::ptr::null_mut()) };
    assert_eq!(s, PICODENSE_ERR_NULL);
    for s in [PICODENSE_OK, PICODENSE_ERR_CRC, 12345] {
        // SAFETY: the name is a static C string.
        let name = unsafe { core::ffi::CStr::from_ptr(picodense_status_name(s)) };
        assert!(!name.is_empty());
    }
}

#[test]
fn refused_calls_return_a_status() {
    let shape = Shape::new(50, &[16], 7).unwrap();
    let model = int8_model(shape);
    let (view, info) = open(model);
    let image = images(1, 50).remove(0);
    let mut scratch = vec![0u32; info.scratch_words as usize + 1];
    let (mut logits, mut class) = ([0i32; 7], 0u32);
    let call = |view: &PicodenseView, pixels: &[u8], scratch: &mut [u32], logits: &mut [i32]| {
        int8_predict(view, pixels, scratch, logits, Some(&mut 0))
    };
    let words = info.scratch_words as usize;
    assert_eq!(call(&view, &image, &mut scratch, &mut logits), PICODENSE_OK);
    assert_eq!(
        call(&view, &image[..49], &mut scratch, &mut logits),
        PICODENSE_ERR_INPUT_LEN
    );
    assert_eq!(
        call(&view, &image, &mut scratch[..words - 1], &mut logits),
        PICODENSE_ERR_SCRATCH_LEN
    );
    assert_eq!(
        call(&view, &image, &mut scratch, &mut logits[..6]),
        PICODENSE_ERR_LOGITS_LEN
    );
    assert_eq!(
        call(&closed(), &image, &mut scratch, &mut logits),
        PICODENSE_ERR_NOT_OPEN
    );
    // Misaligned scratch: one byte into the buffer.
    let s = unsafe {
        // SAFETY: the (misaligned) pointer is refused before any access.
        picodense_int8_predict(
            &*view,
            image.as_ptr(),
            image.len(),
            scratch
                .as_mut_ptr()
                .cast::<u8>()
                .wrapping_add(1)
                .cast::<u32>(),
            words,
            logits.as_mut_ptr(),
            logits.len(),
            &mut class,
        )
    };
    assert_eq!(s, PICODENSE_ERR_MISALIGNED);
    // A NULL output is refused.
    let s = int8_predict(&view, &image, &mut scratch, &mut logits, None);
    assert_eq!(s, PICODENSE_ERR_NULL);
    // The int8 view refuses f32 inference, and a failed open closes a view.
    let (x, mut h, mut z) = ([0.0f32; 50], [0.0f32; 16], [0.0f32; 7]);
    let s = f32_predict(&view, &x, &mut h, &mut z, &mut class);
    assert_eq!(s, PICODENSE_ERR_WRONG_DTYPE);
    let mut view = view;
    let mut bad = model.to_vec();
    bad[0] = 0;
    // SAFETY: valid view and model; the model is not used after the failed open.
    let s = unsafe { picodense_open(&mut *view, bad.as_ptr(), bad.len(), core::ptr::null_mut()) };
    assert_eq!(s, PICODENSE_ERR_MAGIC);
    assert_eq!(
        call(&view, &image, &mut scratch, &mut logits),
        PICODENSE_ERR_NOT_OPEN
    );
    // SAFETY: a closed view.
    assert_eq!(unsafe { picodense_scratch_words(&*view) }, 0);
}
