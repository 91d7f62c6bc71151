//! Any stack of Dense layers on any data: image sizes and class counts from the files, CSV with
//! named classes, `--hidden`, and every command on the model that results.

mod common;

use std::path::{Path, PathBuf};

use common::{Noise, fails, fit_first_epoch, ok, s, train_args, write_images_dataset};

/// `count` 12x10 images of 3 classes (a bright band whose row depends on the class) and
/// their labels.
fn band_images(count: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let mut noise = Noise::new(seed);
    let mut pixels = vec![0u8; count * 120];
    let mut labels = Vec::new();
    for image in pixels.chunks_mut(120) {
        let label = noise.byte(3);
        labels.push(label);
        for (p, v) in image.iter_mut().enumerate() {
            let row = p / 10;
            *v = if row / 4 == usize::from(label) {
                180 + noise.byte(70)
            } else {
                noise.byte(40)
            };
        }
    }
    (pixels, labels)
}

/// A folder of 12x10 IDX images with 3 classes.
fn small_images(dir: &Path) -> PathBuf {
    let (train, train_labels) = band_images(300, 1);
    let (test, test_labels) = band_images(60, 2);
    write_images_dataset(
        dir,
        "bands",
        (12, 10),
        (&train, &train_labels),
        (&test, &test_labels),
    )
}

/// `train --data DATA --hidden HIDDEN --save MODEL`, then `extra`.
fn train_hidden<'a>(
    data: &'a Path,
    hidden: &'a str,
    model: &'a Path,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let args = train_args(data, &["--hidden", hidden, "--save", s(model)]);
    [&args[..], extra].concat()
}

/// Rows of three features whose class (a name) follows the first two, in CSV with quotes and
/// CRLF line ends, the label column in the middle.
fn small_csv(dir: &Path, name: &str, rows: usize, seed: u64) -> PathBuf {
    let mut noise = Noise::new(seed);
    let mut text = String::from("\u{feff}\"width, cm\",label,height\r\n");
    for _ in 0..rows {
        let (a, b) = (
            noise.below(1000) as f32 / 100.0,
            noise.below(1000) as f32 / 100.0,
        );
        let class = match (a > 5.0, b > 5.0) {
            (true, true) => "\"large, round\"",
            (true, false) => "wide",
            _ => "tall",
        };
        text += &format!("{a},{class},{b}\r\n");
    }
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The test accuracy `train` or `evaluate` printed.
fn test_accuracy(printed: &str) -> f64 {
    printed
        .lines()
        .find_map(|l| l.strip_prefix("test accuracy: "))
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_deep_network_on_images_of_another_size() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_images(dir.path());
    let model = dir.path().join("deep.pdn");
    let printed = ok(&train_hidden(
        &data,
        "16,8",
        &model,
        &[
            "--epochs",
            "8",
            "--batch-size",
            "32",
            "--learning-rate",
            "0.01",
        ],
    ));
    // The summary: 120 inputs from the files, 3 classes from the labels.
    assert!(printed.contains("Model: 120-16-8-3"), "{printed}");
    assert!(
        printed.contains("(None, 16)") && printed.contains("1936"),
        "{printed}"
    );
    assert!(printed.contains("Total params: 2099"), "{printed}");
    let accuracy = test_accuracy(&printed);
    assert!(accuracy > 0.9, "{printed}");

    // Every command takes the model's own data when given none.
    let evaluated = ok(&["evaluate", "--model", s(&model), "--confusion"]);
    assert!(
        evaluated.contains(&format!("test accuracy: {accuracy:.4}")),
        "{evaluated}"
    );
    let predicted = ok(&["predict", "--model", s(&model), "--index", "3", "--json"]);
    let value: serde_json::Value = serde_json::from_str(predicted.trim()).unwrap();
    assert_eq!(value["probabilities"].as_array().unwrap().len(), 3);
    let inspected = ok(&["inspect", s(&model)]);
    assert!(inspected.contains("PDN version 2"), "{inspected}");
    assert!(inspected.contains("Model: 120-16-8-3"), "{inspected}");

    // A picture of any size, scaled to the model's 12x10: a bright band across its middle
    // third is class 1.
    let picture = dir.path().join("band.png");
    image::GrayImage::from_fn(50, 60, |_, y| {
        image::Luma([if (20..40).contains(&y) { 230 } else { 10 }])
    })
    .save(&picture)
    .unwrap();
    let predicted = ok(&["predict", "--model", s(&model), s(&picture), "--json"]);
    let value: serde_json::Value = serde_json::from_str(predicted.trim()).unwrap();
    assert_eq!(value["class"], 1, "{predicted}");

    // Gone data: the message says what to pass.
    std::fs::rename(&data, dir.path().join("moved")).unwrap();
    let gone = fails(&["evaluate", "--model", s(&model)]);
    assert!(
        gone.contains("not there any more") && gone.contains("--data"),
        "{gone}"
    );
}

#[test]
fn deep_networks_train_to_the_same_bytes_on_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_images(dir.path());
    let train = |threads: &str| {
        let model = dir.path().join(format!("t{threads}.pdn"));
        let extra = ["--epochs", "2", "--threads", threads, "--quiet"];
        ok(&train_hidden(&data, "64,32,16", &model, &extra));
        std::fs::read(model).unwrap()
    };
    let one = train("1");
    assert!(one == train("2"), "2 threads changed the model");
    assert!(one == train("3"), "3 threads changed the model");
}

#[test]
fn csv_with_named_classes_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let train = small_csv(dir.path(), "train.csv", 400, 3);
    small_csv(dir.path(), "test.csv", 100, 4);
    let model = dir.path().join("table.pdn");
    let printed = ok(&train_hidden(
        dir.path(),
        "16",
        &model,
        &[
            "--epochs",
            "30",
            "--batch-size",
            "32",
            "--learning-rate",
            "0.01",
        ],
    ));
    assert!(printed.contains("Model: 2-16-3"), "{printed}");
    let accuracy = test_accuracy(&printed);
    assert!(accuracy > 0.85, "{printed}");

    let inspected = ok(&["inspect", s(&model)]);
    assert!(
        inspected.contains("classes:       large, round, tall, wide"),
        "{inspected}"
    );
    assert!(inspected.contains("input scaling: standard"), "{inspected}");

    // One prediction a row, with the class names, scaled as in training.
    let predictions = ok(&[
        "predict",
        "--model",
        s(&model),
        "--csv",
        s(&train),
        "--json",
    ]);
    let lines: Vec<serde_json::Value> = predictions
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 400);
    let names = ["large, round", "tall", "wide"];
    for line in &lines {
        let class = line["class"].as_u64().unwrap() as usize;
        assert_eq!(line["name"], names[class], "{line}");
        assert_eq!(line["probabilities"].as_array().unwrap().len(), 3);
    }
    let plain = ok(&["predict", "--model", s(&model), "--csv", s(&train)]);
    assert!(plain.lines().all(|l| names.contains(&l)), "{plain}");

    // The model's own data by default, with its own scaling.
    let evaluated = ok(&["evaluate", "--model", s(&model)]);
    assert!(
        evaluated.contains(&format!("test accuracy: {accuracy:.4}")),
        "{evaluated}"
    );

    // A CSV of other columns is refused with the file and the column.
    let other = dir.path().join("other.csv");
    std::fs::write(&other, "width,depth\n1,2\n").unwrap();
    let refused = fails(&["predict", "--model", s(&model), "--csv", s(&other)]);
    assert!(refused.contains(s(&other)), "{refused}");

    // Its f32 export keeps the scaling and the class names: it evaluates like the model.
    let exported = dir.path().join("table-f32.pdn");
    let export = ["--format", "f32", "--out", s(&exported)];
    ok(&[&["export", "--model", s(&model)], &export[..]].concat());
    let evaluated = ok(&["evaluate", "--model", s(&exported)]);
    assert!(
        evaluated.contains(&format!("test accuracy: {accuracy:.4}")),
        "{evaluated}"
    );
    let inspected = ok(&["inspect", s(&exported)]);
    assert!(inspected.contains("input scaling: standard"), "{inspected}");
    assert!(
        inspected.contains("classes:       large, round"),
        "{inspected}"
    );

    // A model scales its inputs as it was trained: another scaling is refused, not ignored.
    let refused = fails(&["evaluate", "--model", s(&model), "--normalize", "none"]);
    assert!(
        refused.contains("--normalize none: the model scales its inputs as it was trained"),
        "{refused}"
    );
    // int8 quantises pixels: a table's model is refused, naming it.
    let int8 = dir.path().join("table-int8.pdn");
    let export = ["--format", "int8", "--out", s(&int8)];
    let refused = fails(&[&["export", "--model", s(&model)], &export[..]].concat());
    assert!(
        refused.contains(&format!(
            "{}: int8 export takes models of images",
            s(&model)
        )),
        "{refused}"
    );
    assert!(!int8.exists());
}

#[test]
fn hidden_layers_past_the_limits_are_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_images(dir.path());
    for (hidden, problem) in [
        ("0", "hidden layer 1 has 0 units"),
        ("8,4097", "hidden layer 2 has 4097 units"),
        ("4,4,4,4,4", "5 hidden layers"),
        ("-3", "expected a number of units, got \"-3\""),
    ] {
        let model = dir.path().join("never.pdn");
        let printed = fails(&train_hidden(&data, hidden, &model, &[]));
        assert!(printed.contains(problem), "{hidden}: {printed}");
        assert!(!model.exists());
    }
}

#[test]
fn version_1_model_files_still_load() {
    use picodense_core::format::{Sections, encode, encoded_len};
    let dir = tempfile::tempdir().unwrap();
    let data = small_images(dir.path());
    // A 120-6-3 network written as version 1 (one hidden layer, no metadata).
    let shape = picodense_core::Shape::new(120, &[6], 3).unwrap();
    let params: Vec<f32> = (0..shape.parameters())
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 500.0)
        .collect();
    let layers = picodense_core::Layers::split(shape, &params).unwrap();
    let sections = Sections::default();
    let mut bytes = vec![0u8; encoded_len(shape, &sections)];
    encode(&layers, &sections, &mut bytes).unwrap();
    assert_eq!(u16::from_le_bytes([bytes[4], bytes[5]]), 1);
    let model = dir.path().join("v1.pdn");
    std::fs::write(&model, &bytes).unwrap();
    let inspected = ok(&["inspect", s(&model)]);
    assert!(inspected.contains("PDN version 1"), "{inspected}");
    let evaluated = ok(&["evaluate", "--model", s(&model), "--data", s(&data)]);
    assert!(evaluated.contains("test accuracy: "), "{evaluated}");
}

/// A deep network stopped after its first epoch and resumed from the checkpoint ends with the
/// bytes of an uninterrupted run.
#[test]
fn a_deep_network_resumes_to_the_same_bytes() {
    use picodense::model::ModelMeta;
    use picodense::train::{RunControl, TrainConfig, Trainer};

    let (pixels, labels) = band_images(300, 5);
    let data = picodense::data::Dataset::from_images(120, pixels, labels);
    let config = TrainConfig {
        epochs: 3,
        batch_size: 32,
        hidden: vec![16, 8],
        ..TrainConfig::default()
    };
    let shape = picodense_core::Shape::new(120, &[16, 8], 3).unwrap();
    let fresh = || Trainer::new(&config, shape, ModelMeta::default()).unwrap();
    let mut whole = fresh();
    whole
        .fit(&config, &data, None, &RunControl::none(), &mut |_| {})
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("deep.ckpt");
    fit_first_epoch(&mut fresh(), &config, &data, &ckpt);
    let (mut resumed, config) =
        Trainer::resume(&ckpt, 1, picodense_core::Kernel::PORTABLE).unwrap();
    assert_eq!(resumed.network.shape, shape);
    resumed
        .fit(&config, &data, None, &RunControl::none(), &mut |_| {})
        .unwrap();
    assert!(
        resumed.to_bytes() == whole.to_bytes(),
        "resumed run differs"
    );
}

/// `export --out NAME.h` writes the exported bytes as an aligned C array with the layer sizes
/// as macros: the array's bytes are the binary export's, and a C compiler takes the header.
#[test]
fn c_header_holds_the_binary_export() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_images(dir.path());
    let model = dir.path().join("deep.pdn");
    // Spaces after the commas, as a shell user may quote them.
    ok(&train_hidden(
        &data,
        "16, 8",
        &model,
        &["--epochs", "2", "--quiet"],
    ));
    assert!(ok(&["inspect", s(&model)]).contains("-16-8-"));
    for format in ["int8", "f32", "tflite"] {
        let binary = dir.path().join(format!("m-{format}.pdn"));
        let header = dir.path().join(format!("m-{format}.h"));
        let upper = dir.path().join(format!("m-{format}.H"));
        for out in [&binary, &header, &upper] {
            ok(&[
                "export",
                "--model",
                s(&model),
                "--format",
                format,
                "--out",
                s(out),
            ]);
        }
        let bytes = std::fs::read(&binary).unwrap();
        let text = std::fs::read_to_string(&header).unwrap();
        assert_eq!(std::fs::read(&upper).unwrap(), text.as_bytes());
        let what = match format {
            "tflite" => "bytes: a TensorFlow Lite flatbuffer for TFLite Micro. */",
            _ => "bytes: a .pdn file for picodense-core's views. */",
        };
        assert!(text.lines().next().unwrap().ends_with(what), "{format}");
        let array = &text[text.find("= {").unwrap()..text.find("};").unwrap()];
        let parsed: Vec<u8> = array
            .split(|c: char| c == ',' || c.is_whitespace() || c == '{' || c == '=')
            .filter_map(|t| t.strip_prefix("0x"))
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect();
        assert!(
            parsed == bytes,
            "{format}: the array differs from the export"
        );
        for line in [
            "#define PICODENSE_MODEL_INPUTS 120",
            "#define PICODENSE_MODEL_CLASSES 3",
            "#define PICODENSE_MODEL_HIDDEN_LAYERS 2",
            "#define PICODENSE_MODEL_HIDDEN_1 16",
            "#define PICODENSE_MODEL_HIDDEN_2 8",
            &format!("#define PICODENSE_MODEL_LEN {}u", bytes.len()),
            "__attribute__((aligned(16)))",
            "#ifndef PICODENSE_MODEL_H",
        ] {
            assert!(text.contains(line), "{format}: no {line:?}");
        }
        // The header compiles, and the array is as long and as aligned as it says.
        let main = dir.path().join("main.c");
        std::fs::write(
            &main,
            format!(
                "#include \"{}\"\nint main(void) {{ return sizeof picodense_model == \
                 picodense_model_len && (unsigned long)picodense_model % 16 == 0 ? 0 : 1; }}\n",
                s(&header)
            ),
        )
        .unwrap();
        let exe = dir.path().join("check");
        match std::process::Command::new("cc")
            .arg(&main)
            .arg("-o")
            .arg(&exe)
            .output()
        {
            Ok(built) => {
                assert!(
                    built.status.success(),
                    "{}",
                    String::from_utf8_lossy(&built.stderr)
                );
                assert!(std::process::Command::new(&exe).status().unwrap().success());
            }
            Err(e) => eprintln!("skipped compiling the header: no C compiler ({e})"),
        }
    }
}
