//! `picodense bench`: a timed training run, and the same model in Keras and numpy on the same
//! data in the same run, for ratios that mean something on a noisy machine.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Floating-point operations of one training pass of `shape` over `rows` rows: per row, the
/// forward product and the weight gradient of every layer, and the input gradient of every
/// layer but the first, two operations per multiply-add.
pub fn training_flops(shape: picodense_core::Shape, rows: usize) -> f64 {
    let first = shape.layer(0).0 * shape.layer(0).1;
    let per_row = 3 * shape.multiply_adds() - first;
    2.0 * rows as f64 * per_row as f64
}

/// This process's peak resident memory in MiB (Linux `VmHWM`), if the OS says.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// What a timed training run reported.
#[derive(Debug, serde::Deserialize)]
pub struct TimedRun {
    /// Wall time of `fit`.
    pub fit_seconds: f64,
    /// Accuracy on the test set.
    pub test_accuracy: f64,
    /// Mean training loss per epoch.
    pub epoch_losses: Vec<f64>,
    /// Peak resident memory of the Python process.
    pub peak_rss_mb: f64,
}

/// The run with the median fit time (the later of the middle two for an even count).
///
/// # Panics
/// If `runs` is empty.
pub fn median_run(runs: &[TimedRun]) -> &TimedRun {
    let mut sorted: Vec<&TimedRun> = runs.iter().collect();
    sorted.sort_by(|a, b| a.fit_seconds.total_cmp(&b.fit_seconds));
    sorted[sorted.len() / 2]
}

/// Why a reference run failed.
#[derive(thiserror::Error, Debug)]
pub enum BenchError {
    /// Python or pip could not be run or failed.
    #[error("{what}: {detail}")]
    Python {
        /// The step that failed.
        what: String,
        /// Its output or error.
        detail: String,
    },
}

const SCRIPT: &str = include_str!("../scripts/compare.py");

/// The Python environment with TensorFlow, JAX and numpy: `$PICODENSE_VENV`, or a venv in the
/// user cache, created (`python3 -m venv`, `pip install tensorflow-cpu jax[cpu] numpy`) when
/// missing.
pub fn python_env(cache: &Path) -> Result<PathBuf, BenchError> {
    let venv = std::env::var_os("PICODENSE_VENV").map_or_else(|| cache.join("venv"), PathBuf::from);
    let python = venv.join("bin").join("python");
    let ready = Command::new(&python)
        .args(["-c", "import tensorflow, jax, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ready {
        return Ok(python);
    }
    eprintln!(
        "creating {} with tensorflow-cpu, jax and numpy (a few minutes, once)",
        venv.display()
    );
    run_checked(
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
        "python3 -m venv",
    )?;
    run_checked(
        Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "-q",
            "tensorflow-cpu",
            "jax[cpu]",
            "numpy",
        ]),
        "pip install tensorflow-cpu jax[cpu] numpy",
    )?;
    Ok(python)
}

fn run_checked(cmd: &mut Command, what: &str) -> Result<String, BenchError> {
    let out = cmd.output().map_err(|e| BenchError::Python {
        what: what.into(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(BenchError::Python {
            what: what.into(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Trains `mode` ("keras", "keras-jax" or "numpy") with `hidden` layers on the IDX files in `data` and
/// returns its report.
pub fn run_reference(
    python: &Path,
    mode: &str,
    data: &Path,
    (epochs, batch_size, seed): (usize, usize, u64),
    hidden: &[usize],
) -> Result<TimedRun, BenchError> {
    let dir = std::env::temp_dir().join(format!("picodense-bench-{}", std::process::id()));
    let script = dir.join("compare.py");
    let io = |e: std::io::Error| BenchError::Python {
        what: format!("{}", script.display()),
        detail: e.to_string(),
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    std::fs::write(&script, SCRIPT).map_err(io)?;
    let mut cmd = Command::new(python);
    cmd.arg(&script)
        .arg(mode)
        .arg(data)
        .arg(epochs.to_string())
        .arg(batch_size.to_string())
        .arg(seed.to_string())
        .arg(
            hidden
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(","),
        )
        // Settings some machines carry for old OpenBLAS builds slow a current numpy down.
        .env_remove("OPENBLAS_CORETYPE")
        .env_remove("OPENBLAS_L2_SIZE");
    let result = run_checked(&mut cmd, &format!("{mode} reference run"));
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = result?;
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).map_err(|e| BenchError::Python {
        what: format!("{mode} reference output"),
        detail: format!("{e}: {line}"),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn flops_of_an_epoch_match_the_hand_count() {
        // 2 * 60000 * (2 * 401408 + 3 * 5120) = 98.18 GFLOP.
        let shape = picodense_core::Shape::new(784, &[512], 10).unwrap();
        let f = super::training_flops(shape, 60_000);
        assert!((f / 1e9 - 98.181).abs() < 0.001, "{f}");
        // A layer more: its input gradient counts too.
        let deep = picodense_core::Shape::new(784, &[256, 128], 10).unwrap();
        let per_row = 2 * 784 * 256 + 3 * (256 * 128 + 128 * 10);
        assert_eq!(super::training_flops(deep, 1), 2.0 * per_row as f64);
    }

    #[test]
    fn the_median_run_is_the_middle_by_fit_time() {
        let run = |fit_seconds| super::TimedRun {
            fit_seconds,
            test_accuracy: fit_seconds / 10.0,
            epoch_losses: vec![],
            peak_rss_mb: 1.0,
        };
        let runs = [run(3.0), run(9.0), run(1.0)];
        assert_eq!(super::median_run(&runs).fit_seconds, 3.0);
        // The accuracy comes from the same run as the time.
        assert_eq!(super::median_run(&runs).test_accuracy, 0.3);
        assert_eq!(super::median_run(&runs[..2]).fit_seconds, 9.0);
        assert_eq!(super::median_run(&runs[2..]).fit_seconds, 1.0);
    }

    #[test]
    fn peak_rss_is_read_on_linux() {
        let mib = super::peak_rss_mib().expect("/proc/self/status");
        assert!(mib > 0.0);
    }
}
