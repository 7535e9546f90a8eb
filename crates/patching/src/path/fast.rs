//! Fast path patching: the numbers of [`super::naive`] from the cached target run.
//!
//! In the frozen pass every head's output after the sender is the target run's, so no
//! attention after the sender's layer moves information between positions: each
//! position's residual stream evolves on its own (the sender's change, then MLPs and
//! norms). So the frozen pass
//! - starts each sender at its own layer from the target run's block input, senders
//!   batched as rows that join when the pass reaches their layer;
//! - computes only the positions it is read at: the final position for the logits,
//!   the receivers' positions (from the first to the end of the prompt) for heads;
//! - stops after the last receiver layer.
//!
//! The second pass (receivers patched, nothing frozen) starts at the first receiver
//! layer and the first receiver position, from the target run, as the activation
//! patching fast path does ([`crate::fast`]). A sender patching one position before
//! every position read cannot change anything: it gets the target run's metrics.

use actpatch_hooks::{ActivationCache, BlockSite, CacheFilter, HookPoint, Hooks, Patch};
use actpatch_model::{BaseRun, HookedTransformer, Span};
use candle_core::Tensor;

use super::{layer_frozen_patches, sender_positions, source_z, Receivers};
use crate::{CellIndex, CellMetrics, CellResult, DirectedPair, Method, PatchKind, Result};

/// Runs the target prompt once, caching what the fast passes continue from (block
/// inputs, keys, values) and every layer's `hook_z`.
pub fn target_run(model: &HookedTransformer, pair: &DirectedPair) -> Result<BaseRun> {
    crate::fast::target_run(model, pair, &[PatchKind::Path])
}

/// What every batch of one sweep shares.
struct PathPass<'a> {
    model: &'a HookedTransformer,
    target: &'a BaseRun,
    receivers: &'a Receivers,
    /// First position of the frozen pass (and of the second pass).
    start: usize,
    /// Per layer, the target's and the aligned source's `hook_z` over `start..`.
    target_z: Vec<Tensor>,
    source_z: Vec<Tensor>,
    /// The positions an all-positions sender patches, relative to `start` (`None`:
    /// every position of the span).
    sender_positions: Option<Vec<usize>>,
}

/// The fast path patching of `senders` to `receivers` (see [`super::naive::sweep`]);
/// `target` is [`target_run`] of the same pair.
pub fn sweep(
    model: &HookedTransformer,
    pair: &DirectedPair,
    target: &BaseRun,
    (kind, receivers): (PatchKind, &Receivers),
    senders: &[CellIndex],
    max_rows: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<CellResult>> {
    let n_pos = target.n_pos();
    receivers.check(model.dims(), n_pos)?;
    let n_layers = model.dims().n_layers;
    let start = match receivers {
        Receivers::Logits => n_pos - 1,
        Receivers::Heads { positions, .. } => positions
            .as_ref()
            .and_then(|p| p.iter().min().copied())
            .unwrap_or(0),
    };
    let len = n_pos - start;
    let narrow = |z: &Tensor| -> Result<Tensor> { Ok(z.narrow(1, start, len)?) };
    let target_z = (0..n_layers)
        .map(|l| narrow(target.cache().get(HookPoint::block(l, BlockSite::Z))?))
        .collect::<Result<Vec<_>>>()?;
    let source_z = (source_z(pair, n_layers)?.iter())
        .map(narrow)
        .collect::<Result<Vec<_>>>()?;
    let sender_positions = sender_positions(pair).map(|list| {
        (list.into_iter())
            .filter(|p| *p >= start)
            .map(|p| p - start)
            .collect::<Vec<_>>()
    });
    let pass = PathPass {
        model,
        target,
        receivers,
        start,
        target_z,
        source_z,
        sender_positions,
    };
    let unpatched = pair.scorer.score_logits(target.logits())?[0];
    let mut metrics: Vec<Option<CellMetrics>> = vec![None; senders.len()];
    let mut order: Vec<usize> = Vec::new();
    for (i, sender) in senders.iter().enumerate() {
        match receivers.reaches(sender.layer) && pass.reaches_span(sender) {
            true => order.push(i),
            false => metrics[i] = Some(unpatched),
        }
    }
    progress(senders.len() - order.len());
    order.sort_by_key(|i| senders[*i].layer);
    for chunk in order.chunks(max_rows.max(1)) {
        let rows: Vec<CellIndex> = chunk.iter().map(|i| pass.relative(&senders[*i])).collect();
        let resid = pass.run(&rows)?; // [rows, 1, d_model]
        let scored = pair.scorer.score_residual(model, &resid)?;
        for (i, m) in chunk.iter().zip(scored) {
            metrics[*i] = Some(m);
        }
        progress(chunk.len());
    }
    Ok(senders
        .iter()
        .zip(metrics)
        .map(|(index, m)| CellResult {
            direction: pair.direction,
            kind,
            method: Method::Exact,
            index: *index,
            metrics: m.unwrap_or(unpatched),
        })
        .collect())
}

impl PathPass<'_> {
    /// Whether the sender patches a position the passes compute.
    fn reaches_span(&self, sender: &CellIndex) -> bool {
        match (sender.position, &self.sender_positions) {
            (Some(p), _) => p >= self.start,
            (None, Some(list)) => !list.is_empty(),
            (None, None) => true,
        }
    }

    /// The sender with its position relative to the span.
    fn relative(&self, sender: &CellIndex) -> CellIndex {
        CellIndex {
            position: sender.position.map(|p| p - self.start),
            ..*sender
        }
    }

    fn span(&self) -> Result<Span<'_>> {
        let n_pos = self.target.n_pos();
        Ok(self
            .model
            .span(self.target, self.start, n_pos - self.start)?)
    }

    /// Both passes for `senders` (span-relative positions, in layer order): the final
    /// position's residual stream `[rows, 1, d_model]`.
    fn run(&self, senders: &[CellIndex]) -> Result<Tensor> {
        let (resid, recorded) = self.frozen(senders)?;
        match self.receivers {
            Receivers::Logits => Ok(resid),
            Receivers::Heads { .. } => self.patched(senders, &recorded),
        }
    }

    /// The frozen pass from the first sender's layer to the last layer read: the final
    /// position's residual stream (logits) and the receivers' recorded inputs
    /// (`[rows, len, head, d_head]`; rows that joined after a receiver layer hold
    /// zeros there, and are never patched with them).
    fn frozen(&self, senders: &[CellIndex]) -> Result<(Tensor, ActivationCache)> {
        let n_layers = self.model.dims().n_layers;
        let last = self
            .receivers
            .layers()
            .last()
            .copied()
            .unwrap_or(n_layers - 1);
        let first = senders.iter().map(|s| s.layer).min().unwrap_or(last);
        let span = self.span()?;
        let positions = self.sender_positions.as_deref();
        let mut resid: Option<Tensor> = None; // [joined, len, d_model]
        let mut recorded = ActivationCache::default();
        for layer in first..=last {
            let joined = resid.as_ref().map(|r| r.dim(0)).transpose()?.unwrap_or(0);
            let joining = senders.iter().filter(|s| s.layer == layer).count();
            if joining > 0 {
                let rows = self
                    .target
                    .resid_pre(layer, span.start(), span.len(), joining)?;
                resid = Some(match resid {
                    None => rows,
                    Some(r) => Tensor::cat(&[&r, &rows], 0)?,
                });
            }
            let Some(current) = resid.take() else {
                continue;
            };
            let in_batch = &senders[..joined + joining];
            let z = (&self.target_z[layer], &self.source_z[layer]);
            let patches = layer_frozen_patches(layer, z, in_batch, positions);
            let point = HookPoint::block(layer, self.input_site());
            let wanted = self.receivers.points().contains(&point);
            let filter = CacheFilter::only(wanted.then_some(point));
            let mut hooks = Hooks::new(&patches, filter);
            resid = Some(self.model.run_block(layer, current, &span, &mut hooks)?);
            if wanted {
                let value = hooks.cache().get(point)?;
                recorded.insert(point, pad_rows(value, senders.len())?);
            }
        }
        let resid = resid.ok_or(crate::PatchingError::Receivers {
            reason: "internal: no sender ran".into(),
        })?;
        let len = resid.dim(1)?;
        Ok((resid.narrow(1, len - 1, 1)?, recorded))
    }

    /// The site the receivers read (any, for the logits).
    fn input_site(&self) -> BlockSite {
        match self.receivers {
            Receivers::Logits => BlockSite::Z,
            Receivers::Heads { input, .. } => input.site(),
        }
    }

    /// The second pass: the target run with each row's receivers (those after its
    /// sender's layer) patched to their recorded values, from the first receiver layer.
    fn patched(&self, senders: &[CellIndex], recorded: &ActivationCache) -> Result<Tensor> {
        let n_layers = self.model.dims().n_layers;
        let layers = self.receivers.layers();
        let first = layers.first().copied().unwrap_or(0);
        let span = self.span()?;
        let sender_layers: Vec<usize> = senders.iter().map(|s| s.layer).collect();
        let patches = self
            .receivers
            .patches(recorded, &sender_layers, self.start)?;
        let mut resid = self
            .target
            .resid_pre(first, span.start(), span.len(), senders.len())?;
        for layer in first..n_layers {
            let here: Vec<Patch> = (patches.iter())
                .filter(|p| p.point.layer() == Some(layer))
                .cloned()
                .collect();
            resid = match layer + 1 == n_layers && here.is_empty() {
                true => self
                    .model
                    .run_block_final(layer, resid, &span, &mut Hooks::none())?,
                false => self
                    .model
                    .run_block(layer, resid, &span, &mut Hooks::patching(&here))?,
            };
        }
        let len = resid.dim(1)?;
        Ok(resid.narrow(1, len - 1, 1)?)
    }
}

/// `value` `[n, ...]` padded with zero rows to `rows` rows.
fn pad_rows(value: &Tensor, rows: usize) -> Result<Tensor> {
    let n = value.dim(0)?;
    if n == rows {
        return Ok(value.clone());
    }
    let mut shape = value.dims().to_vec();
    shape[0] = rows - n;
    let zeros = Tensor::zeros(shape, value.dtype(), value.device())?;
    Ok(Tensor::cat(&[value, &zeros], 0)?)
}
