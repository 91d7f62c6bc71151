//! IDX reader, raw and gzip. The first byte picks images or labels (bit 0) and whether the rest
//! is gzipped by the harness (bit 1) so that the IDX checks behind a valid gzip stream are
//! reached too; raw input that starts with the gzip magic exercises the decoder directly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use picodense::data::{read_idx_images, read_idx_labels};
use picodense_fuzz::{assert_names, gzip, scratch_file};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let gz;
    let bytes = if mode & 2 != 0 {
        gz = gzip(body);
        &gz[..]
    } else {
        body
    };
    let path = scratch_file("idx", bytes);
    if mode & 1 == 0 {
        match read_idx_images(&path) {
            Ok((pixels, size)) => assert_eq!(pixels.len() % (size.rows * size.cols), 0),
            Err(e) => assert_names(&e.to_string(), &path),
        }
    } else {
        match read_idx_labels(&path) {
            // Any byte is a class: the classes come from the labels.
            Ok(_) => {}
            Err(e) => assert_names(&e.to_string(), &path),
        }
    }
});
