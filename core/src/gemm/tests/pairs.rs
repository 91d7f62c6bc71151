//! The paired weight gradient against the blocked product.

extern crate std;
use super::{bits, unit_value, xorshift};
use crate::gemm::pairs::*;
use crate::gemm::params::pairs::BLOCK;
use crate::gemm::{Epilogue, Kernel, MatRef, Scratch, Serial, gemm};
use proptest::prelude::*;
use std::vec::Vec;

/// `len` values in [-1, 1), about `zeros` in 8 of them zero (some -0), from `seed`.
fn sparse_values(seed: u64, len: usize, zeros: u64) -> Vec<f32> {
    let value = |s: u64| match s % 8 {
        z if z < zeros && s.is_multiple_of(3) => -0.0,
        z if z < zeros => 0.0,
        _ => unit_value(s),
    };
    xorshift(seed).take(len).map(value).collect()
}

/// The blocks of rows handed to [`OnRows`], with their values.
#[derive(Default)]
struct Blocks(std::sync::Mutex<Vec<(core::ops::Range<usize>, Vec<f32>)>>);

impl OnRows for Blocks {
    unsafe fn on_rows(&self, rows: core::ops::Range<usize>, c_rows: &[f32]) {
        self.0.lock().unwrap().push((rows, c_rows.to_vec()));
    }
}

/// Xᵀ·D through the pairs with `jobs` scratches; checks that every row of C went to
/// [`OnRows`] once, with its final values.
fn paired(
    kernel: Kernel,
    x: &[f32],
    d: &[f32],
    shape: (usize, usize, usize),
    jobs: usize,
) -> Vec<f32> {
    let (rows, k, n) = shape;
    let mut c = std::vec![f32::NAN; k * n];
    let mut pairs = std::vec![f32::NAN; rows * n];
    let mut masks = std::vec![u128::MAX; n / 2];
    let mut scratches = crate::zeroed_slice::<Scratch>(jobs);
    let mut beside_ran = 0;
    let blocks = Blocks::default();
    weight_gradient(
        &Serial,
        kernel,
        x,
        d,
        shape,
        &mut pairs,
        &mut masks,
        &mut c,
        &mut scratches,
        |_| beside_ran += 1,
        &blocks,
    );
    assert_eq!(beside_ran, 1);
    let mut blocks = blocks.0.into_inner().unwrap();
    blocks.sort_by_key(|(rows, _)| rows.start);
    let mut next = 0;
    for (rows, values) in blocks {
        assert_eq!(
            rows.start, next,
            "rows handed on once each, in blocks that meet"
        );
        assert_eq!(bits(&values), bits(&c[rows.start * n..rows.end * n]));
        next = rows.end;
    }
    assert_eq!(next, k, "every row handed on");
    c
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// The paired product gives the blocked product's bits (the naive one's for the naive
    /// kernel), for any shape it takes, any sparsity of either side and any number of jobs.
    #[test]
    fn pairs_give_the_blocked_bits(
        rows in prop::sample::select(&[1usize, 3, 8, 31, 64, 65, 127, 128][..]),
        k in prop::sample::select(&[1usize, 5, 8, 47, 48, 49, 100, 150][..]),
        half_n in 1usize..40,
        x_zeros in 0u64..8, d_zeros in 0u64..8, jobs in 1usize..4, seed in any::<u64>(),
    ) {
        let n = 2 * half_n;
        let x = sparse_values(seed, rows * k, x_zeros);
        let d = sparse_values(seed ^ 0x5555, rows * n, d_zeros);
        for kernel in crate::every_kernel() {
            let mut want = std::vec![0.0; k * n];
            let mut scratch = crate::zeroed_box::<Scratch>();
            let (xm, dm) = (MatRef::row_major(&x, rows, k), MatRef::row_major(&d, rows, n));
            gemm(kernel, xm.t(), dm, &mut want, Epilogue::Store, &mut scratch);
            let got = paired(kernel, &x, &d, (rows, k, n), jobs);
            // Up to the sign of zero sums (the two skip different zero products).
            let zero_signs = |v: &[f32]| bits(v).iter().map(|&b| if b == 1 << 31 { 0 } else { b }).collect::<Vec<_>>();
            prop_assert_eq!(zero_signs(&got), zero_signs(&want), "{:?}", kernel);
        }
    }

    /// AVX-512's paired product gives AVX2's bits exactly, signs of zero sums included.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_pairs_give_the_avx2_bits(
        rows in prop::sample::select(&[1usize, 3, 8, 31, 64, 65, 127, 128][..]),
        k in prop::sample::select(&[1usize, 5, 16, 17, 32, 47, 48, 49, 100, 784][..]),
        half_n in prop::sample::select(&[1usize, 7, 8, 9, 33, 256][..]),
        x_zeros in 0u64..8, d_zeros in 0u64..8, jobs in 1usize..4, seed in any::<u64>(),
    ) {
        let (Some(avx512), Some(avx2)) = (crate::avx512_kernel(), Kernel::avx2()) else {
            return Ok(());
        };
        let n = 2 * half_n;
        let x = sparse_values(seed, rows * k, x_zeros);
        let d = sparse_values(seed ^ 0x5555, rows * n, d_zeros);
        let want = paired(avx2, &x, &d, (rows, k, n), 1);
        let got = paired(avx512, &x, &d, (rows, k, n), jobs);
        prop_assert_eq!(bits(&got), bits(&want));
    }

    /// Counting gives the steps each product runs, by every kernel's code.
    #[test]
    fn steps_are_counted_exactly(
        k in 1usize..200, half_n in 1usize..80, x_zeros in 0u64..9, d_zeros in 0u64..9,
        seed in any::<u64>(),
    ) {
        let n = 2 * half_n;
        let x = sparse_values(seed, k, x_zeros);
        let d = sparse_values(seed ^ 0xaaaa, n, d_zeros);
        let nonzero = |v: &[f32]| v.iter().any(|&v| v != 0.0);
        let panels = x.chunks(3).filter(|p| nonzero(p)).count() as u64;
        let blocks = x.chunks(BLOCK).filter(|b| nonzero(b)).count() as u64;
        // -0 counts as nonzero for the pairs' masks but not for the estimate: either way.
        let pairs = d.chunks(2).filter(|p| nonzero(p)).count() as u64;
        let want = GradientSteps { listed: panels * n.div_ceil(32) as u64, paired: blocks * pairs };
        for kernel in crate::every_kernel() {
            let mut got = GradientSteps::default();
            got.add_row(kernel, &x, &d);
            prop_assert_eq!(got, want, "{:?}", kernel);
        }
    }
}

#[test]
fn shapes_beyond_the_masks_do_not_fit() {
    assert!(fits(128, 512) && fits(1, 2));
    assert!(!fits(129, 512) && !fits(0, 512) && !fits(64, 511));
}
