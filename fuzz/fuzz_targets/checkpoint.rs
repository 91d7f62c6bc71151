//! Checkpoint records (`Trainer::resume`) and a resumed run's first step. First byte bit 0
//! clear: the rest is the whole checkpoint file. Bit 0 set: the rest is the JSON training
//! record, which the harness wraps in a valid 784-512-10 checkpoint (with RMSprop state when
//! bit 1 is set), then resumes and, when the record matches the 3-row training set, trains one
//! step and writes the interrupt checkpoint, as `picodense train --resume` would.
#![no_main]

use std::sync::OnceLock;
use std::sync::atomic::AtomicBool;

use libfuzzer_sys::fuzz_target;
use picodense::compute::zeroed_box;
use picodense::data::{Dataset, IMAGE_PIXELS};
use picodense::model::encode_file;
use picodense::train::{Every, RunControl, Trainer};
use picodense_core::format::{HEADER_LEN, Sections};
use picodense_core::{Kernel, MnistMlp, RmsProp};
use picodense_fuzz::{assert_names, fix_pdn, scratch_file, scratch_path};

/// Header, weights and (optionally) optimizer state of a valid checkpoint, up to where the
/// record goes.
fn prefix(with_optimizer: bool) -> &'static [u8] {
    static CELLS: [OnceLock<Vec<u8>>; 2] = [OnceLock::new(), OnceLock::new()];
    CELLS[usize::from(with_optimizer)].get_or_init(|| {
        let model: Box<MnistMlp> = zeroed_box();
        let mut optimizer: Box<RmsProp<784, 512, 10>> = zeroed_box();
        optimizer.reset(1e-3);
        let velocity = optimizer.velocity.layers();
        let sections = Sections {
            optimizer: with_optimizer.then_some((optimizer.rule, &velocity)),
            extra: Some(&[]),
            meta: None,
            dataset: 1,
        };
        let mut bytes = encode_file(&model.layers(), &sections);
        // Drop the empty record's length word and the CRC.
        bytes.truncate(bytes.len() - 8);
        assert!(bytes.len() > HEADER_LEN);
        bytes
    })
}

fn checkpoint(record: &[u8], with_optimizer: bool) -> Vec<u8> {
    let mut bytes = prefix(with_optimizer).to_vec();
    bytes.extend((record.len() as u32).to_le_bytes());
    bytes.extend(record);
    bytes.resize(bytes.len().next_multiple_of(4) + 4, 0);
    fix_pdn(&mut bytes);
    bytes
}

fn train_set() -> &'static Dataset {
    static SET: OnceLock<Dataset> = OnceLock::new();
    SET.get_or_init(|| {
        let pixels = (0..3 * IMAGE_PIXELS).map(|i| (i % 251) as u8).collect();
        Dataset::from_images(IMAGE_PIXELS, pixels, vec![0, 1, 2])
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let bytes = if mode & 1 != 0 {
        checkpoint(body, mode & 2 != 0)
    } else {
        body.to_vec()
    };
    let path = scratch_file("checkpoint.pdn", &bytes);
    let (mut trainer, config) = match Trainer::resume(&path, 1, Kernel::PORTABLE) {
        Ok(resumed) => resumed,
        Err(e) => {
            assert_names(&e.to_string(), &path);
            return;
        }
    };
    let train = train_set();
    // `picodense train --resume` refuses other data before it trains.
    if trainer.check_resumed_data(train).is_err() {
        return;
    }
    // Stop after one step, as a Ctrl-C would.
    let stop = AtomicBool::new(true);
    let out = scratch_path("interrupt.pdn");
    let control = RunControl {
        checkpoint: None,
        every: Every::Steps(1),
        interrupt_checkpoint: Some(out.clone()),
        stop: Some(&stop),
    };
    let _ = trainer.fit(&config, train, None, &control, &mut |_| {});
});
