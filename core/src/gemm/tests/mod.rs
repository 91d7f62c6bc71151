//! The products of every kernel against the naive one, and against each other: all give the
//! same bits.

extern crate std;
use super::*;
use core::sync::atomic::{AtomicUsize, Ordering};
use proptest::prelude::*;
use std::boxed::Box;
use std::vec::Vec;

fn scratches(count: usize) -> Box<[Scratch]> {
    crate::zeroed_slice::<Scratch>(count)
}

/// `len` values in [-1, 1) from `seed`.
fn values(seed: u64, len: usize) -> Vec<f32> {
    xorshift(seed).take(len).map(unit_value).collect()
}

/// The states of a xorshift generator from `seed`.
fn xorshift(seed: u64) -> impl Iterator<Item = u64> {
    let mut s = seed | 1;
    core::iter::repeat_with(move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    })
}

/// A state of [`xorshift`] as a value in [-1, 1).
fn unit_value(s: u64) -> f32 {
    ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

#[derive(Clone, Copy, Debug)]
enum Layout {
    Nn,
    Tn,
    Nt,
}

/// One product to compute: shapes, data seed, epilogue (0-3) and how sparse A is.
#[derive(Clone, Copy, Debug)]
struct Case {
    layout: Layout,
    m: usize,
    k: usize,
    n: usize,
    seed: u64,
    epi: u8,
    /// 0: dense A. Otherwise whole columns, whole rows and single values of A are zeroed,
    /// like the blank margins and background of images, so that panels skip K steps.
    sparse: u8,
}

impl Case {
    fn dense(layout: Layout, m: usize, k: usize, n: usize) -> Self {
        Self {
            layout,
            m,
            k,
            n,
            seed: 7,
            epi: 1,
            sparse: 0,
        }
    }
}

/// Computes `a·b` for the case with `kernel`, split into `jobs` column ranges; returns C.
fn product(kernel: Kernel, case: Case, jobs: usize) -> Vec<f32> {
    compute_in_order(kernel, case, jobs, None)
}

/// [`product`] with A's rows grouped in a random order drawn from `order_seed`.
fn compute_in_order(kernel: Kernel, case: Case, jobs: usize, order_seed: Option<u64>) -> Vec<f32> {
    compute_with(kernel, case, jobs, order_seed, None)
}

/// [`compute_in_order`], with B (not transposed) given in panels of `b_panels` columns.
fn compute_with(
    kernel: Kernel,
    case: Case,
    jobs: usize,
    order_seed: Option<u64>,
    b_panels: Option<usize>,
) -> Vec<f32> {
    let Case { m, k, n, seed, .. } = case;
    let mut a_data = values(seed, m * k);
    // B by position, so that a narrower product has the first columns of a wider one.
    let b_all = values(seed + 1, k * 64);
    let b_at =
        |p: usize, j: usize| b_all[(p * 64 + j % 64) % b_all.len()] * (1.0 + (j / 64) as f32);
    let b_data: Vec<f32> = match case.layout {
        Layout::Nt => (0..n * k).map(|x| b_at(x % k, x / k)).collect(),
        Layout::Nn | Layout::Tn => (0..k * n).map(|x| b_at(x / n, x % n)).collect(),
    };
    let bias = values(seed + 2, n);
    let mask = values(seed + 3, m * n);
    if case.sparse > 0 {
        let s = u64::from(case.sparse);
        for i in 0..m {
            for p in 0..k {
                let (i64_, p64) = (i as u64, p as u64);
                let hit = (p64 * 7 + s) % 5 < 2
                    || (i64_ * 3 + s) % 4 == 0
                    || (i64_ * 31 + p64 * 17 + seed) % 3 == 0;
                if hit {
                    let index = match case.layout {
                        Layout::Tn => p * m + i,
                        Layout::Nn | Layout::Nt => i * k + p,
                    };
                    a_data[index] = 0.0;
                }
            }
        }
    }
    let mut paneled = Vec::new();
    if let Some(w) = b_panels {
        // NaN padding: a kernel that read past the last column would show it.
        paneled = std::vec![f32::NAN; n.div_ceil(w) * k * w];
        for p in 0..k {
            for j in 0..n {
                paneled[panel_index(p, j, k, w)] = b_data[p * n + j];
            }
        }
    }
    let (a, b) = match (case.layout, b_panels) {
        (Layout::Nn, Some(w)) => (
            MatRef::row_major(&a_data, m, k),
            MatRef::panels(&paneled, k, n, w),
        ),
        (Layout::Tn, Some(w)) => (
            MatRef::row_major(&a_data, k, m).t(),
            MatRef::panels(&paneled, k, n, w),
        ),
        (Layout::Nn, _) => (
            MatRef::row_major(&a_data, m, k),
            MatRef::row_major(&b_data, k, n),
        ),
        (Layout::Tn, _) => (
            MatRef::row_major(&a_data, k, m).t(),
            MatRef::row_major(&b_data, k, n),
        ),
        (Layout::Nt, _) => (
            MatRef::row_major(&a_data, m, k),
            MatRef::row_major(&b_data, n, k).t(),
        ),
    };
    let mut order: Vec<u16> = (0..m as u16).collect();
    let a = match order_seed {
        Some(order_seed) => {
            // Fisher-Yates with the test's generator.
            let draws = values(order_seed, m);
            for i in (1..m).rev() {
                let j = ((draws[i] + 1.0) / 2.0 * (i + 1) as f32) as usize;
                order.swap(i, j.min(i));
            }
            a.row_order(&order)
        }
        None => a,
    };
    let epilogue = match case.epi {
        0 => Epilogue::Store,
        1 => Epilogue::Bias(&bias),
        2 => Epilogue::BiasRelu(&bias),
        _ => Epilogue::ReluMask(&mask),
    };
    let mut c = std::vec![f32::NAN; m * n];
    if jobs == 1 {
        gemm(kernel, a, b, &mut c, epilogue, &mut scratches(1)[0]);
    } else {
        gemm_parallel(
            &Serial,
            kernel,
            a,
            b,
            &mut c,
            epilogue,
            &mut scratches(jobs),
        );
    }
    c
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

const EDGES: [usize; 12] = [1, 3, 5, 7, 9, 10, 15, 17, 127, 128, 512, 784];
const LAYOUTS: [Layout; 3] = [Layout::Nn, Layout::Tn, Layout::Nt];

/// The AVX2 kernel, and every other kernel this CPU runs (the test says when it lacks AVX2).
#[cfg(target_arch = "x86_64")]
fn avx2_and_the_others() -> Option<(Kernel, Vec<Kernel>)> {
    let avx2 = Kernel::avx2()?;
    let others = crate::every_kernel()
        .into_iter()
        .filter(|&kernel| kernel != avx2)
        .collect();
    Some((avx2, others))
}

#[cfg(target_arch = "x86_64")]
proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Every kernel gives AVX2's bits: every element is one chain of fused multiply-adds over
    /// K in order (in hardware, or in software for the naive and portable kernels), whatever
    /// the shape, layout, sparsity, epilogue, jobs, row order or panel layout of B.
    #[test]
    fn every_kernel_gives_the_avx2_bits(
        m in 1usize..140, k in prop::sample::select(&EDGES[..]),
        n in prop::sample::select(&[1usize, 10, 16, 33, 64, 65, 100, 129, 200, 512][..]),
        jobs in 1usize..4,
        layout in prop::sample::select(&LAYOUTS[..]),
        sparse in 0u8..3, epi in 0u8..4, seed in any::<u64>(),
        order_seed in prop::option::of(any::<u64>()), in_panels in any::<bool>(),
    ) {
        let Some((avx2, others)) = avx2_and_the_others() else { return Ok(()) };
        let case = Case { layout, m, k, n, seed, epi, sparse };
        let want = bits(&compute_in_order(avx2, case, jobs, order_seed));
        for kernel in others {
            let got = bits(&compute_in_order(kernel, case, jobs, order_seed));
            prop_assert_eq!(&got, &want, "{:?}", kernel);
            if in_panels && !matches!(layout, Layout::Nt) {
                let width = kernel.panel_width(n);
                let paneled = compute_with(kernel, case, jobs, None, Some(width));
                prop_assert_eq!(&bits(&paneled), &want, "{:?} in panels", kernel);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn every_kernel_gives_the_avx2_bits_at_the_model_shapes() {
    let Some((avx2, others)) = avx2_and_the_others() else {
        return;
    };
    // The last two are deeper than a K block: each element's chain goes on through C.
    let shapes = [
        (Layout::Nn, 128, 784, 512),
        (Layout::Tn, 784, 128, 512),
        (Layout::Nn, 128, 512, 10),
        (Layout::Tn, 512, 128, 10),
        (Layout::Nt, 128, 10, 512),
        (Layout::Nn, 64, 2 * KC + 16, 512),
        (Layout::Tn, 2 * KC + 16, 40, 100),
    ];
    for (layout, m, k, n) in shapes {
        for (sparse, epi) in [(0, 0), (1, 2), (2, 3)] {
            let case = Case {
                sparse,
                epi,
                ..Case::dense(layout, m, k, n)
            };
            for jobs in [1, 2, 3] {
                let want = bits(&product(avx2, case, jobs));
                for &kernel in &others {
                    assert_eq!(
                        bits(&product(kernel, case, jobs)),
                        want,
                        "{kernel:?}, {case:?}, {jobs} jobs"
                    );
                }
            }
        }
    }
}

#[test]
fn row_orders_must_be_permutations() {
    let data = [0.0f32; 12];
    let a = MatRef::row_major(&data, 4, 3);
    let _ = a.row_order(&[3, 1, 0, 2]);
    for bad in [&[0u16, 1, 2][..], &[0, 1, 2, 2], &[0, 1, 2, 4]] {
        let refused = std::panic::catch_unwind(|| a.row_order(bad));
        assert!(refused.is_err(), "{bad:?} accepted");
    }
}

/// The model's products, alone and on two jobs, give the naive kernel's bits.
fn model_shapes_give_the_naive_bits(kernel: Kernel) {
    let mnist = [
        (Layout::Nn, 128, 784, 512),
        (Layout::Tn, 784, 128, 512),
        (Layout::Nn, 128, 512, 10),
        (Layout::Tn, 512, 128, 10),
        (Layout::Nt, 128, 10, 512),
        (Layout::Nn, 100, 784, 512),
    ];
    for (layout, m, k, n) in mnist {
        for sparse in [0, 1] {
            let case = Case {
                sparse,
                ..Case::dense(layout, m, k, n)
            };
            let want = bits(&product(Kernel::NAIVE, case, 1));
            assert_eq!(bits(&product(kernel, case, 1)), want, "{case:?}");
            assert_eq!(
                bits(&product(kernel, case, 2)),
                bits(&product(kernel, case, 1))
            );
        }
    }
}

/// k = 0 gives the epilogue of zero; m = 0 or n = 0 gives nothing.
fn empty_products_apply_the_epilogue_or_do_nothing(kernel: Kernel) {
    // k = 0: C is the epilogue of zero.
    let case = Case::dense(Layout::Nn, 3, 0, 5);
    let bias = values(case.seed + 2, 5);
    let c = product(kernel, case, 2);
    for row in c.chunks(5) {
        assert_eq!(row, &bias[..]);
    }
    assert!(product(kernel, Case::dense(Layout::Nn, 0, 4, 5), 1).is_empty());
    assert!(product(kernel, Case::dense(Layout::Nn, 4, 4, 0), 1).is_empty());
}

/// An all-zero A gives +0 everywhere, whatever B.
fn all_zero_a_gives_exact_zeros(kernel: Kernel) {
    let a = [0.0f32; 6 * 40];
    let b = values(3, 40 * 64);
    let mut c = [f32::NAN; 6 * 64];
    let (a, b) = (MatRef::row_major(&a, 6, 40), MatRef::row_major(&b, 40, 64));
    gemm(kernel, a, b, &mut c, Epilogue::Store, &mut scratches(1)[0]);
    assert!(c.iter().all(|v| v.to_bits() == 0), "{c:?}");
}

#[test]
fn parts_cover_everything_once() {
    for n in [1, 10, 16, 17, 512, 513] {
        for parts in 1..5 {
            let mut next = 0;
            for part in 0..parts {
                let r = part_range(n, parts, part, 16);
                assert_eq!(r.start, next);
                next = r.end;
            }
            assert_eq!(next, n);
        }
    }
}

/// Runs every job on a thread of its own, so that jobs claim columns concurrently.
struct Spawned;

impl Parallel for Spawned {
    fn run<T: Send>(&self, items: &mut [T], job: &(impl Fn(usize, &mut T) + Sync)) {
        std::thread::scope(|scope| {
            for (i, item) in items.iter_mut().enumerate() {
                scope.spawn(move || job(i, item));
            }
        });
    }
}

#[test]
fn work_beside_a_product_runs_once() {
    let (a_data, b_data) = (values(21, 784 * 128), values(22, 128 * 512));
    let a = MatRef::row_major(&a_data, 128, 784).t();
    let b = MatRef::row_major(&b_data, 128, 512);
    for (m, jobs) in [(784, 1), (784, 2), (784, 3), (0, 2)] {
        let runs = AtomicUsize::new(0);
        let mut c = std::vec![0.0; m * 512];
        let beside = |_: &mut Scratch| {
            runs.fetch_add(1, Ordering::Relaxed);
        };
        let a = a.row_range(0..m);
        let scratches = &mut scratches(jobs);
        gemm_parallel_beside(
            &Spawned,
            Kernel::PORTABLE,
            a,
            b,
            &mut c,
            Epilogue::Store,
            scratches,
            beside,
        );
        assert_eq!(runs.load(Ordering::Relaxed), 1, "{m} rows, {jobs} jobs");
    }
}

/// Jobs on threads of their own, claiming units of columns or rows, give the bits of one job.
fn jobs_claiming_units_change_no_bit(kernel: Kernel) {
    // Columns: the forward's width, deep enough for three K blocks (the later blocks replay
    // the units claimed in the first), 16 units. Rows: Xᵀ·dH-like, 17 units of rows.
    let products = [
        (Layout::Nn, 64, 2 * KC + 16, 512),
        (Layout::Tn, 784, 128, 512),
    ];
    for (layout, m, k, n) in products {
        // A third of A zero, in scattered steps and whole rows.
        let a_data: Vec<f32> = values(11, m * k)
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let (row, step) = match layout {
                    Layout::Tn => (i % m, i / m),
                    _ => (i / k, i % k),
                };
                if step % 3 == 0 || row % 5 == 0 {
                    0.0
                } else {
                    v
                }
            })
            .collect();
        let b_data = values(12, k * n);
        let bias = values(13, n);
        let a = match layout {
            Layout::Tn => MatRef::row_major(&a_data, k, m).t(),
            _ => MatRef::row_major(&a_data, m, k),
        };
        let b = MatRef::row_major(&b_data, k, n);
        let mut alone = std::vec![f32::NAN; m * n];
        gemm(
            kernel,
            a,
            b,
            &mut alone,
            Epilogue::BiasRelu(&bias),
            &mut scratches(1)[0],
        );
        for jobs in [2, 3] {
            for _ in 0..3 {
                let mut c = std::vec![f32::NAN; m * n];
                let epilogue = Epilogue::BiasRelu(&bias);
                gemm_parallel(
                    &Spawned,
                    kernel,
                    a,
                    b,
                    &mut c,
                    epilogue,
                    &mut scratches(jobs),
                );
                let name = kernel.name();
                assert_eq!(bits(&c), bits(&alone), "{name}, {m} rows, {jobs} jobs");
            }
        }
    }
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod fma;
mod pairs;
mod suite;
