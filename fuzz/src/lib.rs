//! Helpers shared by the fuzz targets and the seed generator; the file writers come from
//! `picodense-support`.

use std::path::{Path, PathBuf};

use picodense_core::crc32;
use picodense_core::format::HEADER_LEN;
pub use picodense_support::{assert_names, gzip, idx_images, idx_labels, npy, zip_archive};

/// A file private to this process for readers that take a path. Under /dev/shm when it exists,
/// so each execution costs a memory copy rather than a disk write.
pub fn scratch_path(name: &str) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    dir.join(format!("picodense-fuzz-{}-{name}", std::process::id()))
}

/// Writes `bytes` to the scratch file `name` and returns its path.
pub fn scratch_file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch_path(name);
    std::fs::write(&path, bytes).expect("the scratch file is writable");
    path
}

/// Makes a `.pdn` file self-consistent: the payload length field matches the file length and
/// the CRC matches the bytes, so the fuzzer reaches the checks behind the checksum.
pub fn fix_pdn(bytes: &mut [u8]) {
    if bytes.len() < HEADER_LEN + 4 {
        return;
    }
    let end = bytes.len() - 4;
    let payload = (end - HEADER_LEN) as u32;
    bytes[24..28].copy_from_slice(&payload.to_le_bytes());
    let crc = crc32(&bytes[..end]);
    bytes[end..].copy_from_slice(&crc.to_le_bytes());
}

/// Separates the four `.npy` members in the structured `npz` fuzz input.
pub const NPZ_SEPARATOR: &[u8] = b"NPZ|";

/// Separates the training and test files in the `csv` fuzz input.
pub const CSV_SEPARATOR: &[u8] = b"CSV|";

/// Names of Keras's `mnist.npz` members, in the order the structured input lists them.
pub const NPZ_MEMBERS: [&str; 4] = ["x_train.npy", "y_train.npy", "x_test.npy", "y_test.npy"];
