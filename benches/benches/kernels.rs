//! GFLOP/s of the matrix products at the shapes training uses: the naive reference, the
//! portable, AVX2 and AVX-512 blocked kernels (AVX2 and AVX-512 also on 2 threads, where the
//! CPU has them), and `matrixmultiply::sgemm`
//! as a reference crate, all in one run. Criterion's throughput is in flops (2·m·k·n), so its
//! "elem/s" figures read as FLOP/s. Single-thread groups (`gemm/...`) measure the thread's CPU
//! time, so other processes on a shared machine do not count; `gemm_2threads/...` is wall time.
//!
//! Shapes (one training step of 128 rows of the 784-512-10 network, and a large square):
//! `fwd` X·W1, `wgrad` Xᵀ·dH (Xᵀ a transposed view), `out` H·W2, `back` dZ·W2ᵀ (W2ᵀ a
//! transposed view), `1024`; dense uniform data, with `Store` so every kernel computes the same
//! plain product. The `-mnist` shapes use MNIST-like images for X, where the blocked kernels
//! skip K steps whose values are all zero: their figures are effective (dense-equivalent) rates.

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::Measurement;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use picodense::compute::{KernelChoice, Threads, select_kernel, zeroed_slice};
use picodense_benches::{PIXELS, ThreadCpuTime, synthetic_mnist};
use picodense_core::Scratch;
use picodense_core::gemm::{Epilogue, Kernel, MatRef, Parallel, Serial, gemm_parallel};
use picodense_support::Noise;

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

struct Shape {
    name: &'static str,
    m: usize,
    k: usize,
    n: usize,
    layout: Layout,
    /// A holds MNIST-like pixels (only for k or m = 784).
    mnist: bool,
    naive: bool,
}

const SHAPES: [Shape; 7] = [
    shape("fwd_128x784x512", 128, 784, 512, Layout::Nn, false, true),
    shape(
        "fwd-mnist_128x784x512",
        128,
        784,
        512,
        Layout::Nn,
        true,
        false,
    ),
    shape("wgrad_784x128x512", 784, 128, 512, Layout::Tn, false, true),
    shape(
        "wgrad-mnist_784x128x512",
        784,
        128,
        512,
        Layout::Tn,
        true,
        false,
    ),
    shape("out_128x512x10", 128, 512, 10, Layout::Nn, false, true),
    shape("back_128x10x512", 128, 10, 512, Layout::Nt, false, true),
    shape(
        "square_1024x1024x1024",
        1024,
        1024,
        1024,
        Layout::Nn,
        false,
        false,
    ),
];

const fn shape(
    name: &'static str,
    m: usize,
    k: usize,
    n: usize,
    layout: Layout,
    mnist: bool,
    naive: bool,
) -> Shape {
    Shape {
        name,
        m,
        k,
        n,
        layout,
        mnist,
        naive,
    }
}

/// `len` values uniform in `[-1, 1)`.
fn uniform(len: usize, seed: u64) -> Vec<f32> {
    Noise::new(seed).floats(len, -1.0, 1.0)
}

/// A's data as stored: uniform values, or MNIST-like pixels / 255 (one image per row of X).
fn a_data(s: &Shape) -> Vec<f32> {
    if !s.mnist {
        return uniform(s.m * s.k, 1);
    }
    let images = s.m.min(s.k).max(s.m * s.k / PIXELS);
    let (pixels, _) = synthetic_mnist(images, 3);
    // X is images x 784 row-major in both layouts (Xᵀ is a view of it).
    pixels.iter().map(|&p| f32::from(p) / 255.0).collect()
}

/// One shape: on this thread (`jobs == 1`: naive, portable, AVX2, AVX-512, matrixmultiply) or
/// AVX2 and AVX-512 split over two threads.
fn bench_shape<M: Measurement>(c: &mut Criterion<M>, s: &Shape, jobs: usize) {
    let a_store = a_data(s);
    let b_store = uniform(s.k * s.n, 2);
    let a = match s.layout {
        Layout::Tn => MatRef::row_major(&a_store, s.k, s.m).t(),
        Layout::Nn | Layout::Nt => MatRef::row_major(&a_store, s.m, s.k),
    };
    let b = match s.layout {
        Layout::Nt => MatRef::row_major(&b_store, s.n, s.k).t(),
        Layout::Nn | Layout::Tn => MatRef::row_major(&b_store, s.k, s.n),
    };
    let mut out = vec![0.0f32; s.m * s.n];
    let mut scratches = zeroed_slice::<Scratch>(jobs);

    let name = if jobs == 1 { "gemm" } else { "gemm_2threads" };
    let mut group = c.benchmark_group(format!("{name}/{}", s.name));
    group.throughput(Throughput::Elements(2 * (s.m * s.k * s.n) as u64));
    let big = s.m * s.k * s.n > 100_000_000;
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
    if s.naive {
        kernels.insert(0, ("naive", Kernel::NAIVE));
    }
    kernels.extend(avx2().map(|k| ("avx2", k)));
    kernels.extend(avx512().map(|k| ("avx512", k)));
    for (id, kernel) in kernels {
        group.bench_function(id, |bench| {
            bench.iter(|| product(&Serial, kernel, a, b, &mut out, &mut scratches))
        });
    }
    let (rsa, csa) = strides(s.layout, true, s.m, s.k);
    let (rsb, csb) = strides(s.layout, false, s.k, s.n);
    group.bench_function("matrixmultiply", |bench| {
        bench.iter(|| {
            // SAFETY: the pointers and strides describe the live buffers above: A is m x k,
            // B is k x n, C is m x n row-major.
            unsafe {
                matrixmultiply::sgemm(
                    s.m,
                    s.k,
                    s.n,
                    1.0,
                    a_store.as_ptr(),
                    rsa,
                    csa,
                    b_store.as_ptr(),
                    rsb,
                    csb,
                    0.0,
                    out.as_mut_ptr(),
                    s.n as isize,
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

/// The AVX2 kernel, if this CPU runs it.
fn avx2() -> Option<Kernel> {
    select_kernel(KernelChoice::Avx2).ok()
}

/// The AVX-512 kernel, if this CPU runs it.
fn avx512() -> Option<Kernel> {
    select_kernel(KernelChoice::Avx512).ok()
}

fn one_thread(c: &mut Criterion<ThreadCpuTime>) {
    for s in &SHAPES {
        bench_shape(c, s, 1);
    }
}

fn two_threads(c: &mut Criterion) {
    for s in &SHAPES {
        bench_shape(c, s, 2);
    }
}

criterion_group! {
    name = single;
    // No plots: they need system fonts, and the figures are what matters here.
    config = Criterion::default().without_plots().with_measurement(ThreadCpuTime);
    targets = one_thread
}
criterion_group! {
    name = threads;
    config = Criterion::default().without_plots();
    targets = two_threads
}
criterion_main!(single, threads);
