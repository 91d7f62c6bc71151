//! The blocked loop nest: K blocks, row blocks of A, column groups of packed B, panels of A
//! rows, then one register tile per panel of B. The sizes are in [`super::params`].

use super::claims::{Claims, Columns, Units};
use super::epilogue::{Epilogue, Out, Tile, load, store};
use super::pack::{APanel, pack_b};
use super::params::{
    B_LEN, KC, MAX_PANELS, NR_MAX, PACKED_LEN, PACKED_ROWS, STEPS_LEN, skips_zeros, unit_width,
};
use super::steps::{Listed, Steps, every_step_used, list_block_steps};
use super::tiles::Tiles;
use super::{MatRef, Scratch};

/// One job's share of a product: the operands, C, the columns it computes and the epilogue.
pub(super) struct Share<'a> {
    /// A, read where it lies.
    pub(super) a: MatRef<'a>,
    /// B, packed into panels (or read in place when already in them).
    pub(super) b: MatRef<'a>,
    /// C.
    pub(super) out: &'a Out<'a>,
    /// The columns of C this job computes.
    pub(super) cols: Columns<'a>,
    /// What happens to C after the last K block.
    pub(super) epilogue: Epilogue<'a>,
}

/// The GEMM loop nest for one job's columns of C, around the register tiles of `M`: `MR x NR`
/// (a last, shorter panel of A rows runs a tile of 4 or 2 rows).
#[inline(always)]
pub(super) fn blocked<M: Tiles<NR>, const MR: usize, const NR: usize>(
    share: Share,
    scratch: &mut Scratch,
) {
    const { assert!(MR >= 2 && NR <= NR_MAX) };
    let Share {
        a,
        b,
        out,
        cols: Columns {
            range: cols,
            claims,
        },
        epilogue,
    } = share;
    let (m, k) = (a.rows, a.cols);
    // Equal K blocks: 1024 = 2 x 512 rather than 784 + 240, and never a thin last block that
    // pays a full pass over C for little work. Only k decides the blocks, never the columns.
    let kc_step = k.div_ceil(k.div_ceil(KC).max(1));
    // As many panels of B as fit in `B_LEN`: each A panel then sweeps a wide strip of C's rows,
    // which keeps the write-back of a large C (Xᵀ·dH is 1.6 MB) streaming.
    let group = (B_LEN / (kc_step.max(1) * NR)).max(1);
    let skip_zeros = skips_zeros(b.cols, NR);
    // A's rows strided (Xᵀ: each step of a panel is a cache line of its own): the listing
    // reads every value anyway, so it packs the listed ones for the tiles.
    let pack_a = skip_zeros && a.col_stride != 1 && MR <= PACKED_ROWS;
    // Rows of A per block: as many panels as the step lists (and packed values) hold.
    let listed_len = if pack_a { PACKED_LEN } else { STEPS_LEN };
    let max_panels = (listed_len / kc_step.max(1)).min(MAX_PANELS);
    let panels = m.div_ceil(MR);
    let mc_step = panels.div_ceil(panels.div_ceil(max_panels).max(1)) * MR;
    // B already in this kernel's panels (the training step's copy of W1): read in place.
    let b_in_place = b.panel_width == NR;
    let row_claims = match claims {
        Some((Claims::Rows, counter)) => {
            // A row's sum would otherwise be split between jobs, in no fixed order.
            assert!(
                kc_step >= k,
                "rows are claimed only in products of one K block"
            );
            Some(counter)
        }
        _ => None,
    };
    // The units of columns this job claimed in the first block (with column claims).
    let mut claimed = 0u64;
    // The group of B that `scratch.b` holds with every row packed: (pc, jc, width).
    let mut packed_b = None;
    // k == 0 still runs one (empty) block so the epilogue is applied.
    let mut pc = 0;
    // Loop 1: K blocks of `kc_step` (at most KC) steps.
    loop {
        let kc = kc_step.min(k - pc);
        let (first, last) = (pc == 0, pc + kc == k);
        let row_blocks = match row_claims {
            None => Units::Range {
                next: 0,
                end: m,
                step: mc_step,
            },
            Some(counter) => Units::claim_rows(counter, m),
        };
        // Loop 2: row blocks of A, `mc_step` rows (or claimed units of rows).
        for (ic, mc) in row_blocks {
            if skip_zeros {
                list_block_steps::<MR>(&a, ic..ic + mc, (pc, kc), pack_a, M::LISTER, scratch);
            }
            // Rows of B that no panel reads are not packed (blank image margins), unless later
            // row blocks will read the same packing.
            let used = &scratch.used[..kc.div_ceil(8)];
            let used =
                (skip_zeros && row_claims.is_none() && !every_step_used(used, kc)).then_some(used);
            let units = match claims {
                None | Some((Claims::Rows, _)) => Units::Range {
                    next: cols.start,
                    end: cols.end,
                    step: group * NR,
                },
                Some((Claims::Columns, counter)) if pc == 0 && ic == 0 => Units::Claim {
                    counter,
                    end: cols.end,
                    size: unit_width(NR),
                    claimed: Some(&mut claimed),
                },
                Some((Claims::Columns, _)) => Units::Replay {
                    left: claimed,
                    end: cols.end,
                    size: unit_width(NR),
                },
            };
            // Loop 3: column groups of B, `group` panels (or claimed units of columns).
            for (jc, width) in units {
                if !b_in_place && (used.is_some() || packed_b != Some((pc, jc, width))) {
                    let b_rows = scratch.b.as_chunks_mut::<NR>().0;
                    for (panel, j) in b_rows
                        .chunks_exact_mut(kc.max(1))
                        .zip((0..width).step_by(NR))
                    {
                        pack_b(&b, pc, jc + j, NR.min(width - j), &mut panel[..kc], used);
                    }
                    packed_b = used.is_none().then_some((pc, jc, width));
                }
                // Wide tiles keep one B panel close while every A panel passes over it; with
                // narrow ones each A panel sweeps the whole group, writing C along its rows.
                let pass_width = if M::ONE_B_PANEL_AT_A_TIME { NR } else { width };
                for pass in (0..width).step_by(pass_width) {
                    let (b_panels, panel_stride) = if b_in_place {
                        // Units and column ranges start on whole tiles.
                        debug_assert_eq!((jc + pass) % NR, 0);
                        let panel = (jc + pass) / NR * b.rows * NR;
                        (&b.data[panel + pc * NR..], b.rows * NR)
                    } else {
                        (&scratch.b[pass * kc..], kc * NR)
                    };
                    // Loop 4: panels of MR rows of A.
                    for (q, ir) in (0..mc).step_by(MR).enumerate() {
                        let listed = q * kc..q * kc + usize::from(scratch.counts[q]);
                        let steps = match (skip_zeros, pack_a) {
                            (true, true) => Steps::Packed(
                                Listed::new(&scratch.steps, listed.clone()),
                                &scratch.packed_a[listed],
                            ),
                            // A panel that keeps every step runs dense.
                            (true, false) if listed.len() < kc => {
                                Steps::Listed(Listed::new(&scratch.steps, listed))
                            }
                            _ => Steps::All,
                        };
                        let strip = Strip {
                            row: ic + ir,
                            rows: MR.min(mc - ir),
                            pc,
                            kc,
                            steps,
                            col: jc + pass,
                            width: pass_width.min(width - pass),
                            panel_stride,
                            first,
                            last,
                        };
                        // The last panel of 128 = 21 x 6 + 2 rows runs a 2-row tile, not 6.
                        match strip.rows {
                            r if r > 4 || r == MR => {
                                run_strip::<M, MR, NR>(&a, strip, b_panels, out, epilogue)
                            }
                            r if r > 2 => run_strip::<M, 4, NR>(&a, strip, b_panels, out, epilogue),
                            _ => run_strip::<M, 2, NR>(&a, strip, b_panels, out, epilogue),
                        }
                    }
                }
            }
        }
        pc += kc;
        if pc >= k {
            break;
        }
    }
}

/// One panel of A rows against a group of B panels: a row of tiles of C.
#[derive(Clone, Copy)]
pub(super) struct Strip<'a> {
    /// Position of the panel's first row in A's panel order.
    row: usize,
    /// Rows of A in the panel (at most the tile's R).
    rows: usize,
    /// The K block.
    pc: usize,
    kc: usize,
    /// The K steps to run and where A's values come from.
    steps: Steps<'a>,
    /// First column of C and width of the group.
    col: usize,
    width: usize,
    /// Distance between the group's B panels.
    panel_stride: usize,
    first: bool,
    last: bool,
}

#[inline(always)]
fn run_strip<M: Tiles<NR>, const R: usize, const NR: usize>(
    a: &MatRef,
    strip: Strip,
    b_panels: &[f32],
    out: &Out,
    epilogue: Epilogue,
) {
    let panel = APanel::<R>::new(a, strip.row, strip.rows, strip.pc, strip.kc);
    // Loop 5: the pass's panels of B, NR columns each: one register tile apiece.
    for j in (0..strip.width).step_by(NR) {
        let b_panel = &b_panels[j / NR * strip.panel_stride..][..NR * strip.kc];
        let tile = Tile {
            rows: &panel.numbers[..strip.rows],
            col: strip.col + j,
            cols: NR.min(strip.width - j),
        };
        // Later K blocks carry on the chains of the earlier ones, from C.
        let sums = if strip.first {
            [[0.0; NR]; R]
        } else {
            load(out, tile)
        };
        let sums = match strip.steps {
            Steps::All => M::dense::<R>(&sums, &panel, b_panel),
            Steps::Listed(steps) => M::sparse::<R>(&sums, &panel, steps, b_panel),
            Steps::Packed(steps, values) => M::packed::<R>(&sums, values, steps, b_panel),
        };
        store(&sums, out, tile, strip.last, epilogue);
    }
}
