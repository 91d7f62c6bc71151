//! The register tiles: an `R x NR` block of C held in accumulators over one K block. The
//! portable tiles are the generic loops here, with a fused multiply-add in f64 arithmetic
//! ([`soft_fma`]); each instruction set's live in a module of its own.

use super::pack::APanel;
use super::params::PACKED_ROWS;
use super::steps::{Listed, Lister};

/// Wide tiles written with intrinsics, `V` vectors of `$lanes` floats across: one definition
/// for every instruction set whose wide tiles sum as [`dense_kernel`] does with [`Fused`] (each
/// element goes on from its earlier blocks' sum with one fused multiply-add per listed K step,
/// in order), so that they all give the same bits.
#[cfg(target_arch = "x86_64")]
macro_rules! wide_tiles {
    (
        nest_features: $nest_features:literal,
        narrow: ($narrow_tiles:ty, $narrow_mr:ident, $narrow_nr:ident),
        wide: ($wide_mr:ident, $wide_nr:ident, $wide_min:ident),
        features: $features:literal,
        lanes: $lanes:literal,
        vector: $vector:ty,
        splat: $splat:ident,
        load: $load:ident,
        fmadd: $fmadd:ident,
        store: $store:ident,
        prefetch: $prefetch:literal,
        lister: $lister:ident $(,)?
    ) => {
        use core::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        use $crate::gemm::Scratch;
        use $crate::gemm::blocked::{Share, blocked as nest};
        use $crate::gemm::pack::APanel;
        use $crate::gemm::params::{
            PACKED_ROWS, PREFETCH_STEPS, $narrow_mr, $narrow_nr, $wide_min, $wide_mr, $wide_nr,
        };
        use $crate::gemm::steps::{Listed, Lister};
        use $crate::gemm::tiles::{Acc, Tiles};

        /// Floats in a cache line.
        const LINE_FLOATS: usize = 16;

        /// The loop nest on this instruction set's tiles for one job's columns of C: the wide
        /// tiles for products wider than the narrow ones' reach, the narrow ones below.
        ///
        /// # Safety
        /// The CPU runs `$nest_features`.
        #[target_feature(enable = $nest_features)]
        pub(crate) fn blocked(share: Share, scratch: &mut Scratch) {
            // Decided by the product's width, never by the job's columns.
            if share.b.cols > $wide_min {
                nest::<Wide<{ $wide_nr / $lanes }>, $wide_mr, $wide_nr>(share, scratch)
            } else {
                nest::<$narrow_tiles, $narrow_mr, $narrow_nr>(share, scratch)
            }
        }

        /// Tiles of up to `$wide_mr` rows x `V` vectors, written with intrinsics: the generic
        /// loop spills accumulators at this shape.
        pub(crate) struct Wide<const V: usize>;

        // `#[inline(never)]` on a `#[target_feature]` function does not keep LLVM from
        // inlining it into the loop nest (same features), where the tile runs slower; a plain
        // function in between does.
        // `Wide` is only used by this module's `blocked`, whose caller vouches for the CPU.
        impl<const V: usize, const W: usize> Tiles<W> for Wide<V> {
            // A wide panel of B does not stay in L1 while the next ones of its group pass,
            // but it stays in L2 while every A panel passes over it.
            const ONE_B_PANEL_AT_A_TIME: bool = true;
            const LISTER: Lister = Lister::$lister;

            #[inline(never)]
            fn dense<const R: usize>(acc: &Acc<R, W>, a: &APanel<R>, b_panel: &[f32]) -> Acc<R, W> {
                // SAFETY: only this module's `blocked` runs `Wide`, on a CPU vouched for.
                unsafe { wide_dense::<R, V, W>(acc, a, b_panel) }
            }

            #[inline(never)]
            fn sparse<const R: usize>(
                acc: &Acc<R, W>,
                a: &APanel<R>,
                steps: Listed,
                b_panel: &[f32],
            ) -> Acc<R, W> {
                // SAFETY: only this module's `blocked` runs `Wide`, on a CPU vouched for.
                unsafe { wide_sparse::<R, V, W>(acc, a, steps, b_panel) }
            }

            #[inline(never)]
            fn packed<const R: usize>(
                acc: &Acc<R, W>,
                a: &[[f32; PACKED_ROWS]],
                steps: Listed,
                b_panel: &[f32],
            ) -> Acc<R, W> {
                // SAFETY: only this module's `blocked` runs `Wide`, on a CPU vouched for.
                unsafe { wide_packed::<R, V, W>(acc, a, steps, b_panel) }
            }
        }

        #[target_feature(enable = $features)]
        fn wide_dense<const R: usize, const V: usize, const W: usize>(
            acc: &Acc<R, W>,
            a: &APanel<R>,
            b_panel: &[f32],
        ) -> Acc<R, W> {
            let kc = (b_panel.len() / W).min(a.kc);
            let steps = (0..kc).map(|p| {
                // SAFETY: p < kc.
                let a = core::array::from_fn(|ii| unsafe { a.at(ii, p) });
                (p, a, p + PREFETCH_STEPS)
            });
            // SAFETY: this function is compiled with the module's features.
            unsafe { wide::<R, V, W>(acc, steps, b_panel) }
        }

        #[target_feature(enable = $features)]
        fn wide_sparse<const R: usize, const V: usize, const W: usize>(
            acc: &Acc<R, W>,
            a: &APanel<R>,
            Listed { steps, ahead }: Listed,
            b_panel: &[f32],
        ) -> Acc<R, W> {
            let kc = (b_panel.len() / W).min(a.kc);
            let steps = steps.iter().zip(ahead).map(|(&p, &ahead)| {
                let p = usize::from(p);
                assert!(p < kc, "step outside the block");
                // SAFETY: p < kc, just checked.
                let values = core::array::from_fn(|ii| unsafe { a.at(ii, p) });
                (p, values, usize::from(ahead))
            });
            // SAFETY: this function is compiled with the module's features.
            unsafe { wide::<R, V, W>(acc, steps, b_panel) }
        }

        #[target_feature(enable = $features)]
        fn wide_packed<const R: usize, const V: usize, const W: usize>(
            acc: &Acc<R, W>,
            a: &[[f32; PACKED_ROWS]],
            Listed { steps, ahead }: Listed,
            b_panel: &[f32],
        ) -> Acc<R, W> {
            let steps = steps.iter().zip(a).zip(ahead).map(|((&p, a), &ahead)| {
                let a = core::array::from_fn(|ii| a[ii]);
                (usize::from(p), a, usize::from(ahead))
            });
            // SAFETY: this function is compiled with the module's features.
            unsafe { wide::<R, V, W>(acc, steps, b_panel) }
        }

        /// The `R x W` register tile over `steps` (K step, A's values there, the step whose row of
        /// B to prefetch) of the block.
        ///
        /// # Safety
        /// Only inlined into functions compiled with this module's features.
        #[inline(always)]
        unsafe fn wide<const R: usize, const V: usize, const W: usize>(
            acc: &Acc<R, W>,
            steps: impl Iterator<Item = (usize, [f32; R], usize)>,
            b_panel: &[f32],
        ) -> Acc<R, W> {
            const { assert!(W == $lanes * V) };
            let b_rows = b_panel.as_chunks::<W>().0;
            let mut acc: [[$vector; V]; R] = acc.map(|row| {
                let chunks = row.as_chunks::<$lanes>().0;
                // SAFETY: the caller runs with this module's features; each load covers one
                // chunk of `$lanes` floats of the row, a whole vector.
                core::array::from_fn(|v| unsafe { $load(chunks[v].as_ptr()) })
            });
            for (p, a, ahead) in steps {
                let b_row = &b_rows[p];
                // With `$prefetch`: the panel (200 kB at K = 784) lives in L2; ask for the row
                // a few steps ahead so that its lines are in L1 when the tile gets there.
                if $prefetch {
                    let ahead = b_panel.as_ptr().wrapping_add(ahead * W);
                    for line in (0..W).step_by(LINE_FLOATS) {
                        // SAFETY: a prefetch never faults, wherever it points.
                        unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line).cast()) };
                    }
                }
                // SAFETY: the caller runs with this module's features.
                let a_v: [$vector; R] = a.map(|v| unsafe { $splat(v) });
                for (v, b_v) in b_row.as_chunks::<$lanes>().0.iter().enumerate() {
                    // SAFETY: the module's features; the load covers one chunk of `$lanes`
                    // floats of B's row, a whole vector.
                    let b_v = unsafe { $load(b_v.as_ptr()) };
                    for (acc_row, &a_v) in acc.iter_mut().zip(&a_v) {
                        // SAFETY: the caller runs with this module's features.
                        acc_row[v] = unsafe { $fmadd(a_v, b_v, acc_row[v]) };
                    }
                }
            }
            acc.map(|acc_row| {
                let mut row = [0.0; W];
                for (out, v) in row.as_chunks_mut::<$lanes>().0.iter_mut().zip(acc_row) {
                    // SAFETY: the module's features; the store covers one chunk of `$lanes`
                    // floats of the row, a whole vector.
                    unsafe { $store(out.as_mut_ptr(), v) };
                }
                row
            })
        }
    };
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(super) mod avx512;
#[cfg(target_arch = "aarch64")]
pub(super) mod neon;

/// Multiply-add as a kernel variant computes it.
pub(crate) trait MulAdd {
    /// `a * b + c`.
    fn mul_add(a: f32, b: f32, c: f32) -> f32;

    /// `acc[j] = a * b[j] + acc[j]` for every `j`, each as [`MulAdd::mul_add`] gives it.
    #[inline(always)]
    fn mul_add_row<const N: usize>(a: f32, b: &[f32; N], acc: &mut [f32; N]) {
        for (acc, &b) in acc.iter_mut().zip(b) {
            *acc = Self::mul_add(a, b, *acc);
        }
    }
}

/// The tile loops of a kernel variant. Each is a function of its own, compiled with the
/// variant's target features, so that the loop nest around it cannot spoil its register
/// allocation (inlined into the whole nest, LLVM may leave the accumulators in memory).
pub(super) trait Tiles<const NR: usize> {
    /// Whether A panels pass over one B panel at a time rather than over the whole group.
    const ONE_B_PANEL_AT_A_TIME: bool = false;
    /// How the nest lists the steps of panels whose rows lie along K.
    const LISTER: Lister = Lister::Baseline;

    /// Every K step of the block, added to the sums of the earlier blocks in `acc`.
    fn dense<const R: usize>(acc: &Acc<R, NR>, a: &APanel<R>, b_panel: &[f32]) -> Acc<R, NR>;
    /// The listed K steps of the block.
    fn sparse<const R: usize>(
        acc: &Acc<R, NR>,
        a: &APanel<R>,
        steps: Listed,
        b_panel: &[f32],
    ) -> Acc<R, NR>;
    /// The listed K steps, A's values packed beside them.
    fn packed<const R: usize>(
        acc: &Acc<R, NR>,
        a: &[[f32; PACKED_ROWS]],
        steps: Listed,
        b_panel: &[f32],
    ) -> Acc<R, NR>;
}

/// A tile's sums: each element's one chain of multiply-adds over K, carried from block to
/// block so that the blocking never changes a bit.
pub(super) type Acc<const R: usize, const NR: usize> = [[f32; NR]; R];

/// `a * b + c` rounded once, in arithmetic every target has: the same bits as a hardware fused
/// multiply-add, so the portable and naive kernels sum as the AVX2, AVX-512 and NEON ones do.
pub(crate) struct SoftFused;

impl MulAdd for SoftFused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        let mut sum = [c];
        Self::mul_add_row(a, &[b], &mut sum);
        sum[0]
    }

    // The whole row in the quick way, which vectorises, then again exactly in the rare row
    // where some sum may round twice.
    #[inline(always)]
    fn mul_add_row<const N: usize>(a: f32, b: &[f32; N], acc: &mut [f32; N]) {
        let mut next = [0.0; N];
        let mut care = false;
        for ((next, &b), &c) in next.iter_mut().zip(b).zip(&*acc) {
            let sum = wide_sum(a, b, c);
            care |= may_round_twice(sum);
            *next = sum as f32;
        }
        if care {
            for (acc, &b) in acc.iter_mut().zip(b) {
                *acc = soft_fma(a, b, *acc);
            }
        } else {
            *acc = next;
        }
    }
}

/// `a * b + c` rounded once, to f64 (the product is exact).
#[inline(always)]
fn wide_sum(a: f32, b: f32, c: f32) -> f64 {
    f64::from(a) * f64::from(b) + f64::from(c)
}

/// Whether rounding `sum` (the f64 sum of [`wide_sum`]) to f32 may differ from rounding the
/// exact sum once: only when `sum` lies halfway between two normal f32 (its 29 bits below an
/// f32's last are `1000...0`), or among the subnormal f32, where the halfway bits lie higher.
/// Elsewhere the exact sum lies on the same side of every f32 halfway point as `sum`.
#[inline(always)]
fn may_round_twice(sum: f64) -> bool {
    let tie = sum.to_bits() as u32 & 0x1fff_ffff == 0x1000_0000;
    let subnormal = sum.abs() < f64::from(f32::MIN_POSITIVE) && sum != 0.0;
    tie | subnormal
}

/// `a * b + c` correctly rounded to f32 (round to nearest, ties to even) for every finite
/// input: [`SoftFused`]'s answer where the quick f64 sum may round twice.
///
/// The product of two f32 is exact in f64 (24 + 24 bits of 53), so only the sum rounds. It is
/// rounded to odd: round to nearest, and when that was inexact (the exact error of the sum,
/// by Knuth's TwoSum, is not zero) and the last bit is even, step one f64 toward the exact
/// value. Rounding to odd with at least two more bits than the target keeps every tie of the
/// target visible, so rounding it to f32 gives the correctly rounded result, subnormal ones
/// included (Boldo and Melquiond, "Emulation of FMA and correctly rounded sums", 2008). The
/// f64 product and sum cannot overflow or lose bits to underflow (f32 products lie between
/// 2^-298 and 2^256). musl's `fmaf` (libm's fallback) fixes ties of normal results only.
#[inline(always)]
pub(crate) fn soft_fma(a: f32, b: f32, c: f32) -> f32 {
    let product = f64::from(a) * f64::from(b);
    let c = f64::from(c);
    let sum = product + c;
    // TwoSum: the exact `product + c - sum`, whatever the operands' magnitudes.
    let product_part = sum - c;
    let c_part = sum - product_part;
    let error = (product - product_part) + (c - c_part);
    let bits = sum.to_bits();
    // An infinite or NaN sum (from such operands) has a NaN error and stays as it is.
    let inexact = error != 0.0 && sum.is_finite();
    // One step away from zero when the exact value is farther from zero than the sum.
    let step = if (error > 0.0) == (sum > 0.0) {
        1
    } else {
        u64::MAX
    };
    let odd = if inexact && bits & 1 == 0 {
        bits.wrapping_add(step)
    } else {
        bits
    };
    f64::from_bits(odd) as f32
}

/// Variants whose tiles are the generic loops, with nothing but their multiply-add.
pub(super) trait GenericTiles: MulAdd {}

impl GenericTiles for SoftFused {}

impl<M: GenericTiles, const NR: usize> Tiles<NR> for M {
    #[inline(never)]
    fn dense<const R: usize>(acc: &Acc<R, NR>, a: &APanel<R>, b_panel: &[f32]) -> Acc<R, NR> {
        dense_kernel::<Self, R, NR>(acc, a, b_panel)
    }

    #[inline(never)]
    fn sparse<const R: usize>(
        acc: &Acc<R, NR>,
        a: &APanel<R>,
        steps: Listed,
        b_panel: &[f32],
    ) -> Acc<R, NR> {
        sparse_kernel::<Self, R, NR>(acc, a, steps.steps, b_panel)
    }

    #[inline(never)]
    fn packed<const R: usize>(
        acc: &Acc<R, NR>,
        a: &[[f32; PACKED_ROWS]],
        steps: Listed,
        b_panel: &[f32],
    ) -> Acc<R, NR> {
        packed_kernel::<Self, R, NR>(acc, a, steps.steps, b_panel)
    }
}

/// A fused multiply-add: on x86-64 only used by functions compiled with the `fma` feature;
/// on aarch64 part of the baseline.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) struct Fused;

/// One step of K: `acc += a[.., p] ⊗ b_row`.
///
/// # Safety
/// `p < a.kc`.
#[inline(always)]
unsafe fn rank1<M: MulAdd, const R: usize, const NR: usize>(
    acc: &mut [[f32; NR]; R],
    a: &APanel<R>,
    p: usize,
    b_row: &[f32; NR],
) {
    for (ii, acc_row) in acc.iter_mut().enumerate() {
        // Read where it is used, so that it is broadcast straight from memory: loading the
        // whole column first would take R more registers than the tile has.
        // SAFETY: p < kc (the caller's promise).
        let a_v = unsafe { a.at(ii, p) };
        M::mul_add_row(a_v, b_row, acc_row);
    }
}

/// The register tile: `R x NR` accumulators, one rank-1 update per K step of the block.
#[inline(always)]
pub(super) fn dense_kernel<M: MulAdd, const R: usize, const NR: usize>(
    acc: &Acc<R, NR>,
    a: &APanel<R>,
    b_panel: &[f32],
) -> Acc<R, NR> {
    let mut acc = *acc;
    let b_rows = b_panel.as_chunks::<NR>().0;
    assert!(b_rows.len() <= a.kc, "B panel deeper than the block");
    for (p, b_row) in b_rows.iter().enumerate() {
        // SAFETY: p < b_rows.len() <= kc.
        unsafe { rank1::<M, R, NR>(&mut acc, a, p, b_row) };
    }
    acc
}

/// The register tile over the listed K steps only.
#[inline(always)]
pub(super) fn sparse_kernel<M: MulAdd, const R: usize, const NR: usize>(
    acc: &Acc<R, NR>,
    a: &APanel<R>,
    steps: &[u16],
    b_panel: &[f32],
) -> Acc<R, NR> {
    let mut acc = *acc;
    let b_rows = b_panel.as_chunks::<NR>().0;
    assert!(b_rows.len() <= a.kc, "B panel deeper than the block");
    for &step in steps {
        let p = usize::from(step);
        let b_row = &b_rows[p];
        // SAFETY: indexing `b_rows` just checked p < b_rows.len() <= kc.
        unsafe { rank1::<M, R, NR>(&mut acc, a, p, b_row) };
    }
    acc
}

/// The register tile over the listed K steps, A's values packed beside them.
#[inline(always)]
pub(super) fn packed_kernel<M: MulAdd, const R: usize, const NR: usize>(
    acc: &Acc<R, NR>,
    a: &[[f32; PACKED_ROWS]],
    steps: &[u16],
    b_panel: &[f32],
) -> Acc<R, NR> {
    let mut acc = *acc;
    let b_rows = b_panel.as_chunks::<NR>().0;
    for (&step, a) in steps.iter().zip(a) {
        let b_row = &b_rows[usize::from(step)];
        for (acc_row, &a_v) in acc.iter_mut().zip(a) {
            M::mul_add_row(a_v, b_row, acc_row);
        }
    }
    acc
}
