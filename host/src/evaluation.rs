//! What a model gets wrong: the confusion matrix, per-class precision and recall, and the most
//! confidently wrong images.

use std::fmt::Write;

/// Counts of (true class, predicted class) pairs over a dataset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfusionMatrix {
    /// `counts[true][predicted]`, `classes x classes`.
    pub counts: Vec<Vec<u64>>,
}

impl ConfusionMatrix {
    /// Tallies `labels` against `predicted` for `classes` classes (pairs beyond the shorter
    /// list, and classes out of range, are ignored).
    pub fn new(classes: usize, labels: &[u8], predicted: &[u8]) -> Self {
        let mut matrix = Self {
            counts: vec![vec![0; classes]; classes],
        };
        for (&t, &p) in labels.iter().zip(predicted) {
            if let Some(cell) = matrix
                .counts
                .get_mut(usize::from(t))
                .and_then(|row| row.get_mut(usize::from(p)))
            {
                *cell += 1;
            }
        }
        matrix
    }

    /// Number of images counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// Images whose prediction was right (the diagonal).
    pub fn correct(&self) -> u64 {
        (0..self.classes()).map(|c| self.counts[c][c]).sum()
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.counts.len()
    }

    /// Images of class `class` (its row sum).
    pub fn support(&self, class: usize) -> u64 {
        self.counts[class].iter().sum()
    }

    /// Images predicted as `class` (its column sum).
    pub fn predicted(&self, class: usize) -> u64 {
        self.counts.iter().map(|row| row[class]).sum()
    }

    /// Share of the images predicted as `class` that are `class`; `None` when none was.
    pub fn precision(&self, class: usize) -> Option<f64> {
        ratio(self.counts[class][class], self.predicted(class))
    }

    /// Share of the images of `class` predicted as `class`; `None` when the class is absent.
    pub fn recall(&self, class: usize) -> Option<f64> {
        ratio(self.counts[class][class], self.support(class))
    }

    /// The matrix as a text table (rows true, columns predicted), then precision, recall and
    /// support per class.
    pub fn to_table(&self, names: &[String]) -> String {
        let labels: Vec<String> = (0..self.classes()).map(|c| class_label(c, names)).collect();
        let label_width = labels.iter().map(|l| l.len()).max().unwrap_or(1).max(9);
        let cell = self
            .counts
            .iter()
            .flatten()
            .map(|n| n.to_string().len())
            .max()
            .unwrap_or(1)
            .max(2)
            + 2;
        let mut out = String::new();
        // The columns carry only the class number so the table fits a terminal even with
        // Fashion-MNIST's long names; the row labels give the names.
        let _ = writeln!(
            out,
            "confusion matrix (rows: true class, columns: predicted class)"
        );
        let _ = write!(out, "{:label_width$}", "");
        for c in 0..self.classes() {
            let _ = write!(out, "{c:>cell$}");
        }
        out.push('\n');
        for (label, row) in labels.iter().zip(&self.counts) {
            let _ = write!(out, "{label:<label_width$}");
            for n in row {
                let _ = write!(out, "{n:>cell$}");
            }
            out.push('\n');
        }
        out.push('\n');
        let _ = writeln!(out, "{:<label_width$}  precision  recall  support", "class");
        let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
        for (c, label) in labels.iter().enumerate() {
            let _ = writeln!(
                out,
                "{label:<label_width$}  {:>9}  {:>6}  {:>7}",
                fmt(self.precision(c)),
                fmt(self.recall(c)),
                self.support(c)
            );
        }
        out
    }
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// `7` for digits, `0 T-shirt/top` where the name is not the class number.
pub fn class_label(class: usize, names: &[String]) -> String {
    let name = names
        .get(class)
        .cloned()
        .unwrap_or_else(|| class.to_string());
    if name == class.to_string() {
        name.to_string()
    } else {
        format!("{class} {name}")
    }
}

/// The most likely class of each row of probabilities.
pub fn predicted_classes(probabilities: &[Vec<f32>]) -> Vec<u8> {
    probabilities
        .iter()
        .map(|p| picodense_core::loss::argmax(p) as u8)
        .collect()
}

/// Indices of at most `count` wrongly classified images, the most confident mistakes first
/// (ties keep dataset order).
pub fn most_confident_errors(
    labels: &[u8],
    probabilities: &[Vec<f32>],
    count: usize,
) -> Vec<usize> {
    let mut wrong: Vec<(usize, f32)> = labels
        .iter()
        .zip(probabilities)
        .enumerate()
        .filter_map(|(i, (&label, p))| {
            let predicted = picodense_core::loss::argmax(p);
            (predicted != usize::from(label)).then_some((i, p[predicted]))
        })
        .collect();
    wrong.sort_by(|a, b| b.1.total_cmp(&a.1));
    wrong.truncate(count);
    wrong.into_iter().map(|(i, _)| i).collect()
}

/// What `predict --json` prints for one row.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Prediction {
    /// The most likely class.
    pub class: usize,
    /// Its name, where the data named its classes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Probability of each class.
    pub probabilities: Vec<f32>,
}

impl Prediction {
    /// The prediction the probabilities make.
    pub fn new(probabilities: Vec<f32>) -> Self {
        Self {
            class: picodense_core::loss::argmax(&probabilities),
            name: None,
            probabilities,
        }
    }
}

/// The `k` most likely classes with their probabilities, most likely first.
pub fn top_k(probabilities: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut ranked: Vec<(usize, f32)> = probabilities.iter().copied().enumerate().collect();
    // Stable sort: equal probabilities keep class order.
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked.truncate(k);
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::DatasetKind;

    fn names(kind: DatasetKind) -> Vec<String> {
        kind.class_names().map(String::from).to_vec()
    }

    fn one_hot(class: usize, confidence: f32) -> Vec<f32> {
        let mut p = vec![(1.0 - confidence) / 9.0; 10];
        p[class] = confidence;
        p
    }

    #[test]
    fn counts_precision_and_recall() {
        let labels = [0, 0, 0, 1, 1, 2];
        let predicted = [0, 0, 1, 1, 1, 0];
        let m = ConfusionMatrix::new(10, &labels, &predicted);
        assert_eq!(m.total(), 6);
        assert_eq!(m.correct(), 4);
        assert_eq!(m.counts[0][0], 2);
        assert_eq!(m.counts[0][1], 1);
        assert_eq!(m.counts[2][0], 1);
        assert_eq!(m.precision(0), Some(2.0 / 3.0));
        assert_eq!(m.recall(0), Some(2.0 / 3.0));
        assert_eq!(m.precision(1), Some(2.0 / 3.0));
        assert_eq!(m.recall(1), Some(1.0));
        // Class 2 is never predicted right, class 3 is absent and never predicted.
        assert_eq!(m.precision(2), None);
        assert_eq!(m.recall(2), Some(0.0));
        assert_eq!(m.recall(3), None);
    }

    #[test]
    fn out_of_range_classes_are_ignored() {
        let m = ConfusionMatrix::new(10, &[0, 10, 3], &[0, 0, 200]);
        assert_eq!(m.total(), 1);
    }

    #[test]
    fn table_names_the_classes_and_shows_every_row() {
        let m = ConfusionMatrix::new(10, &[0, 9, 9], &[0, 9, 4]);
        let table = m.to_table(&names(DatasetKind::FashionMnist));
        assert!(table.contains("0 T-shirt/top"), "{table}");
        assert!(table.contains("9 Ankle boot"), "{table}");
        assert!(table.contains("precision  recall  support"), "{table}");
        let row = table
            .lines()
            .find(|l| l.starts_with("9 Ankle boot") && !l.contains('.'))
            .unwrap();
        let counts: Vec<u64> = row["9 Ankle boot".len()..]
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(counts, [0, 0, 0, 0, 1, 0, 0, 0, 0, 1]);
        let digits = m.to_table(&names(DatasetKind::Mnist));
        assert!(digits.lines().any(|l| l.starts_with("7 ")), "{digits}");
        assert!(!digits.contains("7 7"), "{digits}");
    }

    #[test]
    fn confident_errors_come_first() {
        let labels = [1, 2, 3, 4];
        let probabilities = [
            one_hot(1, 0.9),
            one_hot(5, 0.6),
            one_hot(3, 0.99),
            one_hot(0, 0.8),
        ];
        assert_eq!(most_confident_errors(&labels, &probabilities, 5), [3, 1]);
        assert_eq!(most_confident_errors(&labels, &probabilities, 1), [3]);
        assert_eq!(predicted_classes(&probabilities), [1u8, 5, 3, 0].as_slice());
    }

    #[test]
    fn top_k_ranks_by_probability() {
        let mut p = [0.0; 10];
        p[4] = 0.5;
        p[7] = 0.3;
        p[1] = 0.2;
        let top = top_k(&p, 3);
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), [4, 7, 1]);
        assert_eq!(top[0].1, 0.5);
    }
}
