//! Element-wise kernels (the optimizer updates), with AVX2 and AVX-512 copies picked by
//! [`Kernel`].
//!
//! In a `no_std` crate on stable Rust the only square root is `libm::sqrtf`, which LLVM cannot
//! vectorise; the x86-64 variants use packed square-root instructions instead. Square root,
//! division and the separate multiplies and adds are all correctly rounded, so every variant
//! gives the same bits.

use core::marker::PhantomData;

#[cfg(target_arch = "x86_64")]
use crate::gemm::Isa;
use crate::gemm::pairs::OnRows;
use crate::gemm::{Kernel, Parallel, panel_index};
use core::ops::Range;

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
const MAX_PARTS: usize = 32;

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
    let chunk = piece_len(w.len(), parts);
    if chunk >= w.len() {
        return rmsprop_slice(kernel, w, g, v, h);
    }
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

/// Elements in each piece of an update of `len` split between `parts` jobs: all of them when
/// the tensor is small. Pieces are claimed by whichever thread is free: with sixteen a job
/// the threads finish within a short piece of each other, and a thread that the OS holds up
/// leaves its share to the others. Whole vectors (of 16, the widest), so that a piece's
/// vectors also fall on whole vectors of a matrix in panels.
fn piece_len(len: usize, parts: usize) -> usize {
    if parts <= 1 || len < SPLIT_MIN {
        len.max(1)
    } else {
        len.div_ceil((16 * parts).min(MAX_PARTS))
            .next_multiple_of(16)
    }
}

fn rmsprop_slice(kernel: Kernel, w: &mut [f32], g: &[f32], v: &mut [f32], h: RmsHyper) {
    match kernel.isa() {
        // SAFETY: an AVX2 kernel exists only when its creator vouched for the CPU.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::rmsprop_avx2(w, g, v, h) },
        // SAFETY: an AVX-512 kernel exists only when its creator vouched for the CPU.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::rmsprop_avx512(w, g, v, h) },
        _ => rmsprop_scalar(w, g, v, h),
    }
}

/// A weight matrix held in panels (the layout of `MatRef::panels`): `rows x cols` values in
/// panels of `width` columns.
pub(crate) struct PanelMatrix<'a> {
    ptr: *mut f32,
    rows: usize,
    cols: usize,
    width: usize,
    _values: PhantomData<&'a mut [f32]>,
}

// SAFETY: the matrix is a `&mut [f32]` borrowed for `'a`, which may move to another thread.
unsafe impl Send for PanelMatrix<'_> {}
// SAFETY: the jobs of an update own disjoint ranges of the matrix's elements, and distinct
// elements have distinct places in the panels, so no two threads touch the same float.
unsafe impl Sync for PanelMatrix<'_> {}

impl<'a> PanelMatrix<'a> {
    /// # Panics
    /// If `values` cannot hold the panels.
    pub(crate) fn new(values: &'a mut [f32], rows: usize, cols: usize, width: usize) -> Self {
        assert!(width > 0 && values.len() >= cols.div_ceil(width) * rows * width);
        Self {
            ptr: values.as_mut_ptr(),
            rows,
            cols,
            width,
            _values: PhantomData,
        }
    }

    /// Where element `flat` of the matrix (in row-major order) lies.
    fn cursor(&self, flat: usize) -> Cursor {
        let (row, col) = (flat / self.cols, flat % self.cols);
        Cursor {
            at: panel_index(row, col, self.rows, self.width),
            row,
            col,
            in_panel: col % self.width,
        }
    }

    /// Moves `cursor` `n` elements on in row-major order, `n` dividing both the row length and
    /// the panel width (no division on the way: the update runs this for every vector).
    #[inline(always)]
    fn advance(&self, cursor: &mut Cursor, n: usize) {
        cursor.col += n;
        cursor.in_panel += n;
        cursor.at += n;
        if cursor.col == self.cols {
            cursor.row += 1;
            cursor.col = 0;
            cursor.in_panel = 0;
            cursor.at = cursor.row * self.width;
        } else if cursor.in_panel == self.width {
            // The same row of the next panel.
            cursor.in_panel = 0;
            cursor.at += (self.rows - 1) * self.width;
        }
    }
}

/// An element's place in a [`PanelMatrix`], with its row and column in the matrix.
#[derive(Clone, Copy)]
struct Cursor {
    at: usize,
    row: usize,
    col: usize,
    in_panel: usize,
}

/// [`rmsprop`] for a weight matrix held in panels, `g` and `v` row-major.
pub(crate) fn rmsprop_panels<P: Parallel>(
    kernel: Kernel,
    par: &P,
    parts: usize,
    w: &PanelMatrix,
    g: &[f32],
    v: &mut [f32],
    h: RmsHyper,
) {
    assert!(
        g.len() == w.rows * w.cols && g.len() == v.len(),
        "tensor lengths differ"
    );
    let chunk = piece_len(g.len(), parts);
    let mut pieces: heapless::Vec<(usize, &[f32], &mut [f32]), MAX_PARTS> = heapless::Vec::new();
    for (i, (g, v)) in g.chunks(chunk).zip(v.chunks_mut(chunk)).enumerate() {
        // At most MAX_PARTS chunks, so this never fails.
        let _ = pieces.push((i * chunk, g, v));
    }
    par.run(&mut pieces, &|_, (flat, g, v)| {
        // SAFETY: the piece's elements are its own.
        unsafe { rmsprop_panels_piece(kernel, w, *flat, g, v, h) }
    });
}

/// [`rmsprop_panels`] of the elements from `flat` on (in row-major order), `g.len()` of
/// them, on the calling thread.
///
/// # Safety
/// No other thread touches those elements of `w` meanwhile.
unsafe fn rmsprop_panels_piece(
    kernel: Kernel,
    w: &PanelMatrix,
    flat: usize,
    g: &[f32],
    v: &mut [f32],
    h: RmsHyper,
) {
    assert!(
        g.len() == v.len() && flat + g.len() <= w.rows * w.cols,
        "piece outside the matrix"
    );
    match kernel.isa() {
        // SAFETY: an AVX2 kernel exists only when its creator vouched for the CPU; the
        // elements are the caller's own.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::rmsprop_panels_avx2(w, flat, g, v, h) },
        // SAFETY: an AVX-512 kernel exists only when its creator vouched for the CPU; the
        // elements are the caller's own.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::rmsprop_panels_avx512(w, flat, g, v, h) },
        // SAFETY: the elements are the caller's own.
        _ => unsafe { rmsprop_panels_scalar(w, w.cursor(flat), g, v, h) },
    }
}

/// [`rmsprop_panels`] a block of rows at a time, by the jobs of the paired weight gradient as
/// they form the rows' gradient ([`OnRows`]).
pub(crate) struct RowsStep<'a> {
    kernel: Kernel,
    weights: PanelMatrix<'a>,
    velocity: *mut f32,
    hyper: RmsHyper,
    _velocity: PhantomData<&'a mut [f32]>,
}

// SAFETY: the velocities are a `&mut [f32]` borrowed for `'a`, and jobs reach only the rows
// `on_rows` hands them, which no other thread touches meanwhile (its contract).
unsafe impl Sync for RowsStep<'_> {}

impl<'a> RowsStep<'a> {
    /// # Panics
    /// If `velocity` is not one per weight.
    pub(crate) fn new(
        kernel: Kernel,
        weights: PanelMatrix<'a>,
        velocity: &'a mut [f32],
        hyper: RmsHyper,
    ) -> Self {
        assert_eq!(
            velocity.len(),
            weights.rows * weights.cols,
            "one velocity a weight"
        );
        Self {
            kernel,
            weights,
            velocity: velocity.as_mut_ptr(),
            hyper,
            _velocity: PhantomData,
        }
    }
}

impl OnRows for RowsStep<'_> {
    unsafe fn on_rows(&self, rows: Range<usize>, g: &[f32]) {
        let cols = self.weights.cols;
        assert!(rows.end <= self.weights.rows && g.len() == rows.len() * cols);
        let flat = rows.start * cols;
        // SAFETY: inside the velocities (checked above and in `new`), and the caller's alone
        // until the call returns (the trait's contract).
        let v = unsafe { core::slice::from_raw_parts_mut(self.velocity.add(flat), g.len()) };
        // SAFETY: the rows' weights are the caller's alone too.
        unsafe { rmsprop_panels_piece(self.kernel, &self.weights, flat, g, v, self.hyper) }
    }
}

/// # Safety
/// No other thread touches the elements from `cursor` on, `g.len()` of them.
#[inline(always)]
unsafe fn rmsprop_panels_scalar(
    w: &PanelMatrix,
    mut cursor: Cursor,
    g: &[f32],
    v: &mut [f32],
    h: RmsHyper,
) {
    for (&g, v) in g.iter().zip(v) {
        // SAFETY: inside the panels (`new` checked them) and the caller's own.
        let weight = unsafe { &mut *w.ptr.add(cursor.at) };
        rmsprop_one(weight, g, v, h);
        w.advance(&mut cursor, 1);
    }
}

#[inline(always)]
fn rmsprop_one(w: &mut f32, g: f32, v: &mut f32, h: RmsHyper) {
    *v = h.rho * *v + h.one_minus_rho * (g * g);
    *w -= h.learning_rate * g / libm::sqrtf(*v + h.epsilon);
}

#[inline(always)]
fn rmsprop_scalar(w: &mut [f32], g: &[f32], v: &mut [f32], h: RmsHyper) {
    for ((w, &g), v) in w.iter_mut().zip(g).zip(v.iter_mut()) {
        rmsprop_one(w, g, v, h);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{PanelMatrix, RmsHyper, rmsprop_panels_scalar, rmsprop_scalar};
    use core::arch::x86_64::*;

    /// A vector of floats and the operations the update runs on it: one generic update for
    /// AVX2's 8 lanes and AVX-512's 16.
    ///
    /// # Safety
    /// The methods run only inlined into functions compiled with the vector's features, and
    /// every pointer addresses a whole vector.
    trait Lanes: Copy {
        unsafe fn splat(v: f32) -> Self;
        unsafe fn load(p: *const f32) -> Self;
        unsafe fn store(self, p: *mut f32);
        /// Whether every lane is +0.0.
        unsafe fn is_positive_zero(self) -> bool;
        unsafe fn zero() -> Self;
        unsafe fn add(self, other: Self) -> Self;
        unsafe fn sub(self, other: Self) -> Self;
        unsafe fn mul(self, other: Self) -> Self;
        unsafe fn div(self, other: Self) -> Self;
        unsafe fn sqrt(self) -> Self;
        /// `rho * self`, rounded as the multiply rounds it, for `rho` in [0.5, 1) whose 24-bit
        /// significand is `significand`. Lanes below 2^-125 (bits under 2^24: the subnormal
        /// floats and the lowest normal binade, all multiples of 2^-149) are multiplied as
        /// integers: the multiplier hands a subnormal operand or product to microcode, many
        /// times slower, and the velocities of rarely inked pixels' weights decay through the
        /// subnormals while their gradients stay zero.
        unsafe fn decay(self, rho: Self, significand: u32) -> Self;
    }

    /// `rho * v` for the lanes of `$bits` below 2^24, `v = bits * 2^-149` and `rho =
    /// significand * 2^-24`: `significand * bits` (under 2^48, in 64-bit lanes: the even 32-bit
    /// lanes, then the odd ones) rounded to a multiple of 2^24, ties to even, is the product's
    /// bits (under 2^24 again: subnormal, or the lowest normal binade, which share the spacing
    /// 2^-149). Other lanes get meaningless bits.
    macro_rules! small_products {
        ($bits:expr, $significand:expr, $set1_epi64:ident, $mul_epu32:ident, $add_epi64:ident,
         $srli_epi64:ident, $slli_epi64:ident, $and:ident, $or:ident) => {{
            let bits = $bits;
            let r = $set1_epi64(i64::from($significand));
            let round = |p| {
                let odd = $and($srli_epi64::<24>(p), $set1_epi64(1));
                $srli_epi64::<24>($add_epi64(p, $add_epi64($set1_epi64((1 << 23) - 1), odd)))
            };
            let even = round($mul_epu32(bits, r));
            let odd = round($mul_epu32($srli_epi64::<32>(bits), r));
            $or(even, $slli_epi64::<32>(odd))
        }};
    }

    /// [`Lanes`] for one vector type, by its intrinsics.
    macro_rules! lanes {
        ($vector:ty, $set1:ident, $load:ident, $store:ident, $setzero:ident, $add:ident,
         $sub:ident, $mul:ident, $div:ident, $sqrt:ident, $decay:ident,
         |$bits:ident| $all_zero:expr) => {
            impl Lanes for $vector {
                #[inline(always)]
                unsafe fn splat(v: f32) -> Self {
                    // SAFETY: the caller runs with the vector's features (see `Lanes`).
                    unsafe { $set1(v) }
                }
                #[inline(always)]
                unsafe fn load(p: *const f32) -> Self {
                    // SAFETY: the caller runs with the vector's features, and `p` addresses a
                    // whole vector.
                    unsafe { $load(p) }
                }
                #[inline(always)]
                unsafe fn store(self, p: *mut f32) {
                    // SAFETY: the caller runs with the vector's features, and `p` addresses a whole
                    // vector.
                    unsafe { $store(p, self) }
                }
                #[inline(always)]
                unsafe fn is_positive_zero(self) -> bool {
                    let $bits = self;
                    // SAFETY: the caller runs with the vector's features (see `Lanes`).
                    unsafe { $all_zero }
                }
                #[inline(always)]
                unsafe fn zero() -> Self {
                    // SAFETY: the caller runs with the vector's features (see `Lanes`).
                    unsafe { $setzero() }
                }
                #[inline(always)]
                unsafe fn add(self, other: Self) -> Self {
                    // SAFETY: the caller runs with the vector's features (see `Lanes`).
                    unsafe { $add(self, other) }
                }
                #[inline(always)]
                unsafe fn sub(self, other: Self) -> Self {
                    // SAFETY: the caller runs with the vector's features (see `Lanes`).
                    unsafe { $sub(self, other) }
                }
                #[inline(always)]
                unsafe fn mul(self, other: Self) -> Self {
                    // SAFETY: the caller runs with the vector's features (see `Lanes`).
                    unsafe { $mul(self, other) }
                }
                #[inline(always)]
                unsafe fn div(self, other: Self) -> Self {
                    // SAFETY: the caller runs with the vector's features (see `Lanes`).
                    unsafe { $div(self, other) }
                }
                #[inline(always)]
                unsafe fn sqrt(self) -> Self {
                    // SAFETY: the caller runs with the vector's features (see `Lanes`).
                    unsafe { $sqrt(self) }
                }
                #[inline(always)]
                unsafe fn decay(self, rho: Self, significand: u32) -> Self {
                    // SAFETY: the caller runs with the vector's features (see `Lanes`).
                    unsafe { $decay(self, rho, significand) }
                }
            }
        };
    }

    lanes!(
        __m256,
        _mm256_set1_ps,
        _mm256_loadu_ps,
        _mm256_storeu_ps,
        _mm256_setzero_ps,
        _mm256_add_ps,
        _mm256_sub_ps,
        _mm256_mul_ps,
        _mm256_div_ps,
        _mm256_sqrt_ps,
        decay_avx2,
        |g| {
            let g = _mm256_castps_si256(g);
            _mm256_testz_si256(g, g) != 0
        }
    );
    lanes!(
        __m512,
        _mm512_set1_ps,
        _mm512_loadu_ps,
        _mm512_storeu_ps,
        _mm512_setzero_ps,
        _mm512_add_ps,
        _mm512_sub_ps,
        _mm512_mul_ps,
        _mm512_div_ps,
        _mm512_sqrt_ps,
        decay_avx512,
        |g| {
            let g = _mm512_castps_si512(g);
            _mm512_test_epi32_mask(g, g) == 0
        }
    );

    /// [`Lanes::decay`] on 8 lanes.
    #[inline(always)]
    unsafe fn decay_avx2(v: __m256, rho: __m256, significand: u32) -> __m256 {
        // SAFETY: the caller runs with AVX2 (see `Lanes`).
        unsafe {
            let bits = _mm256_castps_si256(v);
            // The small lanes raised to 2^-125 for the multiply, whose products there are not
            // kept: a blend of floats would let LLVM multiply first and blend after.
            let raised = _mm256_max_epu32(bits, _mm256_set1_epi32(1 << 24));
            let kept = _mm256_cmpeq_epi32(raised, bits);
            let every = _mm256_set1_epi32(-1);
            // No lane raised: the common case.
            if _mm256_testc_si256(kept, every) != 0 {
                return _mm256_mul_ps(rho, v);
            }
            // The lanes the maximum raised: bits < 2^24, unsigned.
            let small = _mm256_castsi256_ps(_mm256_xor_si256(kept, every));
            let product = _mm256_mul_ps(rho, _mm256_castsi256_ps(raised));
            let exact = small_products!(
                bits,
                significand,
                _mm256_set1_epi64x,
                _mm256_mul_epu32,
                _mm256_add_epi64,
                _mm256_srli_epi64,
                _mm256_slli_epi64,
                _mm256_and_si256,
                _mm256_or_si256
            );
            _mm256_blendv_ps(product, _mm256_castsi256_ps(exact), small)
        }
    }

    /// [`Lanes::decay`] on 16 lanes.
    #[inline(always)]
    unsafe fn decay_avx512(v: __m512, rho: __m512, significand: u32) -> __m512 {
        // SAFETY: the caller runs with AVX-512 F (see `Lanes`).
        unsafe {
            let bits = _mm512_castps_si512(v);
            // 2^-125's bits.
            let limit = _mm512_set1_epi32(1 << 24);
            let small = _mm512_cmplt_epu32_mask(bits, limit);
            if small == 0 {
                return _mm512_mul_ps(rho, v);
            }
            // The small lanes raised to 2^-125 for the multiply, as on 8 lanes.
            let product = _mm512_mul_ps(rho, _mm512_castsi512_ps(_mm512_max_epu32(bits, limit)));
            let exact = small_products!(
                bits,
                significand,
                _mm512_set1_epi64,
                _mm512_mul_epu32,
                _mm512_add_epi64,
                _mm512_srli_epi64,
                _mm512_slli_epi64,
                _mm512_and_si512,
                _mm512_or_si512
            );
            _mm512_mask_blend_ps(small, product, _mm512_castsi512_ps(exact))
        }
    }

    /// The update's constants, broadcast.
    struct Consts<V> {
        lr: V,
        rho: V,
        one_minus_rho: V,
        eps: V,
        /// Rho's 24-bit significand when rho lies in [0.5, 1) ([`Lanes::decay`]), else 0.
        rho_significand: u32,
    }

    impl<V: Lanes> Consts<V> {
        /// # Safety
        /// As for [`Lanes`].
        #[inline(always)]
        unsafe fn new(h: RmsHyper) -> Self {
            // SAFETY: the caller's promise.
            unsafe {
                Self {
                    lr: V::splat(h.learning_rate),
                    rho: V::splat(h.rho),
                    one_minus_rho: V::splat(h.one_minus_rho),
                    eps: V::splat(h.epsilon),
                    // Rho in [0.5, 1): sign 0, biased exponent 126.
                    rho_significand: match h.rho.to_bits() {
                        bits if bits >> 23 == 126 => bits & 0x7f_ffff | 1 << 23,
                        _ => 0,
                    },
                }
            }
        }

        /// `rho * v`, as the multiply rounds it.
        ///
        /// # Safety
        /// As for [`Lanes`].
        #[inline(always)]
        unsafe fn decay(&self, v: V) -> V {
            // SAFETY: the caller's promise.
            unsafe {
                match self.rho_significand {
                    0 => self.rho.mul(v),
                    significand => v.decay(self.rho, significand),
                }
            }
        }
    }

    /// A vector of weights at `w`, their gradients and velocities: the operations of the
    /// scalar loop, in its order.
    ///
    /// # Safety
    /// As for [`Lanes`]: each pointer addresses a whole vector.
    #[inline(always)]
    unsafe fn update<V: Lanes>(w: *mut f32, g: *const f32, v: *mut f32, c: &Consts<V>) {
        // SAFETY: the caller runs with `V`'s features, and `w`, `g` and `v` each address a
        // whole vector (the caller's promise).
        unsafe {
            let gv = V::load(g);
            if gv.is_positive_zero() {
                // +0.0 gradients only (pixels blank in the whole batch): the formula gives
                // v = rho*v + 0 and w - 0, the same bits without the root and the division.
                let vv = c.decay(V::load(v));
                vv.add(V::zero()).store(v);
                return;
            }
            let vv = c.decay(V::load(v)).add(c.one_minus_rho.mul(gv.mul(gv)));
            vv.store(v);
            let step = c.lr.mul(gv).div(vv.add(c.eps).sqrt());
            V::load(w).sub(step).store(w);
        }
    }

    /// [`super::rmsprop`]'s slices `N` lanes at a time; the same operations, in the same
    /// order, as the scalar loop.
    ///
    /// # Safety
    /// As for [`Lanes`], with `N` its lanes.
    #[inline(always)]
    unsafe fn rmsprop_lanes<V: Lanes, const N: usize>(
        w: &mut [f32],
        g: &[f32],
        v: &mut [f32],
        h: RmsHyper,
    ) {
        const { assert!(size_of::<V>() == N * size_of::<f32>()) };
        // SAFETY: the caller's promise.
        let consts = unsafe { Consts::<V>::new(h) };
        let (wn, w_tail) = w.as_chunks_mut::<N>();
        let (gn, g_tail) = g.as_chunks::<N>();
        let (vn, v_tail) = v.as_chunks_mut::<N>();
        for ((w, g), v) in wn.iter_mut().zip(gn).zip(vn.iter_mut()) {
            // SAFETY: each pointer addresses a whole vector of N floats.
            unsafe { update(w.as_mut_ptr(), g.as_ptr(), v.as_mut_ptr(), &consts) };
        }
        rmsprop_scalar(w_tail, g_tail, v_tail, h);
    }

    /// [`super::rmsprop_panels`]'s piece from element `flat`, `N` lanes at a time when its
    /// vectors fall on whole vectors of the panels.
    ///
    /// # Safety
    /// As for [`Lanes`], with `N` its lanes; no other thread touches the piece's elements.
    #[inline(always)]
    unsafe fn rmsprop_panels_lanes<V: Lanes, const N: usize>(
        w: &PanelMatrix,
        flat: usize,
        g: &[f32],
        v: &mut [f32],
        h: RmsHyper,
    ) {
        const { assert!(size_of::<V>() == N * size_of::<f32>()) };
        let mut cursor = w.cursor(flat);
        if !(w.cols | w.width | flat).is_multiple_of(N) {
            // SAFETY: the caller's promise.
            return unsafe { rmsprop_panels_scalar(w, cursor, g, v, h) };
        }
        // SAFETY: the caller's promise.
        let consts = unsafe { Consts::<V>::new(h) };
        let (gn, g_tail) = g.as_chunks::<N>();
        let (vn, v_tail) = v.as_chunks_mut::<N>();
        for (g, v) in gn.iter().zip(vn.iter_mut()) {
            // SAFETY: N floats of one panel row (whole vectors, checked above), the piece's.
            unsafe { update(w.ptr.add(cursor.at), g.as_ptr(), v.as_mut_ptr(), &consts) };
            w.advance(&mut cursor, N);
        }
        // SAFETY: the caller's promise.
        unsafe { rmsprop_panels_scalar(w, cursor, g_tail, v_tail, h) }
    }

    /// Eight lanes at a time.
    #[target_feature(enable = "avx2")]
    pub(super) fn rmsprop_avx2(w: &mut [f32], g: &[f32], v: &mut [f32], h: RmsHyper) {
        // SAFETY: compiled with AVX2, 8 lanes.
        unsafe { rmsprop_lanes::<__m256, 8>(w, g, v, h) }
    }

    /// Sixteen lanes at a time.
    #[target_feature(enable = "avx512f")]
    pub(super) fn rmsprop_avx512(w: &mut [f32], g: &[f32], v: &mut [f32], h: RmsHyper) {
        // SAFETY: compiled with AVX-512 F, 16 lanes.
        unsafe { rmsprop_lanes::<__m512, 16>(w, g, v, h) }
    }

    /// [`super::rmsprop_panels`]'s piece, eight lanes at a time.
    ///
    /// # Safety
    /// No other thread touches the piece's elements.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn rmsprop_panels_avx2(
        w: &PanelMatrix,
        flat: usize,
        g: &[f32],
        v: &mut [f32],
        h: RmsHyper,
    ) {
        // SAFETY: compiled with AVX2, 8 lanes; the caller's promise.
        unsafe { rmsprop_panels_lanes::<__m256, 8>(w, flat, g, v, h) }
    }

    /// [`super::rmsprop_panels`]'s piece, sixteen lanes at a time.
    ///
    /// # Safety
    /// No other thread touches the piece's elements.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn rmsprop_panels_avx512(
        w: &PanelMatrix,
        flat: usize,
        g: &[f32],
        v: &mut [f32],
        h: RmsHyper,
    ) {
        // SAFETY: compiled with AVX-512 F, 16 lanes; the caller's promise.
        unsafe { rmsprop_panels_lanes::<__m512, 16>(w, flat, g, v, h) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::Serial;
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
        for kernel in crate::every_kernel() {
            for parts in [1, 2, 3, 16, 40] {
                let (w, v) = run(kernel, parts);
                let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert!(bits(&w) == bits(&reference.0), "{kernel:?} x{parts}");
                assert!(bits(&v) == bits(&reference.1), "{kernel:?} x{parts}");
            }
        }
    }

    /// Velocities below 2^-125, which the vector updates decay with integer arithmetic: every
    /// one of them (for Keras's rho; every 7th for other rhos in [0.5, 1), and rhos outside
    /// it), with zero gradients (the whole-vector shortcut and single lanes) and nonzero ones,
    /// gets the portable update's bits.
    #[test]
    fn small_velocities_get_the_same_bits() {
        let rhos: [(f32, usize); 5] = [
            (0.9, 1),
            (0.5, 7),
            (0.99, 7),
            (f32::from_bits(1.0f32.to_bits() - 1), 7),
            (0.3, 7),
        ];
        for (rho, stride) in rhos {
            let h = RmsHyper {
                learning_rate: 1e-3,
                rho,
                one_minus_rho: (1.0 - f64::from(rho)) as f32,
                epsilon: 1e-7,
            };
            let small: Vec<u32> = (0..1u32 << 24).step_by(stride).collect();
            for chunk in small.chunks(1 << 20) {
                let v0: Vec<f32> = chunk.iter().map(|&b| f32::from_bits(b)).collect();
                let g: Vec<f32> = (0..chunk.len())
                    .map(|i| match (i / 16) % 4 {
                        0 => 0.0,
                        1 if i % 3 == 0 => 0.0,
                        2 => ((i % 1000) as f32 - 500.0) * 1e-22,
                        _ => ((i % 1000) as f32 - 500.0) * 1e-4,
                    })
                    .collect();
                let w0: Vec<f32> = (0..chunk.len()).map(|i| (i % 97) as f32 * 0.01).collect();
                let run = |kernel: Kernel| {
                    let (mut w, mut v) = (w0.clone(), v0.clone());
                    rmsprop(kernel, &Serial, 1, &mut w, &g, &mut v, h);
                    (w, v)
                };
                let (want_w, want_v) = run(Kernel::PORTABLE);
                for kernel in crate::every_kernel() {
                    let (w, v) = run(kernel);
                    for i in 0..chunk.len() {
                        let case = (kernel, rho, chunk[i]);
                        assert_eq!(v[i].to_bits(), want_v[i].to_bits(), "{case:?}");
                        assert_eq!(w[i].to_bits(), want_w[i].to_bits(), "{case:?}");
                    }
                }
            }
        }
    }

    /// A matrix in panels gets the bits of the same matrix row-major, for panel widths and
    /// rows made of whole vectors or not.
    #[test]
    fn panels_get_the_same_bits() {
        let h = RmsHyper {
            learning_rate: 1e-3,
            rho: 0.9,
            one_minus_rho: 0.1,
            epsilon: 1e-7,
        };
        let kernels = crate::every_kernel();
        for (rows, cols, width) in [
            (392, 256, 32),
            (200, 512, 64),
            (331, 302, 32),
            (97, 1031, 7),
            (4, 25_000, 8),
        ] {
            let n = rows * cols;
            // Runs of zero gradients, as for blank pixels.
            let g: Vec<f32> = (0..n)
                .map(|i| match (i / 16) % 5 {
                    0 => 0.0,
                    _ => ((i * 7919 % 1000) as f32 - 500.0) * 1e-3,
                })
                .collect();
            let w0: Vec<f32> = (0..n).map(|i| (i % 97) as f32 * 0.01 - 0.3).collect();
            let v0: Vec<f32> = (0..n).map(|i| (i % 13) as f32 * 1e-4).collect();
            let (mut want_w, mut want_v) = (w0.clone(), v0.clone());
            rmsprop(
                Kernel::PORTABLE,
                &Serial,
                1,
                &mut want_w,
                &g,
                &mut want_v,
                h,
            );
            let place = |flat: usize| panel_index(flat / cols, flat % cols, rows, width);
            for &kernel in &kernels {
                for parts in [1, 2, 3, 16] {
                    let mut panels = std::vec![f32::NAN; cols.div_ceil(width) * rows * width];
                    for (flat, &value) in w0.iter().enumerate() {
                        panels[place(flat)] = value;
                    }
                    let mut v = v0.clone();
                    let copy = PanelMatrix::new(&mut panels, rows, cols, width);
                    rmsprop_panels(kernel, &Serial, parts, &copy, &g, &mut v, h);
                    let case = (rows, cols, width, kernel, parts);
                    for flat in 0..n {
                        let got = panels[place(flat)];
                        assert_eq!(got.to_bits(), want_w[flat].to_bits(), "{case:?} {flat}");
                        assert_eq!(v[flat].to_bits(), want_v[flat].to_bits(), "{case:?} {flat}");
                    }
                }
            }
        }
    }
}
