//! Classifies the embedded images with the embedded model (int8 or f32, from its header) and
//! reports over semihosting: one line per image with the class and the logits' exact bits, then
//! the accuracy. Exits 0 when the model was accepted and every image matched the expected classes
//! (when those were embedded), 1 otherwise; a panic or fault exits 1 too.
#![no_std]
#![no_main]

use core::fmt::Write;

use cortex_m_rt::{ExceptionFrame, entry, exception};
use cortex_m_semihosting::{debug, hio};
use heapless::String;
use panic_semihosting as _;
use picodense_core::format::{Dtype, FormatError, ModelView};
use picodense_core::quant::{F32View, Int8View, scratch_words, unit_pixel};

/// `include_bytes!` data is byte-aligned; the model's sections are 4-byte aligned only if the
/// file is, which the f32 path needs to read weights as `&[f32]`.
#[repr(C, align(4))]
struct Aligned<B: ?Sized>(B);

static MODEL: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/model.pdn")));
static IMAGES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/images.bin"));
static EXPECTED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/expected.bin"));

const BOARD: &str = if cfg!(feature = "board-netduino") {
    "netduinoplus2"
} else if cfg!(feature = "board-microbit") {
    "microbit"
} else {
    "mps2-an386"
};
/// Largest layers the stack buffers hold (the product network is 784-512-10).
const MAX_INPUTS: usize = 1024;
const MAX_HIDDEN: usize = 1024;
const MAX_OUTPUTS: usize = 32;

type Line = String<512>;

/// Writes a line to the host's stdout in one semihosting call.
fn emit(line: &mut Line) {
    let _ = line.push('\n');
    if let Ok(mut out) = hio::hstdout() {
        let _ = out.write_all(line.as_bytes());
    }
    line.clear();
}

macro_rules! say {
    ($($arg:tt)*) => {{
        let mut line = Line::new();
        let _ = write!(line, $($arg)*);
        emit(&mut line);
    }};
}

#[entry]
fn main() -> ! {
    paint_stack();
    let pass = run();
    say!("stack high-water {} bytes", stack_used());
    say!("result {}", if pass { "pass" } else { "fail" });
    debug::exit(if pass {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    // Only reached on a board without a debugger to take the exit.
    loop {
        cortex_m::asm::wfi();
    }
}

#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    say!("hard fault at pc {:#010x}", frame.pc());
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}

// The free RAM between static data and the stack pointer, from cortex-m-rt's linker script.
unsafe extern "C" {
    static mut _stack_end: u32;
    static mut _stack_start: u32;
}

/// Marks unused stack words, so that [`stack_used`] can find how deep the stack went.
const PAINT: u32 = 0x5AA5_F00D;

/// Fills the free RAM below the current stack pointer with [`PAINT`] (a margin of 64 bytes
/// left for this function's own frame).
fn paint_stack() {
    let bottom = (&raw mut _stack_end) as usize;
    let sp = cortex_m::register::msp::read() as usize;
    let mut p = bottom;
    while p + 64 < sp {
        // SAFETY: between the end of static data and the live stack: memory nothing uses yet.
        unsafe { core::ptr::write_volatile(p as *mut u32, PAINT) };
        p += 4;
    }
}

/// Bytes of stack used so far: from the top of RAM down to the lowest overwritten paint.
fn stack_used() -> usize {
    let bottom = (&raw mut _stack_end) as usize;
    let top = (&raw mut _stack_start) as usize;
    let mut p = bottom;
    // SAFETY: reads of RAM between the end of static data and the top of the stack.
    while p < top && unsafe { core::ptr::read_volatile(p as *const u32) } == PAINT {
        p += 4;
    }
    top - p
}

/// Everything but the exit; true on pass.
fn run() -> bool {
    let view = match ModelView::parse(&MODEL.0) {
        Ok(v) => v,
        Err(e) => {
            say!("model refused ({} bytes): {e}", MODEL.0.len());
            return false;
        }
    };
    let shape = view.header().shape;
    let (inputs, outputs) = (shape.inputs(), shape.classes());
    if inputs > MAX_INPUTS || shape.widest_hidden() > MAX_HIDDEN || outputs > MAX_OUTPUTS {
        say!("model {shape} exceeds the firmware's buffers");
        return false;
    }
    if !IMAGES.len().is_multiple_of(inputs + 1) {
        say!(
            "images file of {} bytes is not N x ({inputs} pixels + 1 label)",
            IMAGES.len()
        );
        return false;
    }
    let n = IMAGES.len() / (inputs + 1);
    let (pixels, labels) = IMAGES.split_at(n * inputs);
    if !EXPECTED.is_empty() && EXPECTED.len() != n {
        say!("{} expected classes for {n} images", EXPECTED.len());
        return false;
    }
    let dtype = view.header().dtype;
    say!(
        "picodense firmware: board {BOARD}, dtype {}, model {shape}, {n} images",
        dtype.name()
    );
    let classify = match dtype {
        Dtype::Int8 => classify_int8(&view, pixels, labels),
        Dtype::F32 => classify_f32(&view, pixels, labels),
    };
    match classify {
        Ok(pass) => pass,
        Err(e) => {
            say!("model refused: {e}");
            false
        }
    }
}

/// Running totals, and the per-image report.
struct Tally {
    correct: usize,
    mismatches: usize,
    images: usize,
}

impl Tally {
    fn new() -> Self {
        Self {
            correct: 0,
            mismatches: 0,
            images: 0,
        }
    }

    /// Prints `img <i> class <c> label <l> logits <hex>...` and counts.
    fn record(&mut self, i: usize, class: usize, label: u8, logit_bits: impl Iterator<Item = u32>) {
        // The negative control: a wrong class the checkers must catch.
        let class = if cfg!(feature = "flip-first") && i == 0 {
            class + 1
        } else {
            class
        };
        let mut line = Line::new();
        let _ = write!(line, "img {i} class {class} label {label} logits");
        for bits in logit_bits {
            let _ = write!(line, " {bits:08x}");
        }
        emit(&mut line);
        self.images += 1;
        self.correct += usize::from(class == usize::from(label));
        if let Some(&e) = EXPECTED.get(i) {
            self.mismatches += usize::from(class != usize::from(e));
        }
    }

    fn finish(self) -> bool {
        say!("accuracy {}/{}", self.correct, self.images);
        if !EXPECTED.is_empty() {
            say!("mismatches {}/{}", self.mismatches, self.images);
        }
        self.mismatches == 0
    }
}

fn classify_int8(view: &ModelView, pixels: &[u8], labels: &[u8]) -> Result<bool, FormatError> {
    let model = Int8View::new(view)?;
    let (inputs, outputs) = (model.shape().inputs(), model.shape().classes());
    // Inputs and activations; deeper networks need two activation buffers, which fit when
    // their layers are narrower than the widest the firmware takes.
    let mut scratch = [0u32; scratch_words(MAX_INPUTS, MAX_HIDDEN)];
    if model.scratch_words() > scratch.len() {
        say!(
            "model {} needs {} words of scratch, the firmware has {}",
            model.shape(),
            model.scratch_words(),
            scratch.len()
        );
        return Ok(false);
    }
    let mut logits = [0i32; MAX_OUTPUTS];
    let mut tally = Tally::new();
    for (i, (image, &label)) in pixels.chunks_exact(inputs).zip(labels).enumerate() {
        let class = infer_int8(&model, image, &mut scratch, &mut logits[..outputs]);
        tally.record(i, class, label, logits[..outputs].iter().map(|&z| z as u32));
    }
    Ok(tally.finish())
}

/// One int8 inference, kept out of line so its address range can be measured.
#[inline(never)]
fn infer_int8(model: &Int8View, image: &[u8], scratch: &mut [u32], logits: &mut [i32]) -> usize {
    model.predict(image, scratch, logits)
}

fn classify_f32(view: &ModelView, pixels: &[u8], labels: &[u8]) -> Result<bool, FormatError> {
    let model = F32View::new(view)?;
    if !model.is_aligned() {
        say!("note: f32 weights not 4-byte aligned, reading them bytewise");
    }
    let [inputs, hidden, outputs] = model.sizes();
    let mut x = [0.0f32; MAX_INPUTS];
    let mut h = [0.0f32; MAX_HIDDEN];
    let mut logits = [0.0f32; MAX_OUTPUTS];
    let mut tally = Tally::new();
    for (i, (image, &label)) in pixels.chunks_exact(inputs).zip(labels).enumerate() {
        for (x, &p) in x.iter_mut().zip(image) {
            *x = unit_pixel(p);
        }
        let class = infer_f32(
            &model,
            &x[..inputs],
            &mut h[..hidden],
            &mut logits[..outputs],
        );
        tally.record(
            i,
            class,
            label,
            logits[..outputs].iter().map(|z| z.to_bits()),
        );
    }
    Ok(tally.finish())
}

/// One f32 inference, kept out of line so its address range can be measured.
#[inline(never)]
fn infer_f32(model: &F32View, x: &[f32], hidden: &mut [f32], logits: &mut [f32]) -> usize {
    model.predict(x, hidden, logits)
}
