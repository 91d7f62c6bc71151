//! Epoch shuffling and batch assembly (u8 pixels -> f32 / 255, one batch at a time).

use picodense_core::Parallel;
use rand_core::{Rng, SeedableRng};
use rand_xorshift::XorShiftRng;

use crate::data::{Dataset, IMAGE_PIXELS};

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

/// Converts the images at `indices` into `batch` (pixels / 255), and their labels into `labels`.
/// The conversion is shared between `par`'s threads: its time goes into reading the images'
/// bytes from scattered places in memory.
pub fn fill_batch(
    par: &impl Parallel,
    data: &Dataset,
    indices: &[usize],
    batch: &mut [[f32; IMAGE_PIXELS]],
    labels: &mut Vec<u8>,
) -> usize {
    let rows = indices.len().min(batch.len());
    labels.clear();
    labels.extend(indices[..rows].iter().map(|&i| data.labels[i]));
    let chunk = rows.div_ceil(FILL_PARTS).max(1);
    let mut parts: Vec<_> = batch[..rows]
        .chunks_mut(chunk)
        .zip(indices.chunks(chunk))
        .collect();
    par.run(&mut parts, &|_, (dst, indices)| {
        for (dst, &index) in dst.iter_mut().zip(indices.iter()) {
            to_unit(data.image(index), dst);
        }
    });
    rows
}

/// Pieces a batch is converted in (claimed by whichever thread is free).
const FILL_PARTS: usize = 4;

/// `pixels / 255` as Keras's example scales them.
pub fn to_unit(pixels: &[u8], out: &mut [f32]) {
    for (o, &p) in out.iter_mut().zip(pixels) {
        *o = f32::from(p) / 255.0;
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
        let data = Dataset {
            images: (0..2 * IMAGE_PIXELS).map(|i| (i % 256) as u8).collect(),
            labels: vec![3, 7],
        };
        let mut batch = vec![[0.0f32; IMAGE_PIXELS]; 4];
        let mut labels = Vec::new();
        let rows = fill_batch(&Serial, &data, &[1, 0], &mut batch, &mut labels);
        assert_eq!(rows, 2);
        assert_eq!(labels, [7, 3]);
        assert_eq!(batch[1][255], 1.0);
        assert_eq!(batch[0][0], f32::from(data.images[IMAGE_PIXELS]) / 255.0);

        // Shared between threads, the same rows land in the same places.
        let indices: Vec<usize> = (0..9).map(|i| i % 2).collect();
        let mut serial = vec![[0.0f32; IMAGE_PIXELS]; 9];
        let mut threaded = vec![[0.0f32; IMAGE_PIXELS]; 9];
        fill_batch(&Serial, &data, &indices, &mut serial, &mut labels);
        let rows = fill_batch(
            &Threads::new(3),
            &data,
            &indices,
            &mut threaded,
            &mut labels,
        );
        assert_eq!(rows, 9);
        assert_eq!(labels, [3, 7, 3, 7, 3, 7, 3, 7, 3]);
        assert!(serial == threaded);
        assert_eq!(threaded[3][0], f32::from(data.images[IMAGE_PIXELS]) / 255.0);
    }
}
