//! Writes the MNIST-like synthetic images of the benchmarks as the four IDX files of a dataset
//! (60,000 training and 10,000 test images), so that `picodense bench --data DIR --compare` can
//! time picodense, Keras and numpy on MNIST's sparsity where MNIST itself cannot be downloaded.
//!
//! `cargo run --release -p picodense-benches --example synthetic_idx -- DIR`

use std::path::Path;

use picodense_support::{synthetic_mnist, write_idx_split};

fn main() -> std::io::Result<()> {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: synthetic_idx DIR");
        std::process::exit(2);
    };
    let dir = Path::new(&dir);
    std::fs::create_dir_all(dir)?;
    // One draw for both sets: the class templates come from the seed.
    let (images, labels) = synthetic_mnist(70_000, 1);
    let (train_images, test_images) = images.split_at(60_000 * 784);
    let (train_labels, test_labels) = labels.split_at(60_000);
    for (prefix, images, labels) in [
        ("train", train_images, train_labels),
        ("t10k", test_images, test_labels),
    ] {
        write_idx_split(dir, prefix, (28, 28), (images, labels), false);
    }
    println!("wrote {}", dir.display());
    Ok(())
}
