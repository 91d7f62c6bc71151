//! The download against local HTTP servers: mirrors, fallbacks, checksums, cleanup.

use super::*;
use std::io::BufRead;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Instant;

/// What the test server sends for one path.
#[derive(Clone)]
struct Reply {
    status: u16,
    body: Vec<u8>,
    /// Content-Length to announce; the real length when `None`.
    announce: Option<usize>,
}

impl Reply {
    fn ok(body: &[u8]) -> Reply {
        Reply {
            status: 200,
            body: body.to_vec(),
            announce: None,
        }
    }
}

/// A tiny HTTP/1.1 server on 127.0.0.1 that serves `routes` (path -> reply; anything
/// else is 404). It stops by itself after `max_requests` requests or five seconds.
/// Returns its base URL and a request counter.
fn serve(routes: Vec<(String, Reply)>, max_requests: usize) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let served = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&served);
    thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(5);
        while counter.load(Ordering::SeqCst) < max_requests && Instant::now() < deadline {
            match listener.accept() {
                Ok((stream, _)) => {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let _ = answer(stream, &routes);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    thread::sleep(Duration::from_millis(2));
                }
                Err(_) => break,
            }
        }
    });
    (base, served)
}

fn answer(stream: TcpStream, routes: &[(String, Reply)]) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = io::BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("");
    let reply = routes
        .iter()
        .find(|(p, _)| p == path)
        .map(|(_, r)| r.clone())
        .unwrap_or(Reply {
            status: 404,
            body: b"not found".to_vec(),
            announce: None,
        });
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reply.status,
        reply.announce.unwrap_or(reply.body.len())
    )?;
    stream.write_all(&reply.body)?;
    stream.flush()?;
    stream.shutdown(std::net::Shutdown::Both)
}

/// Four small distinct "files" and their checksums.
fn fixtures() -> Vec<(&'static str, Vec<u8>, [u8; 32])> {
    FILES
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let body: Vec<u8> = (0..3000 + i * 100).map(|j| (j * (i + 3)) as u8).collect();
            let sha: [u8; 32] = Sha256::digest(&body).into();
            (*name, body, sha)
        })
        .collect()
}

fn table(fx: &[(&'static str, Vec<u8>, [u8; 32])]) -> Vec<Checksums> {
    fx.iter()
        .map(|(n, _, s)| Checksums {
            file: n,
            gz: *s,
            payload: None,
        })
        .collect()
}

/// Routes that serve every fixture under `prefix`.
fn serve_all(fx: &[(&'static str, Vec<u8>, [u8; 32])], prefix: &str) -> Vec<(String, Reply)> {
    fx.iter()
        .map(|(n, b, _)| (format!("{prefix}{n}"), Reply::ok(b)))
        .collect()
}

fn test_agent() -> ureq::Agent {
    agent(false)
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn downloads_and_verifies_every_file() {
    let fx = fixtures();
    let routes = serve_all(&fx, "/m/");
    let (base, served) = serve(routes, 4);
    let dest = tempfile::tempdir().unwrap();
    let target = dest.path().join("nested/mnist");
    download_files(
        &test_agent(),
        &target,
        &[format!("{base}/m")],
        &table(&fx),
        false,
    )
    .unwrap();
    for (name, body, _) in &fx {
        assert_eq!(&fs::read(target.join(name)).unwrap(), body);
    }
    let mut want: Vec<String> = FILES.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(dir_entries(&target), want);
    assert_eq!(served.load(Ordering::SeqCst), 4);
    // A second run finds everything verified and asks no server (port 1 is closed).
    download_files(
        &test_agent(),
        &target,
        &["http://127.0.0.1:1/".to_owned()],
        &table(&fx),
        false,
    )
    .unwrap();
}

#[test]
fn downloaded_idx_files_load() {
    use flate2::Compression;
    use flate2::write::GzEncoder;
    let gz = |bytes: &[u8]| {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    };
    let idx = |words: &[u32], data: &[u8]| {
        let mut v: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
        v.extend_from_slice(data);
        gz(&v)
    };
    let bodies = [
        idx(&[0x803, 2, 28, 28], &[7; 2 * 784]),
        idx(&[0x801, 2], &[3, 4]),
        idx(&[0x803, 1, 28, 28], &[9; 784]),
        idx(&[0x801, 1], &[5]),
    ];
    let files: Vec<Checksums> = FILES
        .iter()
        .zip(&bodies)
        .map(|(n, b)| Checksums {
            file: n,
            gz: Sha256::digest(b).into(),
            payload: None,
        })
        .collect();
    let routes = FILES
        .iter()
        .zip(&bodies)
        .map(|(n, b)| (format!("/{n}"), Reply::ok(b)))
        .collect();
    let (base, _) = serve(routes, 4);
    let dest = tempfile::tempdir().unwrap();
    download_files(&test_agent(), dest.path(), &[base], &files, true).unwrap();
    let splits = crate::data::load_dir(dest.path()).unwrap();
    assert_eq!(splits.train.labels, vec![3, 4]);
    assert_eq!(splits.test.image(0), &[9; 784][..]);
}

#[test]
fn falls_back_to_the_next_mirror() {
    let fx = fixtures();
    let routes = serve_all(&fx, "/good/");
    // Each file: a 404 from the first mirror, then the second.
    let (base, served) = serve(routes, 8);
    let dest = tempfile::tempdir().unwrap();
    let mirrors = [format!("{base}/gone/"), format!("{base}/good/")];
    download_files(&test_agent(), dest.path(), &mirrors, &table(&fx), false).unwrap();
    for (name, body, _) in &fx {
        assert_eq!(&fs::read(dest.path().join(name)).unwrap(), body);
    }
    assert_eq!(served.load(Ordering::SeqCst), 8);
}

#[test]
fn refused_connection_then_good_mirror() {
    let fx = fixtures();
    let routes = serve_all(&fx, "/");
    let (base, _) = serve(routes, 4);
    let dest = tempfile::tempdir().unwrap();
    let mirrors = ["http://127.0.0.1:1".to_owned(), base];
    download_files(&test_agent(), dest.path(), &mirrors, &table(&fx), false).unwrap();
    assert_eq!(dir_entries(dest.path()).len(), 4);
}

#[test]
fn checksum_mismatch_leaves_nothing() {
    let fx = fixtures();
    let mut corrupted = fx[0].1.clone();
    corrupted[100] ^= 1;
    let routes = vec![(format!("/{}", fx[0].0), Reply::ok(&corrupted))];
    let (base, _) = serve(routes, 2);
    let dest = tempfile::tempdir().unwrap();
    let mirrors = [base.clone(), format!("{base}/other")];
    let e = download_files(&test_agent(), dest.path(), &mirrors, &table(&fx), false).unwrap_err();
    let msg = e.to_string();
    match &e {
        DownloadError::AllMirrorsFailed { path, attempts } => {
            assert!(path.ends_with(FILES[0]));
            assert_eq!(attempts.len(), 2);
            assert!(matches!(attempts[0].failure, FetchFailure::Checksum { .. }));
            assert_eq!(attempts[1].failure, FetchFailure::Status(404));
        }
        other => panic!("unexpected error: {other}"),
    }
    assert!(msg.contains("checksum mismatch"), "{msg}");
    assert!(msg.contains(&hex(&fx[0].2)), "{msg}");
    assert!(msg.contains("HTTP status 404"), "{msg}");
    assert!(msg.contains(&format!("{base}/other/{}", FILES[0])), "{msg}");
    assert_eq!(dir_entries(dest.path()), Vec::<String>::new());
}

#[test]
fn dropped_connection_leaves_nothing() {
    let fx = fixtures();
    let body = &fx[0].1;
    let cut = Reply {
        status: 200,
        body: body[..body.len() / 3].to_vec(),
        announce: Some(body.len()),
    };
    let routes = vec![(format!("/{}", fx[0].0), cut)];
    let (base, _) = serve(routes, 1);
    let dest = tempfile::tempdir().unwrap();
    let e = download_files(&test_agent(), dest.path(), &[base], &table(&fx), false).unwrap_err();
    let msg = e.to_string();
    let DownloadError::AllMirrorsFailed { attempts, .. } = &e else {
        panic!("unexpected error: {msg}");
    };
    assert!(
        matches!(
            attempts[0].failure,
            FetchFailure::Interrupted { .. } | FetchFailure::LengthMismatch { .. }
        ),
        "{msg}"
    );
    assert!(msg.contains("connection"), "{msg}");
    assert!(msg.contains(&format!("{}", body.len())), "{msg}");
    assert_eq!(dir_entries(dest.path()), Vec::<String>::new());
}

#[test]
fn a_failed_download_leaves_no_folder_it_made() {
    let fx = fixtures();
    let root = tempfile::tempdir().unwrap();
    let dest = root.path().join("cache").join("mnist");
    let mirrors = ["http://127.0.0.1:1".to_owned()];
    download_files(&test_agent(), &dest, &mirrors, &table(&fx), false).unwrap_err();
    assert!(!root.path().join("cache").exists());
    // A folder that was there before stays.
    fs::create_dir_all(&dest).unwrap();
    download_files(&test_agent(), &dest, &mirrors, &table(&fx), false).unwrap_err();
    assert!(dest.is_dir());
}

#[test]
fn existing_bad_file_is_replaced() {
    let fx = fixtures();
    let routes = serve_all(&fx, "/");
    let (base, _) = serve(routes, 4);
    let dest = tempfile::tempdir().unwrap();
    fs::write(dest.path().join(FILES[2]), b"stale").unwrap();
    download_files(&test_agent(), dest.path(), &[base], &table(&fx), false).unwrap();
    assert_eq!(fs::read(dest.path().join(FILES[2])).unwrap(), fx[2].1);
}

#[test]
fn no_mirrors_and_unwritable_destination() {
    let dest = tempfile::tempdir().unwrap();
    let e = download_files(&test_agent(), dest.path(), &[], &MNIST_SHA256, false).unwrap_err();
    assert!(matches!(e, DownloadError::NoMirrors { .. }), "{e}");
    let file = dest.path().join("file");
    fs::write(&file, b"x").unwrap();
    let e = download_files(
        &test_agent(),
        &file.join("sub"),
        &["http://127.0.0.1:1".to_owned()],
        &MNIST_SHA256,
        false,
    )
    .unwrap_err();
    assert!(matches!(e, DownloadError::CreateDir { .. }), "{e}");
    assert!(e.to_string().contains("cannot create the directory"), "{e}");
}

#[test]
fn mirror_lists() {
    assert_eq!(
        parse_mirrors(" http://a/ ,, http://b ,"),
        vec!["http://a/".to_owned(), "http://b".to_owned()]
    );
    assert!(parse_mirrors(" , ").is_empty());
    for kind in DatasetKind::ALL {
        let m = default_mirrors(kind);
        assert_eq!(m.len(), 2);
        assert!(m.iter().all(|u| u.ends_with('/')));
    }
    assert_eq!(file_url("http://h/x/", "f.gz"), "http://h/x/f.gz");
    assert_eq!(file_url("http://h/x", "f.gz"), "http://h/x/f.gz");
    // Without the variable (tests never set it) the defaults apply.
    if std::env::var_os(MIRRORS_ENV).is_none() {
        assert_eq!(
            mirrors_from_env(DatasetKind::Mnist),
            default_mirrors(DatasetKind::Mnist)
        );
    }
}

#[test]
fn checksum_constants_decode() {
    assert_eq!(
        hex(&MNIST_SHA256[0].gz),
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
    );
    assert_eq!(
        hex(&FASHION_MNIST_SHA256[3].gz),
        "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"
    );
    assert_eq!(
        FASHION_MNIST_SHA256[3].payload.map(|p| hex(&p)).as_deref(),
        Some("0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34")
    );
    for kind in DatasetKind::ALL {
        let names: Vec<&str> = expected_sha256(kind).iter().map(|c| c.file).collect();
        assert_eq!(names, FILES);
    }
}

/// Debian ships the published Fashion-MNIST data with a normalised gzip header (no file
/// name, a 2020 timestamp); putting the original header back must give the published
/// SHA-256. Skipped where the package is not installed.
#[test]
fn fashion_mnist_checksums_match_debian_files() {
    let dir = Path::new("/usr/share/datasets/fashion-mnist");
    let mtimes: [u32; 4] = [1_504_176_606, 1_504_176_606, 1_504_176_627, 1_504_176_627];
    for (want, mtime) in FASHION_MNIST_SHA256.iter().zip(mtimes) {
        let (name, sha) = (want.file, &want.gz);
        let Ok(bytes) = fs::read(dir.join(name)) else {
            continue;
        };
        // The data inside is the published data, whatever the header.
        assert_eq!(payload_sha256(&dir.join(name)), Ok(want.payload.unwrap()));
        // Only a bare 10-byte header (flags 0) is the layout this reconstruction knows.
        if bytes.len() < 10 || bytes[3] != 0 {
            continue;
        }
        let mut original = vec![0x1f, 0x8b, 8, 0x08]; // deflate, FNAME present
        original.extend_from_slice(&mtime.to_le_bytes());
        original.extend_from_slice(&[0, 3]); // no extra flags, Unix
        original.extend_from_slice(name.trim_end_matches(".gz").as_bytes());
        original.push(0);
        original.extend_from_slice(&bytes[10..]);
        assert_eq!(Sha256::digest(&original).as_slice(), sha, "{name}");
    }
}

/// An IDX label file of `n` labels, gzipped at `level` with `name` in the header (or none).
fn gz_labels(n: usize, level: u32, name: Option<&str>) -> (Vec<u8>, Vec<u8>) {
    let mut idx = vec![0, 0, 8, 1];
    idx.extend((n as u32).to_be_bytes());
    idx.extend((0..n).map(|i| (i * 7 % 10) as u8));
    let mut builder = flate2::GzBuilder::new().mtime(1_504_176_606);
    if let Some(name) = name {
        builder = builder.filename(name);
    }
    let mut enc = builder.write(Vec::new(), flate2::Compression::new(level));
    enc.write_all(&idx).unwrap();
    (idx, enc.finish().unwrap())
}

/// Checksums of one file whose published `.gz` is `gz` and whose IDX data is `idx`.
fn published(gz: &[u8], idx: &[u8]) -> Vec<Checksums> {
    vec![Checksums {
        file: FILES[1],
        gz: Sha256::digest(gz).into(),
        payload: Some(Sha256::digest(idx).into()),
    }]
}

/// The same data recompressed (another level, another header) is accepted by the digest
/// of the data inside, and stored as it arrived; a second run keeps it.
#[test]
fn recompressed_data_is_accepted_by_its_payload_digest() {
    let (idx, original) = gz_labels(5000, 9, Some("train-labels-idx1-ubyte"));
    let (_, recompressed) = gz_labels(5000, 1, None);
    assert_ne!(original, recompressed);
    let files = published(&original, &idx);
    let (base, served) = serve(
        vec![(format!("/{}", FILES[1]), Reply::ok(&recompressed))],
        1,
    );
    let dest = tempfile::tempdir().unwrap();
    download_files(&test_agent(), dest.path(), &[base], &files, false).unwrap();
    assert_eq!(fs::read(dest.path().join(FILES[1])).unwrap(), recompressed);
    assert_eq!(served.load(Ordering::SeqCst), 1);
    // Already verified: no server asked (port 1 is closed).
    let closed = ["http://127.0.0.1:1/".to_owned()];
    download_files(&test_agent(), dest.path(), &closed, &files, false).unwrap();
    // The published bytes themselves still pass by the `.gz` digest.
    let (base, _) = serve(vec![(format!("/{}", FILES[1]), Reply::ok(&original))], 1);
    let dest = tempfile::tempdir().unwrap();
    download_files(&test_agent(), dest.path(), &[base], &files, false).unwrap();
    assert_eq!(fs::read(dest.path().join(FILES[1])).unwrap(), original);
}

/// Other data, garbage after the stream, something that is not gzip, or a stream that
/// decompresses past any dataset file: refused with both digests named, nothing left.
#[test]
fn other_data_under_any_gzip_is_refused() {
    let (idx, original) = gz_labels(5000, 9, None);
    let files = published(&original, &idx);
    let (_, other) = gz_labels(4999, 9, None);
    let mut trailing = gz_labels(5000, 1, None).1;
    trailing.extend_from_slice(b"junk");
    let bomb = {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..(MAX_PAYLOAD_BYTES >> 20) + 1 {
            enc.write_all(&zeros).unwrap();
        }
        enc.finish().unwrap()
    };
    for (body, why) in [
        (other, "(IDX data inside)"),
        (trailing, "no IDX data inside: not valid gzip"),
        (idx.clone(), "no IDX data inside: not valid gzip"),
        (bomb, "decompresses to more than 67108864 bytes"),
    ] {
        let (base, _) = serve(vec![(format!("/{}", FILES[1]), Reply::ok(&body))], 1);
        let dest = tempfile::tempdir().unwrap();
        let e = download_files(&test_agent(), dest.path(), &[base], &files, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("checksum mismatch"), "{e}");
        assert!(e.contains(&hex(&files[0].gz)), "{e}");
        assert!(e.contains(&hex(&files[0].payload.unwrap())), "{e}");
        assert!(e.contains(why), "{e}");
        assert_eq!(dir_entries(dest.path()), Vec::<String>::new());
    }
}

/// Debian's files, the local mirror the end-to-end test serves, match the payload digests.
#[test]
fn fashion_mnist_payload_digests_match_debian_files() {
    let dir = Path::new("/usr/share/datasets/fashion-mnist");
    for want in &FASHION_MNIST_SHA256 {
        let path = dir.join(want.file);
        if !path.exists() {
            eprintln!("skipped: {} is missing", path.display());
            continue;
        }
        let gz = File::open(&path).and_then(sha256_of).unwrap();
        assert_ne!(
            gz, want.gz,
            "Debian's file is byte for byte the published one"
        );
        assert!(already_verified(&path, want), "{}", path.display());
    }
}
