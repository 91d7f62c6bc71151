//! Zero skipping: before the tiles of a panel of A rows run, the K steps where all its values
//! are zero are listed out, and rows of B that no panel needs are marked unused.

use super::pack::APanel;
use super::params::{PACKED_LEN, PACKED_ROWS, PREFETCH_STEPS};
use super::{MatRef, Scratch};
use core::ops::Range;

/// Which K steps of a block a panel runs, and where its values of A come from.
#[derive(Clone, Copy)]
pub(super) enum Steps<'a> {
    /// Every step, values read in A.
    All,
    /// The listed steps, values read in A.
    Listed(Listed<'a>),
    /// The listed steps, values packed beside them.
    Packed(Listed<'a>, &'a [[f32; PACKED_ROWS]]),
}

/// A panel's listed K steps, and beside each the entry [`PREFETCH_STEPS`] places later in the
/// list (past its end, whatever the step buffer holds there: it is only prefetched). Two
/// slices of one length let the wide tiles step through both without testing for the list's
/// end at every step, a test that cost training about 3%.
#[derive(Clone, Copy)]
pub(super) struct Listed<'a> {
    pub(super) steps: &'a [u16],
    /// Only the x86 wide tiles prefetch.
    #[cfg(target_arch = "x86_64")]
    pub(super) ahead: &'a [u16],
}

impl<'a> Listed<'a> {
    /// Entries `at` of `buffer`, which holds at least [`PREFETCH_STEPS`] more past them.
    pub(super) fn new(buffer: &'a [u16], at: Range<usize>) -> Self {
        assert!(
            at.end + PREFETCH_STEPS <= buffer.len(),
            "no room to look ahead"
        );
        Self {
            #[cfg(target_arch = "x86_64")]
            ahead: &buffer[at.start + PREFETCH_STEPS..at.end + PREFETCH_STEPS],
            steps: &buffer[at],
        }
    }
}

/// How [`list_block_steps`] reads panels whose rows lie along K (X in the forward).
#[derive(Clone, Copy)]
pub(super) enum Lister {
    /// 8 steps at a time, in the baseline's 128-bit vectors.
    Baseline,
    /// 16 steps at a time in 512-bit registers, each group's entries written by one compress
    /// rather than through a table: far fewer instructions a step. Only the tiles of a CPU
    /// that runs AVX-512 F name it.
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

/// For each MR-row panel of A rows `rows`, K steps `pc..pc+kc`: lists the steps where some
/// row is nonzero (NaN counts as nonzero) in `steps`, their number in `counts`, and marks in
/// `used` every step some panel lists.
// Not inlined: inside the loop nest LLVM kept the listing's values on the stack.
#[inline(never)]
pub(super) fn list_block_steps<const MR: usize>(
    a: &MatRef,
    rows: Range<usize>,
    (pc, kc): (usize, usize),
    pack_a: bool,
    lister: Lister,
    scratch: &mut Scratch,
) {
    scratch.used[..kc.div_ceil(8)].fill(0);
    let mut first = rows.start;
    if pack_a && a.row_stride == 1 && a.order.is_empty() {
        // Whole panels of neighbouring rows (Xᵀ: neighbouring pixels), all in one pass.
        let panels = rows.len() / MR;
        list_and_pack_neighbours::<MR>(a, first, panels, pc, kc, scratch);
        first += panels * MR;
    }
    let done = (first - rows.start) / MR;
    for (q, i0) in (first..rows.end).step_by(MR).enumerate() {
        let q = done + q;
        // Each panel's list may spill up to 8 entries into the next panel's space, which that
        // panel's own listing then overwrites.
        let steps = &mut scratch.steps[q * kc..];
        let panel = APanel::<MR>::new(a, i0, MR.min(rows.end - i0), pc, kc);
        let used = &mut scratch.used[..kc.div_ceil(8)];
        let count = if pack_a {
            list_and_pack_steps(&panel, steps, &mut scratch.packed_a[q * kc..], used)
        } else {
            list_steps(&panel, steps, used, lister)
        };
        scratch.counts[q] = count as u16;
    }
}

/// Bit `i` set when `bits[i]`, its sign left out, is not zero.
#[inline(always)]
fn nonzero_mask(bits: [u32; 8]) -> u8 {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{
            _mm_and_si128, _mm_castsi128_ps, _mm_cmpeq_epi32, _mm_loadu_si128, _mm_movemask_ps,
            _mm_set1_epi32, _mm_setzero_si128,
        };
        // SSE2 is part of the x86-64 baseline: one compare and move-mask per 4 flags, where
        // the plain fold below became 8 scalar tests.
        // SAFETY: SSE2 is always present on x86-64, and each load reads 4 of the 8 values.
        unsafe {
            let [low, high] = [0, 4].map(|i| _mm_loadu_si128(bits[i..].as_ptr().cast()));
            let magnitude = _mm_set1_epi32(0x7fff_ffff);
            let zero = |v| {
                let is_zero = _mm_cmpeq_epi32(_mm_and_si128(v, magnitude), _mm_setzero_si128());
                _mm_movemask_ps(_mm_castsi128_ps(is_zero))
            };
            !((zero(low) | zero(high) << 4) as u8)
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        bits.iter()
            .enumerate()
            .fold(0, |mask, (i, &b)| mask | (u8::from(nonzero_bits(b)) << i))
    }
}

/// For each byte, the positions of its set bits, lowest first: they turn the flags of 8 steps
/// into list entries without a branch per step.
static SET_BITS: [[u16; 8]; 256] = set_bits_table();

const fn set_bits_table() -> [[u16; 8]; 256] {
    let mut table = [[0; 8]; 256];
    let mut mask = 0;
    while mask < 256 {
        let (mut bit, mut count) = (0, 0);
        while bit < 8 {
            if mask & (1 << bit) != 0 {
                table[mask][count] = bit as u16;
                count += 1;
            }
            bit += 1;
        }
        mask += 1;
    }
    table
}

/// Lists in `steps` the K steps where some row of the panel is nonzero and marks them in
/// `used` (a bit per step); returns how many. `steps` needs room for 8 entries past the last.
#[inline(always)]
fn list_steps<const R: usize>(
    panel: &APanel<R>,
    steps: &mut [u16],
    used: &mut [u8],
    lister: Lister,
) -> usize {
    let kc = panel.kc;
    assert!(steps.len() >= kc + 8 && used.len() >= kc.div_ceil(8));
    let (mut count, done) = match lister {
        // SAFETY: only tiles whose CPU runs AVX-512 F name this lister.
        #[cfg(target_arch = "x86_64")]
        Lister::Avx512 if panel.stride == 1 => unsafe {
            list_unit_stride_avx512(panel, steps, used)
        },
        _ => (0, 0),
    };
    let groups = (done..kc).step_by(8).zip(&mut used[done / 8..]);
    for (group, used) in groups {
        let len = 8.min(kc - group);
        let mut bits = [0u32; 8];
        if panel.stride == 1 && len == 8 {
            // Rows lie along K (X, dZ): 8 steps of a row are one load.
            for &row in &panel.rows {
                // SAFETY: group + 8 <= kc, and `APanel::new` checked that the row's kc values
                // lie inside A.
                let values = unsafe { &*row.add(group).cast::<[f32; 8]>() };
                for (b, v) in bits.iter_mut().zip(values) {
                    *b |= v.to_bits();
                }
            }
        } else {
            for (i, b) in bits[..len].iter_mut().enumerate() {
                *b = (0..R).fold(0, |any, ii| {
                    // SAFETY: ii < R and group + i < kc.
                    any | unsafe { panel.at(ii, group + i) }.to_bits()
                });
            }
        }
        let mask = nonzero_mask(bits);
        *used |= mask;
        let out: &mut [u16; 8] = (&mut steps[count..count + 8])
            .try_into()
            .expect("8 entries");
        for (entry, &bit) in out.iter_mut().zip(&SET_BITS[usize::from(mask)]) {
            *entry = group as u16 + bit;
        }
        count += mask.count_ones() as usize;
    }
    count
}

/// [`list_steps`] over the whole groups of 16 steps of a panel whose rows lie along K: returns
/// the steps listed and the steps looked at.
///
/// # Safety
/// The CPU runs AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn list_unit_stride_avx512<const R: usize>(
    panel: &APanel<R>,
    steps: &mut [u16],
    used: &mut [u8],
) -> (usize, usize) {
    use core::arch::x86_64::*;
    assert_eq!(panel.stride, 1, "rows along K");
    let groups = panel.kc / 16;
    assert!(steps.len() >= 16 * groups && used.len() >= 2 * groups);
    let magnitude = _mm512_set1_epi32(0x7fff_ffff);
    let mut entries = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let sixteen = _mm512_set1_epi32(16);
    let mut count = 0;
    for (group, used) in used[..2 * groups]
        .as_chunks_mut::<2>()
        .0
        .iter_mut()
        .enumerate()
    {
        let mut any = _mm512_setzero_si512();
        for &row in &panel.rows {
            // SAFETY: the group's 16 steps lie below kc, and `APanel::new` checked that the
            // row's kc values lie inside A.
            any = _mm512_or_si512(any, unsafe {
                _mm512_loadu_si512(row.add(16 * group).cast())
            });
        }
        // Bits without the sign, as `nonzero_bits`.
        let nonzero = _mm512_test_epi32_mask(any, magnitude);
        let listed = _mm512_cvtepi32_epi16(_mm512_maskz_compress_epi32(nonzero, entries));
        // SAFETY: count <= 16 * group, so the 16 entries end by 16 * groups <= steps.len().
        unsafe { _mm256_storeu_si256(steps.as_mut_ptr().add(count).cast(), listed) };
        for (used, bits) in used.iter_mut().zip(nonzero.to_le_bytes()) {
            *used |= bits;
        }
        count += nonzero.count_ones() as usize;
        entries = _mm512_add_epi32(entries, sixteen);
    }
    (count, 16 * groups)
}

/// The listing of [`list_block_steps`] with A's values packed beside the steps, for `panels`
/// whole panels of R rows from row `i0` that lie next to each other in memory (Xᵀ:
/// neighbouring pixels). One pass along K: each step's values of every panel are read in a
/// row, rather than a cache line per step and panel.
fn list_and_pack_neighbours<const R: usize>(
    a: &MatRef,
    i0: usize,
    panels: usize,
    pc: usize,
    kc: usize,
    scratch: &mut Scratch,
) {
    assert!(R <= PACKED_ROWS && panels * kc <= PACKED_LEN);
    let counts = &mut scratch.counts[..panels];
    counts.fill(0);
    for p in 0..kc {
        let start = i0 + (pc + p) * a.col_stride;
        let values = a.data[start..start + panels * R].as_chunks::<R>().0;
        let mut any = 0;
        for (q, (row, count)) in values.iter().zip(counts.iter_mut()).enumerate() {
            let bits = row.iter().fold(0, |bits, v| bits | v.to_bits());
            let at = q * kc + usize::from(*count);
            scratch.steps[at] = p as u16;
            scratch.packed_a[at] = core::array::from_fn(|ii| if ii < R { row[ii] } else { 0.0 });
            *count += u16::from(nonzero_bits(bits));
            any |= bits;
        }
        scratch.used[p / 8] |= u8::from(nonzero_bits(any)) << (p % 8);
    }
}

/// Lists in `steps` the K steps where some row of the panel is nonzero, and the panel's values
/// there in `packed` (zero past its R rows); marks them in `used`; returns how many.
#[inline(always)]
fn list_and_pack_steps<const R: usize>(
    panel: &APanel<R>,
    steps: &mut [u16],
    packed: &mut [[f32; PACKED_ROWS]],
    used: &mut [u8],
) -> usize {
    let kc = panel.kc;
    assert!(R <= PACKED_ROWS && steps.len() >= kc && packed.len() >= kc);
    assert!(used.len() >= kc.div_ceil(8));
    let mut count = 0;
    for p in 0..kc {
        let values: [f32; PACKED_ROWS] = core::array::from_fn(|ii| {
            if ii < R {
                // SAFETY: ii < R and p < kc.
                unsafe { panel.at(ii, p) }
            } else {
                0.0
            }
        });
        let bits = values.iter().fold(0, |any, v| any | v.to_bits());
        // Branch-free: every step is written, and kept when nonzero (NaN counts as nonzero).
        steps[count] = p as u16;
        packed[count] = values;
        let nonzero = nonzero_bits(bits);
        used[p / 8] |= u8::from(nonzero) << (p % 8);
        count += usize::from(nonzero);
    }
    count
}

/// Whether every one of `kc` steps has its bit set in `used`.
pub(super) fn every_step_used(used: &[u8], kc: usize) -> bool {
    used.iter().enumerate().all(|(byte, &bits)| {
        let steps = 8.min(kc - 8 * byte);
        bits == u8::MAX >> (8 - steps)
    })
}

/// Whether the bits of a float (or several, OR-ed together) are not all ±0 (NaN is nonzero).
/// A test on the bits without the sign: no float compares, so the listing loops vectorise.
#[inline(always)]
fn nonzero_bits(bits: u32) -> bool {
    bits & 0x7fff_ffff != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    /// Every lister this CPU runs gives the steps, count and marks of the definition: the
    /// steps where some row's bits, sign left out, are not zero (NaN and subnormals listed,
    /// -0.0 not), for depths with and without a partial group, from K offsets of any alignment.
    #[test]
    fn every_lister_lists_the_nonzero_steps() {
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
        let mut listers = std::vec![Lister::Baseline];
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512f") {
            listers.push(Lister::Avx512);
        } else {
            std::eprintln!("skipped: this CPU has no AVX-512 F, its lister is not tested");
        }
        let (rows, k) = (8, 800);
        let odd = [-0.0, f32::NAN, 1e-45, -1.0, 0.5];
        let a: Vec<f32> = (0..rows * k)
            .map(|i| match (i * 7919) % 61 {
                0..=4 => odd[(i * 7919) % 61],
                5 => 0.25,
                _ => 0.0,
            })
            .collect();
        let a = MatRef::row_major(&a, rows, k);
        for (pc, kc) in [(0, 784), (3, 777), (5, 16), (0, 33), (1, 7), (16, 0)] {
            let panel = APanel::<6>::new(&a, 1, 6, pc, kc);
            let expected: Vec<u16> = (0..kc)
                // SAFETY: p < kc.
                .filter(|&p| (0..6).any(|ii| nonzero_bits(unsafe { panel.at(ii, p) }.to_bits())))
                .map(|p| p as u16)
                .collect();
            for &lister in &listers {
                let mut steps = std::vec![0u16; kc + 8];
                let mut used = std::vec![0u8; kc.div_ceil(8)];
                let count = list_steps(&panel, &mut steps, &mut used, lister);
                assert_eq!(&steps[..count], expected, "pc {pc}, kc {kc}");
                for p in 0..kc {
                    let marked = used[p / 8] >> (p % 8) & 1 == 1;
                    assert_eq!(marked, expected.contains(&(p as u16)), "pc {pc}, step {p}");
                }
            }
        }
    }
}
