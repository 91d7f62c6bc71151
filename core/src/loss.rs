//! Sparse categorical cross-entropy on softmax outputs, and accuracy, with Keras semantics.
//!
//! Keras keeps the logits of a softmax output layer and computes the loss from them with a stable
//! log-softmax (its 1e-7 probability clip is never reached on that path), so the loss here is
//! `logsumexp(z) - z[label]`, and the gradient of softmax + cross-entropy together is
//! `softmax(z) - onehot(label)`.

/// Index of the largest value (the first one on ties), as `argmax` does.
pub fn argmax<T: PartialOrd + Copy>(values: &[T]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

/// Writes `softmax(logits)` into `probabilities` (stable: the row maximum is subtracted first).
pub fn softmax(logits: &[f32], probabilities: &mut [f32]) {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0.0;
    for (p, &z) in probabilities.iter_mut().zip(logits) {
        *p = libm::expf(z - max);
        sum += *p;
    }
    for p in probabilities.iter_mut() {
        *p /= sum;
    }
}

/// Cross-entropy of one row: `-log softmax(logits)[label]`, from the logits.
pub fn cross_entropy(logits: &[f32], label: usize) -> f32 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let sum: f32 = logits.iter().map(|&z| libm::expf(z - max)).sum();
    libm::logf(sum) + max - logits[label]
}

/// Loss of one row, and whether it was classified correctly; replaces the logits with the
/// gradient of the batch-mean loss (`(softmax - onehot) / rows`). The exponentials are taken
/// once for both, in the order [`cross_entropy`] sums them, so the loss has the same bits.
pub fn loss_and_gradient(logits: &mut [f32], label: usize, rows: usize) -> (f32, bool) {
    let correct = argmax(logits) == label;
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let z_label = logits[label];
    let mut sum = 0.0;
    for z in logits.iter_mut() {
        *z = libm::expf(*z - max);
        sum += *z;
    }
    let loss = libm::logf(sum) + max - z_label;
    let scale = 1.0 / (sum * rows as f32);
    for (i, g) in logits.iter_mut().enumerate() {
        *g *= scale;
        if i == label {
            *g -= 1.0 / rows as f32;
        }
    }
    (loss, correct)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_entropy_is_stable_and_exact() {
        // Huge logits would overflow a naive exp.
        let logits = [1000.0, 0.0, -1000.0];
        assert!(cross_entropy(&logits, 0).abs() < 1e-6);
        assert!((cross_entropy(&logits, 1) - 1000.0).abs() < 1e-3);
        let uniform = [0.5f32; 4];
        assert!((cross_entropy(&uniform, 2) - libm::logf(4.0)).abs() < 1e-6);
    }

    #[test]
    fn gradient_is_softmax_minus_onehot_over_rows() {
        let mut z = [1.0f32, 2.0, 3.0];
        let mut p = [0.0; 3];
        softmax(&z, &mut p);
        let before = z;
        let (loss, correct) = loss_and_gradient(&mut z, 1, 4);
        assert!(!correct);
        assert_eq!(loss.to_bits(), cross_entropy(&before, 1).to_bits());
        assert!((loss + libm::logf(p[1])).abs() < 1e-6);
        for i in 0..3 {
            let want = (p[i] - if i == 1 { 1.0 } else { 0.0 }) / 4.0;
            assert!((z[i] - want).abs() < 1e-7);
        }
    }

    #[test]
    fn argmax_takes_first_of_ties() {
        assert_eq!(argmax(&[0.1, 0.7, 0.7, 0.2]), 1);
    }
}
