//! The `picodense` command.

mod cli;
mod commands;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, ValueEnum};
use picodense::compute::{KernelChoice, default_threads, select_kernel};
use picodense::data::csv as csv_data;
use picodense::data::{self, Dataset, DatasetKind, Splits};
use picodense::export;
use picodense::fs::{Output, check_outputs, file_key, write_atomic};
use picodense::model::{ModelMeta, Scaling};
use picodense::plot::{self, PlotFormat};
use picodense::report::{JsonLog, Progress, Summary};
use picodense::train::{self, Every, OptimizerKind, Outcome, RunControl, TrainConfig, Trainer};
use picodense::{say, sayln};
use picodense_core::Shape;

use cli::{Cli, Command, ComputeArgs, DataArgs, Normalize};
use commands::model::check_fits;

#[global_allocator]
static ALLOCATOR: picodense::memory::LargePages = picodense::memory::LargePages;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => run_train(args),
        Command::Evaluate(args) => commands::model::run_evaluate(args).map(|()| ExitCode::SUCCESS),
        Command::Predict(args) => commands::model::run_predict(args).map(|()| ExitCode::SUCCESS),
        Command::Inspect { path } => {
            commands::model::run_inspect(&path).map(|()| ExitCode::SUCCESS)
        }
        Command::Download { dataset } => run_download(dataset).map(|()| ExitCode::SUCCESS),
        Command::Bench(args) => commands::bench::run_bench(args).map(|()| ExitCode::SUCCESS),
        Command::Export(args) => run_export(args).map(|()| ExitCode::SUCCESS),
    };
    let code = match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    };
    match picodense::report::stdout_error() {
        // The reader left (`| head`): it has what it wanted, and the work is done.
        Some(e) if e.kind() == std::io::ErrorKind::BrokenPipe => code,
        // Output that was asked for is lost (`> /dev/full`): the run is not a success.
        Some(e) => {
            eprintln!("error: cannot write to stdout: {e}");
            ExitCode::FAILURE
        }
        None => code,
    }
}

/// The data of a run and what a model trained on it records.
struct Loaded {
    splits: Splits,
    kind: Option<DatasetKind>,
    source: PathBuf,
    meta: ModelMeta,
}

/// Loads the data the user pointed at, downloading a missing dataset on first use. For a
/// model (`model`), its own data when the user pointed at none, and features scaled as the
/// model's training scaled them.
fn load_data(args: &DataArgs, model: Option<&ModelMeta>, quiet: bool) -> Result<Loaded> {
    // Options that would change nothing are refused, not ignored.
    if let (Some(normalize), Some(meta)) = (args.normalize, model) {
        bail!(
            "--normalize {}: the model scales its inputs as it was trained ({}); leave \
             --normalize out",
            normalize
                .to_possible_value()
                .expect("not skipped")
                .get_name(),
            meta.scaling.name()
        );
    }
    let loaded = match model {
        Some(meta) => load_for_model(args, meta, quiet)?,
        None => load_fresh(args, None, quiet)?,
    };
    if args.normalize.is_some() && loaded.splits.train.is_images() {
        bail!(
            "--normalize: {} holds images, whose pixels are always divided by 255",
            loaded.source.display()
        );
    }
    if args.label_column.is_some() && loaded.meta.features.is_none() {
        bail!(
            "--label-column: {} is not CSV data, whose labels are a column",
            loaded.source.display()
        );
    }
    Ok(loaded)
}

/// [`load_data`] for `meta`'s model: its own data unless `args` name other data, scaled as
/// the model was trained.
fn load_for_model(args: &DataArgs, meta: &ModelMeta, quiet: bool) -> Result<Loaded> {
    let own = args.data.is_none() && args.dataset.is_none();
    let raw = match &meta.data {
        Some(path) if own => {
            if !path.exists() {
                bail!(
                    "the model was trained on {}, which is not there any more: pass --data (or \
                     --dataset) to use it on other data",
                    path.display()
                );
            }
            DataArgs {
                dataset: None,
                data: Some(path.clone()),
                test_data: meta.test_data.clone(),
                label_column: meta.label_column.clone(),
                normalize: Some(Normalize::None),
            }
        }
        _ => DataArgs {
            normalize: Some(Normalize::None),
            ..args.clone()
        },
    };
    let mut loaded = load_fresh(&raw, own.then_some(meta), quiet)?;
    if !loaded.splits.train.is_images() {
        // The model's scaling, not statistics of the data as it is now.
        for set in [&mut loaded.splits.train, &mut loaded.splits.test] {
            scale_rows(&meta.scaling, &mut set.values, set.width);
        }
        loaded.meta.scaling = meta.scaling.clone();
    }
    Ok(loaded)
}

/// [`load_data`] without a model's scaling; `model` names the dataset when `args` name none.
fn load_fresh(args: &DataArgs, model: Option<&ModelMeta>, quiet: bool) -> Result<Loaded> {
    if let Some(path) = &args.data {
        return load_path(path, args);
    }
    let kind = args
        .dataset
        .or(model.and_then(ModelMeta::dataset_kind))
        .unwrap_or(DatasetKind::Mnist);
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
    let splits = data::load_dir(&dir)?;
    let meta = image_meta(&splits, Some(kind), None);
    Ok(Loaded {
        splits,
        kind: Some(kind),
        source: dir,
        meta,
    })
}

/// What a model of image data records.
fn image_meta(splits: &Splits, kind: Option<DatasetKind>, path: Option<PathBuf>) -> ModelMeta {
    ModelMeta {
        classes: splits.class_names.clone(),
        scaling: Scaling::Scale255,
        dataset: kind.map(|k| k.name().to_string()),
        data: path,
        image: splits.image.map(|s| [s.rows, s.cols]),
        ..ModelMeta::default()
    }
}

/// `--data`: a CSV pair, an IDX folder or an `.npz`.
fn load_path(path: &std::path::Path, args: &DataArgs) -> Result<Loaded> {
    // Before the CSV checks, so that a missing file is called missing.
    std::fs::metadata(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let is_csv = |p: &std::path::Path| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let csv_pair = match &args.test_data {
        Some(test) => Some((path.to_owned(), test.clone())),
        None if path.is_dir() && path.join("train.csv").exists() => {
            Some((path.join("train.csv"), path.join("test.csv")))
        }
        None if is_csv(path) => bail!(
            "{}: a training CSV needs --test-data with the test CSV",
            path.display()
        ),
        None => None,
    };
    let Some((train, test)) = csv_pair else {
        let mut splits = data::load(path)?;
        // The folder's name says nothing certain ("fashion" in a path of MNIST files): the
        // kind is the one named by --dataset, else none.
        let kind = args.dataset;
        let mut meta = image_meta(&splits, kind, Some(absolute.clone()));
        if !splits.train.is_images() {
            // Float features (an .npz): scaled as --normalize says, like a CSV's.
            meta.scaling = scaling_of(
                args.normalize_or_default(),
                &splits.train.values,
                splits.width(),
            );
            for set in [&mut splits.train, &mut splits.test] {
                scale_rows(&meta.scaling, &mut set.values, set.width);
            }
        }
        return Ok(Loaded {
            splits,
            kind,
            source: absolute,
            meta,
        });
    };
    let label_column = args.label_column.as_deref().unwrap_or("label");
    let table = csv_data::read_train_test(&train, &test, Some(label_column))?;
    let width = table.width;
    let scaling = scaling_of(args.normalize_or_default(), &table.train, width);
    let scaled = |mut values: Vec<f32>| {
        scale_rows(&scaling, &mut values, width);
        values
    };
    let dataset = |values, labels| data::Dataset {
        width,
        values,
        labels,
        ..data::Dataset::default()
    };
    let meta = ModelMeta {
        classes: table.class_names.clone(),
        scaling: scaling.clone(),
        data: Some(absolute.clone()),
        test_data: args
            .test_data
            .as_ref()
            .map(|t| std::path::absolute(t).unwrap_or_else(|_| t.clone())),
        features: Some(table.feature_names.clone()),
        label_column: args.label_column.clone().filter(|c| c != "label"),
        ..ModelMeta::default()
    };
    let splits = Splits {
        train: dataset(scaled(table.train), table.train_labels),
        test: dataset(scaled(table.test), table.test_labels),
        image: None,
        class_names: table.class_names.or_else(|| {
            // Integer labels: K from the largest label of either file.
            Some((0..table.classes).map(|c| c.to_string()).collect())
        }),
    };
    Ok(Loaded {
        splits,
        kind: None,
        source: absolute,
        meta,
    })
}

/// The scaling `--normalize` asks for, fitted on the training features (`width` a row).
fn scaling_of(normalize: Normalize, train: &[f32], width: usize) -> Scaling {
    match normalize {
        Normalize::Standard => {
            let (mean, std) = csv_data::standardize_stats(train, width);
            Scaling::Standard { mean, std }
        }
        Normalize::None => Scaling::None,
        Normalize::Scale255 => Scaling::Scale255,
    }
}

/// Applies `scaling` to every row of `values` (`width` a row).
fn scale_rows(scaling: &Scaling, values: &mut [f32], width: usize) {
    for row in values.chunks_exact_mut(width.max(1)) {
        scaling.apply(row);
    }
}

/// `--threads` may ask for at most this many threads a core.
const MAX_THREADS_PER_CORE: usize = 4;

fn compute_settings(args: &ComputeArgs) -> Result<(usize, picodense_core::Kernel)> {
    let threads = args.threads.unwrap_or_else(default_threads);
    if threads == 0 {
        bail!("--threads must be at least 1");
    }
    // More threads than cores only wait on each other; past a few per core each one's stack
    // and scratch cost memory for nothing, and a huge count cannot even be allocated.
    let cores = default_threads();
    let most = cores.saturating_mul(MAX_THREADS_PER_CORE);
    if threads > most {
        bail!(
            "--threads {threads} is too many: this machine has {cores} core{}, at most {most} \
             threads ({MAX_THREADS_PER_CORE} a core) are allowed",
            if cores == 1 { "" } else { "s" }
        );
    }
    let kernel = select_kernel(args.kernel)?;
    Ok((threads, kernel))
}

/// The network for `data` with `hidden` layers.
fn shape_for(splits: &Splits, hidden: &[usize]) -> Result<Shape> {
    let classes = splits.classes();
    if classes < 2 {
        bail!("the data has {classes} class: training needs at least 2");
    }
    Shape::new(splits.width(), hidden, classes).map_err(|e| anyhow::anyhow!("--hidden: {e}"))
}

/// A Keras-style summary: each layer's output shape and parameters, and the total.
fn summary(shape: Shape) -> String {
    let mut out = format!(
        "Model: {shape}\n{:<22}{:<16}{:>10}\n",
        "Layer (type)", "Output Shape", "Param #"
    );
    for l in 0..shape.layers() {
        let name = match l {
            0 => "dense (Dense)".to_string(),
            _ => format!("dense_{l} (Dense)"),
        };
        let (_, units) = shape.layer(l);
        out += &format!(
            "{name:<22}{:<16}{:>10}\n",
            format!("(None, {units})"),
            shape.layer_parameters(l)
        );
    }
    out += &format!("Total params: {}\n", shape.parameters());
    out
}

/// Set by Ctrl-C: training stops after the current step and writes a checkpoint.
static STOP: AtomicBool = AtomicBool::new(false);

/// Exit code of a run stopped by Ctrl-C (128 + SIGINT, as shells report it).
const INTERRUPTED: u8 = 130;

fn run_train(args: cli::TrainArgs) -> Result<ExitCode> {
    let (threads, kernel) = compute_settings(&args.compute)?;
    if let Some(path) = &args.plot {
        PlotFormat::from_path(path)?;
    }
    let defaults = TrainConfig::default();
    let requested = TrainConfig {
        epochs: args.epochs.unwrap_or(defaults.epochs),
        batch_size: args.batch_size.unwrap_or(defaults.batch_size),
        optimizer: args.optimizer.unwrap_or(defaults.optimizer),
        learning_rate: args.learning_rate.unwrap_or(defaults.learning_rate),
        seed: args.seed.unwrap_or(defaults.seed),
        threads,
        kernel,
        hidden: args.hidden.clone().unwrap_or(defaults.hidden),
        validation_split: args.validation_split.unwrap_or(defaults.validation_split),
    };
    // Settings are checked before any data is read.
    train::validate(&requested)?;
    let interrupt_checkpoint = args.save.with_extension("ckpt.pdn");
    let mut outputs = vec![Output::new("--save", &args.save)];
    let optional = [
        ("--checkpoint", &args.checkpoint),
        ("--log-json", &args.log_json),
        ("--plot", &args.plot),
    ];
    outputs.extend(
        optional
            .iter()
            .filter_map(|(flag, p)| Some(Output::new(flag, p.as_ref()?))),
    );
    if args.checkpoint.is_none() {
        outputs.push(Output {
            flag: "the interrupt checkpoint (--save with .ckpt.pdn)",
            path: &interrupt_checkpoint,
            // Written only on Ctrl-C: its name is checked against the inputs, not probed.
            probe: false,
        });
    }
    let resumed = match &args.resume {
        Some(path) => {
            let (trainer, recorded) = Trainer::resume(path, threads, kernel)?;
            let config = resumed_config(&args, recorded, trainer.position())
                .with_context(|| format!("{}: cannot resume", path.display()))?;
            Some((trainer, config))
        }
        None => None,
    };
    // A resumed run reads the checkpoint's own data unless told otherwise.
    let model_meta = resumed.as_ref().map(|(trainer, _)| &trainer.network.meta);
    let mut inputs = data_inputs(&args.data, model_meta);
    if let Some(resume) = &args.resume {
        // Resuming a checkpoint and checkpointing on to the same file is the usual way (and
        // what the resume hint of an interrupted run does).
        let checkpoint = args.checkpoint.as_ref().unwrap_or(&interrupt_checkpoint);
        if file_key(checkpoint) != file_key(resume) {
            inputs.push(resume.clone());
        }
    }
    check_outputs(&outputs, &inputs)?;
    let Loaded {
        mut splits,
        kind,
        source,
        meta,
    } = load_data(&args.data, model_meta, args.quiet)?;
    let (mut trainer, config) = match resumed {
        Some((mut trainer, config)) => {
            let ckpt = trainer.network.shape;
            if (ckpt.inputs(), ckpt.classes()) != (splits.width(), splits.classes()) {
                bail!(
                    "{}: the checkpoint is {ckpt}, this data has {} values a row and {} classes \
                     (give the same --data/--dataset)",
                    args.resume.as_ref().expect("resumed").display(),
                    splits.width(),
                    splits.classes()
                );
            }
            if args.data.data.is_some() {
                // Where the data is now (checked below to be the checkpoint's).
                trainer.network.meta.data = meta.data;
                trainer.network.meta.test_data = meta.test_data;
            }
            (trainer, config)
        }
        None => {
            let shape = shape_for(&splits, &requested.hidden)?;
            let trainer = Trainer::new(&requested, shape, meta)?;
            (trainer, requested)
        }
    };
    let validation = hold_out(&mut splits.train, config.validation_split)?;
    if let Some(path) = &args.resume {
        trainer
            .check_resumed_data(&splits.train)
            .map_err(|e| anyhow!("{}: {e} (give the checkpoint's data)", path.display()))?;
    }
    if !args.quiet {
        sayln!(
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
        say!("{}", summary(trainer.network.shape));
        if let Some(path) = &args.resume {
            let at = trainer.position();
            if at.epoch >= config.epochs {
                sayln!(
                    "{} has finished its run of {} epoch{}: nothing to train (a larger \
                     --epochs extends it)",
                    path.display(),
                    config.epochs,
                    if config.epochs == 1 { "" } else { "s" }
                );
            } else {
                sayln!(
                    "resuming {} at epoch {}/{}, step {}",
                    path.display(),
                    at.epoch + 1,
                    config.epochs,
                    at.step
                );
            }
        }
    }
    // A second Ctrl-C leaves at once; the first lets the current step finish.
    // Opened last, once everything is checked, so that a failed start keeps the old log.
    let mut log = match &args.log_json {
        Some(path) => Some(
            if args.resume.is_some() {
                JsonLog::resume(path, trainer.history())
            } else {
                JsonLog::create(path)
            }
            .with_context(|| format!("{}: cannot create the log", path.display()))?,
        ),
        None => None,
    };
    ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            std::process::exit(i32::from(INTERRUPTED));
        }
    })
    .context("cannot install the signal handler (Ctrl-C, SIGTERM, SIGHUP)")?;
    let control = RunControl {
        checkpoint: args.checkpoint.clone(),
        every: if args.checkpoint.is_some() {
            args.checkpoint_every
        } else {
            Every::Never
        },
        interrupt_checkpoint: Some(interrupt_checkpoint.clone()),
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
    if let Outcome::Interrupted {
        position,
        checkpoint,
    } = outcome
    {
        let path = checkpoint.expect("an interrupt always has a checkpoint path");
        eprintln!(
            "interrupted at epoch {}, step {}: checkpoint written to {}; continue with \
             `{}`",
            position.epoch + 1,
            position.step,
            path.display(),
            resume_command(&args, &path)
        );
        if let Some(e) = log_error {
            eprintln!("error: {e}");
            return Ok(ExitCode::FAILURE);
        }
        return Ok(ExitCode::from(INTERRUPTED));
    }
    let test = trainer.evaluate(&splits.test);
    if !args.quiet {
        sayln!("test loss: {:.4}", test.mean_loss());
        sayln!("test accuracy: {:.4}", test.accuracy());
    }
    if let (Some(log), None) = (log.as_mut(), &log_error)
        && let Err(e) = log.write(&Summary {
            test_loss: test.mean_loss(),
            test_accuracy: test.accuracy(),
            train_seconds,
        })
    {
        log_error = Some(e);
    }
    // The model first: a log or figure that cannot be written must not cost the training.
    write_atomic(&args.save, &trainer.to_bytes())?;
    if !args.quiet {
        sayln!("saved {}", args.save.display());
    }
    let mut failed = false;
    if let Some(e) = log_error {
        eprintln!(
            "error: {e} (the model was saved to {})",
            args.save.display()
        );
        failed = true;
    }
    if let Some(path) = &args.plot {
        // After a resume, the epochs before it too: the whole run.
        match plot::training_curves(path, trainer.history()) {
            Ok(()) if !args.quiet => sayln!("plotted {}", path.display()),
            Ok(()) => {}
            Err(e) => {
                eprintln!(
                    "error: {e:#} (the model was saved to {})",
                    args.save.display()
                );
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Holds out the last `split` of `train` for validation, as Keras does (it keeps the first
/// `ceil(n * (1 - split))` rows for training).
fn hold_out(train: &mut Dataset, split: f64) -> Result<Option<Dataset>> {
    if split == 0.0 {
        return Ok(None);
    }
    let keep = (train.len() as f64 * (1.0 - split)).ceil() as usize;
    let held = train.len() - keep;
    if held == 0 {
        bail!(
            "--validation-split {split} holds out 0 of the {} training rows: give a larger split \
             (at least {}), or none",
            train.len(),
            1.0 / train.len() as f64
        );
    }
    Ok(Some(train.split_off_end(held)))
}

/// The settings of a resumed run: the checkpoint's, with `--epochs` extending the run. A
/// setting given that differs from the checkpoint's is refused rather than ignored.
fn resumed_config(
    args: &cli::TrainArgs,
    recorded: TrainConfig,
    at: train::Position,
) -> Result<TrainConfig> {
    let widths = |h: &[usize]| h.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
    let optimizer = |o: OptimizerKind| format!("{o:?}").to_lowercase();
    let conflicts: Vec<String> = [
        differs(
            "--hidden",
            args.hidden.as_deref().map(widths),
            widths(&recorded.hidden),
        ),
        differs("--batch-size", args.batch_size, recorded.batch_size),
        differs(
            "--optimizer",
            args.optimizer.map(optimizer),
            optimizer(recorded.optimizer),
        ),
        differs(
            "--learning-rate",
            args.learning_rate,
            recorded.learning_rate,
        ),
        differs("--seed", args.seed, recorded.seed),
        differs(
            "--validation-split",
            args.validation_split,
            recorded.validation_split,
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !conflicts.is_empty() {
        bail!(
            "{} (leave them out to continue its run, or start a new run without --resume)",
            conflicts.join("; ")
        );
    }
    let epochs = args.epochs.unwrap_or(recorded.epochs);
    if epochs < at.epoch {
        bail!(
            "--epochs {epochs} is fewer than the {} epochs the checkpoint has finished",
            at.epoch
        );
    }
    Ok(TrainConfig { epochs, ..recorded })
}

/// Says how a setting given with `--resume` differs from the checkpoint's, if it does.
fn differs<T: PartialEq + std::fmt::Display>(
    flag: &str,
    given: Option<T>,
    recorded: T,
) -> Option<String> {
    given
        .filter(|given| *given != recorded)
        .map(|given| format!("{flag} {given} differs from the checkpoint's {recorded}"))
}

/// The command that continues an interrupted run from `checkpoint`, writing what this run
/// would have written.
fn resume_command(args: &cli::TrainArgs, checkpoint: &std::path::Path) -> String {
    let mut words = vec![
        "picodense".to_string(),
        "train".into(),
        "--resume".into(),
        shell_word(checkpoint),
    ];
    let mut add = |flag: &str, value: String| words.extend([flag.to_string(), value]);
    if args.save != std::path::Path::new(cli::DEFAULT_SAVE) {
        add("--save", shell_word(&args.save));
    }
    if let Some(path) = &args.checkpoint {
        add("--checkpoint", shell_word(path));
        add("--checkpoint-every", args.checkpoint_every.to_string());
    }
    for (flag, path) in [("--log-json", &args.log_json), ("--plot", &args.plot)] {
        if let Some(path) = path {
            add(flag, shell_word(path));
        }
    }
    if args.quiet {
        words.push("--quiet".into());
    }
    words.join(" ")
}

/// `path` as one word for a POSIX shell: as it is when that is safe, else single-quoted.
fn shell_word(path: &std::path::Path) -> String {
    let text = path.to_string_lossy();
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./,:=+@%".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        text.into_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// The files a run reads its data from, as far as they are known before reading: the `--data`
/// path (every file of a folder), `--test-data`, or the folder of the named dataset.
pub(crate) fn data_inputs(args: &DataArgs, model: Option<&ModelMeta>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    // With no data named, a model's own files (as `load_data` reads them).
    let own = model
        .filter(|_| args.data.is_none() && args.dataset.is_none())
        .and_then(|m| Some((Some(m.data.clone()?), m.test_data.clone())));
    let (data, test_data) = own.unwrap_or_else(|| (args.data.clone(), args.test_data.clone()));
    let dir = match &data {
        Some(path) => {
            files.push(path.clone());
            files.extend(test_data);
            path.is_dir().then(|| path.clone())
        }
        None => {
            let kind = args
                .dataset
                .or(model.and_then(ModelMeta::dataset_kind))
                .unwrap_or(DatasetKind::Mnist);
            data::find(kind)
        }
    };
    if let Some(dir) = dir
        && let Ok(entries) = std::fs::read_dir(dir)
    {
        files.extend(entries.filter_map(|e| Some(e.ok()?.path())));
    }
    files
}

fn run_download(kind: DatasetKind) -> Result<()> {
    let dest = data::cache_dir(kind).context("no cache directory: set $PICODENSE_DATA or $HOME")?;
    picodense::download::download(
        kind,
        &dest,
        &picodense::download::mirrors_from_env(kind),
        true,
    )?;
    sayln!("{} is in {}", kind.name(), dest.display());
    Ok(())
}

fn run_export(args: cli::ExportArgs) -> Result<()> {
    let network = picodense::model::load_network(&args.model)?;
    let mut inputs = data_inputs(&args.data, Some(&network.meta));
    inputs.extend(network.meta.data.clone());
    inputs.extend(network.meta.test_data.clone());
    inputs.push(args.model.clone());
    check_outputs(&[Output::new("--out", &args.out)], &inputs)?;
    let loaded = load_data(&args.data, Some(&network.meta), false)?;
    let splits = &loaded.splits;
    check_fits(&args.model, &network, splits)?;
    let shape = network.shape;
    let bytes = export::export(&network, args.format, &splits.train)
        .with_context(|| args.model.display().to_string())?;
    // A .tflite computes its int8 file's outputs bit for bit: that file's accuracy is its own.
    let int8 = match args.format {
        export::ExportFormat::F32 => None,
        export::ExportFormat::Int8 => Some(bytes.clone()),
        export::ExportFormat::Tflite => Some(export::export(
            &network,
            export::ExportFormat::Int8,
            &splits.train,
        )?),
    };
    let dtype = args.format.name();
    let as_header = args
        .out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("h"));
    match as_header {
        true => {
            let text = export::c_header(&bytes, shape, args.format);
            write_atomic(&args.out, text.as_bytes())?;
        }
        false => write_atomic(&args.out, &bytes)?,
    }
    let threads = default_threads();
    let f32_stats = Trainer::with_network(network, threads, select_kernel(KernelChoice::Auto)?)
        .evaluate(&splits.test);
    sayln!(
        "wrote {} ({} bytes, {dtype}{})",
        args.out.display(),
        bytes.len(),
        if as_header { ", as a C header" } else { "" }
    );
    sayln!("f32 test accuracy:  {:.4}", f32_stats.accuracy());
    if let Some(int8) = int8 {
        let int8 = export::evaluate_int8(&int8, &splits.test, threads)?;
        sayln!(
            "int8 test accuracy: {:.4} ({:+.2} points)",
            int8.accuracy(),
            100.0 * (int8.accuracy() - f32_stats.accuracy())
        );
    }
    Ok(())
}
