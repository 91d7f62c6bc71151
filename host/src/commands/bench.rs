//! `bench`: timed training runs, with the Python references beside them on request.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use picodense::data::{self, DatasetKind};
use picodense::sayln;
use picodense::train::{self, Outcome, RunControl, TrainConfig, Trainer};

use crate::cli;
use crate::{compute_settings, load_data, shape_for};

pub fn run_bench(args: cli::BenchArgs) -> Result<()> {
    use picodense::bench;
    let (threads, kernel) = compute_settings(&args.compute)?;
    let config = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        seed: args.seed,
        threads,
        kernel,
        hidden: args.hidden.clone(),
        ..TrainConfig::default()
    };
    // Checked first so that a bad setting fails before the data is read.
    train::validate(&config)?;
    let loaded = load_data(&args.data, None, false)?;
    let shape = shape_for(&loaded.splits, &config.hidden)?;
    let mut first_trainer = Some(Trainer::new(&config, shape, loaded.meta.clone())?);
    let (splits, kind, source) = (&loaded.splits, loaded.kind, loaded.source.clone());
    if args.compare && !source.is_dir() {
        bail!(
            "{}: --compare needs a folder of IDX files for the Python references",
            source.display()
        );
    }
    sayln!(
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
        &["keras", "keras-jax", "numpy"]
    } else {
        &[]
    };
    // Rounds interleave the implementations, so slow spells of a shared machine fall on all.
    let mut ours = Vec::new();
    let mut references: Vec<Vec<bench::TimedRun>> = modes.iter().map(|_| Vec::new()).collect();
    for _ in 0..args.repeat {
        let mut trainer = match first_trainer.take() {
            Some(trainer) => trainer,
            None => Trainer::new(&config, shape, loaded.meta.clone())?,
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
                (config.epochs, config.batch_size, config.seed),
                &config.hidden,
            )?);
        }
    }
    let totals = Totals {
        images: (splits.train.len() * config.epochs) as f64,
        flops: bench::training_flops(shape, splits.train.len()) * config.epochs as f64,
    };
    sayln!(
        "{:<10} {:>9} {:>12} {:>9} {:>9} {:>9}  epoch losses",
        "",
        "fit (s)",
        "samples/s",
        "GFLOP/s",
        "test acc",
        "peak MiB"
    );
    // The process's peak: the largest of all its rounds.
    let peak_rss = bench::peak_rss_mib().unwrap_or(f64::NAN);
    let ours = print_median(&totals, "picodense", &ours);
    let mut fastest_keras: Option<(&str, f64)> = None;
    for (mode, runs) in modes.iter().zip(&references) {
        let theirs = print_median(&totals, mode, runs);
        sayln!(
            "{:<10} picodense is {:.1}x faster and uses {:.1}x less memory",
            "",
            theirs.fit_seconds / ours.fit_seconds,
            theirs.peak_rss_mb / peak_rss
        );
        if mode.starts_with("keras") && fastest_keras.is_none_or(|(_, s)| theirs.fit_seconds < s) {
            fastest_keras = Some((mode, theirs.fit_seconds));
        }
    }
    if let Some((mode, seconds)) = fastest_keras {
        sayln!(
            "fastest Keras backend here: {mode} ({seconds:.2} s); picodense ({}, {} thread{}) \
             is {:.1}x faster on {}",
            kernel.name(),
            threads,
            if threads == 1 { "" } else { "s" },
            seconds / ours.fit_seconds,
            cpu_name()
        );
    }
    Ok(())
}

/// The CPU's model name, as the OS reports it.
fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_else(|| "this CPU".into())
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
    sayln!(
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
        sayln!("{:<10} rounds (s): {}", "", times.join(" "));
    }
    median
}
