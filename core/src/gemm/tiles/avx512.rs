//! The tiles compiled for AVX-512: the same sums, in the same order, as AVX2's tiles, on
//! 512-bit vectors. Narrow products (n = 10) run one-vector tiles of 12 rows over AVX2's
//! 16-column panels of B.

use core::arch::x86_64::{
    __m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_storeu_ps,
};

wide_tiles! {
    nest_features: "avx512f,avx2,fma",
    narrow: (Wide<1>, AVX512_NARROW_MR, AVX2_NR),
    wide: (AVX512_WIDE_MR, AVX512_WIDE_NR, AVX512_WIDE_MIN),
    features: "avx512f",
    lanes: 16,
    vector: __m512,
    splat: _mm512_set1_ps,
    load: _mm512_loadu_ps,
    fmadd: _mm512_fmadd_ps,
    store: _mm512_storeu_ps,
    prefetch: true,
    lister: Avx512,
}
