//! How a step's products are computed: which kernel, on which threads, with one scratch a job.

use crate::gemm::{Epilogue, Kernel, MatRef, Parallel, Scratch, gemm_parallel};
use crate::simd::{self, PanelMatrix, RmsHyper};

/// Which kernel runs the products, the [`Parallel`] that runs their jobs, and one [`Scratch`]
/// per job.
pub struct Compute<'a, P: Parallel> {
    kernel: Kernel,
    parallel: &'a P,
    scratches: &'a mut [Scratch],
}

impl<'a, P: Parallel> Compute<'a, P> {
    /// Products split into up to `scratches.len()` jobs, run by `parallel`.
    ///
    /// # Panics
    /// If `scratches` is empty.
    pub fn new(kernel: Kernel, parallel: &'a P, scratches: &'a mut [Scratch]) -> Self {
        assert!(!scratches.is_empty(), "at least one scratch is needed");
        Self {
            kernel,
            parallel,
            scratches,
        }
    }

    /// The kernel in use.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// What runs the jobs.
    pub fn parallel(&self) -> &'a P {
        self.parallel
    }

    /// Most jobs a product is split into.
    pub fn jobs(&self) -> usize {
        self.scratches.len()
    }

    /// One scratch per job.
    pub(crate) fn scratches(&mut self) -> &mut [Scratch] {
        self.scratches
    }

    /// `C = A·B` then `epilogue`, split between the jobs.
    pub(crate) fn gemm(&mut self, a: MatRef, b: MatRef, c: &mut [f32], epilogue: Epilogue) {
        gemm_parallel(
            self.parallel,
            self.kernel,
            a,
            b,
            c,
            epilogue,
            self.scratches,
        );
    }

    /// RMSprop's update of one tensor `w` by its gradient `g` and velocity `v`, split between
    /// the jobs.
    pub(crate) fn rmsprop(&self, w: &mut [f32], g: &[f32], v: &mut [f32], hyper: RmsHyper) {
        let (kernel, parallel, jobs) = (self.kernel, self.parallel, self.jobs());
        simd::rmsprop(kernel, parallel, jobs, w, g, v, hyper);
    }

    /// [`Compute::rmsprop`] of weights held in panels.
    pub(crate) fn rmsprop_panels(&self, w: &PanelMatrix, g: &[f32], v: &mut [f32], h: RmsHyper) {
        let (kernel, parallel, jobs) = (self.kernel, self.parallel, self.jobs());
        simd::rmsprop_panels(kernel, parallel, jobs, w, g, v, h);
    }
}
