//! Keras-style progress lines and the JSON log.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::train::{EpochReport, Event};

/// The first error writing to stdout: once set, nothing more is printed there.
static STDOUT_ERROR: std::sync::OnceLock<std::io::Error> = std::sync::OnceLock::new();

/// Writes to stdout unless an earlier write failed. A closed pipe (`| head`) or a full disk
/// (`> /dev/full`) ends the printing, never the run: `print!` would panic and lose the model.
pub fn say(args: std::fmt::Arguments) {
    if STDOUT_ERROR.get().is_some() {
        return;
    }
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        let _ = STDOUT_ERROR.set(e);
    }
}

/// Flushes stdout, recording a failure as [`say`] does; returns the first stdout error, if any.
pub fn stdout_error() -> Option<&'static std::io::Error> {
    if STDOUT_ERROR.get().is_none()
        && let Err(e) = std::io::stdout().lock().flush()
    {
        let _ = STDOUT_ERROR.set(e);
    }
    STDOUT_ERROR.get()
}

/// `println!` through [`say`]: never panics on a closed or full stdout.
#[macro_export]
macro_rules! sayln {
    ($($arg:tt)*) => {
        $crate::report::say(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` through [`say`].
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::report::say(format_args!($($arg)*))
    };
}

/// Prints `Epoch 1/5` and `469/469 [====] - 1s 2ms/step - loss: .. - accuracy: ..` lines, with a
/// live bar on a terminal.
pub struct Progress {
    epochs: usize,
    quiet: bool,
    bar: Option<ProgressBar>,
    steps: usize,
    started: Instant,
}

impl Progress {
    /// Progress for a run of `epochs`; `quiet` prints nothing.
    pub fn new(epochs: usize, quiet: bool) -> Self {
        Self {
            epochs,
            quiet,
            bar: None,
            steps: 0,
            started: Instant::now(),
        }
    }

    /// Reports one training event.
    pub fn on_event(&mut self, event: &Event) {
        if self.quiet {
            return;
        }
        match *event {
            Event::EpochStart { epoch, steps } => {
                crate::sayln!("Epoch {epoch}/{}", self.epochs);
                self.steps = steps;
                self.started = Instant::now();
                let bar = ProgressBar::with_draw_target(
                    Some(steps as u64),
                    ProgressDrawTarget::stderr_with_hz(10),
                );
                bar.set_style(
                    ProgressStyle::with_template("{pos}/{len} [{bar:30}] - {msg}")
                        .expect("valid template")
                        .progress_chars("=>."),
                );
                self.bar = Some(bar);
            }
            Event::Step { step, running } => {
                if let Some(bar) = &self.bar {
                    bar.set_position(step as u64);
                    if step % 8 == 0 || step == self.steps {
                        bar.set_message(format!(
                            "loss: {:.4} - accuracy: {:.4}",
                            running.mean_loss(),
                            running.accuracy()
                        ));
                    }
                }
            }
            Event::EpochEnd(report) => {
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
                crate::sayln!("{}", epoch_line(report, self.steps));
            }
        }
    }
}

/// The line Keras prints at the end of an epoch.
pub fn epoch_line(report: &EpochReport, steps: usize) -> String {
    let mut line = format!(
        "{steps}/{steps} [{}] - {:.0}s {} - loss: {:.4} - accuracy: {:.4}",
        "=".repeat(30),
        report.seconds,
        per_step(report.seconds / steps.max(1) as f64),
        report.loss,
        report.accuracy
    );
    if let (Some(loss), Some(acc)) = (report.val_loss, report.val_accuracy) {
        line.push_str(&format!(" - val_loss: {loss:.4} - val_accuracy: {acc:.4}"));
    }
    line
}

/// Time per step as Keras writes it (`2ms/step`).
fn per_step(seconds: f64) -> String {
    if seconds >= 1.0 {
        format!("{seconds:.0}s/step")
    } else if seconds >= 1e-3 {
        format!("{:.0}ms/step", seconds * 1e3)
    } else {
        format!("{:.0}us/step", seconds * 1e6)
    }
}

/// A JSON-lines training log: one object per epoch, then one with the test figures.
pub struct JsonLog {
    path: PathBuf,
    file: std::fs::File,
}

/// The last line of a JSON log.
#[derive(serde::Serialize)]
pub struct Summary {
    /// Mean loss on the test set.
    pub test_loss: f64,
    /// Accuracy on the test set.
    pub test_accuracy: f64,
    /// Wall time of `fit`.
    pub train_seconds: f64,
}

impl JsonLog {
    /// Creates (truncates) the log.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            path: path.to_owned(),
            file: crate::fs::open_log(path)?,
        })
    }

    /// Opens the log of a run resumed after the epochs of `history`, so that it holds each
    /// epoch once: the log is kept up to the line of the last of them and cut after it
    /// (epochs the interrupted run logged past its checkpoint, test figures); a log without
    /// that line is written anew from `history`.
    pub fn resume(path: &Path, history: &[EpochReport]) -> std::io::Result<Self> {
        use std::io::{Seek, SeekFrom};
        let text = match std::fs::read(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let Some(end) = end_of_epoch_line(&text, history.len()) else {
            let mut log = Self::create(path)?;
            for report in history {
                log.write(report).map_err(|e| e.error)?;
            }
            return Ok(log);
        };
        // Created when missing: a run checkpointed before its first epoch ended keeps nothing.
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        file.set_len(end as u64)?;
        file.seek(SeekFrom::End(0))?;
        Ok(Self {
            path: path.to_owned(),
            file,
        })
    }

    /// Appends one object as a line.
    pub fn write(&mut self, value: &impl serde::Serialize) -> Result<(), crate::report::LogError> {
        let line = serde_json::to_string(value).expect("plain numbers serialise");
        writeln!(self.file, "{line}")
            .and_then(|()| self.file.flush())
            .map_err(|error| LogError {
                path: self.path.clone(),
                error,
            })
    }
}

/// Where the first line of epoch `epoch` ends in the JSON log `text` (0 for epoch 0: the
/// start), or `None` when no line is that epoch's.
fn end_of_epoch_line(text: &[u8], epoch: usize) -> Option<usize> {
    if epoch == 0 {
        return Some(0);
    }
    let mut start = 0;
    for line in text.split_inclusive(|&b| b == b'\n') {
        start += line.len();
        let value: Option<serde_json::Value> = serde_json::from_slice(line).ok();
        if value.and_then(|v| v["epoch"].as_u64()) == Some(epoch as u64) {
            return Some(start);
        }
    }
    None
}

/// A log line could not be written.
#[derive(thiserror::Error, Debug)]
#[error("{}: cannot write the log: {error}", path.display())]
pub struct LogError {
    path: PathBuf,
    /// A field, not a `source`: the message already includes it.
    error: std::io::Error,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_log_is_created_when_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.jsonl");
        let mut log = JsonLog::resume(&path, &[]).unwrap();
        log.write(&serde_json::json!({"epoch": 1})).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"epoch\":1}\n");
    }

    #[test]
    fn a_resumed_log_is_cut_after_its_checkpoints_last_epoch() {
        let log = b"{\"epoch\":1}\nnot json\n{\"epoch\":2}\n{\"epoch\":3}\n{\"epoch\":2}\n";
        assert_eq!(end_of_epoch_line(log, 0), Some(0));
        assert_eq!(end_of_epoch_line(log, 1), Some(12));
        assert_eq!(end_of_epoch_line(log, 2), Some(33));
        assert_eq!(end_of_epoch_line(log, 4), None);
        assert_eq!(end_of_epoch_line(b"{\"epoch\":1}", 1), Some(11));
    }

    #[test]
    fn epoch_line_looks_like_keras() {
        let report = EpochReport {
            epoch: 1,
            loss: 0.25714,
            accuracy: 0.92566,
            val_loss: None,
            val_accuracy: None,
            seconds: 1.2,
        };
        assert_eq!(
            epoch_line(&report, 469),
            "469/469 [==============================] - 1s 3ms/step - loss: 0.2571 - accuracy: 0.9257"
        );
    }
}
