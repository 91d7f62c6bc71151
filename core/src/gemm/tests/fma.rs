//! The software fused multiply-add of the portable and naive kernels against the hardware one
//! of the AVX2, AVX-512 and NEON kernels: the same bits for every finite input, one at a time
//! or a row at a time (the tiles' quick path, with its exact fix-up).

use super::xorshift;
use crate::gemm::tiles::{Fused, MulAdd, SoftFused, soft_fma};
use proptest::prelude::*;

/// Whether this CPU has a fused multiply-add to check against (the test says when not).
fn hardware_present() -> bool {
    #[cfg(target_arch = "x86_64")]
    if !std::is_x86_feature_detected!("fma") {
        std::eprintln!("skipped: this CPU has no FMA to check the software one against");
        return false;
    }
    true
}

/// Checks `a * b[j] + c[j]` every way the software computes it against the hardware.
fn check_row<const N: usize>(a: f32, b: [f32; N], c: [f32; N]) -> Result<(), TestCaseError> {
    let want = core::array::from_fn::<_, N, _>(|j| Fused::mul_add(a, b[j], c[j]).to_bits());
    let mut row = c;
    SoftFused::mul_add_row(a, &b, &mut row);
    prop_assert_eq!(
        row.map(f32::to_bits),
        want,
        "row: {:e} x {:?} + {:?}",
        a,
        b,
        c
    );
    for j in 0..N {
        let (b, c) = (b[j], c[j]);
        let one = SoftFused::mul_add(a, b, c).to_bits();
        prop_assert_eq!(one, want[j], "fma({:e}, {:e}, {:e})", a, b, c);
        prop_assert_eq!(
            soft_fma(a, b, c).to_bits(),
            want[j],
            "soft_fma({:e}, {:e}, {:e})",
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
        if hardware_present() {
            check_row(a, [b], [c])?;
        }
    }

    /// `c` within a few units of `-a·b`: exact and near cancellations.
    #[test]
    fn soft_fma_cancels_as_the_hardware(a in finite(), b in finite(), nudge in -3i32..4) {
        let c = -(a * b);
        if c.is_finite() && hardware_present() {
            let near = f32::from_bits(c.to_bits().wrapping_add_signed(nudge));
            check_row(a, [b, b], [c, near])?;
        }
    }
}

/// Rows of triples built to round twice if the sum were only rounded to nearest in f64: ties
/// of normal results (products of short integers), ties of subnormal results (`a·b` within
/// 2^-180 of 2^-150, beside a subnormal `c`), and sums that cancel to a few bits.
#[test]
fn soft_fma_breaks_ties_as_the_hardware() {
    if !hardware_present() {
        return;
    }
    let mut rng = xorshift(0x9E37_79B9_7F4A_7C15);
    let mut next = move || rng.next().expect("endless");
    let scale = |e: u64| f32::from_bits(((e % 40 + 100) as u32) << 23);
    for i in 0..300_000u64 {
        let r = next();
        let (a, b, c): (f32, [f32; 8], [f32; 8]) = match i % 3 {
            0 => {
                let a = (r & 0xff_ffff) as f32 * scale(next());
                let b = core::array::from_fn(|_| (next() & 0xff_ffff) as f32 * scale(next()));
                let c = core::array::from_fn(|_| f32::from_bits(next() as u32 & 0xbfff_ffff));
                (a, b, c)
            }
            1 => {
                let a = f32::from_bits(r as u32 & 0x007f_ffff | 127 << 23);
                let tiny = f32::from_bits(52 << 23);
                let b = (1.0 / a) * tiny;
                let c = core::array::from_fn(|_| f32::from_bits(next() as u32 & 0x803f_ffff));
                (signed(r >> 63 == 1, a * tiny), [b; 8], c)
            }
            _ => {
                let a = f32::from_bits(r as u32 & 0x3fff_ffff | 0x2000_0000);
                let b: [f32; 8] = core::array::from_fn(|_| {
                    f32::from_bits(next() as u32 & 0x3fff_ffff | 0x2000_0000)
                });
                let c = b.map(|b| {
                    let nudge = (next() % 5) as i32 - 2;
                    f32::from_bits((-(a * b)).to_bits().wrapping_add_signed(nudge))
                });
                (a, b, c)
            }
        };
        check_row(a, b, c).unwrap();
    }
}
