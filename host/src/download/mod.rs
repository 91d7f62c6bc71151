//! Dataset download: fetches the four IDX `.gz` files from a list of mirrors, checks each
//! against its published SHA-256 (of the `.gz` bytes, or of the IDX data inside where that is
//! known, so a mirror that recompressed the same data is accepted) and moves it into place
//! atomically.
//!
//! A file is streamed into a temporary file beside its destination, hashed on the way, and
//! renamed only once the hash matches; anything that goes wrong removes the temporary file,
//! so the destination holds either a verified file or nothing.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use flate2::bufread::MultiGzDecoder;
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::data::DatasetKind;
use crate::fs::AtomicFile;

/// The files a dataset consists of, as the mirrors name them.
pub const FILES: [&str; 4] = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
];

/// Environment variable holding comma-separated mirror base URLs that replace the defaults.
pub const MIRRORS_ENV: &str = "PICODENSE_MIRRORS";

/// The largest file is 26 MB; anything far beyond is not the file we want.
const MAX_FILE_BYTES: u64 = 64 << 20;

/// The largest IDX payload is 47 MB (60000 images); decompressing stops past this, so a
/// decompression bomb costs time, not memory or disk.
const MAX_PAYLOAD_BYTES: u64 = 64 << 20;

/// Decodes a 64-digit hex string at compile time (a typo fails the build, not a download).
const fn hex32(s: &str) -> [u8; 32] {
    const fn nibble(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => panic!("not a lowercase hex digit"),
        }
    }
    let b = s.as_bytes();
    assert!(b.len() == 64, "a SHA-256 is 64 hex digits");
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = nibble(b[2 * i]) << 4 | nibble(b[2 * i + 1]);
        i += 1;
    }
    out
}

/// What one downloaded file must hash to: the published `.gz` file, or the IDX data inside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checksums {
    /// The file name, as the mirrors name it.
    pub file: &'static str,
    /// SHA-256 of the `.gz` bytes as published.
    pub gz: [u8; 32],
    /// SHA-256 of the decompressed IDX file, where known: any gzip of the same data is then
    /// accepted (mirrors and distributions recompress, or rewrite the gzip header).
    pub payload: Option<[u8; 32]>,
}

/// SHA-256 of the MNIST files as published. The same values appear in several independent
/// projects' download code (torchvision's prototype datasets, batchup, and others); they
/// belong to the files whose MD5s torchvision lists (f68b3c2d..., d53e105e..., 9fb629c4...,
/// ec29112d...). No digest of the decompressed files is published with them, and no copy of
/// MNIST is at hand to compute one from, so MNIST is checked by its `.gz` bytes only.
const MNIST_SHA256: [Checksums; 4] = [
    Checksums {
        file: FILES[0],
        gz: hex32("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
        payload: None,
    },
    Checksums {
        file: FILES[1],
        gz: hex32("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
        payload: None,
    },
    Checksums {
        file: FILES[2],
        gz: hex32("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        payload: None,
    },
    Checksums {
        file: FILES[3],
        gz: hex32("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
        payload: None,
    },
];

/// SHA-256 of the Fashion-MNIST files as published by Zalando Research (whose README lists
/// their MD5s 8d4fb7e6..., 25c81989..., bef4ecab..., bb300cfd...); the same values appear in
/// torchvision's prototype datasets and other projects. Debian's dataset-fashion-mnist ships
/// the same compressed data with a normalised gzip header, so its files hash differently;
/// putting back the original header (file name, 2017-08-31 timestamp) reproduces these (see
/// the tests). The payload digests are of the decompressed IDX files, computed from Debian's
/// files, whose compressed data is the published one.
const FASHION_MNIST_SHA256: [Checksums; 4] = [
    Checksums {
        file: FILES[0],
        gz: hex32("3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
        payload: Some(hex32(
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        )),
    },
    Checksums {
        file: FILES[1],
        gz: hex32("a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
        payload: Some(hex32(
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        )),
    },
    Checksums {
        file: FILES[2],
        gz: hex32("346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
        payload: Some(hex32(
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        )),
    },
    Checksums {
        file: FILES[3],
        gz: hex32("67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
        payload: Some(hex32(
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        )),
    },
];

/// The published SHA-256 of each file of `kind` (and of its IDX data, where known).
pub fn expected_sha256(kind: DatasetKind) -> &'static [Checksums; 4] {
    match kind {
        DatasetKind::Mnist => &MNIST_SHA256,
        DatasetKind::FashionMnist => &FASHION_MNIST_SHA256,
    }
}

/// SHA-256 of everything `reader` yields.
fn sha256_of(mut reader: impl Read) -> io::Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(hasher.finalize().into()),
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// SHA-256 of the data inside the gzip file `path`, decompressed as the IDX reader does
/// (every member; garbage after the stream is an error). `Err` says why there is none.
fn payload_sha256(path: &Path) -> Result<[u8; 32], String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let decoder = MultiGzDecoder::new(io::BufReader::new(file));
    let mut limited = decoder.take(MAX_PAYLOAD_BYTES + 1);
    let mut counted = CountingReader {
        inner: &mut limited,
        count: 0,
    };
    let sha = sha256_of(&mut counted).map_err(|e| format!("not valid gzip: {e}"))?;
    if counted.count > MAX_PAYLOAD_BYTES {
        return Err(format!(
            "decompresses to more than {MAX_PAYLOAD_BYTES} bytes"
        ));
    }
    Ok(sha)
}

/// Counts the bytes read through it.
struct CountingReader<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// Whether the file at `path`, whose bytes hash to `gz_sha256`, is the one `want` describes:
/// `Ok` if so, else the checksum failure to report.
fn verify(path: &Path, gz_sha256: &[u8; 32], want: &Checksums) -> Result<(), FetchFailure> {
    if gz_sha256 == &want.gz {
        return Ok(());
    }
    let Some(payload) = want.payload else {
        return Err(FetchFailure::Checksum {
            expected: hex(&want.gz),
            actual: hex(gz_sha256),
        });
    };
    let actual_payload = payload_sha256(path);
    if actual_payload.as_ref() == Ok(&payload) {
        return Ok(());
    }
    Err(FetchFailure::Checksum {
        expected: format!(
            "{} (.gz) or {} (IDX data inside)",
            hex(&want.gz),
            hex(&payload)
        ),
        actual: format!(
            "{} (.gz), {}",
            hex(gz_sha256),
            match actual_payload {
                Ok(sha) => format!("{} (IDX data inside)", hex(&sha)),
                Err(why) => format!("no IDX data inside: {why}"),
            }
        ),
    })
}

/// The usual public mirrors of `kind`, tried in this order.
pub fn default_mirrors(kind: DatasetKind) -> Vec<String> {
    let urls: &[&str] = match kind {
        DatasetKind::Mnist => &[
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
        ],
        DatasetKind::FashionMnist => &[
            "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        ],
    };
    urls.iter().map(|u| (*u).to_owned()).collect()
}

/// Splits a comma-separated list of base URLs, dropping blanks.
fn parse_mirrors(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `$PICODENSE_MIRRORS` (comma-separated base URLs) if it names any, else [`default_mirrors`].
pub fn mirrors_from_env(kind: DatasetKind) -> Vec<String> {
    let from_env = std::env::var(MIRRORS_ENV)
        .map(|v| parse_mirrors(&v))
        .unwrap_or_default();
    if from_env.is_empty() {
        default_mirrors(kind)
    } else {
        from_env
    }
}

/// Joins a mirror base URL and a file name with exactly one slash.
fn file_url(base: &str, file: &str) -> String {
    format!("{}/{file}", base.trim_end_matches('/'))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why one mirror could not deliver one file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FetchFailure {
    /// The server answered with an HTTP error status.
    Status(u16),
    /// No response: connection refused, DNS, TLS, timeout, bad URL.
    Transport(String),
    /// The connection failed in the middle of the body.
    Interrupted {
        /// Bytes received before it failed.
        received: u64,
        /// Bytes announced by Content-Length, if any.
        expected: Option<u64>,
        /// What the client said.
        error: String,
    },
    /// The body ended cleanly but shorter (or longer) than its Content-Length.
    LengthMismatch {
        /// Bytes received.
        received: u64,
        /// Bytes announced.
        expected: u64,
    },
    /// The body is larger than any dataset file.
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The file arrived whole but is not the published one.
    Checksum {
        /// The published SHA-256 (and that of the IDX data inside, where known).
        expected: String,
        /// The SHA-256 of what arrived (and of the data inside, when it was looked at).
        actual: String,
    },
}

impl fmt::Display for FetchFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchFailure::Status(code) => write!(f, "HTTP status {code}"),
            FetchFailure::Transport(e) => write!(f, "no response: {e}"),
            FetchFailure::Interrupted {
                received,
                expected: Some(total),
                error,
            } => write!(
                f,
                "connection dropped after {received} of {total} bytes: {error}"
            ),
            FetchFailure::Interrupted {
                received,
                expected: None,
                error,
            } => write!(f, "connection dropped after {received} bytes: {error}"),
            FetchFailure::LengthMismatch { received, expected } => write!(
                f,
                "connection closed after {received} bytes, but the server announced {expected}"
            ),
            FetchFailure::TooLarge { limit } => {
                write!(f, "larger than {limit} bytes, not a dataset file")
            }
            FetchFailure::Checksum { expected, actual } => write!(
                f,
                "checksum mismatch: SHA-256 {actual}, expected {expected}"
            ),
        }
    }
}

/// One failed attempt: which URL and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorFailure {
    /// The full URL tried.
    pub url: String,
    /// What went wrong.
    pub failure: FetchFailure,
}

fn attempts_text(attempts: &[MirrorFailure]) -> String {
    attempts
        .iter()
        .map(|a| format!("\n  {}: {}", a.url, a.failure))
        .collect()
}

/// A download that did not complete; every variant names the file or directory.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum DownloadError {
    /// The destination directory could not be created.
    #[error("{}: cannot create the directory: {error}", .path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        error: io::Error,
    },
    /// Writing, syncing or renaming a local file failed (another mirror would not help).
    #[error("{}: cannot write: {error}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        error: io::Error,
    },
    /// The mirror list is empty.
    #[error("{}: no mirror to download from", .path.display())]
    NoMirrors {
        /// The file that was to be downloaded.
        path: PathBuf,
    },
    /// Every mirror failed for one file; nothing was left at its destination.
    #[error("{}: download failed from every mirror:{}", .path.display(), attempts_text(.attempts))]
    AllMirrorsFailed {
        /// The destination file.
        path: PathBuf,
        /// Each mirror tried, in order, and why it failed.
        attempts: Vec<MirrorFailure>,
    },
}

/// True when `path` exists and matches `want`, so downloading it again is pointless.
fn already_verified(path: &Path, want: &Checksums) -> bool {
    let Ok(sha) = File::open(path).and_then(sha256_of) else {
        return false;
    };
    verify(path, &sha, want).is_ok()
}

/// A blocking HTTP client with timeouts that catch a dead server without cutting a slow
/// but steady download short.
fn agent(use_env_proxy: bool) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(15)))
        .timeout_recv_response(Some(Duration::from_secs(30)))
        .timeout_per_read(Some(Duration::from_secs(30)))
        .user_agent(concat!("picodense/", env!("CARGO_PKG_VERSION")));
    if !use_env_proxy {
        config = config.proxy(None);
    }
    config.build().new_agent()
}

fn progress_bar(show: bool, len: Option<u64>, name: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = match len {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template(
                "{msg:28} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg:28} {bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    bar.set_message(name.to_owned());
    bar
}

/// Why one attempt ended: the mirror's fault (try the next) or ours (stop).
enum AttemptError {
    Mirror(FetchFailure),
    Local(DownloadError),
}

/// Streams `url` into a temporary file in `dir`, verifies it and renames it to `dest`.
fn fetch_one(
    agent: &ureq::Agent,
    url: &str,
    dest: &Path,
    want: &Checksums,
    bar: &dyn Fn(Option<u64>) -> ProgressBar,
) -> Result<(), AttemptError> {
    let mirror = AttemptError::Mirror;
    let mut response = agent.get(url).call().map_err(|e| {
        mirror(match e {
            ureq::Error::StatusCode(code) => FetchFailure::Status(code),
            other => FetchFailure::Transport(other.to_string()),
        })
    })?;
    let announced = response.body().content_length();
    if announced.is_some_and(|n| n > MAX_FILE_BYTES) {
        return Err(mirror(FetchFailure::TooLarge {
            limit: MAX_FILE_BYTES,
        }));
    }
    let local = |error: io::Error| {
        AttemptError::Local(DownloadError::Write {
            path: dest.to_path_buf(),
            error,
        })
    };
    let mut tmp = AtomicFile::create(dest).map_err(local)?;
    let progress = bar(announced);
    let mut reader = response.body_mut().as_reader();
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    let outcome = loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                break Err(mirror(FetchFailure::Interrupted {
                    received,
                    expected: announced,
                    error: e.to_string(),
                }));
            }
        };
        received += n as u64;
        if received > MAX_FILE_BYTES {
            break Err(mirror(FetchFailure::TooLarge {
                limit: MAX_FILE_BYTES,
            }));
        }
        hasher.update(&buf[..n]);
        if let Err(e) = tmp.write_all(&buf[..n]) {
            break Err(local(e));
        }
        progress.inc(n as u64);
    };
    let outcome = outcome.and_then(|()| match announced {
        // The client already errors on a short body; this also catches a lenient one.
        Some(expected) if expected != received => {
            Err(mirror(FetchFailure::LengthMismatch { received, expected }))
        }
        _ => Ok(()),
    });
    let outcome = outcome
        .and_then(|()| tmp.flush().map_err(local))
        .and_then(|()| verify(tmp.temp_path(), &hasher.finalize().into(), want).map_err(mirror));
    match outcome {
        Ok(()) => {
            tmp.commit().map_err(local)?;
            progress.finish();
            Ok(())
        }
        Err(e) => {
            progress.finish_and_clear();
            // Dropping `tmp` removes the partial file.
            drop(tmp);
            Err(e)
        }
    }
}

/// Downloads each file of `files` into `dest`, checked against its checksums, trying
/// `mirrors` in order.
fn download_files(
    agent: &ureq::Agent,
    dest: &Path,
    mirrors: &[String],
    files: &[Checksums],
    progress: bool,
) -> Result<(), DownloadError> {
    if mirrors.is_empty() {
        return Err(DownloadError::NoMirrors {
            path: dest.to_path_buf(),
        });
    }
    // The folders this call makes, innermost first.
    let made: Vec<&Path> = dest
        .ancestors()
        .take_while(|dir| !dir.as_os_str().is_empty() && !dir.exists())
        .collect();
    fs::create_dir_all(dest).map_err(|error| DownloadError::CreateDir {
        path: dest.to_path_buf(),
        error,
    })?;
    let result = (|| {
        for want in files {
            let name = want.file;
            let path = dest.join(name);
            if already_verified(&path, want) {
                continue;
            }
            let bar = |len| progress_bar(progress, len, name);
            let mut attempts = Vec::new();
            let mut done = false;
            for base in mirrors {
                let url = file_url(base, name);
                match fetch_one(agent, &url, &path, want, &bar) {
                    Ok(()) => {
                        done = true;
                        break;
                    }
                    Err(AttemptError::Mirror(failure)) => {
                        attempts.push(MirrorFailure { url, failure })
                    }
                    Err(AttemptError::Local(e)) => return Err(e),
                }
            }
            if !done {
                return Err(DownloadError::AllMirrorsFailed { path, attempts });
            }
        }
        Ok(())
    })();
    if result.is_err() {
        // Folders made for nothing go; one holding a verified file stays (remove_dir refuses
        // it), so the next attempt fetches only what is missing.
        for dir in made {
            if fs::remove_dir(dir).is_err() {
                break;
            }
        }
    }
    result
}

/// Downloads the four `.gz` files of `kind` into `dest`, verifying each against its
/// published SHA-256, or that of the IDX data inside where known; files already present and
/// verified are kept.
///
/// Mirrors are base URLs tried in order for each file; any failure (no connection, HTTP
/// error, short body, wrong checksum) moves on to the next. Shows a progress bar on stderr
/// when `progress` is true.
pub fn download(
    kind: DatasetKind,
    dest: &Path,
    mirrors: &[String],
    progress: bool,
) -> Result<(), DownloadError> {
    download_files(&agent(true), dest, mirrors, expected_sha256(kind), progress)
}

#[cfg(test)]
mod tests;
