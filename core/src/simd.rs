//! Element-wise kernels (the optimizer updates), with an AVX2 copy picked by [`Kernel`].
//!
//! In a `no_std` crate on stable Rust the only square root is `libm::sqrtf`, which LLVM cannot
//! vectorise; the x86-64 variants use packed square-root instructions instead. Square root,
//! division and the separate multiplies and adds are all correctly rounded, so every variant
//! gives the same bits.

use crate::kernels::{Kernel, Parallel};

/// RMSprop hyper-parameters as the update uses them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RmsHyper {
    pub learning_rate: f32,
    pub rho: f32,
    pub one_minus_rho: f32,
    pub epsilon: f32,
}

/// Tensors shorter than this are updated by the calling thread alone.
const SPLIT_MIN: usize = 1 << 15;
/// Most pieces a tensor is split into.
const MAX_PARTS: usize = 16;

/// `v = rho*v + (1-rho)*g^2; w -= lr * g / sqrt(v + eps)` over whole tensors, split between the
/// jobs of `par` (`parts` of them) when a tensor is large.
pub(crate) fn rmsprop<P: Parallel>(
    kernel: Kernel,
    par: &P,
    parts: usize,
    w: &mut [f32],
    g: &[f32],
    v: &mut [f32],
    h: RmsHyper,
) {
    assert!(
        w.len() == g.len() && w.len() == v.len(),
        "tensor lengths differ"
    );
    if parts <= 1 || w.len() < SPLIT_MIN {
        return rmsprop_slice(kernel, w, g, v, h);
    }
    // Pieces are claimed by whichever thread is free: with four a job, a thread that the OS
    // holds up leaves its share to the others.
    let chunk = w.len().div_ceil((4 * parts).min(MAX_PARTS));
    let mut pieces: heapless::Vec<(&mut [f32], &[f32], &mut [f32]), MAX_PARTS> =
        heapless::Vec::new();
    for ((w, g), v) in w
        .chunks_mut(chunk)
        .zip(g.chunks(chunk))
        .zip(v.chunks_mut(chunk))
    {
        // At most MAX_PARTS chunks, so this never fails.
        let _ = pieces.push((w, g, v));
    }
    par.run(&mut pieces, &|_, (w, g, v)| {
        rmsprop_slice(kernel, w, g, v, h)
    });
}

fn rmsprop_slice(kernel: Kernel, w: &mut [f32], g: &[f32], v: &mut [f32], h: RmsHyper) {
    #[cfg(target_arch = "x86_64")]
    if kernel == AVX2 {
        // SAFETY: an AVX2 kernel exists only when its creator vouched for the CPU.
        return unsafe { x86::rmsprop_avx2(w, g, v, h) };
    }
    let _ = kernel;
    rmsprop_scalar(w, g, v, h);
}

#[cfg(target_arch = "x86_64")]
// SAFETY: this value is only compared with, never used to run code.
const AVX2: Kernel = unsafe { Kernel::avx2_unchecked() };

#[inline(always)]
fn rmsprop_scalar(w: &mut [f32], g: &[f32], v: &mut [f32], h: RmsHyper) {
    for ((w, &g), v) in w.iter_mut().zip(g).zip(v.iter_mut()) {
        *v = h.rho * *v + h.one_minus_rho * (g * g);
        *w -= h.learning_rate * g / libm::sqrtf(*v + h.epsilon);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{RmsHyper, rmsprop_scalar};
    use core::arch::x86_64::*;

    /// Eight lanes at a time; the same operations, in the same order, as the scalar loop.
    #[target_feature(enable = "avx2")]
    pub(super) fn rmsprop_avx2(w: &mut [f32], g: &[f32], v: &mut [f32], h: RmsHyper) {
        let lr = _mm256_set1_ps(h.learning_rate);
        let rho = _mm256_set1_ps(h.rho);
        let one_minus_rho = _mm256_set1_ps(h.one_minus_rho);
        let eps = _mm256_set1_ps(h.epsilon);
        let (w8, w_tail) = w.as_chunks_mut::<8>();
        let (g8, g_tail) = g.as_chunks::<8>();
        let (v8, v_tail) = v.as_chunks_mut::<8>();
        for ((w, g), v) in w8.iter_mut().zip(g8).zip(v8.iter_mut()) {
            // SAFETY: each pointer addresses a whole [f32; 8]; unaligned loads and stores.
            unsafe {
                let gv = _mm256_loadu_ps(g.as_ptr());
                let g_bits = _mm256_castps_si256(gv);
                if _mm256_testz_si256(g_bits, g_bits) != 0 {
                    // Eight +0.0 gradients (pixels blank in the whole batch): the formula
                    // gives v = rho*v + 0 and w - 0, the same bits without the root and the
                    // division.
                    let vv = _mm256_mul_ps(rho, _mm256_loadu_ps(v.as_ptr()));
                    _mm256_storeu_ps(v.as_mut_ptr(), _mm256_add_ps(vv, _mm256_setzero_ps()));
                    continue;
                }
                let vv = _mm256_add_ps(
                    _mm256_mul_ps(rho, _mm256_loadu_ps(v.as_ptr())),
                    _mm256_mul_ps(one_minus_rho, _mm256_mul_ps(gv, gv)),
                );
                _mm256_storeu_ps(v.as_mut_ptr(), vv);
                let step = _mm256_div_ps(
                    _mm256_mul_ps(lr, gv),
                    _mm256_sqrt_ps(_mm256_add_ps(vv, eps)),
                );
                let wv = _mm256_sub_ps(_mm256_loadu_ps(w.as_ptr()), step);
                _mm256_storeu_ps(w.as_mut_ptr(), wv);
            }
        }
        rmsprop_scalar(w_tail, g_tail, v_tail, h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::Serial;
    use std::vec::Vec;

    #[test]
    fn every_variant_and_split_gives_the_same_bits() {
        let n = 100_003;
        // Runs of +0.0 (blank pixels) and of -0.0, long enough to cover whole vectors.
        let g: Vec<f32> = (0..n)
            .map(|i| match (i / 16) % 7 {
                0 => 0.0,
                1 => -0.0,
                _ => ((i * 7919 % 1000) as f32 - 500.0) * 1e-3,
            })
            .collect();
        let h = RmsHyper {
            learning_rate: 1e-3,
            rho: 0.9,
            one_minus_rho: 0.1,
            epsilon: 1e-7,
        };
        let run = |kernel: Kernel, parts: usize| {
            // Some weights are -0.0, which `w - (+0.0)` keeps and `w - (-0.0)` does not.
            let mut w: Vec<f32> = (0..n)
                .map(|i| {
                    if i % 5 == 0 {
                        -0.0
                    } else {
                        (i % 97) as f32 * 0.01
                    }
                })
                .collect();
            let mut v: Vec<f32> = (0..n).map(|i| (i % 13) as f32 * 1e-4).collect();
            rmsprop(kernel, &Serial, parts, &mut w, &g, &mut v, h);
            (w, v)
        };
        let reference = run(Kernel::PORTABLE, 1);
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
        let mut kernels = std::vec![Kernel::PORTABLE];
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            kernels.push(AVX2);
        }
        for kernel in kernels {
            for parts in [1, 2, 3, 16, 40] {
                let (w, v) = run(kernel, parts);
                let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert!(bits(&w) == bits(&reference.0), "{kernel:?} x{parts}");
                assert!(bits(&v) == bits(&reference.1), "{kernel:?} x{parts}");
            }
        }
    }
}
