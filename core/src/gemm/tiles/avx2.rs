//! The tiles compiled for AVX2 + FMA: the narrow products on the generic loops with a fused
//! multiply-add, the wide ones (n = 512) on 3 x 32 tiles written with intrinsics.

use super::{Fused, MulAdd, dense_kernel, packed_kernel, sparse_kernel};
use core::arch::x86_64::{
    __m256, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_storeu_ps,
};

wide_tiles! {
    nest_features: "avx2,fma",
    narrow: (Fused, AVX2_MR, AVX2_NR),
    wide: (AVX2_WIDE_MR, AVX2_WIDE_NR, AVX2_WIDE_MIN),
    features: "avx2,fma",
    lanes: 8,
    vector: __m256,
    splat: _mm256_set1_ps,
    load: _mm256_loadu_ps,
    fmadd: _mm256_fmadd_ps,
    store: _mm256_storeu_ps,
    // No prefetching: it could not be measured on the AVX2-only CPUs these tiles are for.
    prefetch: false,
    lister: Baseline,
}

impl MulAdd for Fused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        use core::arch::x86_64::{_mm_cvtss_f32, _mm_fmadd_ss, _mm_set_ss};
        // SAFETY: `Fused` is only used by the AVX2 and AVX-512 loop nests and the tile
        // functions below, all compiled with `fma` enabled; LLVM turns this scalar FMA into
        // packed `vfmadd231ps` when it vectorises the tile loop.
        unsafe { _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(a), _mm_set_ss(b), _mm_set_ss(c))) }
    }
}

// `Fused` is only used by the AVX2 and AVX-512 loop nests, whose callers vouch for AVX2 and FMA
// (see `Kernel::avx2_unchecked` and `Kernel::avx512_unchecked`).
impl<const NR: usize> Tiles<NR> for Fused {
    #[inline(always)]
    fn dense<const R: usize>(acc: &Acc<R, NR>, a: &APanel<R>, b_panel: &[f32]) -> Acc<R, NR> {
        // SAFETY: only the AVX2 and AVX-512 loop nests run `Fused`, so the CPU has AVX2 and FMA.
        unsafe { fused_dense::<R, NR>(acc, a, b_panel) }
    }

    #[inline(always)]
    fn sparse<const R: usize>(
        acc: &Acc<R, NR>,
        a: &APanel<R>,
        steps: Listed,
        b_panel: &[f32],
    ) -> Acc<R, NR> {
        // SAFETY: only the AVX2 and AVX-512 loop nests run `Fused`, so the CPU has AVX2 and FMA.
        unsafe { fused_sparse::<R, NR>(acc, a, steps.steps, b_panel) }
    }

    #[inline(always)]
    fn packed<const R: usize>(
        acc: &Acc<R, NR>,
        a: &[[f32; PACKED_ROWS]],
        steps: Listed,
        b_panel: &[f32],
    ) -> Acc<R, NR> {
        // SAFETY: only the AVX2 and AVX-512 loop nests run `Fused`, so the CPU has AVX2 and FMA.
        unsafe { fused_packed::<R, NR>(acc, a, steps.steps, b_panel) }
    }
}

#[target_feature(enable = "avx2,fma")]
#[inline(never)]
fn fused_dense<const R: usize, const NR: usize>(
    acc: &Acc<R, NR>,
    a: &APanel<R>,
    b_panel: &[f32],
) -> Acc<R, NR> {
    dense_kernel::<Fused, R, NR>(acc, a, b_panel)
}

#[target_feature(enable = "avx2,fma")]
#[inline(never)]
fn fused_sparse<const R: usize, const NR: usize>(
    acc: &Acc<R, NR>,
    a: &APanel<R>,
    steps: &[u16],
    b_panel: &[f32],
) -> Acc<R, NR> {
    sparse_kernel::<Fused, R, NR>(acc, a, steps, b_panel)
}

#[target_feature(enable = "avx2,fma")]
#[inline(never)]
fn fused_packed<const R: usize, const NR: usize>(
    acc: &Acc<R, NR>,
    a: &[[f32; PACKED_ROWS]],
    steps: &[u16],
    b_panel: &[f32],
) -> Acc<R, NR> {
    packed_kernel::<Fused, R, NR>(acc, a, steps, b_panel)
}
