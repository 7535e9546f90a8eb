//! Path patching (Wang et al. 2022, "Interpretability in the Wild", appendix B): the
//! effect of one *sender* head that reaches the output only through chosen
//! *receivers*.
//!
//! Target run = the run being patched, source run = where the sender's value comes
//! from (denoising: target corrupted, source clean; noising: the reverse), as for
//! every other kind ([`crate::Direction`]).
//!
//! - [`Receivers::Logits`]: one pass on the target tokens in which every head's output
//!   (`hook_z`) is frozen to its target-run value except the sender's, which takes its
//!   source-run value; MLPs, norms and the unembedding are recomputed. Read the metric.
//! - [`Receivers::Heads`] (the q, k or v input of later heads): (1) the frozen pass
//!   above, recording the receivers' `hook_q` / `hook_k` / `hook_v`; (2) a fresh pass
//!   on the target tokens that patches only those receiver values and reads the metric.
//!
//! Senders are heads ([`crate::PatchKind::Path`]: all patched positions;
//! [`crate::PatchKind::PathByPos`]: one position). A sender at or after the last
//! receiver layer cannot reach a receiver: [`Receivers::senders`] leaves it out.
//!
//! [`naive`] runs these passes as written (full forward passes, many senders per
//! batch); [`fast`] computes the same numbers from the cached target run.

pub mod fast;
pub mod naive;
mod receivers;

pub use receivers::{ReceiverHead, ReceiverInput, Receivers};

use actpatch_hooks::{BlockSite, Cell, HookPoint, Patch, PatchValue};
use candle_core::Tensor;

use crate::{CellIndex, DirectedPair, PatchKind, Result};

/// Every head's output frozen to the target run on every row, then each row's sender
/// set to the source run: the patches of the frozen pass, one or two per layer.
/// `target_z`/`source_z`: per layer, `[1, pos, head, d_head]` (the source aligned to
/// target positions); `senders[row]` is the sender of batch row `row`; `positions` are
/// the patched positions of an all-positions sender (`None`: all).
pub(crate) fn frozen_patches(
    target_z: &[Tensor],
    source_z: &[Tensor],
    senders: &[CellIndex],
    positions: Option<&[usize]>,
) -> Vec<Patch> {
    (target_z.iter().zip(source_z).enumerate())
        .flat_map(|(layer, z)| layer_frozen_patches(layer, z, senders, positions))
        .collect()
}

/// The frozen pass's `hook_z` patches of layer `layer` (`z`: the target's and the
/// source's value there): every head to the target's, then the senders of this layer
/// to the source's.
pub(crate) fn layer_frozen_patches(
    layer: usize,
    (target, source): (&Tensor, &Tensor),
    senders: &[CellIndex],
    positions: Option<&[usize]>,
) -> Vec<Patch> {
    let point = HookPoint::block(layer, BlockSite::Z);
    let mut patches = vec![Patch::replace(point, target.clone())];
    let cells: Vec<Cell> = (senders.iter().enumerate())
        .filter(|(_, s)| s.layer == layer)
        .flat_map(|(row, s)| sender_cells(row, s, positions))
        .collect();
    if !cells.is_empty() {
        patches.push(Patch::at_cells(
            point,
            PatchValue::Replace(source.clone()),
            cells,
        ));
    }
    patches
}

/// The `hook_z` cells of one sender on batch row `row`.
pub(crate) fn sender_cells(
    row: usize,
    sender: &CellIndex,
    positions: Option<&[usize]>,
) -> Vec<Cell> {
    let cell = |position| Cell {
        row,
        position,
        head: sender.head,
        key: None,
    };
    match (sender.position, positions) {
        (Some(p), _) => vec![cell(Some(p))],
        (None, None) => vec![cell(None)],
        (None, Some(list)) => list.iter().map(|p| cell(Some(*p))).collect(),
    }
}

/// The positions an all-positions sender patches: `None` when the pair's positions
/// map one to one, else the target positions that receive a source value.
pub(crate) fn sender_positions(pair: &DirectedPair) -> Option<Vec<usize>> {
    (!pair.map.is_identity()).then(|| pair.map.patched_positions())
}

/// The source run's `hook_z` of every layer, aligned to target positions.
pub(crate) fn source_z(pair: &DirectedPair, n_layers: usize) -> Result<Vec<Tensor>> {
    (0..n_layers)
        .map(|l| pair.aligned_source(HookPoint::block(l, BlockSite::Z)))
        .collect()
}

/// Whether `kind` is a path-patching kind.
pub fn is_path(kind: PatchKind) -> bool {
    matches!(kind, PatchKind::Path | PatchKind::PathByPos)
}
