//! The forward product of training (128x784 by 784x512) on one thread: the kernel picodense
//! picks on this CPU (B row-major, and B already in its panels as training keeps W1),
//! `matrixmultiply::sgemm` and, given a library, OpenBLAS's `cblas_sgemm` in turn, many short
//! rounds each, timed in the thread's CPU time. Rounds in turn see the same machine: on a
//! shared one the ratio of each pair of rounds holds better than figures taken minutes apart.
//!
//! `cargo run --release -p picodense-benches --example gemm_rounds -- [dense|mnist] [ROUNDS]
//! [--openblas LIBRARY]`
//!
//! `LIBRARY` is an OpenBLAS shared library, loaded at run time on one thread: the system's
//! (`/usr/lib/x86_64-linux-gnu/libopenblas.so.0`) or the one numpy ships
//! (`numpy.libs/libscipy_openblas64_*.so` in its site-packages).
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
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let openblas = match args.iter().position(|arg| arg == "--openblas") {
        None => None,
        Some(at) if at + 1 < args.len() => {
            let path = args.remove(at + 1);
            args.remove(at);
            Some(Openblas::load(&path).unwrap_or_else(|problem| usage(&problem)))
        }
        Some(_) => usage("--openblas needs a library"),
    };
    let mut args = args.into_iter();
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
    if let Some(openblas) = &openblas {
        // A library called wrongly could be fast at the wrong product.
        ours(b, &mut out);
        let expected = out.clone();
        openblas.sgemm(M, K, N, &a_store, &b_store, &mut out);
        let worst = expected
            .iter()
            .zip(&out)
            .map(|(e, o)| (e - o).abs())
            .fold(0.0, f32::max);
        if worst > 1e-3 {
            usage(&format!("OpenBLAS's product differs from ours by {worst}"));
        }
    }
    let (mut row_major, mut in_place, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
    let mut openblas_rounds = Vec::new();
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
        if let Some(openblas) = &openblas {
            openblas_rounds.push(gflops(&mut || {
                openblas.sgemm(M, K, N, &a_store, &b_store, &mut out);
                black_box(&out);
            }));
        }
    }
    let data = if mnist { "mnist" } else { "dense" };
    println!("fwd_{M}x{K}x{N} {data}, 1 thread, {rounds} rounds of {CALLS} products each way");
    let name = kernel.name();
    let mut references = vec![("matrixmultiply", theirs)];
    if openblas.is_some() {
        references.push(("OpenBLAS", openblas_rounds));
    }
    for (label, ours) in [
        (format!("picodense {name}, B row-major"), &row_major),
        (format!("picodense {name}, B in panels"), &in_place),
    ] {
        println!(
            "{label:<36} GFLOP/s median {:.1}",
            median(&mut ours.clone())
        );
        for (reference, theirs) in &references {
            let mut ratios: Vec<f64> = ours.iter().zip(theirs).map(|(o, t)| o / t).collect();
            println!(
                "{:<36} to {reference} {:.3} (quartiles {:.3}-{:.3})",
                "",
                median(&mut ratios),
                ratios[rounds / 4],
                ratios[rounds * 3 / 4]
            );
        }
    }
    for (reference, theirs) in &mut references {
        println!("{reference:<36} GFLOP/s median {:.1}", median(theirs));
    }
}

/// OpenBLAS's `cblas_sgemm`, from a shared library loaded at run time (so that the
/// benchmarks build where no OpenBLAS is installed), with 32-bit or (ILP64 builds, numpy's)
/// 64-bit sizes.
enum Openblas {
    Lp64(SgemmFn<i32>),
    Ilp64(SgemmFn<i64>),
}

type SgemmFn<I> = unsafe extern "C" fn(
    order: i32,
    trans_a: i32,
    trans_b: i32,
    m: I,
    n: I,
    k: I,
    alpha: f32,
    a: *const f32,
    lda: I,
    b: *const f32,
    ldb: I,
    beta: f32,
    c: *mut f32,
    ldc: I,
);

/// The names `cblas_sgemm` goes by: plain, numpy's LP64 and ILP64 builds.
const LP64_NAMES: [&str; 2] = ["cblas_sgemm", "scipy_cblas_sgemm"];
const ILP64_NAMES: [&str; 2] = ["cblas_sgemm64_", "scipy_cblas_sgemm64_"];

impl Openblas {
    fn load(path: &str) -> Result<Self, String> {
        use std::ffi::{CStr, CString, c_char, c_int, c_void};
        unsafe extern "C" {
            fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void;
            fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
            fn dlerror() -> *const c_char;
        }
        const RTLD_NOW: c_int = 2;
        // OpenBLAS reads its thread count when it loads; one thread computes in the caller,
        // whose CPU time the rounds measure.
        // SAFETY: no other thread runs yet.
        unsafe { std::env::set_var("OPENBLAS_NUM_THREADS", "1") };
        let c_path = CString::new(path).map_err(|_| format!("{path:?}: not a path"))?;
        // SAFETY: a NUL-terminated path; the library stays loaded for the process's life.
        let handle = unsafe { dlopen(c_path.as_ptr(), RTLD_NOW) };
        if handle.is_null() {
            // SAFETY: after a failed dlopen, dlerror returns a NUL-terminated message.
            let reason = unsafe { CStr::from_ptr(dlerror()) }.to_string_lossy();
            return Err(format!("cannot load {path}: {reason}"));
        }
        let find = |name: &str| {
            let name = CString::new(name).expect("symbol names have no NUL");
            // SAFETY: a live handle and a NUL-terminated name.
            let symbol = unsafe { dlsym(handle, name.as_ptr()) };
            (!symbol.is_null()).then_some(symbol)
        };
        let lp64 = LP64_NAMES.iter().find_map(|name| find(name)).map(|symbol| {
            // SAFETY: the symbol is OpenBLAS's cblas_sgemm with 32-bit sizes, whose C
            // signature `SgemmFn<i32>` spells out.
            Openblas::Lp64(unsafe { std::mem::transmute::<*mut c_void, SgemmFn<i32>>(symbol) })
        });
        let ilp64 = || {
            ILP64_NAMES
                .iter()
                .find_map(|name| find(name))
                .map(|symbol| {
                    // SAFETY: the symbol is OpenBLAS's cblas_sgemm with 64-bit sizes, whose C
                    // signature `SgemmFn<i64>` spells out.
                    Openblas::Ilp64(unsafe {
                        std::mem::transmute::<*mut c_void, SgemmFn<i64>>(symbol)
                    })
                })
        };
        lp64.or_else(ilp64)
            .ok_or_else(|| format!("{path}: no cblas_sgemm in it"))
    }

    /// C = A B, all row-major: A is `m x k`, B `k x n`, C `m x n`.
    fn sgemm(&self, m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
        assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
        const ROW_MAJOR: i32 = 101;
        const NO_TRANS: i32 = 111;
        let (a, b, c) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
        // SAFETY: the slices hold the matrices the sizes and leading dimensions describe.
        unsafe {
            match *self {
                Openblas::Lp64(sgemm) => {
                    let [m, k, n] = [m, k, n].map(|d| i32::try_from(d).expect("size fits i32"));
                    sgemm(
                        ROW_MAJOR, NO_TRANS, NO_TRANS, m, n, k, 1.0, a, k, b, n, 0.0, c, n,
                    )
                }
                Openblas::Ilp64(sgemm) => {
                    let [m, k, n] = [m, k, n].map(|d| i64::try_from(d).expect("size fits i64"));
                    sgemm(
                        ROW_MAJOR, NO_TRANS, NO_TRANS, m, n, k, 1.0, a, k, b, n, 0.0, c, n,
                    )
                }
            }
        }
    }
}

/// The median, sorting `values`.
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "gemm_rounds: {problem}\nusage: gemm_rounds [dense|mnist] [ROUNDS] [--openblas LIBRARY]"
    );
    std::process::exit(2);
}
