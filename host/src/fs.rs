//! Every file the program writes goes through here: model files, checkpoints, plots, exports
//! and downloads are written to a temporary file beside their destination, synced, renamed
//! over it and the folder synced, so that a crash leaves either the old file or the new one,
//! never a mix; logs are opened here too. The checks that a run's outputs can be written and
//! destroy none of its inputs, made before any work, are here as well.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A file could not be written; the path is the one the caller named.
#[derive(thiserror::Error, Debug)]
#[error("{}: {error}", path.display())]
pub struct WriteError {
    /// The file.
    pub path: PathBuf,
    /// The OS error (a field, not a `source`: the message already includes it).
    pub error: io::Error,
}

/// The replacement of one file, written to a temporary file in the same folder: the
/// destination changes only on [`AtomicFile::commit`]; dropped before that, the temporary file
/// is removed and the destination is untouched.
#[derive(Debug)]
pub struct AtomicFile {
    /// Where the file lands: the target of a symlink, else the path given.
    dest: PathBuf,
    /// The temporary file; empty once renamed.
    tmp: PathBuf,
    file: Option<File>,
}

impl AtomicFile {
    /// Starts replacing `path`. A symlink is followed: the file it points to is replaced and
    /// the link stays. A replaced file keeps its permissions.
    pub fn create(path: &Path) -> io::Result<Self> {
        let dest = resolve_link(path);
        let first = temp_path(&dest)?;
        let permissions = std::fs::metadata(&dest).ok().map(|m| m.permissions());
        let mut last = io::Error::from(io::ErrorKind::AlreadyExists);
        // A fresh name: another write into the same folder keeps its own temporary file, and a
        // link planted under the name is not followed.
        for n in 0..1000 {
            let tmp = match n {
                0 => first.clone(),
                _ => {
                    let mut name = first.clone().into_os_string();
                    name.push(format!(".{n}"));
                    PathBuf::from(name)
                }
            };
            match OpenOptions::new().write(true).create_new(true).open(&tmp) {
                Ok(file) => {
                    // Built first so that a failure below removes the temporary file.
                    let this = Self {
                        dest,
                        tmp,
                        file: Some(file),
                    };
                    if let (Some(permissions), Some(file)) = (permissions, &this.file) {
                        file.set_permissions(permissions)?;
                    }
                    return Ok(this);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// The temporary file, to read back what was written before committing it.
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    /// Syncs the data to disk, renames the temporary file over the destination and syncs the
    /// folder, so that after a crash the destination is either the old file or complete.
    pub fn commit(mut self) -> io::Result<()> {
        if let Some(mut file) = self.file.take() {
            file.flush()?;
            file.sync_all()?;
        }
        std::fs::rename(&self.tmp, &self.dest)?;
        // Renamed: nothing left for drop to remove.
        self.tmp = PathBuf::new();
        sync_parent_dir(&self.dest)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.file {
            Some(f) => f.write(buf),
            None => Err(io::Error::other("temporary file already closed")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        self.file = None;
        if !self.tmp.as_os_str().is_empty() {
            // Best effort: the error that got us here is the one worth reporting.
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Syncs the folder of `path`, so that a rename into it reaches the disk too.
#[cfg(unix)]
fn sync_parent_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}

/// Folders cannot be opened for syncing on this platform.
#[cfg(not(unix))]
fn sync_parent_dir(_path: &Path) -> io::Result<()> {
    Ok(())
}

/// Writes `bytes` to `path` through an [`AtomicFile`]: a crash leaves either the old file or
/// the new one. On an error (a full disk) the temporary file is removed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let write = || {
        let mut file = AtomicFile::create(path)?;
        file.write_all(bytes)?;
        file.commit()
    };
    write().map_err(|error| WriteError {
        path: path.to_owned(),
        error,
    })
}

/// Opens a log that grows line by line, created or truncated. A symlink is followed.
pub fn open_log(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
}

/// Where a write to `path` lands: the file a symlink points to, else `path` itself.
pub fn resolve_link(path: &Path) -> PathBuf {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
        }
        _ => path.to_owned(),
    }
}

/// The temporary file an [`AtomicFile`] first tries for `path`: in the same folder, with a
/// short name whatever the length of `path`'s (a name has at most 255 bytes).
pub fn temp_path(path: &Path) -> io::Result<PathBuf> {
    if path.file_name().is_none() {
        return Err(io::Error::other("not a file name"));
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    Ok(dir.join(format!(".picodense.tmp-{}", std::process::id())))
}

/// Checks before any work that [`write_atomic`] (or an append) can write `path`: its name can
/// be created, an existing file can be opened for writing, and a temporary file can be made in
/// its folder. Nothing is left behind and an existing file is not changed.
pub fn check_writable(path: &Path) -> io::Result<()> {
    let path = resolve_link(path);
    if path.exists() {
        OpenOptions::new().append(true).open(&path)?;
    } else {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        std::fs::remove_file(&path)?;
    }
    // Dropped uncommitted: the temporary file is removed.
    AtomicFile::create(&path).map(drop)
}

/// A file a command writes, for [`check_outputs`].
#[derive(Clone, Copy, Debug)]
pub struct Output<'a> {
    /// The option that names it, for messages.
    pub flag: &'a str,
    /// The file.
    pub path: &'a Path,
    /// Whether to check now that it can be written (else only that it destroys no input).
    pub probe: bool,
}

impl<'a> Output<'a> {
    /// An output named by `flag`, checked for being writable.
    pub fn new(flag: &'a str, path: &'a Path) -> Self {
        Self {
            flag,
            path,
            probe: true,
        }
    }
}

/// Why a run's outputs were refused before any work.
#[derive(thiserror::Error, Debug)]
pub enum OutputError {
    /// The output exists and is a folder, device, FIFO or socket.
    #[error("{}: {flag} is not a regular file ({kind}); give the path of a file", path.display())]
    NotAFile {
        /// The output.
        path: PathBuf,
        /// The option naming it.
        flag: String,
        /// What it is instead.
        kind: &'static str,
    },
    /// The output is one of the run's inputs.
    #[error("{}: {flag} would overwrite {}, an input of this run", path.display(), input.display())]
    Input {
        /// The output.
        path: PathBuf,
        /// The option naming it.
        flag: String,
        /// The input it is.
        input: PathBuf,
    },
    /// Two outputs are one file.
    #[error("{}: {flag} and {other} name the same file", path.display())]
    Same {
        /// The output.
        path: PathBuf,
        /// The option naming it.
        flag: String,
        /// The option naming the other.
        other: String,
    },
    /// The output cannot be written (a missing folder, a name too long, no permission).
    #[error("{}: cannot write {flag}: {error}", path.display())]
    NotWritable {
        /// The output.
        path: PathBuf,
        /// The option naming it.
        flag: String,
        /// The OS error.
        error: io::Error,
    },
}

/// What identifies an existing file whatever the path (symlinks and hard links followed):
/// its device and inode; `None` when it does not exist.
pub fn file_key(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Where a path that may not exist yet points: its folder made absolute (symlinks resolved)
/// and its name.
pub fn future_path(path: &Path) -> Option<PathBuf> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    Some(std::fs::canonicalize(dir).ok()?.join(path.file_name()?))
}

/// Refuses, before any work, an output that is not a regular file (a device would be replaced
/// by a file, a FIFO block), that is an input of the run or another output (symlinks and hard
/// links followed), or that cannot be written (a missing folder, a name too long).
pub fn check_outputs(outputs: &[Output], inputs: &[PathBuf]) -> Result<(), OutputError> {
    let input_keys: Vec<_> = inputs
        .iter()
        .filter_map(|p| Some((file_key(p)?, p)))
        .collect();
    // Each output so far: its file (if it exists), where it will be, and its flag.
    type Seen<'f> = (Option<(u64, u64)>, Option<PathBuf>, &'f str);
    let mut seen: Vec<Seen> = Vec::new();
    for out in outputs {
        let (flag, path) = (out.flag, out.path);
        if let Ok(meta) = std::fs::metadata(path)
            && !meta.is_file()
        {
            return Err(OutputError::NotAFile {
                path: path.to_owned(),
                flag: flag.to_owned(),
                kind: crate::image_input::file_kind(&meta.file_type()),
            });
        }
        let key = file_key(path);
        if let Some((_, input)) = input_keys.iter().find(|(k, _)| Some(*k) == key) {
            return Err(OutputError::Input {
                path: path.to_owned(),
                flag: flag.to_owned(),
                input: (*input).clone(),
            });
        }
        let future = future_path(&resolve_link(path));
        if let Some((.., other)) = seen
            .iter()
            .find(|(k, f, _)| (key.is_some() && *k == key) || (future.is_some() && *f == future))
        {
            return Err(OutputError::Same {
                path: path.to_owned(),
                flag: flag.to_owned(),
                other: (*other).to_owned(),
            });
        }
        seen.push((key, future, flag));
        if out.probe {
            check_writable(path).map_err(|error| OutputError::NotWritable {
                path: path.to_owned(),
                flag: flag.to_owned(),
                error,
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_through_a_link_and_keeps_the_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        let link = dir.path().join("link");
        std::fs::write(&real, b"old").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert_eq!(std::fs::read(&real).unwrap(), b"new");
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        let mode = std::fs::metadata(&real).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn dropped_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut first = AtomicFile::create(&path).unwrap();
        // A second write into the same folder gets its own temporary file.
        let second = AtomicFile::create(&path).unwrap();
        assert_ne!(first.temp_path(), second.temp_path());
        first.write_all(b"partial").unwrap();
        drop((first, second));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
