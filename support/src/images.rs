//! Synthetic 28 x 28 images and their labels, drawn from a seed.

use crate::{Noise, PIXELS};

/// `count` images of uniform noise and random labels 0..10: valid data with nothing to learn.
pub fn random_images(count: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let mut noise = Noise::new(seed);
    let pixels = (0..count * PIXELS).map(|_| noise.byte(256)).collect();
    let labels = (0..count).map(|_| noise.byte(10)).collect();
    (pixels, labels)
}

/// `count` images where class `c` draws a bright 4x4 block at a class-specific place over faint
/// noise (learnable, so the weights keep changing from step to step), and their labels.
pub fn block_images(count: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let mut noise = Noise::new(seed);
    let mut pixels = vec![0u8; count * PIXELS];
    let mut labels = Vec::with_capacity(count);
    for (i, image) in pixels.chunks_mut(PIXELS).enumerate() {
        let label = noise.byte(10);
        labels.push(label);
        let (row0, col0) = (2 + 10 * (label as usize / 5), 2 + 5 * (label as usize % 5));
        for (p, v) in image.iter_mut().enumerate() {
            *v = noise.byte(60);
            let (r, c) = (p / 28, p % 28);
            if (row0..row0 + 4).contains(&r) && (col0..col0 + 4).contains(&c) {
                *v = 200 + (i % 50) as u8;
            }
        }
    }
    (pixels, labels)
}

/// A stroke from `(x0, y0)` to `(x1, y1)` in pixel coordinates.
#[derive(Clone, Copy)]
struct Stroke([f32; 4]);

impl Stroke {
    /// Distance from `(x, y)` to the segment.
    fn distance(&self, x: f32, y: f32) -> f32 {
        let [x0, y0, x1, y1] = self.0;
        let (vx, vy) = (x1 - x0, y1 - y0);
        let len2 = (vx * vx + vy * vy).max(1e-6);
        let t = (((x - x0) * vx + (y - y0) * vy) / len2).clamp(0.0, 1.0);
        let (px, py) = (x0 + t * vx - x, y0 + t * vy - y);
        (px * px + py * py).sqrt()
    }
}

/// Images that look like MNIST to the arithmetic: 28 x 28 `u8`, a few thick pen strokes in the
/// central 20 x 20 box on a zero background (about 17% of the pixels nonzero, MNIST has 19%;
/// blank margins), one stroke template per class with per-image jitter so classes are learnable.
/// Returns `count * 784` pixels and `count` labels.
pub fn synthetic_mnist(count: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let mut rng = Noise::new(seed);
    let templates: Vec<Vec<Stroke>> = (0..10)
        .map(|_| {
            let strokes = 4 + rng.below(3) as usize;
            (0..strokes)
                .map(|_| Stroke([0; 4].map(|_| rng.range(9.0, 19.0))))
                .collect()
        })
        .collect();
    let mut images = vec![0u8; count * PIXELS];
    let mut labels = Vec::with_capacity(count);
    for image in images.chunks_exact_mut(PIXELS) {
        let label = rng.byte(10);
        labels.push(label);
        let (dx, dy) = (rng.range(-2.0, 2.0), rng.range(-2.0, 2.0));
        let pen = rng.range(1.9, 2.7);
        let strokes: Vec<Stroke> = templates[usize::from(label)]
            .iter()
            .map(|s| {
                let [x0, y0, x1, y1] = s.0;
                Stroke([
                    x0 + dx + rng.range(-1.0, 1.0),
                    y0 + dy + rng.range(-1.0, 1.0),
                    x1 + dx + rng.range(-1.0, 1.0),
                    y1 + dy + rng.range(-1.0, 1.0),
                ])
            })
            .collect();
        for (index, pixel) in image.iter_mut().enumerate() {
            let (x, y) = ((index % 28) as f32, (index / 28) as f32);
            let d = strokes
                .iter()
                .map(|s| s.distance(x, y))
                .fold(f32::INFINITY, f32::min);
            // Solid core, one pixel of anti-aliased edge.
            let ink = (pen + 0.5 - d).clamp(0.0, 1.0);
            *pixel = (ink * 255.0 + 0.5) as u8;
        }
    }
    (images, labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_images_are_sparse_like_mnist() {
        let (images, labels) = synthetic_mnist(2000, 1);
        assert_eq!(images.len(), 2000 * PIXELS);
        assert!(labels.iter().all(|&l| l < 10));
        let nonzero = images.iter().filter(|&&p| p > 0).count() as f64 / images.len() as f64;
        assert!((0.14..0.26).contains(&nonzero), "{nonzero}");
        // Blank margins: the outer two rows and columns never get ink.
        for image in images.chunks_exact(PIXELS) {
            for (index, &p) in image.iter().enumerate() {
                let (x, y) = (index % 28, index / 28);
                if x < 2 || y < 2 || x > 25 || y > 25 {
                    assert_eq!(p, 0, "pixel {x},{y}");
                }
            }
        }
    }
}
