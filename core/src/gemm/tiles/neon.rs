//! The tiles on aarch64: the generic loops with NEON's fused multiply-add.

use super::{Fused, GenericTiles, MulAdd};
use crate::gemm::Scratch;
use crate::gemm::blocked::{Share, blocked as nest};
use crate::gemm::params::{NEON_MR, NEON_NR};

// NEON is part of the aarch64 baseline, so the generic loops vectorise with `fmla` there.
impl GenericTiles for Fused {}

impl MulAdd for Fused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        use core::arch::aarch64::{vdupq_n_f32, vfmaq_f32, vgetq_lane_f32};
        // SAFETY: NEON is part of the aarch64 baseline. LLVM turns this one-lane FMA into `fmla`
        // on whole vectors when it vectorises the tile.
        unsafe { vgetq_lane_f32::<0>(vfmaq_f32(vdupq_n_f32(c), vdupq_n_f32(a), vdupq_n_f32(b))) }
    }
}

/// The loop nest on NEON's tiles for one job's columns of C.
#[target_feature(enable = "neon")]
pub(crate) fn blocked(share: Share, scratch: &mut Scratch) {
    nest::<Fused, NEON_MR, NEON_NR>(share, scratch)
}
