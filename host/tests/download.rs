//! `picodense download` end to end against a local mirror of Debian's `dataset-fashion-mnist`
//! files, served over HTTP on 127.0.0.1. Debian recompressed nothing but rewrote the gzip
//! headers, so the `.gz` bytes differ from the published ones while the IDX data inside is the
//! same: the download must accept them by the digest of that data, and refuse data that
//! differs under any wrapper.

mod common;
use common::*;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A static file server for `dir` on 127.0.0.1, in a thread that lives as long as the test
/// process: `GET /<name>` answers the file `dir/<name>` (a plain name, no folders), anything
/// else 404. Returns the base URL and a count of the files served.
fn serve_dir(dir: PathBuf) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    let served = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&served);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = answer(stream, &dir, &counter);
        }
    });
    (base, served)
}

fn answer(stream: TcpStream, dir: &Path, served: &AtomicUsize) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
    }
    let name = request
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.strip_prefix('/'))
        .unwrap_or("");
    let body = (!name.is_empty() && !name.contains('/') && !name.starts_with('.'))
        .then(|| std::fs::read(dir.join(name)).ok())
        .flatten();
    let mut stream = stream;
    match body {
        Some(body) => {
            served.fetch_add(1, Ordering::SeqCst);
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            stream.write_all(&body)?;
        }
        None => write!(
            stream,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?,
    }
    stream.flush()
}

/// `picodense download --dataset fashion-mnist` from `mirrors` into `data/fashion-mnist`,
/// with no proxy in the way.
fn download(mirrors: &str, data: &Path) -> Output {
    let mut cmd = bin();
    cmd.args(["download", "--dataset", "fashion-mnist"])
        .env("PICODENSE_MIRRORS", mirrors)
        .env("PICODENSE_DATA", data);
    for proxy in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        cmd.env_remove(proxy);
    }
    cmd.output().unwrap()
}

#[test]
fn debian_files_from_a_local_mirror_are_accepted_by_their_data() {
    if !have_fashion_mnist() {
        return;
    }
    let (base, served) = serve_dir(PathBuf::from(FASHION));
    let data = tempfile::tempdir().unwrap();
    let out = download(&base, data.path());
    let printed = text(&out);
    assert!(out.status.success(), "{printed}");
    let dest = data.path().join("fashion-mnist");
    assert!(
        printed.contains(&format!("is in {}", s(&dest))),
        "{printed}"
    );
    for file in FASHION_FILES {
        let got = std::fs::read(dest.join(file)).unwrap();
        assert!(
            got == std::fs::read(Path::new(FASHION).join(file)).unwrap(),
            "{file} differs from the mirror's"
        );
    }
    assert_eq!(served.load(Ordering::SeqCst), 4);
    // Everything is verified already: a second run fetches nothing.
    let out = download(&base, data.path());
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(served.load(Ordering::SeqCst), 4);
}

#[test]
fn other_data_from_a_local_mirror_is_refused() {
    if !have_fashion_mnist() {
        return;
    }
    // The same files, but one test label changed and the file gzipped again: a well-formed
    // file whose data is not the published data.
    let mirror = tempfile::tempdir().unwrap();
    for file in FASHION_FILES {
        std::fs::copy(Path::new(FASHION).join(file), mirror.path().join(file)).unwrap();
    }
    let labels = mirror.path().join(FASHION_FILES[3]);
    let mut idx = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(&labels).unwrap()),
        &mut idx,
    )
    .unwrap();
    idx[8] = (idx[8] + 1) % 10;
    std::fs::write(&labels, gzip(&idx)).unwrap();
    let (base, _) = serve_dir(mirror.path().to_path_buf());
    let data = tempfile::tempdir().unwrap();
    let out = download(&base, data.path());
    let printed = text(&out);
    assert_eq!(out.status.code(), Some(1), "{printed}");
    let dest = data.path().join("fashion-mnist");
    for needle in [
        s(&dest.join(FASHION_FILES[3])),
        "checksum mismatch",
        "(IDX data inside)",
        // The published digests, of the `.gz` and of the data.
        "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ] {
        assert!(printed.contains(needle), "no {needle:?} in: {printed}");
    }
    assert!(!printed.contains("panicked"), "{printed}");
    // The three good files are in place; nothing of the bad one is left.
    let mut names: Vec<String> = std::fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want: Vec<String> = FASHION_FILES[..3].iter().map(|f| f.to_string()).collect();
    want.sort();
    assert_eq!(names, want);
}
