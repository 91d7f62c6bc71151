//! The forward product of training (128x784 by 784x512) on one thread: the kernel picodense
//! picks on this CPU (B row-major, and B already in its panels as training keeps W1) and
//! `matrixmultiply::sgemm` in turn, many short rounds each, timed in the
//! thread's CPU time. Rounds in turn see the same machine: on a shared one the ratio of each
//! pair of rounds holds better than figures taken minutes apart.
//!
//! `cargo run --release -p picodense-benches --example gemm_rounds -- [dense|mnist] [ROUNDS]`
//!
//! `dense`: uniform values in [-1, 1), both crates compute every product. `mnist`: MNIST-like
//! pixels / 255 for X, whose zero steps picodense skips (an effective rate).

use std::hint::black_box;

use picodense::compute::zeroed_slice;
use picodense_benches::{PIXELS, in_panels, mnist_rows, thread_cpu_time, uniform};
use picodense_core::Scratch;
use picodense_core::gemm::{Epilogue, Kernel, MatRef, Serial, gemm_parallel};

const M: usize = 128;
const K: usize = 784;
const N: usize = 512;
/// Products per round: about 50 ms each.
const CALLS: usize = 60;

fn main() {
    let mut args = std::env::args().skip(1);
    let mnist = match args.next().as_deref() {
        None | Some("dense") => false,
        Some("mnist") => true,
        Some(other) => usage(&format!("unknown data {other:?}")),
    };
    let rounds: usize = match args.next() {
        None => 41,
        Some(n) => n
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .unwrap_or_else(|| usage(&format!("ROUNDS {n:?} is not a positive count"))),
    };
    let kernel = Kernel::detect();
    // The operands of the criterion benchmark's `fwd` and `fwd-mnist` shapes.
    let a_store = if mnist {
        mnist_rows(M * K / PIXELS)
    } else {
        uniform(M * K, 1)
    };
    let b_store = uniform(K * N, 2);
    let (a, b) = (
        MatRef::row_major(&a_store, M, K),
        MatRef::row_major(&b_store, K, N),
    );
    let mut out = vec![0.0f32; M * N];
    let mut scratch = zeroed_slice::<Scratch>(1);

    let gflops = |run: &mut dyn FnMut()| {
        let start = thread_cpu_time();
        for _ in 0..CALLS {
            run();
        }
        let seconds = (thread_cpu_time() - start).as_secs_f64();
        (2 * M * K * N * CALLS) as f64 / seconds / 1e9
    };
    let (panel_store, width) = in_panels(&b_store, K, N, kernel);
    let b_panels = MatRef::panels(&panel_store, K, N, width);
    let mut ours = |b: MatRef, out: &mut [f32]| {
        gemm_parallel(
            &Serial,
            kernel,
            black_box(a),
            black_box(b),
            out,
            Epilogue::Store,
            &mut scratch,
        );
        black_box(out);
    };
    let (mut row_major, mut in_place, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        row_major.push(gflops(&mut || ours(b, &mut out)));
        in_place.push(gflops(&mut || ours(b_panels, &mut out)));
        theirs.push(gflops(&mut || {
            // SAFETY: the pointers and strides describe the live row-major buffers above:
            // A is M x K, B is K x N, C is M x N.
            unsafe {
                matrixmultiply::sgemm(
                    M,
                    K,
                    N,
                    1.0,
                    a_store.as_ptr(),
                    K as isize,
                    1,
                    b_store.as_ptr(),
                    N as isize,
                    1,
                    0.0,
                    out.as_mut_ptr(),
                    N as isize,
                    1,
                )
            };
            black_box(&out);
        }));
    }
    let data = if mnist { "mnist" } else { "dense" };
    println!("fwd_{M}x{K}x{N} {data}, 1 thread, {rounds} rounds of {CALLS} products each way");
    let name = kernel.name();
    for (label, ours) in [
        (format!("picodense {name}, B row-major"), &row_major),
        (format!("picodense {name}, B in panels"), &in_place),
    ] {
        let mut ratios: Vec<f64> = ours.iter().zip(&theirs).map(|(o, t)| o / t).collect();
        println!(
            "{label:<36} GFLOP/s median {:.1}, to matrixmultiply {:.3} (quartiles {:.3}-{:.3})",
            median(&mut ours.clone()),
            median(&mut ratios),
            ratios[rounds / 4],
            ratios[rounds * 3 / 4]
        );
    }
    println!(
        "{:<36} GFLOP/s median {:.1}",
        "matrixmultiply",
        median(&mut theirs)
    );
}

/// The median, sorting `values`.
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn usage(problem: &str) -> ! {
    eprintln!("gemm_rounds: {problem}\nusage: gemm_rounds [dense|mnist] [ROUNDS]");
    std::process::exit(2);
}
