//! The `picodense` command.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use picodense::compute::{KernelChoice, default_threads, select_kernel};
use picodense::data::{self, DatasetKind, Splits};
use picodense::evaluation::{ConfusionMatrix, Prediction, class_label, predicted_classes, top_k};
use picodense::export;
use picodense::image_input;
use picodense::plot::{self, PlotFormat};
use picodense::report::{JsonLog, Progress, Summary};
use picodense::train::{self, Every, Outcome, RunControl, TrainConfig, Trainer};
use picodense_core::format::{Dtype, ModelView};

use cli::{Cli, Command, ComputeArgs, DataArgs};

#[global_allocator]
static ALLOCATOR: picodense::memory::LargePages = picodense::memory::LargePages;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => run_train(args),
        Command::Evaluate(args) => run_evaluate(args).map(|()| ExitCode::SUCCESS),
        Command::Predict(args) => run_predict(args).map(|()| ExitCode::SUCCESS),
        Command::Inspect { path } => run_inspect(&path).map(|()| ExitCode::SUCCESS),
        Command::Download { dataset } => run_download(dataset).map(|()| ExitCode::SUCCESS),
        Command::Bench(args) => run_bench(args).map(|()| ExitCode::SUCCESS),
        Command::Export(args) => run_export(args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Loads the data the user pointed at, downloading a missing dataset on first use.
fn load_data(args: &DataArgs, quiet: bool) -> Result<(Splits, Option<DatasetKind>, PathBuf)> {
    if let Some(path) = &args.data {
        let splits = data::load(path)?;
        return Ok((splits, guess_kind(path), path.clone()));
    }
    let kind = args.dataset;
    let dir = match data::find(kind) {
        Some(dir) => dir,
        None => {
            let dest = data::cache_dir(kind).with_context(|| data::not_found_message(kind))?;
            if !quiet {
                eprintln!(
                    "{} not found locally; downloading to {}",
                    kind.name(),
                    dest.display()
                );
            }
            if let Err(e) = picodense::download::download(
                kind,
                &dest,
                &picodense::download::mirrors_from_env(kind),
                !quiet,
            ) {
                bail!("{e}\n{}", data::not_found_message(kind));
            }
            dest
        }
    };
    Ok((data::load_dir(&dir)?, Some(kind), dir))
}

/// A `--data` path says nothing certain about the dataset; names are a good hint.
fn guess_kind(path: &std::path::Path) -> Option<DatasetKind> {
    let text = path.to_string_lossy().to_lowercase();
    if text.contains("fashion") {
        Some(DatasetKind::FashionMnist)
    } else if text.contains("mnist") {
        Some(DatasetKind::Mnist)
    } else {
        None
    }
}

fn compute_settings(args: &ComputeArgs) -> Result<(usize, picodense_core::Kernel)> {
    let threads = args.threads.unwrap_or_else(default_threads);
    if threads == 0 {
        bail!("--threads must be at least 1");
    }
    let kernel = select_kernel(args.kernel)?;
    Ok((threads, kernel))
}

/// Set by Ctrl-C: training stops after the current step and writes a checkpoint.
static STOP: AtomicBool = AtomicBool::new(false);

/// Exit code of a run stopped by Ctrl-C (128 + SIGINT, as shells report it).
const INTERRUPTED: u8 = 130;

fn run_train(args: cli::TrainArgs) -> Result<ExitCode> {
    let (threads, kernel) = compute_settings(&args.compute)?;
    if !(0.0..1.0).contains(&args.validation_split) {
        bail!(
            "--validation-split must be in [0, 1), not {}",
            args.validation_split
        );
    }
    if let Some(path) = &args.plot {
        PlotFormat::from_path(path)?;
    }
    let requested = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        optimizer: args.optimizer,
        learning_rate: args.learning_rate,
        seed: args.seed,
        threads,
        kernel,
    };
    // Settings are checked before any data is read.
    let (mut trainer, config) = match &args.resume {
        Some(path) => Trainer::resume(path, threads, kernel)?,
        None => (Trainer::new(&requested)?, requested),
    };
    let mut log = match &args.log_json {
        Some(path) => Some(
            JsonLog::create(path)
                .with_context(|| format!("{}: cannot create the log", path.display()))?,
        ),
        None => None,
    };
    let (mut splits, kind, source) = load_data(&args.data, args.quiet)?;
    let validation = if args.validation_split > 0.0 {
        // Keras keeps the first ceil(n * (1 - split)) rows for training.
        let keep = (splits.train.len() as f64 * (1.0 - args.validation_split)).ceil() as usize;
        Some(splits.train.split_off_end(splits.train.len() - keep))
    } else {
        None
    };
    if let (Some(path), Some(rows)) = (&args.resume, trainer.resumed_rows())
        && rows != splits.train.len()
    {
        bail!(
            "{}: the checkpoint was trained on {rows} rows, this data has {} (give the same \
             --data/--dataset and --validation-split)",
            path.display(),
            splits.train.len()
        );
    }
    if args.resume.is_none() {
        trainer.dataset = kind;
    }
    if !args.quiet {
        println!(
            "picodense: {} from {} ({} train, {}{} test); kernel {}, {} thread{}",
            kind.map_or("data", |k| k.name()),
            source.display(),
            splits.train.len(),
            validation
                .as_ref()
                .map_or(String::new(), |v| format!("{} validation, ", v.len())),
            splits.test.len(),
            kernel.name(),
            threads,
            if threads == 1 { "" } else { "s" }
        );
        if let Some(path) = &args.resume {
            let at = trainer.position();
            println!(
                "resuming {} at epoch {}/{}, step {}",
                path.display(),
                at.epoch.saturating_add(1),
                config.epochs,
                at.step
            );
        }
    }
    // A second Ctrl-C leaves at once; the first lets the current step finish.
    ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            std::process::exit(i32::from(INTERRUPTED));
        }
    })
    .context("cannot install the Ctrl-C handler")?;
    let control = RunControl {
        checkpoint: args.checkpoint.clone(),
        every: if args.checkpoint.is_some() {
            args.checkpoint_every
        } else {
            Every::Never
        },
        interrupt_checkpoint: Some(args.save.with_extension("ckpt.pdn")),
        stop: Some(&STOP),
    };
    let mut progress = Progress::new(config.epochs, args.quiet);
    let started = Instant::now();
    let mut log_error = None;
    let outcome = trainer.fit(
        &config,
        &splits.train,
        validation.as_ref(),
        &control,
        &mut |event| {
            progress.on_event(&event);
            if let (train::Event::EpochEnd(report), Some(log)) = (&event, log.as_mut())
                && let Err(e) = log.write(report)
            {
                log_error.get_or_insert(e);
            }
        },
    )?;
    let train_seconds = started.elapsed().as_secs_f64();
    if let Some(e) = log_error {
        return Err(e.into());
    }
    if let Outcome::Interrupted {
        position,
        checkpoint,
    } = outcome
    {
        let path = checkpoint.expect("an interrupt always has a checkpoint path");
        eprintln!(
            "interrupted at epoch {}, step {}: checkpoint written to {}; continue with \
             `picodense train --resume {}`",
            position.epoch + 1,
            position.step,
            path.display(),
            path.display()
        );
        return Ok(ExitCode::from(INTERRUPTED));
    }
    let test = trainer.evaluate(&splits.test);
    if !args.quiet {
        println!("test loss: {:.4}", test.mean_loss());
        println!("test accuracy: {:.4}", test.accuracy());
    }
    if let Some(log) = log.as_mut() {
        log.write(&Summary {
            test_loss: test.mean_loss(),
            test_accuracy: test.accuracy(),
            train_seconds,
        })?;
    }
    train::write_atomic(&args.save, &trainer.to_bytes())?;
    if !args.quiet {
        println!("saved {}", args.save.display());
    }
    // Drawn after the model is saved, so a figure that cannot be written costs no training.
    if let Some(path) = &args.plot {
        // After a resume, the epochs before it too: the whole run.
        plot::training_curves(path, trainer.history())?;
        if !args.quiet {
            println!("plotted {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run_evaluate(args: cli::EvaluateArgs) -> Result<()> {
    let (threads, kernel) = compute_settings(&args.compute)?;
    let bytes = std::fs::read(&args.model)
        .with_context(|| format!("{}: cannot read", args.model.display()))?;
    let dtype = export::file_dtype(&args.model, &bytes)?;
    let (splits, kind, _) = load_data(&args.data, args.json)?;
    let wants_details = args.confusion || args.report.is_some();
    let (test, details, trained_on) = match dtype {
        Dtype::F32 => {
            let (model, trained_on) = train::model_from_bytes(&args.model, &bytes)?;
            let mut trainer = Trainer::with_model(model, threads, kernel);
            if wants_details {
                let (test, probabilities) = trainer.evaluate_with_probabilities(&splits.test);
                let predicted = predicted_classes(&probabilities);
                let matrix = ConfusionMatrix::new(&splits.test.labels, &predicted);
                (test, Some((probabilities, matrix)), trained_on)
            } else {
                (trainer.evaluate(&splits.test), None, trained_on)
            }
        }
        Dtype::Int8 => {
            if wants_details {
                bail!("--confusion and --report need the f32 model, not an int8 export");
            }
            let test = export::evaluate_int8(&bytes, &splits.test, threads)
                .with_context(|| format!("{}", args.model.display()))?;
            (test, None, None)
        }
    };
    let names = trained_on
        .or(kind)
        .unwrap_or(DatasetKind::Mnist)
        .class_names();
    if args.json {
        let mut out =
            serde_json::json!({"test_loss": test.mean_loss(), "test_accuracy": test.accuracy()});
        if let (true, Some((_, matrix))) = (args.confusion, &details) {
            out["confusion"] = serde_json::json!(matrix.counts);
            out["precision"] = serde_json::json!(
                (0..data::CLASSES)
                    .map(|c| matrix.precision(c))
                    .collect::<Vec<_>>()
            );
            out["recall"] = serde_json::json!(
                (0..data::CLASSES)
                    .map(|c| matrix.recall(c))
                    .collect::<Vec<_>>()
            );
        }
        println!("{out}");
    } else {
        println!("test loss: {:.4}", test.mean_loss());
        println!("test accuracy: {:.4}", test.accuracy());
        if let (true, Some((_, matrix))) = (args.confusion, &details) {
            print!("\n{}", matrix.to_table(&names));
        }
    }
    if let (Some(dir), Some((probabilities, matrix))) = (&args.report, &details) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create the report folder", dir.display()))?;
        let set = format!("{} test set", kind.map_or("the", |k| k.name()));
        let (confusion, misclassified) =
            plot::evaluation_report(dir, &splits.test, probabilities, matrix, &names, &set)?;
        if !args.json {
            println!(
                "wrote {} and {}",
                confusion.display(),
                misclassified.display()
            );
        }
    }
    Ok(())
}

fn run_predict(args: cli::PredictArgs) -> Result<()> {
    let (model, trained_on) = train::load_model(&args.model)?;
    if let Some(path) = &args.image {
        let kind = trained_on.unwrap_or(args.data.dataset);
        let pixels = image_input::load(path, image_input::Layout::of(kind))?;
        let names = kind.class_names();
        let mut trainer = Trainer::with_model(model, 1, select_kernel(KernelChoice::Auto)?);
        let p = trainer.probabilities(&pixels);
        if args.json {
            println!("{}", serde_json::to_string(&Prediction::new(p))?);
            return Ok(());
        }
        if args.show {
            print!("{}", draw(&pixels));
        }
        let top = top_k(&p, 3);
        println!("predicted: {}", class_label(top[0].0, &names));
        for (rank, (class, prob)) in top.into_iter().enumerate() {
            println!(
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
        .context("give an image file or --index N (a test-set image)")?;
    let (splits, kind, _) = load_data(&args.data, args.json)?;
    let test = &splits.test;
    if index >= test.len() {
        bail!(
            "--index {} is out of range: the test set has {} images",
            index,
            test.len()
        );
    }
    let names = trained_on
        .or(kind)
        .unwrap_or(DatasetKind::Mnist)
        .class_names();
    let mut trainer = Trainer::with_model(model, 1, select_kernel(KernelChoice::Auto)?);
    let pixels = test.image(index);
    let p = trainer.probabilities(pixels);
    if args.json {
        println!("{}", serde_json::to_string(&Prediction::new(p))?);
        return Ok(());
    }
    print!("{}", draw(pixels));
    let predicted = picodense_core::loss::argmax(&p);
    let label = test.labels[index] as usize;
    println!("true label: {} ({})", label, names[label]);
    println!("predicted:  {} ({})", predicted, names[predicted]);
    for (class, prob) in p.iter().enumerate() {
        println!(
            "  {class} {:<12} {prob:.4} {}",
            names[class],
            "#".repeat((prob * 40.0).round() as usize)
        );
    }
    Ok(())
}

/// A 28x28 image as 28 lines of shade characters, two per pixel so it looks square.
fn draw(pixels: &[u8]) -> String {
    const SHADES: [char; 5] = [' ', '░', '▒', '▓', '█'];
    let shade = |p: u8| SHADES[(usize::from(p) * (SHADES.len() - 1) + 127) / 255];
    let mut out = String::new();
    for row in pixels.chunks(data::IMAGE_SIDE) {
        for &p in row {
            // Two characters per pixel keep the aspect ratio square.
            out.push(shade(p));
            out.push(shade(p));
        }
        out.push('\n');
    }
    out
}

fn run_inspect(path: &std::path::Path) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let view = ModelView::parse(&bytes)
        .with_context(|| format!("{}: checksum or format check failed", path.display()))?;
    let h = view.header();
    let [i, hidden, o] = h.sizes;
    let params = u64::from(i) * u64::from(hidden)
        + u64::from(hidden)
        + u64::from(hidden) * u64::from(o)
        + u64::from(o);
    println!("file:          {} ({} bytes)", path.display(), bytes.len());
    println!(
        "format:        PDN version {}",
        picodense_core::format::VERSION
    );
    println!("architecture:  Dense({hidden}, relu) -> Dense({o}, softmax) on {i} inputs");
    println!("parameters:    {params}");
    println!("dtype:         {}", h.dtype.name());
    println!(
        "dataset:       {}",
        train::dataset_from_byte(h.dataset).map_or("unknown", |k| k.name())
    );
    println!(
        "optimizer:     {}",
        if h.has_optimizer {
            "RMSprop state included"
        } else {
            "none"
        }
    );
    println!(
        "checksum:      ok (CRC-32 {:08x})",
        u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().expect("4 bytes"))
    );
    Ok(())
}

fn run_download(kind: DatasetKind) -> Result<()> {
    let dest = data::cache_dir(kind).context("no cache directory: set $PICODENSE_DATA or $HOME")?;
    picodense::download::download(
        kind,
        &dest,
        &picodense::download::mirrors_from_env(kind),
        true,
    )?;
    println!("{} is in {}", kind.name(), dest.display());
    Ok(())
}

fn run_bench(args: cli::BenchArgs) -> Result<()> {
    use picodense::bench;
    let (threads, kernel) = compute_settings(&args.compute)?;
    let config = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        seed: args.seed,
        threads,
        kernel,
        ..TrainConfig::default()
    };
    // Built first so that a bad setting fails before the data is read.
    let mut first_trainer = Some(Trainer::new(&config)?);
    let (splits, kind, source) = load_data(&args.data, false)?;
    if args.compare && !source.is_dir() {
        bail!(
            "{}: --compare needs a folder of IDX files for the Python references",
            source.display()
        );
    }
    println!(
        "picodense bench: {} ({} training images), {} epoch{}, batch {}, kernel {}, {} thread{}{}",
        kind.map_or("data", |k| k.name()),
        splits.train.len(),
        config.epochs,
        if config.epochs == 1 { "" } else { "s" },
        config.batch_size,
        kernel.name(),
        threads,
        if threads == 1 { "" } else { "s" },
        if args.repeat > 1 {
            format!(", median of {} rounds", args.repeat)
        } else {
            String::new()
        }
    );
    let python = if args.compare {
        let cache = data::cache_dir(kind.unwrap_or(DatasetKind::Mnist))
            .and_then(|d| d.parent().map(PathBuf::from))
            .context("no cache directory: set $PICODENSE_VENV")?;
        Some(bench::python_env(&cache)?)
    } else {
        None
    };
    let modes: &[&str] = if args.compare {
        &["keras", "numpy"]
    } else {
        &[]
    };
    // Rounds interleave the implementations, so slow spells of a shared machine fall on all.
    let mut ours = Vec::new();
    let mut references: Vec<Vec<bench::TimedRun>> = modes.iter().map(|_| Vec::new()).collect();
    for _ in 0..args.repeat {
        let mut trainer = match first_trainer.take() {
            Some(trainer) => trainer,
            None => Trainer::new(&config)?,
        };
        let started = Instant::now();
        let outcome = trainer.fit(
            &config,
            &splits.train,
            None,
            &RunControl::none(),
            &mut |_| {},
        )?;
        let seconds = started.elapsed().as_secs_f64();
        let Outcome::Finished(reports) = outcome else {
            bail!("training stopped early");
        };
        let test = trainer.evaluate(&splits.test);
        ours.push(bench::TimedRun {
            fit_seconds: seconds,
            test_accuracy: test.accuracy(),
            epoch_losses: reports.iter().map(|r| r.loss).collect(),
            peak_rss_mb: bench::peak_rss_mib().unwrap_or(f64::NAN),
        });
        for (mode, runs) in modes.iter().zip(&mut references) {
            let python = python.as_deref().expect("set with --compare");
            runs.push(bench::run_reference(
                python,
                mode,
                &source,
                config.epochs,
                config.batch_size,
                config.seed,
            )?);
        }
    }
    let totals = Totals {
        images: (splits.train.len() * config.epochs) as f64,
        flops: bench::training_flops(splits.train.len()) * config.epochs as f64,
    };
    println!(
        "{:<10} {:>9} {:>12} {:>9} {:>9} {:>9}  epoch losses",
        "", "fit (s)", "samples/s", "GFLOP/s", "test acc", "peak MiB"
    );
    // The process's peak: the largest of all its rounds.
    let peak_rss = bench::peak_rss_mib().unwrap_or(f64::NAN);
    let ours = print_median(&totals, "picodense", &ours);
    for (mode, runs) in modes.iter().zip(&references) {
        let theirs = print_median(&totals, mode, runs);
        println!(
            "{:<10} picodense is {:.1}x faster and uses {:.1}x less memory",
            "",
            theirs.fit_seconds / ours.fit_seconds,
            theirs.peak_rss_mb / peak_rss
        );
    }
    Ok(())
}

/// Work of one timed `fit`, for the rates of the bench table.
struct Totals {
    images: f64,
    flops: f64,
}

/// Prints the bench table row of `runs`' median run (and every round's time when there are
/// several); returns that run.
fn print_median<'r>(
    totals: &Totals,
    name: &str,
    runs: &'r [picodense::bench::TimedRun],
) -> &'r picodense::bench::TimedRun {
    let median = picodense::bench::median_run(runs);
    let losses: Vec<String> = median
        .epoch_losses
        .iter()
        .map(|l| format!("{l:.4}"))
        .collect();
    println!(
        "{:<10} {:>9.2} {:>12.0} {:>9.1} {:>9.4} {:>9.0}  {}",
        name,
        median.fit_seconds,
        totals.images / median.fit_seconds,
        totals.flops / median.fit_seconds / 1e9,
        median.test_accuracy,
        median.peak_rss_mb,
        losses.join(" ")
    );
    if runs.len() > 1 {
        let times: Vec<String> = runs
            .iter()
            .map(|r| format!("{:.2}", r.fit_seconds))
            .collect();
        println!("{:<10} rounds (s): {}", "", times.join(" "));
    }
    median
}

fn run_export(args: cli::ExportArgs) -> Result<()> {
    let (model, trained_on) = train::load_model(&args.model)?;
    let (splits, kind, _) = load_data(&args.data, false)?;
    let bytes = export::export(&model, args.format, &splits.train, trained_on.or(kind));
    train::write_atomic(&args.out, &bytes)?;
    let threads = default_threads();
    let f32_stats = Trainer::with_model(model, threads, select_kernel(KernelChoice::Auto)?)
        .evaluate(&splits.test);
    println!(
        "wrote {} ({} bytes, {})",
        args.out.display(),
        bytes.len(),
        match args.format {
            export::ExportFormat::F32 => "f32",
            export::ExportFormat::Int8 => "int8",
        }
    );
    println!("f32 test accuracy:  {:.4}", f32_stats.accuracy());
    if args.format == export::ExportFormat::Int8 {
        let int8 = export::evaluate_int8(&bytes, &splits.test, threads)?;
        println!(
            "int8 test accuracy: {:.4} ({:+.2} points)",
            int8.accuracy(),
            100.0 * (int8.accuracy() - f32_stats.accuracy())
        );
    }
    Ok(())
}
