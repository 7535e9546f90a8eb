//! Path patching as written: full forward passes of the target prompt, one batch row
//! per sender. The reference [`super::fast`] is checked against, and what
//! `tests/fixtures/gen/make_golden_paths.py` computes with TransformerLens.

use actpatch_hooks::{ActivationCache, BlockSite, CacheFilter, HookPoint, Hooks};
use actpatch_model::{HookedTransformer, Readout};
use candle_core::Tensor;

use super::{frozen_patches, sender_positions, source_z, Receivers};
use crate::{CellIndex, CellResult, DirectedPair, Method, PatchKind, Result};

/// The target run's `hook_z` of every layer (`[1, pos, head, d_head]` each).
pub fn target_z(model: &HookedTransformer, pair: &DirectedPair) -> Result<Vec<Tensor>> {
    let n_layers = model.dims().n_layers;
    let points: Vec<HookPoint> = (0..n_layers)
        .map(|l| HookPoint::block(l, BlockSite::Z))
        .collect();
    let (_, cache) =
        model.run_with_cache(&[pair.target_tokens.to_vec()], CacheFilter::only(points))?;
    (0..n_layers)
        .map(|l| Ok(cache.get(HookPoint::block(l, BlockSite::Z))?.clone()))
        .collect()
}

/// Path patching of `senders` (cells of `kind`, [`PatchKind::Path`] or
/// [`PatchKind::PathByPos`]) to `receivers`, `max_rows` senders per pass; `progress`
/// gets the number of senders finished after each batch. `pair` must cache the source
/// run's `hook_z` (a [`DirectedPair`] made with `kind`).
pub fn sweep(
    model: &HookedTransformer,
    pair: &DirectedPair,
    (kind, receivers): (PatchKind, &Receivers),
    senders: &[CellIndex],
    max_rows: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<CellResult>> {
    receivers.check(model.dims(), pair.target_tokens.len())?;
    let n_layers = model.dims().n_layers;
    let target = target_z(model, pair)?;
    let source = source_z(pair, n_layers)?;
    let positions = sender_positions(pair);
    let mut results = Vec::with_capacity(senders.len());
    for chunk in senders.chunks(max_rows.max(1)) {
        let rows = vec![pair.target_tokens.to_vec(); chunk.len()];
        let frozen = frozen_patches(&target, &source, chunk, positions.as_deref());
        let metrics = match receivers {
            Receivers::Logits => pair.scorer.score_run(model, &rows, &frozen)?,
            Receivers::Heads { .. } => {
                let recorded = record(model, &rows, &frozen, receivers)?;
                let layers: Vec<usize> = chunk.iter().map(|s| s.layer).collect();
                let patches = receivers.patches(&recorded, &layers, 0)?;
                pair.scorer.score_run(model, &rows, &patches)?
            }
        };
        results.extend(
            chunk
                .iter()
                .zip(metrics)
                .map(|(index, metrics)| CellResult {
                    direction: pair.direction,
                    kind,
                    method: Method::Exact,
                    index: *index,
                    metrics,
                }),
        );
        progress(chunk.len());
    }
    Ok(results)
}

/// The frozen pass of `rows`, recording the receivers' inputs.
fn record(
    model: &HookedTransformer,
    rows: &[Vec<u32>],
    frozen: &[actpatch_hooks::Patch],
    receivers: &Receivers,
) -> Result<ActivationCache> {
    let tokens = model.tokens_tensor(rows)?;
    let mut hooks = Hooks::new(frozen, CacheFilter::only(receivers.points()));
    model.forward(&tokens, &mut hooks, Readout::LastPosition)?;
    Ok(hooks.into_cache())
}
