//! GFLOP/s of the matrix products at the shapes training uses: the naive reference, the
//! portable, AVX2 and AVX-512 blocked kernels (AVX2 and AVX-512 also on 2 threads, where the
//! CPU has them), and `matrixmultiply::sgemm`
//! as a reference crate, all in one run. Criterion's throughput is in flops (2·m·k·n), so its
//! "elem/s" figures read as FLOP/s. Single-thread groups (`gemm/...`) measure the thread's CPU
//! time, so other processes on a shared machine do not count; `gemm_2threads/...` is wall time.
//!
//! Shapes (one training step of 128 rows of the 784-512-10 network, and a large square):
//! `fwd` X·W1 (the AVX kernels also with W1 already in their panels, `-panels`, as training
//! keeps it), `wgrad` Xᵀ·dH (Xᵀ a transposed view), `out` H·W2, `back` dZ·W2ᵀ (W2ᵀ a
//! transposed view), `1024`; dense uniform data, with `Store` so every kernel computes the same
//! plain product. The `-mnist` shapes use MNIST-like images for X, where the blocked kernels
//! skip K steps whose values are all zero: their figures are effective (dense-equivalent) rates.

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::Measurement;
use criterion::{Criterion, Throughput};
use picodense::compute::{Threads, zeroed_slice};
use picodense_benches::{PIXELS, avx2, avx512, in_panels, mnist_rows, uniform};
use picodense_core::Scratch;
use picodense_core::gemm::{Epilogue, Kernel, MatRef, Parallel, Serial, gemm_parallel};

/// Layout of A and B as stored.
#[derive(Clone, Copy)]
enum Layout {
    /// A (m x k) and B (k x n) row-major.
    Nn,
    /// A stored as its transpose (k x m) row-major: the weight-gradient layout.
    Tn,
    /// B stored as its transpose (n x k) row-major: the back-propagation layout.
    Nt,
}

/// What A holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Data {
    /// Dense uniform values; the naive kernel runs too.
    Dense,
    /// Dense uniform values, too large a product for the naive kernel.
    DenseLarge,
    /// MNIST-like pixels (only for k or m = 784).
    Mnist,
}

/// One product: `(name, m, k, n, layout, data)`.
#[derive(Clone, Copy)]
struct Shape(&'static str, usize, usize, usize, Layout, Data);

const SHAPES: [Shape; 7] = [
    Shape("fwd_128x784x512", 128, 784, 512, Layout::Nn, Data::Dense),
    Shape(
        "fwd-mnist_128x784x512",
        128,
        784,
        512,
        Layout::Nn,
        Data::Mnist,
    ),
    Shape("wgrad_784x128x512", 784, 128, 512, Layout::Tn, Data::Dense),
    Shape(
        "wgrad-mnist_784x128x512",
        784,
        128,
        512,
        Layout::Tn,
        Data::Mnist,
    ),
    Shape("out_128x512x10", 128, 512, 10, Layout::Nn, Data::Dense),
    Shape("back_128x10x512", 128, 10, 512, Layout::Nt, Data::Dense),
    Shape(
        "square_1024x1024x1024",
        1024,
        1024,
        1024,
        Layout::Nn,
        Data::DenseLarge,
    ),
];

/// A's data as stored: uniform values, or MNIST-like pixels / 255 (one image per row of X).
fn a_data(&Shape(_, m, k, _, _, data): &Shape) -> Vec<f32> {
    if data != Data::Mnist {
        return uniform(m * k, 1);
    }
    // X is images x 784 row-major in both layouts (Xᵀ is a view of it).
    mnist_rows(m.min(k).max(m * k / PIXELS))
}

/// One shape: on this thread (`jobs == 1`: naive, portable, AVX2, AVX-512, matrixmultiply) or
/// AVX2 and AVX-512 split over two threads.
fn bench_shape<M: Measurement>(c: &mut Criterion<M>, s: &Shape, jobs: usize) {
    let &Shape(shape_name, m, k, n, layout, data) = s;
    let a_store = a_data(s);
    let b_store = uniform(k * n, 2);
    let a = match layout {
        Layout::Tn => MatRef::row_major(&a_store, k, m).t(),
        Layout::Nn | Layout::Nt => MatRef::row_major(&a_store, m, k),
    };
    let b = match layout {
        Layout::Nt => MatRef::row_major(&b_store, n, k).t(),
        Layout::Nn | Layout::Tn => MatRef::row_major(&b_store, k, n),
    };
    let mut out = vec![0.0f32; m * n];
    let mut scratches = zeroed_slice::<Scratch>(jobs);

    let name = if jobs == 1 { "gemm" } else { "gemm_2threads" };
    let mut group = c.benchmark_group(format!("{name}/{shape_name}"));
    group.throughput(Throughput::Elements(2 * (m * k * n) as u64));
    let big = m * k * n > 100_000_000;
    group.sample_size(if big { 10 } else { 30 });
    group.warm_up_time(Duration::from_millis(if big { 1000 } else { 400 }));
    group.measurement_time(Duration::from_millis(if big { 3000 } else { 1500 }));

    if jobs > 1 {
        let threads = Threads::new(jobs);
        let kernels = [avx2().map(|k| ("avx2", k)), avx512().map(|k| ("avx512", k))];
        for (id, kernel) in kernels.into_iter().flatten() {
            group.bench_function(id, |bench| {
                bench.iter(|| product(&threads, kernel, a, b, &mut out, &mut scratches))
            });
        }
        group.finish();
        return;
    }
    let mut kernels = vec![("portable", Kernel::PORTABLE)];
    if data == Data::Dense {
        kernels.insert(0, ("naive", Kernel::NAIVE));
    }
    kernels.extend(avx2().map(|k| ("avx2", k)));
    kernels.extend(avx512().map(|k| ("avx512", k)));
    for &(id, kernel) in &kernels {
        group.bench_function(id, |bench| {
            bench.iter(|| product(&Serial, kernel, a, b, &mut out, &mut scratches))
        });
    }
    // B already in the kernel's panels, as training keeps W1: the product packs only A.
    let in_place =
        |kernel: Kernel| matches!(layout, Layout::Nn) && n.is_multiple_of(kernel.panel_width(n));
    for (id, kernel) in kernels
        .into_iter()
        .filter(|&(id, kernel)| id.starts_with("avx") && in_place(kernel))
    {
        let (panels, width) = in_panels(&b_store, k, n, kernel);
        let b = MatRef::panels(&panels, k, n, width);
        group.bench_function(format!("{id}-panels"), |bench| {
            bench.iter(|| product(&Serial, kernel, a, b, &mut out, &mut scratches))
        });
    }
    let (rsa, csa) = strides(layout, true, m, k);
    let (rsb, csb) = strides(layout, false, k, n);
    group.bench_function("matrixmultiply", |bench| {
        bench.iter(|| {
            // SAFETY: the pointers and strides describe the live buffers above: A is m x k,
            // B is k x n, C is m x n row-major.
            unsafe {
                matrixmultiply::sgemm(
                    m,
                    k,
                    n,
                    1.0,
                    a_store.as_ptr(),
                    rsa,
                    csa,
                    b_store.as_ptr(),
                    rsb,
                    csb,
                    0.0,
                    out.as_mut_ptr(),
                    n as isize,
                    1,
                )
            }
        })
    });
    group.finish();
}

fn product<P: Parallel>(
    par: &P,
    kernel: Kernel,
    a: MatRef,
    b: MatRef,
    out: &mut [f32],
    scratch: &mut [Scratch],
) {
    gemm_parallel(
        par,
        kernel,
        black_box(a),
        black_box(b),
        out,
        Epilogue::Store,
        scratch,
    );
    black_box(out);
}

/// Row and column strides of A (`is_a`) or B, `rows x cols`, as `layout` stores it.
fn strides(layout: Layout, is_a: bool, rows: usize, cols: usize) -> (isize, isize) {
    let transposed = matches!((layout, is_a), (Layout::Tn, true) | (Layout::Nt, false));
    if transposed {
        (1, rows as isize)
    } else {
        (cols as isize, 1)
    }
}

/// Every shape on `jobs` threads.
fn shapes<M: Measurement>(c: &mut Criterion<M>, jobs: usize) {
    for s in &SHAPES {
        bench_shape(c, s, jobs);
    }
}

picodense_benches::one_and_two_threads!(shapes);
