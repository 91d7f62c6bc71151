//! `evaluate`, `predict` and `inspect`: the subcommands that use a trained model.

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use picodense::compute::{KernelChoice, select_kernel};
use picodense::data::csv as csv_data;
use picodense::data::{self, DatasetKind, Splits};
use picodense::evaluation::{ConfusionMatrix, Prediction, class_label, predicted_classes, top_k};
use picodense::model::{ModelMeta, Network};
use picodense::plot;
use picodense::train::Trainer;
use picodense::{export, image_input};
use picodense::{say, sayln};
use picodense_core::format::{Dtype, ModelView};

use crate::cli;
use crate::{compute_settings, data_inputs, load_data, summary};

pub fn run_evaluate(args: cli::EvaluateArgs) -> Result<()> {
    let (threads, kernel) = compute_settings(&args.compute)?;
    let bytes = picodense::model::read_model_file(&args.model)?;
    let view = picodense::model::parse_model(&args.model, &bytes)?;
    let network = match view.header().dtype {
        Dtype::F32 => Some(Network::from_view(&args.model, &view)?),
        Dtype::Int8 => None,
    };
    let model_meta = network
        .as_ref()
        .map_or_else(|| ModelMeta::of_header(view.header()), |n| n.meta.clone());
    if let Some(dir) = &args.report {
        check_report_folder(
            dir,
            &args.model,
            &data_inputs(&args.data, Some(&model_meta)),
        )?;
    }
    let loaded = load_data(&args.data, Some(&model_meta), args.json)?;
    let splits = &loaded.splits;
    let wants_details = args.confusion || args.report.is_some();
    let (test, details, meta, classes) = match network {
        Some(network) => {
            check_fits(&args.model, &network, splits)?;
            let (meta, classes) = (network.meta.clone(), network.shape.classes());
            let mut trainer = Trainer::with_network(network, threads, kernel);
            if wants_details {
                let (test, probabilities) = trainer.evaluate_with_probabilities(&splits.test);
                let predicted = predicted_classes(&probabilities);
                let matrix = ConfusionMatrix::new(classes, &splits.test.labels, &predicted);
                (test, Some((probabilities, matrix)), meta, classes)
            } else {
                (trainer.evaluate(&splits.test), None, meta, classes)
            }
        }
        None => {
            if wants_details {
                bail!(
                    "{}: an int8 export: --confusion and --report need the f32 model that \
                     `train` saved",
                    args.model.display()
                );
            }
            let test = export::evaluate_int8(&bytes, &splits.test, threads)
                .with_context(|| format!("{}", args.model.display()))?;
            (test, None, model_meta, splits.classes())
        }
    };
    let names = meta.class_names(classes);
    if args.json {
        let mut out =
            serde_json::json!({"test_loss": test.mean_loss(), "test_accuracy": test.accuracy()});
        if let (true, Some((_, matrix))) = (args.confusion, &details) {
            out["confusion"] = serde_json::json!(matrix.counts);
            out["precision"] = serde_json::json!(
                (0..classes)
                    .map(|c| matrix.precision(c))
                    .collect::<Vec<_>>()
            );
            out["recall"] =
                serde_json::json!((0..classes).map(|c| matrix.recall(c)).collect::<Vec<_>>());
        }
        sayln!("{out}");
    } else {
        sayln!("test loss: {:.4}", test.mean_loss());
        sayln!("test accuracy: {:.4}", test.accuracy());
        if let (true, Some((_, matrix))) = (args.confusion, &details) {
            say!("\n{}", matrix.to_table(&names));
        }
    }
    if let (Some(dir), Some((probabilities, matrix))) = (&args.report, &details) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create the report folder", dir.display()))?;
        let set = format!("{} test set", loaded.kind.map_or("the", |k| k.name()));
        let (confusion, misclassified) = plot::evaluation_report(
            dir,
            &splits.test,
            splits.image,
            probabilities,
            matrix,
            &names,
            &set,
        )?;
        if !args.json {
            match misclassified {
                Some(m) => sayln!("wrote {} and {}", confusion.display(), m.display()),
                None => sayln!("wrote {}", confusion.display()),
            }
        }
    }
    Ok(())
}

/// Refuses, before any work, a `--report` folder that is a file, or whose figures would
/// replace an input of the run (the model, a data file) or something that is not a file.
fn check_report_folder(
    dir: &std::path::Path,
    model: &std::path::Path,
    data: &[std::path::PathBuf],
) -> Result<()> {
    let cannot_create = || format!("{}: cannot create the report folder", dir.display());
    match std::fs::metadata(dir) {
        // A folder still to be made holds no input, but the nearest folder that exists must
        // take it.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = dir
                .ancestors()
                .skip(1)
                .find(|a| a.exists())
                .unwrap_or(std::path::Path::new("."));
            picodense::fs::check_writable(&parent.join(".picodense-report-probe"))
                .with_context(cannot_create)?;
            return Ok(());
        }
        Err(e) => return Err(e).with_context(cannot_create),
        Ok(meta) if !meta.is_dir() => bail!("{}: --report is not a folder", dir.display()),
        Ok(_) => {}
    }
    let (confusion, misclassified) = plot::report_paths(dir);
    let outputs = [
        picodense::fs::Output::new("--report's confusion.png", &confusion),
        picodense::fs::Output::new("--report's misclassified.png", &misclassified),
    ];
    let mut inputs = data.to_vec();
    inputs.push(model.to_owned());
    Ok(picodense::fs::check_outputs(&outputs, &inputs)?)
}

/// Refuses data whose rows or labels the network of the model file `path` cannot take.
pub(crate) fn check_fits(path: &std::path::Path, network: &Network, splits: &Splits) -> Result<()> {
    let shape = network.shape;
    if splits.width() != shape.inputs() {
        bail!(
            "{}: the model ({shape}) takes {} inputs, the data has {} values a row",
            path.display(),
            shape.inputs(),
            splits.width()
        );
    }
    if let (Some(model), Some(data)) = (&network.meta.classes, &splits.class_names)
        && model != data
    {
        bail!(
            "{}: the model's classes are {}, the data's {}",
            path.display(),
            model.join(", "),
            data.join(", ")
        );
    }
    if splits.test.label_bound() > shape.classes() {
        bail!(
            "{}: the test labels reach {}, the model ({shape}) has {} classes",
            path.display(),
            splits.test.label_bound() - 1,
            shape.classes()
        );
    }
    Ok(())
}

pub fn run_predict(args: cli::PredictArgs) -> Result<()> {
    let network = picodense::model::load_network(&args.model)?;
    let meta = network.meta.clone();
    let classes = network.shape.classes();
    let names = meta.class_names(classes);
    let mut trainer = Trainer::with_network(network, 1, select_kernel(KernelChoice::Auto)?);
    let json = |probabilities| {
        let mut prediction = Prediction::new(probabilities);
        if meta.names_classes() {
            prediction.name = Some(names[prediction.class].clone());
        }
        serde_json::to_string(&prediction)
    };
    if let Some(path) = &args.csv {
        let features = meta.features.as_ref().with_context(|| {
            format!(
                "{}: --csv needs a model trained on CSV data",
                args.model.display()
            )
        })?;
        let rows = csv_data::read_features(path, features, meta.label_column.as_deref())?;
        for row in rows.chunks_exact(features.len().max(1)) {
            // A reader that left (`| head`) wants no more rows.
            if picodense::report::stdout_error().is_some() {
                break;
            }
            let mut row = row.to_vec();
            meta.scaling.apply(&mut row);
            let p = trainer.probabilities(&row);
            if args.json {
                sayln!("{}", json(p)?);
            } else {
                sayln!("{}", names[picodense_core::loss::argmax(&p)]);
            }
        }
        return Ok(());
    }
    if let Some(path) = &args.image {
        let kind = meta
            .dataset_kind()
            .or(args.data.dataset)
            .unwrap_or(DatasetKind::Mnist);
        let pixels = match meta.image {
            // Digits and garments: prepared as MNIST and Fashion-MNIST were made.
            Some([data::IMAGE_SIDE, data::IMAGE_SIDE]) => {
                image_input::load(path, image_input::Layout::of(kind))?.to_vec()
            }
            Some([rows, cols]) => image_input::load_resized(path, rows, cols)?,
            None => bail!(
                "{}: the model was trained on features, not images: give --csv or --index",
                path.display()
            ),
        };
        let cols = meta.image.map_or(data::IMAGE_SIDE, |[_, c]| c);
        let p = trainer.image_probabilities(&pixels);
        if args.json {
            sayln!("{}", json(p)?);
            return Ok(());
        }
        if args.show {
            say!("{}", draw(&pixels, cols));
        }
        let top = top_k(&p, 3);
        sayln!("predicted: {}", class_label(top[0].0, &names));
        for (rank, (class, prob)) in top.into_iter().enumerate() {
            sayln!(
                "  {}. {:<14} {prob:.4} {}",
                rank + 1,
                class_label(class, &names),
                "#".repeat((prob * 40.0).round() as usize)
            );
        }
        return Ok(());
    }
    let index = args
        .index
        .context("give an image file, --index N (a test-set row) or --csv FILE")?;
    let loaded = load_data(&args.data, Some(&meta), args.json)?;
    let test = &loaded.splits.test;
    check_fits(&args.model, &trainer.network, &loaded.splits)?;
    if index >= test.len() {
        bail!(
            "--index {} is out of range: the test set has {} rows",
            index,
            test.len()
        );
    }
    let p = if test.is_images() {
        trainer.image_probabilities(test.image(index))
    } else {
        trainer.probabilities(test.row_values(index))
    };
    if args.json {
        sayln!("{}", json(p)?);
        return Ok(());
    }
    if let (true, Some(size)) = (test.is_images(), loaded.splits.image) {
        say!("{}", draw(test.image(index), size.cols));
    }
    let predicted = picodense_core::loss::argmax(&p);
    let label = test.labels[index] as usize;
    sayln!("true label: {} ({})", label, names[label]);
    sayln!("predicted:  {} ({})", predicted, names[predicted]);
    for (class, prob) in p.iter().enumerate() {
        sayln!(
            "  {class} {:<12} {prob:.4} {}",
            names[class],
            "#".repeat((prob * 40.0).round() as usize)
        );
    }
    Ok(())
}

/// An image as lines of shade characters, two per pixel so it looks square.
fn draw(pixels: &[u8], cols: usize) -> String {
    const SHADES: [char; 5] = [' ', '░', '▒', '▓', '█'];
    let shade = |p: u8| SHADES[(usize::from(p) * (SHADES.len() - 1) + 127) / 255];
    let mut out = String::new();
    for row in pixels.chunks(cols.max(1)) {
        for &p in row {
            // Two characters per pixel keep the aspect ratio square.
            out.push(shade(p));
            out.push(shade(p));
        }
        out.push('\n');
    }
    out
}

pub fn run_inspect(path: &std::path::Path) -> Result<()> {
    let bytes = picodense::model::read_model_file(path)?;
    let view = ModelView::parse(&bytes)
        .with_context(|| format!("{}: checksum or format check failed", path.display()))?;
    let h = view.header();
    // "checksum: ok" must not vouch for a file every command refuses: the weights (and a
    // checkpoint's record and state) are checked as the commands that load them check them.
    let (meta, checkpoint) = match h.dtype {
        Dtype::F32 if h.has_extra => {
            let (trainer, config) = Trainer::resume(path, 1, picodense_core::Kernel::PORTABLE)?;
            let at = trainer.position();
            let mut run = format!("{} of {} epochs done", at.epoch, config.epochs);
            if at.step > 0 {
                run += &format!(", {} steps into the next", at.step);
            }
            let optimizer = config.optimizer.to_possible_value().expect("not skipped");
            run += &format!("; seed {}, {}", config.seed, optimizer.get_name());
            (trainer.network.meta, Some(run))
        }
        Dtype::F32 => (Network::from_view(path, &view)?.meta, None),
        Dtype::Int8 => (ModelMeta::of_header(h), None),
    };
    sayln!("file:          {} ({} bytes)", path.display(), bytes.len());
    sayln!("format:        PDN version {}", h.version);
    say!("{}", summary(h.shape));
    sayln!("dtype:         {}", h.dtype.name());
    let data = match (&meta.dataset, &meta.data) {
        (Some(kind), Some(path)) => format!("{kind}, from {}", path.display()),
        (Some(kind), None) => kind.clone(),
        (None, Some(path)) => path.display().to_string(),
        (None, None) => "unknown".into(),
    };
    sayln!("data:          {data}");
    sayln!("input scaling: {}", meta.scaling.name());
    if meta.names_classes() {
        sayln!(
            "classes:       {}",
            meta.class_names(h.shape.classes()).join(", ")
        );
    }
    match checkpoint {
        Some(run) => sayln!("checkpoint:    {run}"),
        None => sayln!("checkpoint:    no (a model: no optimizer state or position)"),
    }
    if h.has_optimizer {
        sayln!("optimizer:     RMSprop state included");
    }
    sayln!(
        "checksum:      ok (CRC-32 {:08x})",
        u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().expect("4 bytes"))
    );
    Ok(())
}
