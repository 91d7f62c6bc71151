//! One training epoch of the 784-512-10 network (RMSprop, batches of 128) on 60,000 synthetic
//! MNIST-like images, through the core API as the host drives it: each batch is converted from
//! `u8` to `f32 / 255` (with each image's ink-box key), then `Learner::train_step` runs
//! forward, backward and the update (the hidden weights in the kernel's panels for the epoch).
//! Portable and AVX2 kernels, on 1 and 2 threads. Few samples: one iteration is a whole epoch.
//! One thread is measured in the thread's CPU time (other processes on a shared machine do not
//! count), two threads in wall time. Large buffers sit on huge pages, as in the `picodense`
//! binary.

use std::hint::black_box;
use std::sync::OnceLock;
use std::time::Duration;

use criterion::measurement::Measurement;
use criterion::{Criterion, SamplingMode, Throughput};
use picodense::batch::{init_rng, ink_box_area, to_unit};
use picodense::compute::{Threads, zeroed_box, zeroed_slice};
use picodense_benches::{PIXELS, avx2, avx512, synthetic_mnist};
use picodense_core::{
    BATCH, Batch, Compute, HiddenPanels, Kernel, MnistMlp, MnistWorkspace, RmsProp, Scratch,
    StepStats,
};

#[global_allocator]
static ALLOCATOR: picodense::memory::LargePages = picodense::memory::LargePages;

const IMAGES: usize = 60_000;

/// Everything a training run owns, allocated once.
struct Trainer {
    model: Box<MnistMlp>,
    optimizer: Box<RmsProp<784, 512, 10>>,
    workspace: Box<MnistWorkspace>,
    panels: Box<HiddenPanels<784, 512>>,
    batch: Vec<[f32; PIXELS]>,
    keys: Vec<u16>,
    scratches: Box<[Scratch]>,
    threads: Threads,
}

impl Trainer {
    fn new(threads: usize) -> Self {
        let mut model = zeroed_box::<MnistMlp>();
        model.init_glorot(&mut init_rng(1));
        let mut optimizer = zeroed_box::<RmsProp<784, 512, 10>>();
        optimizer.reset(1e-3);
        Self {
            model,
            optimizer,
            workspace: zeroed_box(),
            panels: zeroed_box(),
            batch: vec![[0.0; PIXELS]; BATCH],
            keys: Vec::with_capacity(BATCH),
            scratches: zeroed_slice(threads),
            threads: Threads::new(threads),
        }
    }

    fn epoch(&mut self, kernel: Kernel, images: &[u8], labels: &[u8]) -> StepStats {
        let mut compute = Compute::new(kernel, &self.threads, &mut self.scratches);
        let mut stats = StepStats::default();
        self.panels.copy_from(&self.model, kernel);
        let mut learner = self.model.learner(
            &mut *self.optimizer,
            Some(&mut self.panels),
            &mut self.workspace,
        );
        for (pixels, labels) in images.chunks(BATCH * PIXELS).zip(labels.chunks(BATCH)) {
            self.keys.clear();
            for (row, image) in self.batch.iter_mut().zip(pixels.chunks_exact(PIXELS)) {
                to_unit(kernel, image, row);
                self.keys.push(ink_box_area(kernel, image));
            }
            let batch = Batch {
                keys: &self.keys,
                ..Batch::new(self.batch[..labels.len()].as_flattened(), labels)
            };
            stats.merge(learner.train_step(batch, &mut compute));
        }
        drop(learner);
        self.panels.copy_to(&mut self.model);
        stats
    }
}

/// The epochs of one thread count: 1 measured in the thread's CPU time, more in wall time.
fn epochs<M: Measurement>(c: &mut Criterion<M>, threads: usize) {
    // Made once for both groups: drawing 60,000 images takes seconds.
    static DATA: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    let (images, labels) = DATA.get_or_init(|| synthetic_mnist(IMAGES, 1));
    let name = if threads == 1 {
        "epoch_60k"
    } else {
        "epoch_60k_2threads"
    };
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(IMAGES as u64));
    // Every sample is a second or more of work: ten samples of one epoch each.
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(100));
    group.measurement_time(Duration::from_secs(5));
    for kernel in [Some(Kernel::PORTABLE), avx2(), avx512()]
        .into_iter()
        .flatten()
    {
        let mut trainer = Trainer::new(threads);
        group.bench_function(kernel.name(), |bench| {
            bench.iter(|| black_box(trainer.epoch(kernel, images, labels)))
        });
    }
    group.finish();
}

picodense_benches::one_and_two_threads!(epochs);
