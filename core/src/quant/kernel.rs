//! The int8 dot products: four weights (one word) against two packed input words at a time.
//!
//! The arithmetic is that of the Cortex-M4 `SMLAD` instruction (two signed 16x16 products added
//! to a 32-bit accumulator, wrapping); the portable version computes the same bits.

/// Four int8 weights as one word: bytes in file order, `w0` lowest.
pub(super) trait Word: Copy {
    /// Whether slices of this type are 4-byte aligned (what LDRD needs).
    #[cfg_attr(not(all(feature = "dsp", target_arch = "arm")), allow(dead_code))]
    const ALIGNED: bool;
    fn get(self) -> u32;
}

impl Word for u32 {
    const ALIGNED: bool = true;
    #[inline(always)]
    fn get(self) -> u32 {
        self
    }
}

impl Word for [u8; 4] {
    const ALIGNED: bool = false;
    #[inline(always)]
    fn get(self) -> u32 {
        u32::from_le_bytes(self)
    }
}

/// `bias + Σ x[i] * w[i]` for a pair of units whose weights `pair` holds in the file's
/// layout: per 8 inputs, two words of the first unit then two of the second.
#[inline(always)]
pub(super) fn dot_pair<W: Word>(pair: &[W], x: &[u32], bias: [i32; 2]) -> [i32; 2] {
    #[cfg(all(feature = "dsp", target_arch = "arm"))]
    if W::ALIGNED {
        let steps = (pair.len() / 4).min(x.len() / 4);
        // SAFETY: `W::ALIGNED` holds only for `u32`, so the words are 4-byte aligned;
        // `steps` blocks of 4 words exist in both slices.
        return unsafe { dot_pair_m4(pair.as_ptr().cast(), x.as_ptr(), steps, bias) };
    }
    let [mut a0, mut a1] = bias;
    for (w, xs) in pair.as_chunks::<4>().0.iter().zip(x.as_chunks::<4>().0) {
        let [xa, xb, xc, xd] = *xs;
        a0 = mac4(mac4(a0, w[0].get(), xa, xb), w[1].get(), xc, xd);
        a1 = mac4(mac4(a1, w[2].get(), xa, xb), w[3].get(), xc, xd);
    }
    [a0, a1]
}

/// [`dot_pair`] as one Cortex-M4 loop, 21 instructions per 16 multiply-adds: LDM of four
/// input words, LDRD of each unit's eight weights, SXTB16 and SMLAD. (The compiler's own
/// schedule of the same operations spills registers.)
///
/// # Safety
/// `w` and `x` are 4-byte aligned and `steps * 4` words are readable from each.
#[cfg(all(feature = "dsp", target_arch = "arm"))]
#[inline(always)]
unsafe fn dot_pair_m4(w: *const u32, x: *const u32, steps: usize, bias: [i32; 2]) -> [i32; 2] {
    let [mut a0, mut a1] = bias;
    if steps == 0 {
        return [a0, a1];
    }
    // SAFETY: the caller guarantees the reads; pointer and counter registers are scratch
    // copies; no stack use; the input words (r0-r3) and temporaries are declared clobbered.
    unsafe {
        core::arch::asm!(
            "2:",
            "ldm {x}!, {{r0, r1, r2, r3}}",
            "ldrd {w0}, {w1}, [{w}], #8",
            "sxtb16 {t}, {w0}",
            "smlad {a0}, r0, {t}, {a0}",
            "sxtb16 {w0}, {w0}, ror #8",
            "smlad {a0}, r1, {w0}, {a0}",
            "sxtb16 {t}, {w1}",
            "smlad {a0}, r2, {t}, {a0}",
            "sxtb16 {w1}, {w1}, ror #8",
            "smlad {a0}, r3, {w1}, {a0}",
            "ldrd {w0}, {w1}, [{w}], #8",
            "sxtb16 {t}, {w0}",
            "smlad {a1}, r0, {t}, {a1}",
            "sxtb16 {w0}, {w0}, ror #8",
            "smlad {a1}, r1, {w0}, {a1}",
            "sxtb16 {t}, {w1}",
            "smlad {a1}, r2, {t}, {a1}",
            "sxtb16 {w1}, {w1}, ror #8",
            "smlad {a1}, r3, {w1}, {a1}",
            "subs {n}, {n}, #1",
            "bne 2b",
            x = inout(reg) x => _,
            w = inout(reg) w => _,
            n = inout(reg) steps => _,
            a0 = inout(reg) a0,
            a1 = inout(reg) a1,
            w0 = out(reg) _,
            w1 = out(reg) _,
            t = out(reg) _,
            out("r0") _,
            out("r1") _,
            out("r2") _,
            out("r3") _,
            options(nostack, readonly),
        );
    }
    [a0, a1]
}

/// `acc + x0*w0 + x2*w2 + x1*w1 + x3*w3` where `w` holds int8 weights `w0..w3` and
/// `xa = (x0, x2)`, `xb = (x1, x3)` hold 16-bit inputs.
#[cfg(not(all(feature = "dsp", target_arch = "arm")))]
#[inline(always)]
fn mac4(acc: i32, w: u32, xa: u32, xb: u32) -> i32 {
    let [w0, w1, w2, w3] = w.to_le_bytes().map(|b| i32::from(b as i8));
    let lo = |v: u32| i32::from(v as i16);
    let hi = |v: u32| i32::from((v >> 16) as i16);
    acc.wrapping_add(lo(xa) * w0 + hi(xa) * w2)
        .wrapping_add(lo(xb) * w1 + hi(xb) * w3)
}

/// As the portable `mac4`, with `SXTB16` splitting the weight word into the two 16-bit
/// pairs and `SMLAD` doing two multiply-adds each (the intrinsics are unstable; LLVM does
/// not form `SXTB16` from plain code).
#[cfg(all(feature = "dsp", target_arch = "arm"))]
#[inline(always)]
fn mac4(acc: i32, w: u32, xa: u32, xb: u32) -> i32 {
    smlad(xb, sxtb16_ror8(w), smlad(xa, sxtb16(w), acc))
}

// One instruction per asm block so that LLVM schedules and allocates freely.

/// A function running one `SXTB16` (with its rotation) on a register.
macro_rules! sxtb16 {
    ($(#[$doc:meta])* $name:ident, $instruction:literal) => {
        $(#[$doc])*
        #[cfg(all(feature = "dsp", target_arch = "arm"))]
        #[inline(always)]
        fn $name(w: u32) -> u32 {
            let r: u32;
            // SAFETY: a register-only DSP instruction, which the `dsp` feature promises the
            // CPU has; no memory, stack or condition flags touched.
            unsafe {
                core::arch::asm!($instruction, w = in(reg) w, r = lateout(reg) r,
                    options(pure, nomem, nostack, preserves_flags));
            }
            r
        }
    };
}

sxtb16!(
    /// Bytes 0 and 2 of `w`, sign-extended into the two 16-bit halves.
    sxtb16,
    "sxtb16 {r}, {w}"
);
sxtb16!(
    /// Bytes 1 and 3 of `w`, sign-extended into the two 16-bit halves.
    sxtb16_ror8,
    "sxtb16 {r}, {w}, ror #8"
);

/// `acc + lo(x) * lo(y) + hi(x) * hi(y)` on signed 16-bit halves, wrapping.
#[cfg(all(feature = "dsp", target_arch = "arm"))]
#[inline(always)]
fn smlad(x: u32, y: u32, acc: i32) -> i32 {
    let r: i32;
    // Not `preserves_flags`: on overflow SMLAD sets the sticky Q flag (nothing reads it).
    // SAFETY: a register-only DSP instruction, which the `dsp` feature promises the CPU has;
    // no memory or stack touched.
    unsafe {
        core::arch::asm!("smlad {r}, {x}, {y}, {a}", x = in(reg) x, y = in(reg) y,
            a = in(reg) acc, r = lateout(reg) r, options(pure, nomem, nostack));
    }
    r
}
