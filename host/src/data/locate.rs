//! Where datasets are looked for and downloaded to.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::DatasetKind;
use super::idx::resolve_dir;

/// Where Debian's dataset packages install.
const SYSTEM_DATASETS: &str = "/usr/share/datasets";

fn env_nonempty(name: &str) -> Option<OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

/// `$XDG_CACHE_HOME/picodense` if that is an absolute path (the spec says to ignore relative
/// ones), else `$HOME/.cache/picodense`.
fn user_cache_root(xdg_cache: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    if let Some(xdg) = xdg_cache.map(PathBuf::from).filter(|p| p.is_absolute()) {
        return Some(xdg.join("picodense"));
    }
    home.map(|h| PathBuf::from(h).join(".cache").join("picodense"))
}

/// The environment that decides where datasets live, read once so tests can supply their own.
struct DataEnv {
    data: Option<OsString>,
    xdg_cache: Option<OsString>,
    home: Option<OsString>,
}

impl DataEnv {
    fn from_process() -> DataEnv {
        DataEnv {
            data: env_nonempty("PICODENSE_DATA"),
            xdg_cache: env_nonempty("XDG_CACHE_HOME"),
            home: env_nonempty("HOME"),
        }
    }

    fn search_dirs(&self, kind: DatasetKind) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        if let Some(data) = &self.data {
            dirs.push(PathBuf::from(data).join(kind.name()));
        }
        if let Some(cache) = user_cache_root(self.xdg_cache.clone(), self.home.clone()) {
            dirs.push(cache.join(kind.name()));
        }
        dirs.push(Path::new(SYSTEM_DATASETS).join(kind.name()));
        dirs.dedup();
        dirs
    }

    fn cache_dir(&self, kind: DatasetKind) -> Option<PathBuf> {
        match &self.data {
            Some(data) => Some(PathBuf::from(data).join(kind.name())),
            None => user_cache_root(self.xdg_cache.clone(), self.home.clone())
                .map(|c| c.join(kind.name())),
        }
    }
}

/// Directories searched for a dataset, in order: `$PICODENSE_DATA/<name>`, the user cache
/// (`$XDG_CACHE_HOME` or `~/.cache`, then `picodense/<name>`), `/usr/share/datasets/<name>`.
pub fn search_dirs(kind: DatasetKind) -> Vec<PathBuf> {
    DataEnv::from_process().search_dirs(kind)
}

/// Where `download` writes: `$PICODENSE_DATA/<name>` if set, else the user cache.
pub fn cache_dir(kind: DatasetKind) -> Option<PathBuf> {
    DataEnv::from_process().cache_dir(kind)
}

/// The first of `dirs` that holds all four IDX files (by name; contents are checked on load).
pub(super) fn find_in(dirs: &[PathBuf]) -> Option<PathBuf> {
    dirs.iter()
        .find(|d| d.is_dir() && resolve_dir(d).is_ok())
        .cloned()
}

/// The first of [`search_dirs`] that holds all four IDX files.
pub fn find(kind: DatasetKind) -> Option<PathBuf> {
    find_in(&search_dirs(kind))
}

fn not_found_message_for(kind: DatasetKind, dirs: &[PathBuf]) -> String {
    let name = kind.name();
    let mut msg = format!("no {name} dataset found; looked for its four IDX files in:\n");
    for dir in dirs {
        msg.push_str(&format!("  {}\n", dir.display()));
    }
    msg.push_str(&format!(
        "to get it, run `picodense download --dataset {name}`"
    ));
    if kind == DatasetKind::FashionMnist {
        msg.push_str(
            ",\nor on Debian `apt-get install dataset-fashion-mnist` \
             (it installs to /usr/share/datasets/fashion-mnist)",
        );
    }
    msg
}

/// Explains where a dataset was looked for and how to get it.
pub fn not_found_message(kind: DatasetKind) -> String {
    not_found_message_for(kind, &search_dirs(kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::idx::tests::write_dir;
    use picodense_support::IDX_NAMES as DASH_NAMES;
    use std::fs;

    #[test]
    fn search_and_cache_dirs() {
        let env = DataEnv {
            data: Some("/data".into()),
            xdg_cache: Some("/xdg".into()),
            home: Some("/home/u".into()),
        };
        assert_eq!(
            env.search_dirs(DatasetKind::FashionMnist),
            vec![
                PathBuf::from("/data/fashion-mnist"),
                PathBuf::from("/xdg/picodense/fashion-mnist"),
                PathBuf::from("/usr/share/datasets/fashion-mnist"),
            ]
        );
        assert_eq!(
            env.cache_dir(DatasetKind::Mnist),
            Some(PathBuf::from("/data/mnist"))
        );
        // Relative XDG_CACHE_HOME is ignored, per the spec.
        let env = DataEnv {
            data: None,
            xdg_cache: Some("rel".into()),
            home: Some("/home/u".into()),
        };
        assert_eq!(
            env.cache_dir(DatasetKind::Mnist),
            Some(PathBuf::from("/home/u/.cache/picodense/mnist"))
        );
        assert_eq!(env.search_dirs(DatasetKind::Mnist).len(), 2);
        let env = DataEnv {
            data: None,
            xdg_cache: None,
            home: None,
        };
        assert_eq!(env.cache_dir(DatasetKind::Mnist), None);
        assert_eq!(
            env.search_dirs(DatasetKind::Mnist),
            vec![PathBuf::from("/usr/share/datasets/mnist")]
        );
    }

    #[test]
    fn find_skips_incomplete_dirs() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        write_dir(a.path(), DASH_NAMES, 1, 1, false);
        fs::remove_file(a.path().join(DASH_NAMES[0])).unwrap();
        write_dir(b.path(), DASH_NAMES, 1, 1, true);
        let dirs = [
            a.path().join("absent"),
            a.path().to_path_buf(),
            b.path().to_path_buf(),
        ];
        assert_eq!(find_in(&dirs), Some(b.path().to_path_buf()));
        assert_eq!(find_in(&dirs[..2]), None);
    }

    #[test]
    fn not_found_message_says_where_and_how() {
        let dirs = [PathBuf::from("/x/mnist"), PathBuf::from("/y/mnist")];
        let m = not_found_message_for(DatasetKind::Mnist, &dirs);
        assert!(m.contains("/x/mnist") && m.contains("/y/mnist"), "{m}");
        assert!(m.contains("picodense download --dataset mnist"), "{m}");
        assert!(!m.contains("apt-get"), "{m}");
        let m = not_found_message_for(DatasetKind::FashionMnist, &dirs);
        assert!(
            m.contains("picodense download --dataset fashion-mnist"),
            "{m}"
        );
        assert!(m.contains("apt-get install dataset-fashion-mnist"), "{m}");
        assert!(m.contains("/usr/share/datasets/fashion-mnist"), "{m}");
        assert!(not_found_message(DatasetKind::Mnist).contains("/usr/share/datasets/mnist"));
    }
}
