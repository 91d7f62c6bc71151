//! Keras `.npz` reader. First byte bit 0 clear: the rest is the archive itself (zip parsing).
//! Bit 0 set: the rest is four `.npy` members split at `NPZ|`, which the harness packs into a
//! valid archive (stored, or deflated with bit 1) so the `.npy` header and size checks are
//! reached without the fuzzer having to forge zip CRCs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use picodense::data::{Dataset, load_npz};
use picodense_fuzz::{NPZ_MEMBERS, NPZ_SEPARATOR, assert_names, scratch_file, zip_archive};

fn split_members(mut body: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    while parts.len() < NPZ_MEMBERS.len() - 1 {
        match body
            .windows(NPZ_SEPARATOR.len())
            .position(|w| w == NPZ_SEPARATOR)
        {
            Some(at) => {
                parts.push(&body[..at]);
                body = &body[at + NPZ_SEPARATOR.len()..];
            }
            None => break,
        }
    }
    parts.push(body);
    parts
}

fn check(set: &Dataset) {
    // Pixels or features, never both, whole rows of `width`; float features all finite.
    assert!(set.images.is_empty() || set.values.is_empty());
    assert_eq!(
        set.images.len() + set.values.len(),
        set.labels.len() * set.width
    );
    assert!(set.values.iter().all(|v| v.is_finite()));
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let archive;
    let bytes = if mode & 1 != 0 {
        let parts = split_members(body);
        let members: Vec<(&str, &[u8])> = NPZ_MEMBERS.iter().copied().zip(parts).collect();
        archive = zip_archive(&members, |_| mode & 2 != 0);
        &archive[..]
    } else {
        body
    };
    let path = scratch_file("data.npz", bytes);
    match load_npz(&path) {
        Ok(splits) => {
            check(&splits.train);
            check(&splits.test);
        }
        Err(e) => assert_names(&e.to_string(), &path),
    }
});
