//! Writes small valid inputs for every fuzz target into `corpus/<target>/` (run from `fuzz/`):
//! `cargo run --example make_seeds`.

use std::path::Path;

use picodense::compute::zeroed_box;
use picodense::train::{CheckpointRecord, OptimizerKind, Position};
use picodense_core::format;
use picodense_core::{Mlp, RmsProp, StepStats};
use picodense_fuzz::{
    CSV_SEPARATOR, NPZ_SEPARATOR, gzip, idx_images, idx_labels, npy, zip_archive,
};
use rand_xorshift::XorShiftRng;

fn put(target: &str, name: &str, mode: u8, body: &[u8]) {
    let dir = Path::new("corpus").join(target);
    std::fs::create_dir_all(&dir).expect("corpus directory");
    let mut bytes = vec![mode];
    bytes.extend(body);
    std::fs::write(dir.join(name), bytes).expect("seed written");
}

fn pixels(n: usize) -> Vec<u8> {
    (0..n * 784).map(|i| (i * 7 % 256) as u8).collect()
}

fn main() {
    // IDX: images (mode bit 0 clear) and labels (set), given raw or gzipped by the harness
    // (bit 1), and gzipped here so the decoder itself is fuzzed.
    let images = idx_images(2, 28, 28, &pixels(2));
    let labels = idx_labels(&[3, 9, 0]);
    put("idx", "images", 0, &images);
    put("idx", "images-harness-gz", 2, &images);
    put("idx", "images-gz", 0, &gzip(&images));
    put("idx", "labels", 1, &labels);
    put("idx", "labels-harness-gz", 3, &labels);
    put("idx", "labels-gz", 1, &gzip(&labels));
    put("idx", "empty-images", 0, &idx_images(0, 28, 28, &[]));

    // npz: whole archives (mode 0), and the four members for the harness to pack (mode 1
    // stored, 3 deflated).
    let members = [
        npy("|u1", false, "(2, 28, 28)", &pixels(2)),
        npy("|u1", false, "(2,)", &[1, 2]),
        npy("|u1", false, "(1, 28, 28)", &pixels(1)),
        npy("<i8", false, "(1,)", &7i64.to_le_bytes()),
    ];
    let names = ["x_train.npy", "y_train.npy", "x_test.npy", "y_test.npy"];
    let pairs: Vec<(&str, &[u8])> = names
        .iter()
        .copied()
        .zip(members.iter().map(Vec::as_slice))
        .collect();
    put("npz", "stored", 0, &zip_archive(&pairs, |_| false));
    put("npz", "deflated", 0, &zip_archive(&pairs, |_| true));
    let joined = members.join(NPZ_SEPARATOR);
    put("npz", "members-stored", 1, &joined);
    put("npz", "members-deflated", 3, &joined);

    // csv: names with quotes, CRLF and a BOM; integers; the label column named `y` (mode 1).
    let pair = |train: &[u8], test: &[u8]| [train, CSV_SEPARATOR, test].concat();
    let names = pair(
        b"\xef\xbb\xbfa,\"b, 2\",label\r\n1,2.5,cat\r\n-3e2,\"4\",\"dog, big\"\r\n",
        b"a,\"b, 2\",label\n5,6,cat\n",
    );
    put("csv", "names", 0, &names);
    let integers = pair(b"f,g,label\n1,2,0\n3,4,2\n", b"f,g,label\n5,6,3\n");
    put("csv", "integers", 0, &integers);
    put("csv", "label-column", 1, b"y,f\nx,1\nz,2\n");

    // pdn: a 2-3-2 model with and without optimizer state and a record (mode 0 as written,
    // mode 1 with the harness fixing length and CRC).
    let mut model: Box<Mlp<2, 3, 2>> = zeroed_box();
    model.init_glorot(&mut <XorShiftRng as rand_core::SeedableRng>::seed_from_u64(
        1,
    ));
    let mut optimizer: Box<RmsProp<2, 3, 2>> = zeroed_box();
    optimizer.reset(1e-3);
    for (name, opt, extra) in [
        ("plain", None, None),
        ("optimizer", Some(&*optimizer), None),
        ("record", Some(&*optimizer), Some(&b"{\"epoch\":1}"[..])),
        ("record-only", None, Some(&b"abc"[..])),
    ] {
        let velocity = optimizer.velocity.layers();
        let sections = format::Sections {
            optimizer: opt.map(|o: &RmsProp<2, 3, 2>| (o.rule, &velocity)),
            extra,
            meta: None,
            dataset: 1,
        };
        let bytes = picodense::model::encode_file(&model.layers(), &sections);
        put("pdn", name, 0, &bytes);
        put("pdn", &format!("{name}-fixed"), 1, &bytes);
    }

    // checkpoint: training records for the harness to wrap (mode 1 SGD, 3 RMSprop). The
    // harness trains on 3 rows, so `train_rows: 3` records reach the resumed step.
    for (name, optimizer, position) in [
        ("start", OptimizerKind::Sgd, Position::default()),
        (
            "mid-epoch",
            OptimizerKind::Rmsprop,
            Position {
                epoch: 1,
                step: 1,
                stats: StepStats {
                    loss_sum: 2.5,
                    correct: 1,
                    rows: 2,
                },
            },
        ),
    ] {
        let record = CheckpointRecord {
            position,
            seed: 7,
            epochs: 3,
            batch_size: 2,
            optimizer,
            learning_rate: 1e-3,
            train_rows: 3,
            validation_split: 0.0,
            // As in older checkpoints: a seed then fits any training set of 3 rows.
            train_labels_crc32: None,
            train_values_crc32: None,
            history: Vec::new(),
        };
        let json = serde_json::to_vec(&record).expect("plain fields serialise");
        let mode = if optimizer == OptimizerKind::Rmsprop {
            3
        } else {
            1
        };
        put("checkpoint", name, mode, &json);
    }
    put("checkpoint", "not-a-model", 0, b"PDN1 and then nothing");

    // image: small pictures with ink in every colour type the decoders produce, as PNG (mode
    // 0, MNIST layout) and JPEG (mode 2; 3 for the Fashion-MNIST layout).
    let ink = |x: u32, y: u32| (10..22).contains(&x) && (4..28).contains(&y);
    let gray = image::GrayImage::from_fn(32, 32, |x, y| {
        image::Luma([if ink(x, y) { 20 } else { 230 }])
    });
    let rgba = image::RgbaImage::from_fn(24, 40, |x, y| {
        image::Rgba(if ink(x, y) {
            [0, 0, 0, 255]
        } else {
            [0, 0, 0, 0]
        })
    });
    let gray16 = image::ImageBuffer::<image::Luma<u16>, _>::from_fn(20, 30, |x, y| {
        image::Luma([if ink(x, y) { 60_000 } else { 1_000 }])
    });
    let pictures: [(&str, image::DynamicImage); 3] = [
        ("gray", gray.into()),
        ("rgba", rgba.into()),
        ("gray16", gray16.into()),
    ];
    for (name, picture) in pictures {
        let mut png = std::io::Cursor::new(Vec::new());
        picture
            .write_to(&mut png, image::ImageFormat::Png)
            .expect("writing to a Vec");
        put("image", &format!("{name}.png"), 0, png.get_ref());
        let mut jpeg = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(picture.to_rgb8())
            .write_to(&mut jpeg, image::ImageFormat::Jpeg)
            .expect("writing to a Vec");
        put("image", &format!("{name}.jpg"), 2, jpeg.get_ref());
        put("image", &format!("{name}-fashion.jpg"), 3, jpeg.get_ref());
    }
    println!("seeds written to corpus/");
}
