//! The picture path of `predict`: `image_input::load` on a file (PNG, JPEG or anything else)
//! with the decoder limits, then the MNIST or Fashion-MNIST preparation. Bit 0 of the first
//! byte picks the layout, bit 1 the file's extension (`.png` or `.jpg`: the format is guessed
//! from the content, and from the extension when the content is not recognised).
#![no_main]

use libfuzzer_sys::fuzz_target;
use picodense::image_input::{self, Layout};
use picodense_fuzz::{assert_names, scratch_file};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let layout = if mode & 1 == 0 {
        Layout::MNIST
    } else {
        Layout::FASHION_MNIST
    };
    let name = if mode & 2 == 0 {
        "image.png"
    } else {
        "image.jpg"
    };
    let path = scratch_file(name, body);
    match image_input::load(&path, layout) {
        // Whatever is accepted is a prepared 28x28 picture with some ink in it.
        Ok(pixels) => assert!(pixels.iter().any(|&p| p > 0)),
        Err(e) => assert_names(&e.to_string(), &path),
    }
});
