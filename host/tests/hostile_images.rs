//! `predict` on hostile pictures, end to end: files that declare huge images (decoder bombs),
//! files that are not regular files or are too large to read, and damaged JPEGs. Each gets one
//! `error: <path>: ...` line and status 1, never a panic or an abort, and the run stays within
//! a fixed address-space limit however large the image claims to be.

mod common;
use common::*;

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Address space each `predict` here may use (`ulimit -v`, in KiB): the binary, its threads'
/// stacks and arenas, and an image at the limits (`image_input::load` documents about 260 MiB).
/// A decoder bomb that allocated what it declares would die here instead of passing.
const ADDRESS_SPACE_KIB: u64 = 1 << 20;

/// A model trained by the binary on a small generated dataset, made once.
fn model() -> &'static PathBuf {
    static MODEL: OnceLock<PathBuf> = OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hostile-images");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let data = write_dataset(&dir, "data", block_images(300, 3), block_images(50, 4));
        let model = dir.join("model.pdn");
        train_epoch(&data, &model, &[]);
        model
    })
}

/// `predict --model M picture` under the address-space limit, killed if it takes over a minute
/// (a FIFO must not block it).
fn predict(picture: &Path) -> Output {
    let script = format!("ulimit -v {ADDRESS_SPACE_KIB} && exec \"$0\" \"$@\"");
    let mut child = Command::new("sh")
        .args(["-c", &script, env!("CARGO_BIN_EXE_picodense"), "predict"])
        .args(["--model", s(model()), s(picture)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("predict {} did not finish", picture.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Asserts a clean refusal (status 1, no panic, no signal) naming `path` and every needle.
fn refused(path: &Path, needles: &[&str]) -> String {
    let out = predict(path);
    let printed = text(&out);
    assert_eq!(out.status.code(), Some(1), "{printed}");
    assert!(!printed.contains("panicked"), "{printed}");
    assert!(
        printed.contains(&format!("error: {}: ", s(path))),
        "{printed}"
    );
    for needle in needles {
        assert!(printed.contains(needle), "no {needle:?} in: {printed}");
    }
    printed
}

/// A PNG chunk: length, type, data, CRC-32 of type and data.
fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend(crc.sum().to_be_bytes());
    out
}

/// A tiny PNG whose header declares `width` x `height` grey pixels, with a few bytes of image
/// data: the shape of a decoder bomb.
fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 0, 0, 0, 0]); // 8-bit grey, deflate, no filter, no interlace
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &ihdr));
    // zlib of a few zero bytes: far less than the rows declared.
    png.extend(chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x63, 0x60, 0x00, 0x00, 0x00, 0x02, 0x00, 0x01],
    ));
    png.extend(chunk(b"IEND", &[]));
    png
}

/// A small valid JPEG of a dark bar on light paper.
fn jpeg() -> Vec<u8> {
    let picture = image::GrayImage::from_fn(32, 32, |x, _| {
        image::Luma([if (12..20).contains(&x) { 20 } else { 230 }])
    });
    let mut out = Cursor::new(Vec::new());
    image::DynamicImage::ImageLuma8(picture)
        .write_to(&mut out, image::ImageFormat::Jpeg)
        .unwrap();
    out.into_inner()
}

/// `jpeg` with the frame header (SOF0) patched to declare `width` x `height`.
fn jpeg_declaring(width: u16, height: u16) -> Vec<u8> {
    let mut bytes = jpeg();
    let sof = bytes
        .windows(2)
        .position(|w| w == [0xff, 0xc0])
        .expect("a baseline frame header");
    // FF C0, length (2), precision (1), height (2), width (2).
    bytes[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    bytes
}

#[test]
fn decoder_bombs_are_refused_before_their_pixels_are_allocated() {
    let dir = tempfile::tempdir().unwrap();
    let bomb = png_declaring(100_000, 100_000);
    assert!(bomb.len() < 100, "{} bytes", bomb.len());
    let cases: [(&str, Vec<u8>, &str); 5] = [
        // Past the side limit: the decoder's limits refuse it.
        ("side.png", bomb, "image too large"),
        // Sides within the limit, pixels past it: refused from the header's size.
        (
            "pixels.png",
            png_declaring(16_000, 16_000),
            "16000x16000 pixels",
        ),
        (
            "side.jpg",
            jpeg_declaring(65_535, 65_535),
            "image too large",
        ),
        (
            "pixels.jpg",
            jpeg_declaring(16_000, 16_000),
            "16000x16000 pixels",
        ),
        // A JPEG named .png: the content decides, and the limits hold for it too.
        (
            "jpeg-named.png",
            jpeg_declaring(9_000, 9_000),
            "9000x9000 pixels",
        ),
    ];
    for (name, bytes, needle) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let printed = refused(&path, &["image too large", needle]);
        assert!(printed.contains("16777216 pixels (4096x4096)"), "{printed}");
    }
}

#[test]
fn an_image_at_the_limit_is_accepted_and_one_pixel_row_more_is_not() {
    let dir = tempfile::tempdir().unwrap();
    for (height, accepted) in [(4096, true), (4097, false)] {
        // A dark bar on light paper, 4096 wide.
        let picture = image::GrayImage::from_fn(4096, height, |x, _| {
            image::Luma([if (1800..2300).contains(&x) { 10 } else { 240 }])
        });
        let path = dir.path().join(format!("big-{height}.png"));
        picture.save(&path).unwrap();
        if accepted {
            let out = predict(&path);
            assert!(out.status.success(), "{}", text(&out));
            assert!(text(&out).contains("predicted:"), "{}", text(&out));
        } else {
            refused(&path, &["image too large", "4096x4097 pixels"]);
        }
    }
}

#[test]
fn non_regular_and_oversized_files_are_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    // A FIFO nobody writes to: opening it would block for ever.
    let fifo = dir.path().join("pipe.png");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    refused(&fifo, &["not a regular file (a FIFO)"]);
    // A device that never ends.
    refused(
        Path::new("/dev/zero"),
        &["not a regular file (a character device)"],
    );
    refused(dir.path(), &["not a regular file (a directory)"]);
    // A sparse 1 GiB file: its size is refused before a byte is read.
    let huge = dir.path().join("huge.jpg");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    refused(&huge, &["image too large", "the file is 1073741824 bytes"]);
}

#[test]
fn damaged_jpegs_are_refused_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let good = jpeg();
    let sof = good.windows(2).position(|w| w == [0xff, 0xc0]).unwrap();
    let sos = good.windows(2).position(|w| w == [0xff, 0xda]).unwrap();
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    // Cut in the middle of the scan.
    cases.push(("cut.jpg", good[..good.len() * 2 / 3].to_vec()));
    // Zero width, zero height.
    cases.push(("zero.jpg", jpeg_declaring(0, 0)));
    // An impossible component count and sampling factor in the frame header.
    let mut components = good.clone();
    components[sof + 9] = 0xff;
    cases.push(("components.jpg", components));
    let mut sampling = good.clone();
    sampling[sof + 11] = 0xff;
    cases.push(("sampling.jpg", sampling));
    // The scan header's table selectors pointing at tables that do not exist.
    let mut tables = good.clone();
    tables[sos + 6] = 0xff;
    cases.push(("tables.jpg", tables));
    for (name, bytes) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let out = predict(&path);
        let printed = text(&out);
        assert_eq!(out.status.code(), Some(1), "{name}: {printed}");
        assert!(!printed.contains("panicked"), "{name}: {printed}");
        assert!(printed.contains(s(&path)), "{name}: {printed}");
    }
}
