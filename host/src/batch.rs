//! Epoch shuffling and batch assembly (u8 pixels -> f32 / 255, one batch at a time).

use picodense_core::Parallel;
use picodense_core::gemm::{Isa, Kernel};
use rand_core::{Rng, SeedableRng};
use rand_xorshift::XorShiftRng;

use crate::data::{Dataset, IMAGE_PIXELS, IMAGE_SIDE};

/// Generator that initialises the weights for `seed`.
pub fn init_rng(seed: u64) -> XorShiftRng {
    XorShiftRng::seed_from_u64(seed)
}

/// Generator that shuffles epoch `epoch` (0-based) for `seed`. Each epoch has its own stream,
/// so a run resumed at an epoch boundary shuffles exactly as an uninterrupted one.
pub fn epoch_rng(seed: u64, epoch: usize) -> XorShiftRng {
    XorShiftRng::seed_from_u64(seed ^ 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(epoch as u64 + 1))
}

/// The order in which an epoch visits `rows` samples: a Fisher-Yates shuffle.
pub fn epoch_order(seed: u64, epoch: usize, rows: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..rows as u32).collect();
    let mut rng = epoch_rng(seed, epoch);
    for i in (1..rows).rev() {
        // Multiply-shift maps a 64-bit draw to 0..=i; the bias is below 2^-40 for any dataset.
        let j = ((u128::from(rng.next_u64()) * (i as u128 + 1)) >> 64) as usize;
        order.swap(i, j);
    }
    order
}

/// A batch's rows beside the images: labels, and the keys that group images into panels.
#[derive(Default)]
pub struct BatchInfo {
    /// One label per row.
    pub labels: Vec<u8>,
    /// One [`ink_box_area`] per row.
    pub keys: Vec<u16>,
}

/// Converts the rows at `indices` into `batch` (`data.width` values a row: pixels / 255, or
/// the features as they are), their labels into `info`, and with `keyed` (training, whose
/// forward groups rows by them) 28x28 images' keys. The conversion is shared between `par`'s
/// threads: its time goes into reading the images' bytes from scattered places in memory. It
/// runs the instruction set of the run's `kernel`.
pub fn fill_batch(
    par: &impl Parallel,
    kernel: Kernel,
    data: &Dataset,
    indices: &[usize],
    batch: &mut [f32],
    info: &mut BatchInfo,
    keyed: bool,
) -> usize {
    let width = data.width.max(1);
    let rows = indices.len().min(batch.len() / width);
    info.labels.clear();
    info.labels
        .extend(indices[..rows].iter().map(|&i| data.labels[i]));
    info.keys.clear();
    if !data.is_images() {
        for (dst, &index) in batch.chunks_exact_mut(width).zip(&indices[..rows]) {
            dst.copy_from_slice(data.row_values(index));
        }
        return rows;
    }
    // The ink box is measured on 28-pixel rows.
    if keyed && width == IMAGE_PIXELS {
        info.keys.resize(rows, 0);
    }
    let chunk = rows.div_ceil(FILL_PARTS).max(1);
    let mut key_chunks = info.keys.chunks_mut(chunk);
    let mut parts: Vec<_> = batch[..rows * width]
        .chunks_mut(chunk * width)
        .zip(indices.chunks(chunk))
        .map(|(dst, indices)| (dst, key_chunks.next().unwrap_or_default(), indices))
        .collect();
    par.run(&mut parts, &|_, (dst, keys, indices)| {
        prefetch_images(data, indices);
        match kernel.isa() {
            // SAFETY: an AVX-512 kernel exists only on a CPU with AVX-512 F and BW, AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { avx512::convert(data, indices, dst, keys) },
            // SAFETY: an AVX2 kernel exists only on a CPU with AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { avx2::convert(data, indices, dst, keys) },
            _ => convert(data, indices, dst, keys),
        }
    });
    rows
}

/// Converts the images at `indices` into `rows` (pixels / 255) and, as far as `keys` has room,
/// their keys.
fn convert(data: &Dataset, indices: &[usize], rows: &mut [f32], keys: &mut [u16]) {
    convert_with(data, indices, rows, keys, scale, plain_ink_box_area);
}

/// [`convert`] with a given conversion and key.
#[inline(always)]
fn convert_with(
    data: &Dataset,
    indices: &[usize],
    rows: &mut [f32],
    keys: &mut [u16],
    scale: impl Fn(&[u8], &mut [f32]),
    key_of: impl Fn(&[u8]) -> u16,
) {
    for (row, (dst, &index)) in rows.chunks_exact_mut(data.width).zip(indices).enumerate() {
        let image = data.image(index);
        scale(image, dst);
        if let Some(key) = keys.get_mut(row) {
            *key = key_of(image);
        }
    }
}

/// Asks the CPU to start loading the images at `indices` into its caches, without waiting for
/// them: a batch's images lie scattered over the dataset, and converted one by one each waits
/// for memory in turn; asked for together, their loads overlap.
fn prefetch_images(data: &Dataset, indices: &[usize]) {
    #[cfg(target_arch = "x86_64")]
    for &index in indices {
        let image = data.image(index);
        // Images are not aligned to cache lines: the last byte may start one more.
        for line in image.iter().step_by(64).chain(image.last()) {
            // SAFETY: a prefetch never faults, and the address lies in the image anyway.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(
                    std::ptr::from_ref(line).cast(),
                )
            };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (data, indices);
}

/// Area of the smallest box around an image's nonzero pixels (0 for a blank image). Images of
/// one class with boxes of about the same size share more of their blank margins: grouped by
/// it within each class, a Fashion-MNIST batch's forward skips more steps. Measured with the
/// instruction set of `kernel`.
pub fn ink_box_area(kernel: Kernel, pixels: &[u8]) -> u16 {
    match kernel.isa() {
        // SAFETY: an AVX-512 kernel exists only on a CPU with AVX-512 F and BW.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { avx512::ink_box_area(pixels) },
        // SAFETY: an AVX2 kernel exists only on a CPU with AVX2.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::ink_box_area(pixels) },
        _ => plain_ink_box_area(pixels),
    }
}

/// [`ink_box_area`], a pixel at a time.
#[inline(always)]
fn plain_ink_box_area(pixels: &[u8]) -> u16 {
    let (mut rows, mut cols) = (0u32, 0u32);
    for (r, row) in pixels.chunks_exact(IMAGE_SIDE).enumerate() {
        let inked = row
            .iter()
            .enumerate()
            .fold(0u32, |bits, (c, &p)| bits | u32::from(p != 0) << c);
        cols |= inked;
        rows |= u32::from(inked != 0) << r;
    }
    box_area(rows, cols)
}

/// Area of the box spanned by the set bits of `rows` and of `cols`.
fn box_area(rows: u32, cols: u32) -> u16 {
    let span = |bits: u32| match bits {
        0 => 0,
        _ => 32 - bits.leading_zeros() - bits.trailing_zeros(),
    };
    (span(rows) * span(cols)) as u16
}

/// Pieces a batch is converted in (claimed by whichever thread is free).
const FILL_PARTS: usize = 4;

/// `pixels / 255` as Keras's example scales them, with the instruction set of `kernel`.
pub fn to_unit(kernel: Kernel, pixels: &[u8], out: &mut [f32]) {
    match kernel.isa() {
        // SAFETY: an AVX-512 kernel exists only on a CPU with AVX-512 F, AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { avx512::scale(pixels, out) },
        // SAFETY: an AVX2 kernel exists only on a CPU with AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::scale(pixels, out) },
        _ => scale(pixels, out),
    }
}

/// [`to_unit`] as a plain loop, which the compiler vectorises for whatever target it is
/// compiled for. A division is exact whatever the instructions, so every variant gives the
/// same bits.
#[inline(always)]
fn scale(pixels: &[u8], out: &mut [f32]) {
    for (o, &p) in out.iter_mut().zip(pixels) {
        *o = f32::from(p) / 255.0;
    }
}

/// `convert` and `scale` compiled for the target features `$features`, `$lanes` pixels at a
/// time: `$load` reads that many bytes, `$widen` makes them 32-bit lanes, and the float
/// intrinsics (`$to_f32`, `$set1`, `$mul`, `$fmadd`, `$fnmadd`, `$store`) are the width's.
#[cfg(target_arch = "x86_64")]
macro_rules! conversions {
    ($features:literal, $lanes:literal, $load:ident, $widen:ident, $to_f32:ident, $set1:ident,
     $mul:ident, $fmadd:ident, $fnmadd:ident, $store:ident) => {
        /// [`super::convert`] with this width's scaling and key.
        #[target_feature(enable = $features)]
        pub(super) fn convert(
            data: &Dataset,
            indices: &[usize],
            rows: &mut [f32],
            keys: &mut [u16],
        ) {
            // Closures here inherit this function's features, so the calls inline.
            let (scale, key_of) = (
                |p: &[u8], out: &mut [f32]| scale(p, out),
                |p: &[u8]| ink_box_area(p),
            );
            super::convert_with(data, indices, rows, keys, scale, key_of);
        }

        /// `pixels / 255`, a vector of pixels at a time without dividing: `q = p·(1/255)`,
        /// corrected once by its remainder, `q + (p - 255·q)·(1/255)` (each step fused), is
        /// the correctly rounded quotient for every byte (a test checks all 256).
        #[target_feature(enable = $features)]
        pub(super) fn scale(pixels: &[u8], out: &mut [f32]) {
            let len = pixels.len().min(out.len());
            let (bytes, _) = pixels[..len].as_chunks::<$lanes>();
            let (recip, divisor) = ($set1(1.0 / 255.0), $set1(255.0));
            for (bytes, out) in bytes.iter().zip(out.as_chunks_mut::<$lanes>().0) {
                // SAFETY: the load reads exactly the chunk's bytes.
                let p = unsafe { $load(bytes.as_ptr().cast()) };
                let p = $to_f32($widen(p));
                let q = $mul(p, recip);
                let q = $fmadd($fnmadd(q, divisor, p), recip, q);
                // SAFETY: the store writes exactly the chunk's floats.
                unsafe { $store(out.as_mut_ptr(), q) };
            }
            let done = bytes.len() * $lanes;
            super::scale(&pixels[done..len], &mut out[done..len]);
        }
    };
}

/// The conversions compiled for AVX2 and FMA: a batch is converted every step.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        _mm_loadl_epi64, _mm256_cmpeq_epi8, _mm256_cvtepi32_ps, _mm256_cvtepu8_epi32,
        _mm256_fmadd_ps, _mm256_fnmadd_ps, _mm256_loadu_si256, _mm256_movemask_epi8, _mm256_mul_ps,
        _mm256_set1_ps, _mm256_setzero_si256, _mm256_storeu_ps,
    };

    use crate::data::{Dataset, IMAGE_PIXELS, IMAGE_SIDE};

    conversions!(
        "avx2,fma",
        8,
        _mm_loadl_epi64,
        _mm256_cvtepu8_epi32,
        _mm256_cvtepi32_ps,
        _mm256_set1_ps,
        _mm256_mul_ps,
        _mm256_fmadd_ps,
        _mm256_fnmadd_ps,
        _mm256_storeu_ps
    );

    /// [`super::ink_box_area`] with a row's 28 pixels compared at once.
    #[target_feature(enable = "avx2")]
    pub(super) fn ink_box_area(pixels: &[u8]) -> u16 {
        let Ok(image) = <&[u8; IMAGE_PIXELS]>::try_from(pixels) else {
            return super::plain_ink_box_area(pixels);
        };
        let zero = _mm256_setzero_si256();
        let (mut rows, mut cols) = (0u32, 0u32);
        for r in 0..IMAGE_SIDE {
            // 32 bytes that end with the row (start with it for the first): all in the image.
            let start = (r * IMAGE_SIDE).saturating_sub(32 - IMAGE_SIDE);
            let bytes = &image[start..start + 32];
            // SAFETY: 32 bytes, checked by the slice above.
            let v = unsafe { _mm256_loadu_si256(bytes.as_ptr().cast()) };
            let inked = !(_mm256_movemask_epi8(_mm256_cmpeq_epi8(v, zero)) as u32);
            let inked = (inked >> (r * IMAGE_SIDE - start)) & ((1 << IMAGE_SIDE) - 1);
            cols |= inked;
            rows |= u32::from(inked != 0) << r;
        }
        super::box_area(rows, cols)
    }
}

/// The conversions compiled for AVX-512 (F for the floats, BW for the bytes): the same
/// operations as the AVX2 ones on twice the lanes, so the same bits.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::{
        _mm_loadu_si128, _mm512_cvtepi32_ps, _mm512_cvtepu8_epi32, _mm512_fmadd_ps,
        _mm512_fnmadd_ps, _mm512_maskz_loadu_epi8, _mm512_mul_ps, _mm512_set1_ps, _mm512_storeu_ps,
        _mm512_test_epi8_mask,
    };

    use crate::data::{Dataset, IMAGE_PIXELS, IMAGE_SIDE};

    conversions!(
        "avx512f,avx512bw,avx2,fma",
        16,
        _mm_loadu_si128,
        _mm512_cvtepu8_epi32,
        _mm512_cvtepi32_ps,
        _mm512_set1_ps,
        _mm512_mul_ps,
        _mm512_fmadd_ps,
        _mm512_fnmadd_ps,
        _mm512_storeu_ps
    );
    /// [`super::ink_box_area`] two rows (56 bytes, one masked load) at a time.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) fn ink_box_area(pixels: &[u8]) -> u16 {
        const { assert!(IMAGE_SIDE.is_multiple_of(2) && 2 * IMAGE_SIDE <= 64) };
        let Ok(image) = <&[u8; IMAGE_PIXELS]>::try_from(pixels) else {
            return super::plain_ink_box_area(pixels);
        };
        let row_bits = (1u64 << IMAGE_SIDE) - 1;
        let (mut rows, mut cols) = (0u32, 0u32);
        for r in (0..IMAGE_SIDE).step_by(2) {
            let two_rows = &image[r * IMAGE_SIDE..(r + 2) * IMAGE_SIDE];
            // SAFETY: the mask loads exactly the 56 bytes of the slice; masked-off bytes are
            // not read.
            let v = unsafe {
                _mm512_maskz_loadu_epi8(row_bits | row_bits << IMAGE_SIDE, two_rows.as_ptr().cast())
            };
            let inked = _mm512_test_epi8_mask(v, v);
            let (first, second) = (
                (inked & row_bits) as u32,
                ((inked >> IMAGE_SIDE) & row_bits) as u32,
            );
            cols |= first | second;
            rows |= u32::from(first != 0) << r | u32::from(second != 0) << (r + 1);
        }
        super::box_area(rows, cols)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::Threads;
    use picodense_core::Serial;

    #[test]
    fn order_is_a_seeded_permutation_that_changes_each_epoch() {
        let a = epoch_order(1, 0, 1000);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<u32>>());
        assert_eq!(a, epoch_order(1, 0, 1000));
        assert_ne!(a, epoch_order(1, 1, 1000));
        assert_ne!(a, epoch_order(2, 0, 1000));
        assert_ne!(a, sorted);
    }

    #[test]
    fn batches_scale_pixels() {
        let data = Dataset::from_images(
            IMAGE_PIXELS,
            (0..2 * IMAGE_PIXELS).map(|i| (i % 256) as u8).collect(),
            vec![3, 7],
        );
        let mut batch = vec![0.0f32; 4 * IMAGE_PIXELS];
        let mut info = BatchInfo::default();
        let kernel = Kernel::detect();
        let rows = fill_batch(&Serial, kernel, &data, &[1, 0], &mut batch, &mut info, true);
        assert_eq!(rows, 2);
        assert_eq!(info.labels, [7, 3]);
        assert_eq!(
            info.keys[1],
            ink_box_area(kernel, &data.images[..IMAGE_PIXELS])
        );
        assert_eq!(batch[IMAGE_PIXELS + 255], 1.0);
        assert_eq!(batch[0], f32::from(data.images[IMAGE_PIXELS]) / 255.0);

        // Shared between threads, the same rows land in the same places.
        let indices: Vec<usize> = (0..9).map(|i| i % 2).collect();
        let mut serial = vec![0.0f32; 9 * IMAGE_PIXELS];
        let mut threaded = vec![0.0f32; 9 * IMAGE_PIXELS];
        fill_batch(
            &Serial,
            kernel,
            &data,
            &indices,
            &mut serial,
            &mut info,
            true,
        );
        let serial_keys = info.keys.clone();
        let rows = fill_batch(
            &Threads::new(3),
            kernel,
            &data,
            &indices,
            &mut threaded,
            &mut info,
            true,
        );
        assert_eq!(rows, 9);
        assert_eq!(info.labels, [3, 7, 3, 7, 3, 7, 3, 7, 3]);
        assert_eq!(info.keys, serial_keys);
        assert!(serial == threaded);
        assert_eq!(
            threaded[3 * IMAGE_PIXELS],
            f32::from(data.images[IMAGE_PIXELS]) / 255.0
        );
    }

    #[test]
    fn every_byte_scales_as_a_plain_division() {
        let bytes: Vec<u8> = (0..=255).collect();
        let mut scaled = [0.0f32; 256];
        to_unit(Kernel::detect(), &bytes, &mut scaled);
        for (&p, v) in bytes.iter().zip(scaled) {
            assert_eq!(v.to_bits(), (f32::from(p) / 255.0).to_bits(), "pixel {p}");
        }
    }

    /// The AVX2 and AVX-512 conversions give the plain loops' bits and keys, where this CPU
    /// runs them (whichever the dispatch picks, the others are checked too).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn every_instruction_set_converts_alike() {
        let image: Vec<u8> = (0..IMAGE_PIXELS)
            .map(|i| if i % 29 < 9 { 0 } else { (i * 7 % 256) as u8 })
            .collect();
        let mut want = [0.0f32; IMAGE_PIXELS];
        scale(&image, &mut want);
        let want_key = plain_ink_box_area(&image);
        if Kernel::avx512().is_none() {
            eprintln!("skipped: this CPU has no AVX-512 F + BW, its conversion is not tested");
        }
        for kernel in [Kernel::avx2(), Kernel::avx512()].into_iter().flatten() {
            let mut got = [0.0f32; IMAGE_PIXELS];
            to_unit(kernel, &image, &mut got);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{}", kernel.name());
            assert_eq!(ink_box_area(kernel, &image), want_key, "{}", kernel.name());
        }
    }

    #[test]
    fn ink_box_area_spans_the_outermost_inked_pixels() {
        let mut image = [0u8; IMAGE_PIXELS];
        assert_eq!(ink_box_area(Kernel::detect(), &image), 0);
        image[5 * IMAGE_SIDE + 7] = 1;
        assert_eq!(ink_box_area(Kernel::detect(), &image), 1);
        // Rows 5..=20, columns 3..=7: 16 x 5.
        image[20 * IMAGE_SIDE + 3] = 200;
        assert_eq!(ink_box_area(Kernel::detect(), &image), 80);
        image[27 * IMAGE_SIDE + 27] = 9;
        image[0] = 9;
        assert_eq!(ink_box_area(Kernel::detect(), &image), 28 * 28);
    }

    #[test]
    fn ink_box_area_is_the_same_pixel_by_pixel() {
        let mut rng = init_rng(3);
        for ink in 1..40u32 {
            // A few pixels anywhere, so every row and column boundary is met.
            let mut image = [0u8; IMAGE_PIXELS];
            for _ in 0..ink % 7 {
                image[rng.next_u32() as usize % IMAGE_PIXELS] = 1 + (rng.next_u32() % 255) as u8;
            }
            assert_eq!(
                ink_box_area(Kernel::detect(), &image),
                plain_ink_box_area(&image),
                "{image:?}"
            );
        }
    }
}
