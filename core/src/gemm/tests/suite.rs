//! One suite of tests for every kernel this machine runs, the naive kernel the oracle: each
//! kernel gets a module of its own, so a failure names the kernel and a missing instruction set
//! skips only its module's tests.

use super::*;

/// The suite for each `name: kernel` (an `Option<Kernel>`: `None` when the CPU lacks it, and
/// the module's tests pass without running).
macro_rules! kernel_suite {
    ($($(#[$attr:meta])* $name:ident: $kernel:expr;)*) => {$(
        $(#[$attr])*
        mod $name {
            use super::*;

            fn kernel() -> Option<Kernel> {
                $kernel
            }

            proptest! {
                #![proptest_config(ProptestConfig::with_cases(48))]
                #[test]
                fn gives_the_naive_bits(
                    m in prop::sample::select(&EDGES[..10]),
                    k in prop::sample::select(&EDGES[..]),
                    n in prop::sample::select(&EDGES[..11]),
                    layout in prop::sample::select(&LAYOUTS[..]),
                    epi in 0u8..4,
                    sparse in prop::sample::select(&[0u8, 1, 2][..]),
                    seed in any::<u64>(),
                ) {
                    let Some(kernel) = kernel() else { return Ok(()) };
                    let case = Case { layout, m, k, n, seed, epi, sparse };
                    let want = bits(&product(Kernel::NAIVE, case, 1));
                    prop_assert_eq!(bits(&product(kernel, case, 1)), want);
                }

                #[test]
                fn splitting_columns_or_rows_is_bitwise_identical(
                    m in 1usize..100, k in 1usize..300, n in 1usize..100, jobs in 2usize..5,
                    layout in prop::sample::select(&LAYOUTS[..]),
                    sparse in prop::sample::select(&[0u8, 1, 2][..]),
                    seed in any::<u64>(),
                ) {
                    let Some(kernel) = kernel() else { return Ok(()) };
                    let case = Case { layout, m, k, n, seed, epi: 2, sparse };
                    let alone = bits(&product(kernel, case, 1));
                    prop_assert_eq!(alone, bits(&product(kernel, case, jobs)));
                }

                /// Skipping zero K steps (wide C) gives the bits of the dense path (narrow C,
                /// no step lists): the first columns of a wide product equal the narrow one.
                #[test]
                fn zero_skipping_is_bitwise_exact(
                    m in 1usize..60, k in prop::sample::select(&EDGES[..]),
                    layout in prop::sample::select(&[Layout::Nn, Layout::Tn][..]),
                    sparse in 1u8..4, seed in any::<u64>(),
                ) {
                    let Some(kernel) = kernel() else { return Ok(()) };
                    let narrow = kernel.panel_width(1);
                    let wide = Case { layout, m, k, n: 4 * narrow, seed, epi: 0, sparse };
                    let thin = Case { n: narrow, ..wide };
                    let wide_c = product(kernel, wide, 1);
                    let thin_c = product(kernel, thin, 1);
                    let wide_first: Vec<f32> =
                        wide_c.chunks(wide.n).flat_map(|row| &row[..narrow]).copied().collect();
                    prop_assert_eq!(bits(&wide_first), bits(&thin_c));
                }
            }

            proptest! {
                #![proptest_config(ProptestConfig::with_cases(32))]
                /// Grouping A's rows in any order changes no bit of the product, whatever the
                /// jobs.
                #[test]
                fn row_order_changes_no_bit(
                    m in 1usize..80, k in prop::sample::select(&EDGES[..]), n in 1usize..100,
                    jobs in 1usize..4,
                    layout in prop::sample::select(&LAYOUTS[..]),
                    sparse in 0u8..3, epi in 0u8..4, seed in any::<u64>(),
                    order_seed in any::<u64>(),
                ) {
                    let Some(kernel) = kernel() else { return Ok(()) };
                    let case = Case { layout, m, k, n, seed, epi, sparse };
                    let natural = product(kernel, case, 1);
                    let grouped = compute_in_order(kernel, case, jobs, Some(order_seed));
                    prop_assert_eq!(bits(&natural), bits(&grouped));
                }

                /// B given in panels, of the kernel's own width (read in place) or another,
                /// gives the bits of B row-major, whatever the jobs.
                #[test]
                fn b_in_panels_changes_no_bit(
                    m in 1usize..80, k in prop::sample::select(&EDGES[..]),
                    n in prop::sample::select(&[1usize, 10, 33, 64, 100, 512][..]),
                    jobs in 1usize..4, other_width in 1usize..40,
                    layout in prop::sample::select(&[Layout::Nn, Layout::Tn][..]),
                    sparse in 0u8..3, epi in 0u8..4, seed in any::<u64>(),
                ) {
                    let Some(kernel) = kernel() else { return Ok(()) };
                    let case = Case { layout, m, k, n, seed, epi, sparse };
                    let plain = bits(&product(kernel, case, jobs));
                    for width in [kernel.panel_width(n), other_width] {
                        let paneled = compute_with(kernel, case, jobs, None, Some(width));
                        prop_assert_eq!(&plain, &bits(&paneled), "panels of {}", width);
                    }
                }
            }

            #[test]
            fn model_shapes_give_the_naive_bits() {
                if let Some(kernel) = kernel() {
                    super::model_shapes_give_the_naive_bits(kernel);
                }
            }

            #[test]
            fn empty_products_apply_the_epilogue_or_do_nothing() {
                if let Some(kernel) = kernel() {
                    super::empty_products_apply_the_epilogue_or_do_nothing(kernel);
                }
            }

            #[test]
            fn all_zero_a_gives_exact_zeros() {
                if let Some(kernel) = kernel() {
                    super::all_zero_a_gives_exact_zeros(kernel);
                }
            }

            #[test]
            fn jobs_claiming_units_change_no_bit() {
                if let Some(kernel) = kernel() {
                    super::jobs_claiming_units_change_no_bit(kernel);
                }
            }
        }
    )*};
}

kernel_suite! {
    naive: Some(Kernel::NAIVE);
    portable: Some(Kernel::PORTABLE);
    #[cfg(target_arch = "x86_64")]
    avx2: Kernel::avx2();
    #[cfg(target_arch = "x86_64")]
    avx512: crate::avx512_kernel();
    #[cfg(target_arch = "aarch64")]
    neon: Some(Kernel::NEON);
}
