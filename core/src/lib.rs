//! picodense-core: a `#![no_std]`, allocation-free dense network.
//!
//! Every routine runs on storage the caller provides, with the network's [`Shape`] (1 to 4
//! hidden ReLU layers and a softmax head) known at run time: parameters, gradients and
//! optimizer state as [`Layers`] of `f32` slices, activations in a [`WorkspaceMut`]. Fixed-size
//! owners sized with const generics ([`Mlp`], [`Workspace`], [`RmsProp`]) hold the same storage
//! as plain structs that can live in a `static`, on the stack (small nets) or in a
//! zero-initialised heap allocation (the 784-512-10 network is megabytes).
//!
//! ```
//! use picodense_core::{Batch, Mlp, Workspace, Compute, Scratch, RmsProp, Kernel, Serial};
//! use rand_xorshift::XorShiftRng;
//! use rand_core::SeedableRng;
//!
//! let mut model: Mlp<4, 8, 2> = Mlp::zeroed();
//! model.init_glorot(&mut XorShiftRng::seed_from_u64(1));
//! let mut optimizer = RmsProp::<4, 8, 2>::new(1e-2);
//! let mut workspace: Workspace<16, 4, 8, 2> = Workspace::zeroed();
//! let mut scratch = [Scratch::new()];
//! let mut compute = Compute::new(Kernel::PORTABLE, &Serial, &mut scratch);
//! let images = [[0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]];
//! let batch = Batch::new(images.as_flattened(), &[1, 0]);
//! let mut learner = model.learner(&mut optimizer, None, &mut workspace);
//! let stats = learner.train_step(batch, &mut compute);
//! assert_eq!(stats.rows, 2);
//! ```
#![no_std]

pub mod compute;
mod crc;
pub mod format;
pub mod gemm;
pub mod layers;
pub mod loss;
pub mod model;
pub mod optim;
pub mod panels;
pub mod quant;
pub mod shape;
mod simd;

pub use compute::Compute;
pub use crc::crc32;
pub use gemm::{Kernel, Parallel, Scratch, Serial};
pub use layers::{Dense, Layers, Mlp};
pub use model::{Batch, Learner, StepStats, Workspace, WorkspaceLen, WorkspaceMut};
pub use optim::{FirstLayerStep, Optimizer, RmsProp, RmsPropRule, RmsPropState, Sgd, Update};
pub use panels::{HiddenPanels, PanelState, Panels};
pub use shape::Shape;

/// The network of the Keras example: 784 inputs, 512 hidden ReLU units, 10 classes.
pub type MnistMlp = Mlp<784, 512, 10>;
/// The largest batch the product trains with (Keras's default is 128 rows).
pub const BATCH: usize = 128;
/// A training workspace for [`MnistMlp`] and batches of up to [`BATCH`] rows.
pub type MnistWorkspace = Workspace<BATCH, 784, 512, 10>;

/// Types for which all-zero bytes are a valid value (only `f32` arrays and plain counters inside),
/// so a host may allocate them with `Box::new_zeroed` and initialise them in place.
///
/// # Safety
/// Implement only for types whose every field is valid when all its bytes are zero.
pub unsafe trait Zeroable {}

// SAFETY: f32, u16 and bool arrays: all-zero bytes are 0.0, 0 and false.
unsafe impl Zeroable for Scratch {}
// SAFETY: f32 arrays only.
unsafe impl<const I: usize, const O: usize> Zeroable for Dense<I, O> {}
// SAFETY: two `Dense` layers.
unsafe impl<const I: usize, const H: usize, const O: usize> Zeroable for Mlp<I, H, O> {}
// SAFETY: f32 arrays and an `Mlp`.
unsafe impl<const B: usize, const I: usize, const H: usize, const O: usize> Zeroable
    for Workspace<B, I, H, O>
{
}
// SAFETY: an f32 array and two counters (width 0: not filled yet).
unsafe impl<const I: usize, const H: usize> Zeroable for HiddenPanels<I, H> {}
// SAFETY: f32 hyper-parameters (zero is a valid, if useless, value) and an `Mlp`.
unsafe impl<const I: usize, const H: usize, const O: usize> Zeroable for RmsProp<I, H, O> {}

#[cfg(test)]
extern crate std;

/// Heap allocations of big core structs for unit tests (the core itself never allocates).
#[cfg(test)]
pub(crate) fn zeroed_box<T: Zeroable>() -> std::boxed::Box<T> {
    // SAFETY: `Zeroable` promises that zero bytes are a valid `T`.
    unsafe { std::boxed::Box::<T>::new_zeroed().assume_init() }
}

/// Every kernel this machine runs, the naive reference first (unit tests).
#[cfg(test)]
pub(crate) fn every_kernel() -> std::vec::Vec<Kernel> {
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(unused_mut)
    )]
    let mut list = std::vec![Kernel::NAIVE, Kernel::PORTABLE];
    #[cfg(target_arch = "x86_64")]
    list.extend(Kernel::avx2());
    #[cfg(target_arch = "x86_64")]
    list.extend(avx512_kernel());
    #[cfg(target_arch = "aarch64")]
    list.push(Kernel::NEON);
    list
}

/// The AVX-512 kernel when this CPU runs it (unit tests); says why when it does not, so that a
/// run on another CPU shows what it left out.
#[cfg(all(test, target_arch = "x86_64"))]
pub(crate) fn avx512_kernel() -> Option<Kernel> {
    let kernel = Kernel::avx512();
    if kernel.is_none() {
        std::eprintln!("skipped: this CPU has no AVX-512 F + BW, its kernel is not tested");
    }
    kernel
}

#[cfg(test)]
pub(crate) fn zeroed_slice<T: Zeroable>(len: usize) -> std::boxed::Box<[T]> {
    // SAFETY: `Zeroable` promises that all-zero bytes are a valid `T`, so of `len` of them.
    unsafe { std::boxed::Box::<[T]>::new_zeroed_slice(len).assume_init() }
}
