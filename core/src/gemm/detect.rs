//! Which instruction sets this CPU runs: the one place the core asks (CPUID and XGETBV on
//! x86-64, so that a `no_std` build detects as the standard library does). The products, the
//! paired gradient and the optimizer all run the set their [`Kernel`] names ([`Kernel::isa`]);
//! nothing else in the core looks at the CPU or at which kernel it was given.

use super::{Kernel, Variant};

/// The instruction set a kernel's fast paths run, for code outside the core (the host's batch
/// conversion) that follows the kernel a run chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Isa {
    /// No particular instruction set, the compile target's baseline (naive and portable
    /// kernels, whose multiply-add is fused in software).
    Plain,
    /// AVX2 + FMA.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512 F and BW with AVX2 + FMA.
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// NEON (part of the aarch64 baseline): the generic loops with a fused multiply-add.
    #[cfg(target_arch = "aarch64")]
    Neon,
}

impl Kernel {
    /// The instruction set this kernel's fast paths run.
    pub fn isa(self) -> Isa {
        match self.0 {
            Variant::Naive => Isa::Plain,
            Variant::Blocked(isa) => isa,
        }
    }

    /// The fastest kernel this CPU runs: AVX-512, AVX2, NEON or portable.
    pub fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        if let Some(kernel) = Kernel::avx512().or_else(Kernel::avx2) {
            return kernel;
        }
        #[cfg(target_arch = "aarch64")]
        let kernel = Kernel::NEON;
        #[cfg(not(target_arch = "aarch64"))]
        let kernel = Kernel::PORTABLE;
        kernel
    }

    /// The AVX2 kernel, when this CPU (and its OS) runs AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    pub fn avx2() -> Option<Kernel> {
        // SAFETY: the features were detected on this CPU.
        x86::features()
            .avx2
            .then(|| unsafe { Kernel::avx2_unchecked() })
    }

    /// The AVX-512 kernel, when this CPU (and its OS) runs AVX-512 F and BW, AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    pub fn avx512() -> Option<Kernel> {
        let features = x86::features();
        // SAFETY: the features were detected on this CPU.
        (features.avx2 && features.avx512).then(|| unsafe { Kernel::avx512_unchecked() })
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::{__cpuid, __cpuid_count, _xgetbv};

    /// What the kernels need, as CPUID and the OS report it.
    pub(super) struct Features {
        /// AVX2 and FMA, with the OS saving ymm registers.
        pub avx2: bool,
        /// AVX-512 F and BW (the host's byte conversions), with the OS saving zmm and mask
        /// registers.
        pub avx512: bool,
    }

    pub(super) fn features() -> Features {
        let bit = |word: u32, n: u32| word >> n & 1 == 1;
        let leaf1 = __cpuid(1);
        let (fma, osxsave, avx) = (bit(leaf1.ecx, 12), bit(leaf1.ecx, 27), bit(leaf1.ecx, 28));
        if !(osxsave && avx) {
            return Features {
                avx2: false,
                avx512: false,
            };
        }
        // SAFETY: OSXSAVE is set, so XGETBV runs.
        let xcr0 = unsafe { _xgetbv(0) };
        // xmm and ymm state; then opmask, upper halves of zmm0-15 and zmm16-31.
        let ymm = xcr0 & 0b110 == 0b110;
        let zmm = ymm && xcr0 & 0b1110_0000 == 0b1110_0000;
        let leaf7 = if __cpuid(0).eax >= 7 {
            __cpuid_count(7, 0).ebx
        } else {
            0
        };
        Features {
            avx2: ymm && fma && bit(leaf7, 5),
            avx512: zmm && bit(leaf7, 16) && bit(leaf7, 30),
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// The core's detection agrees with the standard library's.
    #[test]
    fn detection_agrees_with_std() {
        let avx2 = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
        let avx512 = avx2
            && std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw");
        assert_eq!(Kernel::avx2().is_some(), avx2);
        assert_eq!(Kernel::avx512().is_some(), avx512);
        let best = match (avx512, avx2) {
            (true, _) => "avx512",
            (false, true) => "avx2",
            _ => "portable",
        };
        assert_eq!(Kernel::detect().name(), best);
    }
}
