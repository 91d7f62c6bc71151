//! `.pdn` model files: the core's `ModelView` (parse, tensors, extra record, loading weights and
//! optimizer state into a small model) and the host's `model::load_network`. First byte bit 0
//! set: the harness rewrites the payload length and CRC so that the checks after the checksum
//! (sizes, layout, extra record) are reached.
#![no_main]

use libfuzzer_sys::fuzz_target;
use picodense::compute::zeroed_box;
use picodense::model::load_network;
use picodense_core::format::ModelView;
use picodense_core::{Mlp, RmsProp};
use picodense_fuzz::{assert_names, fix_pdn, scratch_file};

/// The size the seeds use, so that loading succeeds and copies every tensor.
type Small = Mlp<2, 3, 2>;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let mut bytes = body.to_vec();
    if mode & 1 != 0 {
        fix_pdn(&mut bytes);
    }
    if let Ok(view) = ModelView::parse(&bytes) {
        let header = *view.header();
        assert_eq!(view.payload().len(), header.payload_len);
        if let Ok(tensors) = view.f32_tensors() {
            let values: usize = tensors.iter().map(|t| t.iter().count()).sum();
            assert!(values * 4 <= header.payload_len);
        }
        if let Ok(Some(extra)) = view.extra() {
            assert!(extra.len() <= header.payload_len);
        }
        let mut model: Box<Small> = zeroed_box();
        let _ = view.load_into(&mut model.layers_mut());
        let mut optimizer: Box<RmsProp<2, 3, 2>> = zeroed_box();
        let _ = view.load_optimizer(&mut optimizer.velocity.layers_mut());
    }
    let path = scratch_file("model.pdn", &bytes);
    if let Err(e) = load_network(&path) {
        assert_names(&e.to_string(), &path);
    }
});
