//! The software fused multiply-add of the portable and naive kernels against the hardware one
//! of the AVX2, AVX-512 and NEON kernels: the same bits for every finite input.

use super::xorshift;
use crate::gemm::tiles::{Fused, MulAdd, soft_fma};
use proptest::prelude::*;

/// The hardware's `a * b + c`, when this CPU has a fused multiply-add (the test says when not).
fn hardware(a: f32, b: f32, c: f32) -> Option<f32> {
    #[cfg(target_arch = "x86_64")]
    if !std::is_x86_feature_detected!("fma") {
        std::eprintln!("skipped: this CPU has no FMA to check the software one against");
        return None;
    }
    Some(Fused::mul_add(a, b, c))
}

/// Checks one triple; finite inputs only (NaN payloads are not part of the promise).
fn check(a: f32, b: f32, c: f32) -> Result<(), TestCaseError> {
    if let Some(want) = hardware(a, b, c) {
        let got = soft_fma(a, b, c);
        prop_assert_eq!(
            got.to_bits(),
            want.to_bits(),
            "fma({:e}, {:e}, {:e})",
            a,
            b,
            c
        );
    }
    Ok(())
}

/// Any finite f32: every exponent alike, so subnormals, huge and tiny values come up often.
fn finite() -> impl Strategy<Value = f32> {
    prop_oneof![
        any::<u32>().prop_map(f32::from_bits),
        // Subnormals and the smallest normals.
        (any::<bool>(), 0u32..0x0100_0000).prop_map(|(neg, m)| signed(neg, f32::from_bits(m))),
        Just(0.0f32),
        Just(-0.0f32),
        Just(f32::MAX),
        Just(f32::MIN_POSITIVE),
    ]
    .prop_filter("finite", |v| v.is_finite())
}

fn signed(neg: bool, v: f32) -> f32 {
    if neg { -v } else { v }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]
    #[test]
    fn soft_fma_gives_the_hardware_bits(a in finite(), b in finite(), c in finite()) {
        check(a, b, c)?;
    }

    /// `c` within a few units of `-a·b`: exact and near cancellations.
    #[test]
    fn soft_fma_cancels_as_the_hardware(a in finite(), b in finite(), nudge in -3i32..4) {
        let c = -(a * b);
        if c.is_finite() {
            check(a, b, f32::from_bits(c.to_bits().wrapping_add_signed(nudge)))?;
            check(a, b, c)?;
        }
    }
}

/// Millions of triples built to round twice if the sum were only rounded to nearest in f64:
/// ties of normal results (products of short integers), ties of subnormal results (`a·b`
/// within 2^-180 of 2^-150, beside a subnormal `c`), and sums that cancel to a few bits.
#[test]
fn soft_fma_breaks_ties_as_the_hardware() {
    if hardware(1.0, 1.0, 1.0).is_none() {
        return;
    }
    let mut rng = xorshift(0x9E37_79B9_7F4A_7C15);
    let mut next = move || rng.next().expect("endless");
    let scale = |e: u64| f32::from_bits(((e % 40 + 100) as u32) << 23);
    for i in 0..3_000_000u64 {
        let r = next();
        let (a, b, c) = match i % 3 {
            0 => {
                let a = (r & 0xff_ffff) as f32 * scale(next());
                let b = ((r >> 24) & 0xff_ffff) as f32 * scale(next());
                (a, b, f32::from_bits(next() as u32 & 0xbfff_ffff))
            }
            1 => {
                let a = f32::from_bits(r as u32 & 0x007f_ffff | 127 << 23);
                let tiny = f32::from_bits(52 << 23);
                let c = f32::from_bits(next() as u32 & 0x803f_ffff);
                (signed(r >> 63 == 1, a * tiny), (1.0 / a) * tiny, c)
            }
            _ => {
                let a = f32::from_bits(r as u32 & 0x3fff_ffff | 0x2000_0000);
                let b = f32::from_bits((r >> 32) as u32 & 0x3fff_ffff | 0x2000_0000);
                let nudge = (next() % 5) as i32 - 2;
                (
                    a,
                    b,
                    f32::from_bits((-(a * b)).to_bits().wrapping_add_signed(nudge)),
                )
            }
        };
        let (got, want) = (soft_fma(a, b, c), hardware(a, b, c).expect("checked"));
        assert_eq!(got.to_bits(), want.to_bits(), "fma({a:e}, {b:e}, {c:e})");
    }
}
