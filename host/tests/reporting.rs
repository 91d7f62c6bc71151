//! End-to-end runs of the reporting features: training curves, the confusion matrix, the report
//! images, and predicting a picture of a digit. The tests open what the binary wrote.

mod common;
use common::*;

use std::path::{Path, PathBuf};

const TRAIN_COLOUR: &str = "stroke=\"#1F77B4\"";
const VALIDATION_COLOUR: &str = "stroke=\"#FF7F0E\"";

/// Whether the point (u, v) (row, column, both in 0..1) of a shape's box is ink for class
/// `class`: ten shapes that fill the box in at least one direction, as MNIST digits fill theirs.
fn shape(class: u8, u: f64, v: f64) -> bool {
    let bar = |x: f64| (0.4..0.6).contains(&x);
    match class {
        0 => !((0.15..0.85).contains(&u) && (0.15..0.85).contains(&v)),
        1 => bar(v),
        2 => bar(u),
        3 => (u - v).abs() < 0.075 || (u + v - 1.0).abs() < 0.075,
        4 => bar(u) || bar(v),
        5 => v < 0.2 || u >= 0.8,
        6 => u < 0.2 || bar(v),
        7 => (u + v - 1.0).abs() < 0.075,
        8 => (u - 0.5).powi(2) + (v - 0.5).powi(2) <= 0.25,
        _ => !(0.2..0.8).contains(&u),
    }
}

/// Whether pixel (r, c) of a `side`-pixel box is ink.
fn shape_pixel(class: u8, r: i32, c: i32, side: i32) -> bool {
    let at = |i: i32| (f64::from(i) + 0.5) / f64::from(side);
    (0..side).contains(&r) && (0..side).contains(&c) && shape(class, at(r), at(c))
}

/// Shapes laid out as the dataset's images are, light on a dark, slightly noisy background.
/// MNIST: a 20x20 box placed so its centre of mass is near the middle of the field (shifted
/// up to 2 pixels). Fashion-MNIST: the box fills the field. Unlike a class-specific position,
/// a shape survives the crop-and-centre of picture input.
fn images(count: usize, seed: u64, fashion: bool) -> (Vec<u8>, Vec<u8>) {
    let mut noise = Noise::new(seed);
    let mut pixels = vec![0u8; count * 784];
    let mut labels = Vec::with_capacity(count);
    let side = if fashion { 28 } else { 20 };
    for image in pixels.chunks_mut(784) {
        let label = noise.byte(10);
        labels.push(label);
        let (mut top, mut left) = (0, 0);
        if !fashion {
            let (t, l) = centred_box(label);
            top = t + noise.below(5) as i32 - 2;
            left = l + noise.below(5) as i32 - 2;
        }
        let ink = 180 + noise.byte(76);
        for (p, v) in image.iter_mut().enumerate() {
            let (r, c) = (p as i32 / 28 - top, p as i32 % 28 - left);
            *v = if shape_pixel(label, r, c, side) {
                ink
            } else {
                noise.byte(16)
            };
        }
    }
    (pixels, labels)
}

/// Top-left corner that puts the centre of mass of `class`'s 20x20 shape at the field's centre.
fn centred_box(class: u8) -> (i32, i32) {
    let (mut n, mut sr, mut sc) = (0.0, 0.0, 0.0);
    for r in 0..20 {
        for c in 0..20 {
            if shape_pixel(class, r, c, 20) {
                n += 1.0;
                sr += f64::from(r) + 0.5;
                sc += f64::from(c) + 0.5;
            }
        }
    }
    let place = |centre: f64| (14.0 - centre).round().clamp(2.0, 6.0) as i32;
    (place(sr / n), place(sc / n))
}

/// A dataset folder: Fashion-MNIST-like garments when the name has "fashion" in it, digits
/// otherwise. [`train`] names the kind with --dataset: the folder's name decides nothing.
fn dataset_named(dir: &Path, name: &str, train: usize, test: usize) -> PathBuf {
    let fashion = name.contains("fashion");
    write_dataset(
        dir,
        name,
        images(train, 1, fashion),
        images(test, 2, fashion),
    )
}

/// Fashion-MNIST's class names, as the model names them.
const FASHION_NAMES: [&str; 10] = picodense::data::DatasetKind::FashionMnist.class_names();

/// A Fashion-MNIST-like dataset folder.
fn dataset(dir: &Path, train: usize, test: usize) -> PathBuf {
    dataset_named(dir, "fashion-shapes", train, test)
}

/// Trains on `data` for `epochs` with a validation split; extra arguments are appended.
fn train(data: &Path, model: &Path, epochs: &str, extra: &[&str]) -> String {
    let mut args = train_args(data, &["--epochs", epochs, "--validation-split", "0.1"]);
    args.extend(["--save", s(model)]);
    if data.to_string_lossy().contains("fashion") {
        args.extend(["--dataset", "fashion-mnist"]);
    }
    args.extend(extra);
    ok(&args)
}

/// Number of points of each polyline drawn in `stroke`.
fn polylines(svg: &str, stroke: &str) -> Vec<usize> {
    let mut lengths: Vec<usize> = svg
        .lines()
        .filter(|l| l.starts_with("<polyline") && l.contains(stroke))
        .map(|l| {
            l.split("points=\"")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .filter(|p| p.contains(','))
                .count()
        })
        .collect();
    lengths.sort_unstable();
    lengths
}

#[test]
fn train_plot_draws_one_series_per_metric_in_svg_and_png() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 600, 50);
    let model = dir.path().join("m.pdn");
    let svg_path = dir.path().join("curves.svg");
    let printed = train(&data, &model, "3", &["--plot", s(&svg_path)]);
    assert!(printed.contains("plotted"), "{printed}");
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    // Per panel (loss, accuracy) and series: one line through the 3 epochs, and a two-point
    // sample in the legend.
    assert_eq!(polylines(&svg, TRAIN_COLOUR), [2, 2, 3, 3], "{svg}");
    assert_eq!(polylines(&svg, VALIDATION_COLOUR), [2, 2, 3, 3], "{svg}");
    for label in ["loss", "accuracy", "epoch", "train", "validation"] {
        assert!(
            svg.contains(&format!("\n{label}\n</text>")),
            "{label}: {svg}"
        );
    }

    // Without a validation split there is nothing to draw for it.
    let plot_only = |epochs: &str, plot: &Path| {
        let extra = [
            "--epochs",
            epochs,
            "--quiet",
            "--save",
            s(&model),
            "--plot",
            s(plot),
        ];
        ok(&train_args(&data, &extra))
    };
    let png_path = dir.path().join("curves.png");
    plot_only("1", &png_path);
    let png = image::open(&png_path).unwrap();
    assert_eq!((png.width(), png.height()), (1000, 420));
    let svg_path = dir.path().join("no-validation.svg");
    plot_only("2", &svg_path);
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert_eq!(polylines(&svg, TRAIN_COLOUR), [2, 2, 2, 2], "{svg}");
    assert!(polylines(&svg, VALIDATION_COLOUR).is_empty(), "{svg}");
}

#[test]
fn a_plot_name_without_svg_or_png_fails_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 200, 20);
    let model = dir.path().join("m.pdn");
    for name in ["curves.jpg", "curves"] {
        let plot = dir.path().join(name);
        let printed = fails(&train_args(
            &data,
            &["--save", s(&model), "--plot", s(&plot)],
        ));
        assert!(printed.contains(s(&plot)), "{printed}");
        assert!(printed.contains(".svg or .png"), "{printed}");
        assert!(!printed.contains("Epoch"), "trained anyway: {printed}");
        assert!(!model.exists());
    }
}

#[test]
fn evaluate_prints_the_confusion_matrix_and_writes_the_report_images() {
    let dir = tempfile::tempdir().unwrap();
    let test_size = 300;
    let data = dataset(dir.path(), 1000, test_size);
    let model = dir.path().join("m.pdn");
    train(&data, &model, "2", &["--quiet"]);

    let printed = ok(&model_args("evaluate", &model, &data, &["--confusion"]));
    // Rows are the true classes, named; columns the predicted ones.
    let rows: Vec<Vec<u64>> = (0..10)
        .map(|c| {
            let name = [
                "0 T-shirt/top",
                "1 Trouser",
                "2 Pullover",
                "3 Dress",
                "4 Coat",
                "5 Sandal",
                "6 Shirt",
                "7 Sneaker",
                "8 Bag",
                "9 Ankle boot",
            ][c];
            let line = printed
                .lines()
                .find(|l| l.starts_with(name) && !l.contains('.'))
                .unwrap_or_else(|| panic!("no row for {name}: {printed}"));
            line[name.len()..]
                .split_whitespace()
                .map(|n| n.parse().unwrap())
                .collect()
        })
        .collect();
    assert!(rows.iter().all(|r| r.len() == 10), "{printed}");
    let total: u64 = rows.iter().flatten().sum();
    assert_eq!(total, test_size as u64, "{printed}");
    assert!(printed.contains("precision  recall  support"), "{printed}");

    let json = ok_json(&model_args(
        "evaluate",
        &model,
        &data,
        &["--confusion", "--json"],
    ));
    let matrix: Vec<Vec<u64>> = serde_json::from_value(json["confusion"].clone()).unwrap();
    assert_eq!(matrix, rows);
    assert_eq!(json["recall"].as_array().unwrap().len(), 10);
    let correct: u64 = (0..10).map(|c| matrix[c][c]).sum();
    let accuracy = json["test_accuracy"].as_f64().unwrap();
    assert!((accuracy - correct as f64 / test_size as f64).abs() < 1e-9);
    // The details come from the same forward pass as the plain figures.
    let plain = ok_json(&model_args("evaluate", &model, &data, &["--json"]));
    assert_eq!(plain["test_loss"], json["test_loss"]);
    assert_eq!(plain["test_accuracy"], json["test_accuracy"]);

    let report = dir.path().join("report").join("nested");
    let printed = ok(&model_args(
        "evaluate",
        &model,
        &data,
        &["--report", s(&report)],
    ));
    assert!(printed.contains("confusion.png"), "{printed}");
    let confusion = image::open(report.join("confusion.png")).unwrap();
    assert_eq!((confusion.width(), confusion.height()), (820, 780));
    let grid = image::open(report.join("misclassified.png")).unwrap();
    // Up to 25 mistakes, five to a row; a row saying there are none when there are none.
    let shown = (test_size as u64 - correct).min(25) as u32;
    let rows = shown.div_ceil(5).max(1);
    assert_eq!((grid.width(), grid.height()), (750, 44 + 136 * rows));
}

/// Test image `index` scaled up 8 times, inverted and put on a wider sheet: a dark shape on
/// white paper, as a phone would see it.
fn render_as_photo(data: &Path, index: usize, path: &Path) -> u8 {
    let images = std::fs::read(data.join("t10k-images-idx3-ubyte")).unwrap();
    let labels = std::fs::read(data.join("t10k-labels-idx1-ubyte")).unwrap();
    let pixels = &images[16 + index * 784..16 + (index + 1) * 784];
    let (scale, margin) = (8, 40);
    let side = 28 * scale + 2 * margin;
    let picture = image::GrayImage::from_fn(side, side + 30, |x, y| {
        let (x, y) = (x.wrapping_sub(margin), y.wrapping_sub(margin));
        let v = if x < 28 * scale && y < 28 * scale {
            pixels[(y / scale) as usize * 28 + (x / scale) as usize]
        } else {
            0
        };
        image::Luma([255 - v])
    });
    picture.save(path).unwrap();
    labels[8 + index]
}

#[test]
fn predict_classifies_a_picture_of_a_test_image() {
    let dir = tempfile::tempdir().unwrap();
    for (name, trouser) in [("mnist-shapes", "1"), ("fashion-shapes", "1 Trouser")] {
        let data = dataset_named(dir.path(), name, 2000, 200);
        let model = dir.path().join(format!("{name}.pdn"));
        train(&data, &model, "2", &["--quiet"]);
        // The model names its kind of data and the files it came from.
        let source = match name.contains("fashion") {
            true => format!("fashion-mnist, from {}", s(&data)),
            false => s(&data).to_owned(),
        };
        let inspected = ok(&["inspect", s(&model)]);
        assert!(
            inspected.contains(&format!("data:          {source}\n")),
            "{inspected}"
        );
        let labels = std::fs::read(data.join("t10k-labels-idx1-ubyte")).unwrap();
        // The first test image of every class.
        for class in 0..10u8 {
            let index = labels[8..].iter().position(|&l| l == class).unwrap();
            let picture = dir.path().join(format!("{name}-{class}.png"));
            assert_eq!(render_as_photo(&data, index, &picture), class);
            let json = ok_json(&["predict", "--model", s(&model), s(&picture), "--json"]);
            assert_eq!(json["class"], u64::from(class), "{name} {class}: {json}");
            // Named where the data names its classes: Fashion-MNIST's, not the digits'.
            let named = name
                .contains("fashion")
                .then(|| FASHION_NAMES[usize::from(class)]);
            assert_eq!(json["name"].as_str(), named, "{name} {class}: {json}");
            let p: Vec<f64> = serde_json::from_value(json["probabilities"].clone()).unwrap();
            assert_eq!(p.len(), 10);
            assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{p:?}");
        }

        // The text form names the top three classes and can draw what the model saw.
        let picture = dir.path().join(format!("{name}-1.png"));
        let printed = ok(&["predict", "--model", s(&model), s(&picture), "--show"]);
        assert!(
            printed.contains(&format!("predicted: {trouser}\n")),
            "{printed}"
        );
        for rank in [format!("  1. {trouser} "), "  2. ".into(), "  3. ".into()] {
            assert_eq!(
                printed.lines().filter(|l| l.starts_with(&rank)).count(),
                1,
                "{printed}"
            );
        }
        assert!(!printed.contains("  4. "), "{printed}");
        assert!(printed.contains('█'), "{printed}");
    }
}

#[test]
fn predict_takes_an_image_or_an_index_but_not_both() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 300, 20);
    let model = dir.path().join("m.pdn");
    train(&data, &model, "1", &["--quiet"]);
    let picture = dir.path().join("photo.png");
    render_as_photo(&data, 0, &picture);

    let printed = ok(&model_args("predict", &model, &data, &["--index", "0"]));
    assert!(printed.contains("true label:"), "{printed}");
    let json = ok_json(&model_args(
        "predict",
        &model,
        &data,
        &["--index", "0", "--json"],
    ));
    assert!(
        json["class"].is_u64() && json["probabilities"].is_array(),
        "{json}"
    );
    let class = json["class"].as_u64().unwrap() as usize;
    assert_eq!(json["name"].as_str(), Some(FASHION_NAMES[class]), "{json}");
    assert!(
        printed.contains(&format!("predicted:  {class} ({})", FASHION_NAMES[class])),
        "{printed}"
    );

    let notes = dir.path().join("notes.png");
    std::fs::write(&notes, "not a picture").unwrap();
    let blank = dir.path().join("blank.png");
    image::GrayImage::from_pixel(50, 40, image::Luma([250]))
        .save(&blank)
        .unwrap();
    for (args, needle) in [
        (
            vec!["predict", "--model", s(&model), s(&picture), "--index", "0"],
            "cannot be used with",
        ),
        (
            vec!["predict", "--model", s(&model)],
            "<IMAGE|--index <INDEX>|--csv <CSV>>",
        ),
        (
            vec![
                "predict",
                "--model",
                s(&model),
                s(&picture),
                "--show",
                "--json",
            ],
            "cannot be used with",
        ),
        (
            vec!["predict", "--model", s(&model), s(&notes)],
            "notes.png: cannot read the image",
        ),
        (
            vec!["predict", "--model", s(&model), "nowhere.png"],
            "nowhere.png: No such file",
        ),
        (
            vec!["predict", "--model", s(&model), s(&blank)],
            "blank.png: no ink found",
        ),
    ] {
        let printed = fails(&args);
        assert!(printed.contains(needle), "{args:?}: {printed}");
        // The decoder's words once, not again for each error in its chain.
        assert!(printed.matches("PNG signature").count() <= 1, "{printed}");
    }
}

#[test]
fn bench_reports_the_median_of_its_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 600, 100);
    let out = ok(&[
        "bench",
        "--data",
        s(&data),
        "--epochs",
        "2",
        "--repeat",
        "3",
    ]);
    assert!(out.contains("2 epochs, batch 128"), "{out}");
    assert!(out.contains("median of 3 rounds"), "{out}");
    // The words of the first line whose first word is `first` and second a number.
    let field = |first: &str| -> Vec<String> {
        let words = out
            .lines()
            .map(|l| l.split_whitespace().map(String::from).collect());
        words
            .filter(|w: &Vec<String>| w.len() > 1 && w[0] == first)
            .find(|w| w[1].parse::<f64>().is_ok() || w[1] == "(s):")
            .unwrap_or_else(|| panic!("no {first} line in {out}"))
    };
    let rounds: Vec<f64> = field("rounds")[2..]
        .iter()
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(rounds.len(), 3, "{out}");
    let mut sorted = rounds.clone();
    sorted.sort_by(f64::total_cmp);
    let ours = field("picodense");
    let fit: f64 = ours[1].parse().unwrap();
    assert_eq!(fit, sorted[1], "{out}");
    let accuracy: f64 = ours[4].parse().unwrap();
    assert!((0.0..=1.0).contains(&accuracy), "{out}");
    // Two epoch losses, one per epoch, both finite.
    let losses: Vec<f64> = ours[6..].iter().map(|v| v.parse().unwrap()).collect();
    assert_eq!(losses.len(), 2, "{out}");
    assert!(losses.iter().all(|l| l.is_finite()), "{out}");

    let refused = fails(&["bench", "--data", s(&data), "--repeat", "0"]);
    assert!(refused.contains("--repeat"), "{refused}");
}
