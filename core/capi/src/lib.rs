//! The C API of picodense-core: check a `.pdn` model image, report the scratch its inference
//! needs, and run int8 or f32 inference into buffers the caller owns. No heap, no globals.
//!
//! `picodense.h` beside this crate declares these functions and documents them for C; keep the
//! two in step (the status codes, `PICODENSE_VIEW_WORDS` and the `picodense_info` layout).
//!
//! Pointer rules every function relies on (the caller's obligations, repeated in the header):
//! - a pointer with a length is valid for reads (or writes, for outputs) of that many elements,
//!   aligned for its type, and does not overlap any other buffer of the same call;
//! - the model bytes given to [`picodense_open`] stay valid and unmodified for as long as the
//!   view is used (the view reads the weights in place, from flash);
//! - a `picodense_view` is used only after [`picodense_open`] returned `PICODENSE_OK` for it,
//!   and by one call at a time.
//!
//! NULL pointers and short or misaligned buffers are refused with a status code, never a panic.
#![cfg_attr(not(test), no_std)]

use core::ffi::c_char;
use core::mem::{align_of, size_of};

use picodense_core::format::{Dtype, FormatError, ModelView};
use picodense_core::quant::{F32View, Int8View, unit_pixel};

/// Success.
pub const PICODENSE_OK: i32 = 0;
/// A required pointer was NULL.
pub const PICODENSE_ERR_NULL: i32 = 1;
/// The image is shorter than a header, or than its header says.
pub const PICODENSE_ERR_TRUNCATED: i32 = 2;
/// The image does not start with the magic `PDN1`: not a picodense model.
pub const PICODENSE_ERR_MAGIC: i32 = 3;
/// A format version this build does not read.
pub const PICODENSE_ERR_VERSION: i32 = 4;
/// A dtype byte this build does not know.
pub const PICODENSE_ERR_DTYPE: i32 = 5;
/// The declared payload length disagrees with the layer sizes or the image length.
pub const PICODENSE_ERR_LENGTH: i32 = 6;
/// The stored CRC-32 differs from the bytes: the image is corrupted.
pub const PICODENSE_ERR_CRC: i32 = 7;
/// The layer list is not one a network can have.
pub const PICODENSE_ERR_SHAPE: i32 = 8;
/// The model has the other dtype (int8 inference asked of an f32 model, or the reverse).
pub const PICODENSE_ERR_WRONG_DTYPE: i32 = 9;
/// f32 inference supports one hidden layer; the model has more.
pub const PICODENSE_ERR_ONE_HIDDEN_LAYER_ONLY: i32 = 10;
/// Sizes so large that a length overflows.
pub const PICODENSE_ERR_TOO_LARGE: i32 = 11;
/// A caller buffer is not aligned for its element type (4 bytes for words and floats).
pub const PICODENSE_ERR_MISALIGNED: i32 = 12;
/// The view was not filled by a successful `picodense_open`.
pub const PICODENSE_ERR_NOT_OPEN: i32 = 13;
/// The input does not hold exactly the model's inputs.
pub const PICODENSE_ERR_INPUT_LEN: i32 = 14;
/// The scratch (or f32 hidden) buffer is shorter than the model needs.
pub const PICODENSE_ERR_SCRATCH_LEN: i32 = 15;
/// The logits buffer is shorter than the model's classes.
pub const PICODENSE_ERR_LOGITS_LEN: i32 = 16;
/// A model error this build has no code for.
pub const PICODENSE_ERR_OTHER: i32 = 99;

/// `picodense_info.dtype` of an f32 model.
pub const PICODENSE_DTYPE_F32: u32 = 0;
/// `picodense_info.dtype` of an int8 model.
pub const PICODENSE_DTYPE_INT8: u32 = 1;
/// Most widths a model has (inputs, up to four hidden layers, classes).
pub const PICODENSE_MAX_WIDTHS: usize = 6;
/// 64-bit words of a `picodense_view`: room for the parsed view of any model (checked at
/// compile time below); the view holds pointers, so 64-bit targets need twice the room.
#[cfg(target_pointer_width = "32")]
pub const PICODENSE_VIEW_WORDS: usize = 64;
/// 64-bit words of a `picodense_view`: room for the parsed view of any model (checked at
/// compile time below); the view holds pointers, so 64-bit targets need twice the room.
#[cfg(not(target_pointer_width = "32"))]
pub const PICODENSE_VIEW_WORDS: usize = 128;

/// What a model image holds and what running it takes (`picodense_info` in C).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PicodenseInfo {
    /// Format version of the file (1 or 2).
    pub version: u32,
    /// [`PICODENSE_DTYPE_F32`] or [`PICODENSE_DTYPE_INT8`].
    pub dtype: u32,
    /// Dataset the model was trained on (0 unknown, 1 MNIST, 2 Fashion-MNIST).
    pub dataset: u32,
    /// Widths in `widths`: inputs, each hidden layer, classes (3 to 6).
    pub n_widths: u32,
    /// The layer widths; unused entries are zero.
    pub widths: [u32; PICODENSE_MAX_WIDTHS],
    /// Inputs (pixels) per inference.
    pub inputs: u32,
    /// Classes: the logits each inference writes.
    pub classes: u32,
    /// Scratch elements inference needs: `uint32_t` words for int8, `float`s (the hidden layer)
    /// for f32.
    pub scratch_words: u32,
    /// The same in bytes (`4 * scratch_words`).
    pub scratch_bytes: u32,
}

/// Caller-owned storage for a checked model (`picodense_view` in C); opaque.
#[repr(C)]
pub struct PicodenseView {
    opaque: [u64; PICODENSE_VIEW_WORDS],
}

/// A parsed model borrowed from the caller's image.
// Unboxed on purpose: there is no heap, and the storage is sized for the larger variant anyway.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
enum Net {
    Int8(Int8View<'static>),
    F32(F32View<'static>),
}

/// What a [`PicodenseView`] holds once opened: the tag tells an opened view from zeroed
/// storage.
#[repr(C)]
struct Stored {
    tag: u32,
    net: Net,
}

/// `Stored::tag` of an opened view ("PDNV").
const OPEN_TAG: u32 = u32::from_le_bytes(*b"PDNV");

const _: () = {
    assert!(size_of::<Stored>() <= size_of::<PicodenseView>());
    assert!(align_of::<Stored>() <= align_of::<PicodenseView>());
};

fn status(e: FormatError) -> i32 {
    match e {
        FormatError::Truncated { .. } => PICODENSE_ERR_TRUNCATED,
        FormatError::BadMagic(_) => PICODENSE_ERR_MAGIC,
        FormatError::UnsupportedVersion(_) => PICODENSE_ERR_VERSION,
        FormatError::UnknownDtype(_) => PICODENSE_ERR_DTYPE,
        FormatError::LengthMismatch { .. } | FormatError::TrailingBytes { .. } => {
            PICODENSE_ERR_LENGTH
        }
        FormatError::ChecksumMismatch { .. } => PICODENSE_ERR_CRC,
        FormatError::ShapeMismatch { .. } | FormatError::BadShape(_) => PICODENSE_ERR_SHAPE,
        FormatError::WrongDtype(_) => PICODENSE_ERR_WRONG_DTYPE,
        FormatError::OneHiddenLayerOnly(_) => PICODENSE_ERR_ONE_HIDDEN_LAYER_ONLY,
        FormatError::TooLarge => PICODENSE_ERR_TOO_LARGE,
        FormatError::Misaligned => PICODENSE_ERR_MISALIGNED,
        _ => PICODENSE_ERR_OTHER,
    }
}

/// Parses `bytes` into the view its dtype asks for, and describes it. The `'static` is the
/// caller's obligation (see the crate docs): the image outlives every use of its view.
fn parse(bytes: &'static [u8]) -> Result<(Net, PicodenseInfo), i32> {
    let view = ModelView::parse(bytes).map_err(status)?;
    let header = *view.header();
    let shape = header.shape;
    let (net, scratch) = match header.dtype {
        Dtype::Int8 => {
            let v = Int8View::new(&view).map_err(status)?;
            let words = v.scratch_words();
            (Net::Int8(v), words)
        }
        Dtype::F32 => {
            let v = F32View::new(&view).map_err(status)?;
            let [_, hidden, _] = v.sizes();
            (Net::F32(v), hidden)
        }
    };
    let mut widths = [0u32; PICODENSE_MAX_WIDTHS];
    for (w, &s) in widths.iter_mut().zip(shape.widths()) {
        // Widths are at most MAX_INPUTS (2^20): they fit.
        *w = s as u32;
    }
    let scratch_words = u32::try_from(scratch).map_err(|_| PICODENSE_ERR_TOO_LARGE)?;
    let info = PicodenseInfo {
        version: u32::from(header.version),
        dtype: match header.dtype {
            Dtype::F32 => PICODENSE_DTYPE_F32,
            Dtype::Int8 => PICODENSE_DTYPE_INT8,
        },
        dataset: u32::from(header.dataset),
        n_widths: shape.widths().len() as u32,
        widths,
        inputs: shape.inputs() as u32,
        classes: shape.classes() as u32,
        scratch_words,
        scratch_bytes: scratch_words
            .checked_mul(4)
            .ok_or(PICODENSE_ERR_TOO_LARGE)?,
    };
    Ok((net, info))
}

/// `len` elements at `ptr` as a slice, or the status that refuses them.
///
/// # Safety
/// When `ptr` is non-NULL and aligned, it must be valid for reads of `len` elements of `T` for
/// `'a`, and nothing may write them meanwhile.
unsafe fn input<'a, T>(ptr: *const T, len: usize) -> Result<&'a [T], i32> {
    if ptr.is_null() {
        return Err(PICODENSE_ERR_NULL);
    }
    if !ptr.is_aligned() {
        return Err(PICODENSE_ERR_MISALIGNED);
    }
    // SAFETY: non-NULL and aligned (checked); valid for `len` reads and unaliased by writes
    // (the caller's obligation).
    Ok(unsafe { core::slice::from_raw_parts(ptr, len) })
}

/// `len` elements at `ptr` as a mutable slice, or the status that refuses them.
///
/// # Safety
/// When `ptr` is non-NULL and aligned, it must be valid for reads and writes of `len` elements
/// of `T` for `'a`, and no other pointer may access them meanwhile.
unsafe fn output<'a, T>(ptr: *mut T, len: usize) -> Result<&'a mut [T], i32> {
    if ptr.is_null() {
        return Err(PICODENSE_ERR_NULL);
    }
    if !ptr.is_aligned() {
        return Err(PICODENSE_ERR_MISALIGNED);
    }
    // SAFETY: non-NULL and aligned (checked); valid and exclusively ours for `len` elements
    // (the caller's obligation).
    Ok(unsafe { core::slice::from_raw_parts_mut(ptr, len) })
}

/// The opened model in `view`.
///
/// # Safety
/// `view` is NULL or points to a `picodense_view` that is zeroed or was filled by
/// [`picodense_open`], and whose model image is still valid.
unsafe fn opened<'a>(view: *const PicodenseView) -> Result<&'a Net, i32> {
    if view.is_null() {
        return Err(PICODENSE_ERR_NULL);
    }
    let stored = view.cast::<Stored>();
    // SAFETY: `view` is non-NULL and, being a `PicodenseView`, aligned for `Stored` and large
    // enough (checked at compile time); the tag is its first field, a plain u32.
    let tag = unsafe { (&raw const (*stored).tag).read() };
    if tag != OPEN_TAG {
        return Err(PICODENSE_ERR_NOT_OPEN);
    }
    // SAFETY: the tag says `picodense_open` wrote a whole `Stored` here, which the caller has
    // not touched since, and whose image is still valid (the caller's obligation).
    Ok(unsafe { &(*stored).net })
}

/// Writes `info` through `out` when it is not NULL.
///
/// # Safety
/// `out` is NULL or valid for a write of a `picodense_info`.
unsafe fn write_info(out: *mut PicodenseInfo, info: PicodenseInfo) -> i32 {
    if out.is_null() {
        return PICODENSE_OK;
    }
    if !out.is_aligned() {
        return PICODENSE_ERR_MISALIGNED;
    }
    // SAFETY: non-NULL, aligned, valid for a write (the caller's obligation).
    unsafe { out.write(info) };
    PICODENSE_OK
}

fn code(result: Result<i32, i32>) -> i32 {
    result.unwrap_or_else(|e| e)
}

/// Checks a model image (magic, version, dtype, sizes against the length, CRC-32, and that this
/// API can run it) and, when `info` is not NULL and the image is accepted, describes it.
///
/// # Safety
/// `model` is valid for reads of `model_len` bytes; `info` is NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn picodense_check(
    model: *const u8,
    model_len: usize,
    info: *mut PicodenseInfo,
) -> i32 {
    // SAFETY: the caller's obligation on `model`; the bytes are not used after the call.
    code(unsafe { input(model, model_len) }.and_then(|bytes| {
        let (_, i) = parse(bytes)?;
        // SAFETY: the caller's obligation on `info`.
        Ok(unsafe { write_info(info, i) })
    }))
}

/// Checks a model image like [`picodense_check`] and, when accepted, stores its parsed view in
/// `view` for the predict functions (the CRC is checked once here, not per inference).
///
/// # Safety
/// `view` is valid for a write of a `picodense_view`; `model` is valid for reads of
/// `model_len` bytes, and stays valid and unmodified while `view` is used; `info` is NULL or
/// valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn picodense_open(
    view: *mut PicodenseView,
    model: *const u8,
    model_len: usize,
    info: *mut PicodenseInfo,
) -> i32 {
    if view.is_null() {
        return PICODENSE_ERR_NULL;
    }
    if !view.is_aligned() {
        return PICODENSE_ERR_MISALIGNED;
    }
    let stored = view.cast::<Stored>();
    // SAFETY: the caller's obligations on `model`, whose bytes outlive every use of the view.
    let result = unsafe { input::<u8>(model, model_len) }.and_then(parse);
    let (net, i) = match result {
        Ok(parsed) => parsed,
        Err(e) => {
            // A refused image leaves the view closed, even if it held a model before.
            // SAFETY: `view` is non-NULL, aligned and valid for writes (the caller's
            // obligation); the tag is the first field of `Stored`, which fits in it.
            unsafe { (&raw mut (*stored).tag).write(0) };
            return e;
        }
    };
    // SAFETY: `view` is non-NULL, aligned and valid for writes (the caller's obligation);
    // `Stored` fits in and is aligned within a `PicodenseView` (checked at
    // compile time). `write` does not drop the old contents (nothing in a view needs a drop).
    unsafe { stored.write(Stored { tag: OPEN_TAG, net }) };
    // SAFETY: the caller's obligation on `info`.
    unsafe { write_info(info, i) }
}

/// Scratch elements inference of the model in `view` needs: `uint32_t` words for int8,
/// `float`s of the hidden layer for f32; 0 when `view` is NULL or not open.
///
/// # Safety
/// `view` is NULL or a `picodense_view` that is zeroed or was filled by [`picodense_open`]
/// (with its image still valid).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn picodense_scratch_words(view: *const PicodenseView) -> usize {
    // SAFETY: the caller's obligation on `view`.
    match unsafe { opened(view) } {
        Ok(Net::Int8(v)) => v.scratch_words(),
        Ok(Net::F32(v)) => v.sizes()[1],
        Err(_) => 0,
    }
}

/// Classifies one image with the int8 model in `view`: writes the int32 logits to
/// `logits[0..classes]` and the arg-max (the first on ties) to `*class_out`. Integer arithmetic
/// only: every target computes the host's bits.
///
/// # Safety
/// `view` as in [`picodense_scratch_words`]; `pixels` valid for reads of `n_pixels` bytes;
/// `scratch` and `logits` 4-byte aligned and valid for writes of `scratch_words` and `n_logits`
/// elements; `class_out` valid for a write; no two of the buffers overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn picodense_int8_predict(
    view: *const PicodenseView,
    pixels: *const u8,
    n_pixels: usize,
    scratch: *mut u32,
    scratch_words: usize,
    logits: *mut i32,
    n_logits: usize,
    class_out: *mut u32,
) -> i32 {
    code((|| {
        // SAFETY: the caller's obligation on `view`.
        let Net::Int8(v) = (unsafe { opened(view) })? else {
            return Err(PICODENSE_ERR_WRONG_DTYPE);
        };
        // SAFETY: the caller's obligation on `pixels`.
        let pixels = unsafe { input(pixels, n_pixels) }?;
        // SAFETY: the caller's obligation on `scratch`, which overlaps no other buffer.
        let scratch = unsafe { output(scratch, scratch_words) }?;
        // SAFETY: the caller's obligation on `logits`, which overlaps no other buffer.
        let logits = unsafe { output(logits, n_logits) }?;
        // SAFETY: the caller's obligation on `class_out`, which overlaps no other buffer.
        let class_out = unsafe { output(class_out, 1) }?;
        let shape = v.shape();
        if pixels.len() != shape.inputs() {
            return Err(PICODENSE_ERR_INPUT_LEN);
        }
        if scratch.len() < v.scratch_words() {
            return Err(PICODENSE_ERR_SCRATCH_LEN);
        }
        if logits.len() < shape.classes() {
            return Err(PICODENSE_ERR_LOGITS_LEN);
        }
        // Classes are at most 256: the class fits.
        class_out[0] = v.predict(pixels, scratch, logits) as u32;
        Ok(PICODENSE_OK)
    })())
}

/// Classifies one input with the f32 model in `view` (one hidden layer): `input` holds the
/// model's inputs (pixels as [`picodense_unit_pixel`]); fills `hidden` with the hidden layer's
/// activations and `logits[0..classes]`, and writes the arg-max (the first on ties) to
/// `*class_out`. Each sum runs over the inputs in order, so any IEEE target computes the
/// host's `F32View` bits.
///
/// # Safety
/// `view` as in [`picodense_scratch_words`]; `input` 4-byte aligned and valid for reads of
/// `n_input` floats; `hidden` and `logits` 4-byte aligned and valid for writes of `n_hidden`
/// and `n_logits` floats; `class_out` valid for a write; no two of the buffers overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn picodense_f32_predict(
    view: *const PicodenseView,
    input: *const f32,
    n_input: usize,
    hidden: *mut f32,
    n_hidden: usize,
    logits: *mut f32,
    n_logits: usize,
    class_out: *mut u32,
) -> i32 {
    code((|| {
        // SAFETY: the caller's obligation on `view`.
        let Net::F32(v) = (unsafe { opened(view) })? else {
            return Err(PICODENSE_ERR_WRONG_DTYPE);
        };
        // SAFETY: the caller's obligation on `input`.
        let x = unsafe { self::input(input, n_input) }?;
        // SAFETY: the caller's obligation on `hidden`, which overlaps no other buffer.
        let hidden = unsafe { output(hidden, n_hidden) }?;
        // SAFETY: the caller's obligation on `logits`, which overlaps no other buffer.
        let logits = unsafe { output(logits, n_logits) }?;
        // SAFETY: the caller's obligation on `class_out`, which overlaps no other buffer.
        let class_out = unsafe { output(class_out, 1) }?;
        let [i, h, o] = v.sizes();
        if x.len() != i {
            return Err(PICODENSE_ERR_INPUT_LEN);
        }
        if hidden.len() < h {
            return Err(PICODENSE_ERR_SCRATCH_LEN);
        }
        if logits.len() < o {
            return Err(PICODENSE_ERR_LOGITS_LEN);
        }
        class_out[0] = v.predict(x, hidden, logits) as u32;
        Ok(PICODENSE_OK)
    })())
}

/// The f32 input value of a pixel: `p / 255.0f`, exactly as the host computes it.
#[unsafe(no_mangle)]
pub extern "C" fn picodense_unit_pixel(p: u8) -> f32 {
    unit_pixel(p)
}

/// A static NUL-terminated name of a status code (`"ok"`, `"CRC mismatch"`, ...).
#[unsafe(no_mangle)]
pub extern "C" fn picodense_status_name(status: i32) -> *const c_char {
    let name: &'static core::ffi::CStr = match status {
        PICODENSE_OK => c"ok",
        PICODENSE_ERR_NULL => c"NULL pointer",
        PICODENSE_ERR_TRUNCATED => c"model image truncated",
        PICODENSE_ERR_MAGIC => c"bad magic: not a picodense model",
        PICODENSE_ERR_VERSION => c"unsupported format version",
        PICODENSE_ERR_DTYPE => c"unknown dtype",
        PICODENSE_ERR_LENGTH => c"payload length disagrees with the sizes",
        PICODENSE_ERR_CRC => c"CRC mismatch: model image corrupted",
        PICODENSE_ERR_SHAPE => c"bad layer sizes",
        PICODENSE_ERR_WRONG_DTYPE => c"model has the other dtype",
        PICODENSE_ERR_ONE_HIDDEN_LAYER_ONLY => c"f32 inference needs one hidden layer",
        PICODENSE_ERR_TOO_LARGE => c"sizes too large",
        PICODENSE_ERR_MISALIGNED => c"buffer misaligned",
        PICODENSE_ERR_NOT_OPEN => c"view not opened",
        PICODENSE_ERR_INPUT_LEN => c"input length differs from the model's inputs",
        PICODENSE_ERR_SCRATCH_LEN => c"scratch buffer too short",
        PICODENSE_ERR_LOGITS_LEN => c"logits buffer too short",
        _ => c"unknown status",
    };
    name.as_ptr()
}

/// Unreachable through this API (every input a panic could come from is refused with a
/// status first); should a bug reach it, trap so the caller's HardFault handler sees it.
#[cfg(not(test))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    #[cfg(target_arch = "arm")]
    // SAFETY: UDF only raises an undefined-instruction fault (a HardFault on ARMv6-M); it
    // touches no memory.
    unsafe {
        core::arch::asm!("udf #0", options(noreturn, nomem, nostack))
    }
    #[cfg(not(target_arch = "arm"))]
    loop {
        core::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests;
