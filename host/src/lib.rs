//! picodense host: data loading, batching, the training loop, reporting and the CLI around
//! the `no_std` core.

pub mod batch;
pub mod bench;
pub mod checkpoint;
pub mod compute;
pub mod data;
pub mod download;
pub mod evaluation;
pub mod export;
pub mod fs;
pub mod image_input;
pub mod memory;
pub mod model;
pub mod plot;
pub mod report;
pub mod tflite;
pub mod train;
