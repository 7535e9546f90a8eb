//! Fast path patching (placeholder until the batched pass lands).
use actpatch_model::{BaseRun, HookedTransformer};

use super::Receivers;
use crate::{CellIndex, CellResult, DirectedPair, PatchKind, Result};

pub fn target_run(model: &HookedTransformer, pair: &DirectedPair) -> Result<BaseRun> {
    Ok(model.base_run(pair.target_tokens, [])?)
}

pub fn sweep(
    model: &HookedTransformer,
    pair: &DirectedPair,
    _target: &BaseRun,
    kind: (PatchKind, &Receivers),
    senders: &[CellIndex],
    max_rows: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<CellResult>> {
    super::naive::sweep(model, pair, kind, senders, max_rows, progress)
}
