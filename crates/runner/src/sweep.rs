//! Patching sweeps: one generic engine, and the named patch kinds as thin descriptions
//! of which hook point and which (layer, head, position) cells they patch.
//!
//! Direction: denoising. Clean activations are patched into the corrupted run, one cell
//! per batch row, many rows per forward pass.

use std::fmt;

use actpatch_hooks::Hooks;
use actpatch_hooks::{ActivationCache, BlockSite, Cell, HookPoint, Layout, Patch, PatchValue};
use actpatch_metrics::{cell_metrics, logit_diff_metrics, Answers, Baseline, CellMetrics};
use actpatch_model::{HookedTransformer, ModelDims, Readout};
use candle_core::Tensor;
use serde::Deserialize;

use crate::experiment::MetricSet;
use crate::RunnerError;

/// What a sweep patches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatchKind {
    /// `hook_resid_pre`, by layer × position.
    ResidPre,
    /// `hook_resid_mid`, by layer × position.
    ResidMid,
    /// `hook_resid_post`, by layer × position.
    ResidPost,
    /// `hook_attn_out`, by layer × position.
    AttnOut,
    /// `hook_mlp_out`, by layer × position.
    MlpOut,
    /// Each head's `hook_z` at every position, by layer × head.
    HeadOut,
    /// Each head's `hook_z` at one position, by layer × head × position.
    HeadOutByPos,
    /// Each head's `hook_pattern` (all query positions), by layer × head.
    HeadPattern,
}

impl PatchKind {
    pub const ALL: [PatchKind; 8] = [
        PatchKind::ResidPre,
        PatchKind::ResidMid,
        PatchKind::ResidPost,
        PatchKind::AttnOut,
        PatchKind::MlpOut,
        PatchKind::HeadOut,
        PatchKind::HeadOutByPos,
        PatchKind::HeadPattern,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PatchKind::ResidPre => "resid_pre",
            PatchKind::ResidMid => "resid_mid",
            PatchKind::ResidPost => "resid_post",
            PatchKind::AttnOut => "attn_out",
            PatchKind::MlpOut => "mlp_out",
            PatchKind::HeadOut => "head_out",
            PatchKind::HeadOutByPos => "head_out_by_pos",
            PatchKind::HeadPattern => "head_pattern",
        }
    }

    /// The kind named `name` (as in the tables and experiment files).
    pub fn from_name(name: &str) -> Option<PatchKind> {
        PatchKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Every kind's name, for messages.
    pub fn names() -> String {
        PatchKind::ALL.map(|k| k.name()).join(", ")
    }

    /// The hook point this kind patches in each layer.
    pub fn site(self) -> BlockSite {
        match self {
            PatchKind::ResidPre => BlockSite::ResidPre,
            PatchKind::ResidMid => BlockSite::ResidMid,
            PatchKind::ResidPost => BlockSite::ResidPost,
            PatchKind::AttnOut => BlockSite::AttnOut,
            PatchKind::MlpOut => BlockSite::MlpOut,
            PatchKind::HeadOut | PatchKind::HeadOutByPos => BlockSite::Z,
            PatchKind::HeadPattern => BlockSite::Pattern,
        }
    }

    pub fn has_head(self) -> bool {
        matches!(
            self,
            PatchKind::HeadOut | PatchKind::HeadOutByPos | PatchKind::HeadPattern
        )
    }

    pub fn by_position(self) -> bool {
        !matches!(self, PatchKind::HeadOut | PatchKind::HeadPattern)
    }
}

impl fmt::Display for PatchKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where each corrupted position takes its clean activation from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PositionMap {
    /// `clean_of[j]`: the clean position patched into corrupted position `j`, if any.
    pub clean_of: Vec<Option<usize>>,
    pub n_clean: usize,
}

impl PositionMap {
    pub fn identity(n: usize) -> Self {
        PositionMap {
            clean_of: (0..n).map(Some).collect(),
            n_clean: n,
        }
    }

    /// Position i into position i.
    pub fn start(n_clean: usize, n_corrupted: usize) -> Self {
        PositionMap {
            clean_of: (0..n_corrupted)
                .map(|j| (j < n_clean).then_some(j))
                .collect(),
            n_clean,
        }
    }

    /// Last tokens aligned.
    pub fn end(n_clean: usize, n_corrupted: usize) -> Self {
        PositionMap {
            clean_of: (0..n_corrupted)
                .map(|j| (j + n_clean).checked_sub(n_corrupted))
                .collect(),
            n_clean,
        }
    }

    pub fn is_identity(&self) -> bool {
        self.n_clean == self.clean_of.len()
            && self.clean_of.iter().enumerate().all(|(j, c)| *c == Some(j))
    }

    /// Corrupted positions that receive a clean activation.
    pub fn patched_positions(&self) -> Vec<usize> {
        (0..self.clean_of.len())
            .filter(|j| self.clean_of[*j].is_some())
            .collect()
    }
}

/// One patched cell's coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellIndex {
    pub layer: usize,
    pub head: Option<usize>,
    /// Corrupted position; `None` = every patched position.
    pub position: Option<usize>,
}

/// One cell's result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CellResult {
    pub kind: PatchKind,
    pub index: CellIndex,
    pub metrics: CellMetrics,
}

/// What a sweep of one pair needs.
#[derive(Clone, Copy)]
pub struct PairSweep<'a> {
    pub corrupted_tokens: &'a [u32],
    /// The clean run's activations at the hook points the sweep patches.
    pub clean_cache: &'a ActivationCache,
    pub map: &'a PositionMap,
    pub answers: Answers,
    pub baseline: Baseline,
    /// Clean next-token log-probabilities `[d_vocab]`, for the KL divergence.
    pub clean_log_probs: &'a Tensor,
    pub metrics: MetricSet,
}

impl PairSweep<'_> {
    /// The metrics from the logits `logits_for(readout)` produces: the whole
    /// vocabulary, or only the two answer columns when the metric set allows.
    fn metrics_with(
        &self,
        logits_for: impl FnOnce(Readout<'_>) -> Result<Tensor, RunnerError>,
    ) -> Result<Vec<CellMetrics>, RunnerError> {
        let answers = [self.answers.correct, self.answers.incorrect];
        match self.metrics {
            MetricSet::All => {
                let logits = logits_for(Readout::LastPosition)?; // [rows, d_vocab]
                Ok(cell_metrics(
                    &logits,
                    self.answers,
                    &self.baseline,
                    self.clean_log_probs,
                )?)
            }
            MetricSet::LogitDiff => {
                let logits = logits_for(Readout::LastPositionColumns(&answers))?; // [rows, 2]
                Ok(logit_diff_metrics(&logits, &self.baseline)?)
            }
        }
    }

    /// The metrics of the final residual stream `resid` `[rows, len, d_model]`.
    pub fn metrics_of(
        &self,
        model: &HookedTransformer,
        resid: &Tensor,
    ) -> Result<Vec<CellMetrics>, RunnerError> {
        self.metrics_with(|readout| Ok(model.readout(resid, &mut Hooks::none(), readout)?))
    }

    /// The metrics of full patched forward passes of `rows`.
    pub fn metrics_of_run(
        &self,
        model: &HookedTransformer,
        rows: &[Vec<u32>],
        patches: &[Patch],
    ) -> Result<Vec<CellMetrics>, RunnerError> {
        self.metrics_with(|readout| Ok(model.run_with_patches(rows, patches, readout)?))
    }
}

/// The cells a sweep of `kind` patches, in the order of the result tables.
pub fn cells_of(kind: PatchKind, dims: &ModelDims, positions: &[usize]) -> Vec<CellIndex> {
    let mut cells = Vec::new();
    for layer in 0..dims.n_layers {
        match (kind.has_head(), kind.by_position()) {
            (false, _) => cells.extend(positions.iter().map(|p| CellIndex {
                layer,
                head: None,
                position: Some(*p),
            })),
            (true, true) => {
                for head in 0..dims.n_heads {
                    cells.extend(positions.iter().map(|p| CellIndex {
                        layer,
                        head: Some(head),
                        position: Some(*p),
                    }));
                }
            }
            (true, false) => cells.extend((0..dims.n_heads).map(|head| CellIndex {
                layer,
                head: Some(head),
                position: None,
            })),
        }
    }
    cells
}

/// The hook points a sweep of `kinds` patches (what the clean run must cache).
pub fn hook_points(kinds: &[PatchKind], n_layers: usize) -> Vec<HookPoint> {
    kinds
        .iter()
        .flat_map(|k| (0..n_layers).map(move |l| HookPoint::block(l, k.site())))
        .collect()
}

/// Rows per forward pass under a memory budget, from the activations one row holds.
pub fn rows_for_budget(dims: &ModelDims, n_pos: usize, budget_bytes: usize) -> usize {
    let per_pos = 16 * dims.d_model + 3 * dims.d_mlp + 3 * dims.n_heads * n_pos;
    let per_row = 4 * (n_pos * per_pos + 3 * dims.d_vocab);
    (budget_bytes / per_row.max(1)).clamp(1, 512)
}

/// The clean activation at `point`, re-indexed so position j holds what corrupted
/// position j receives: `[1, n_corrupted, ...]`.
pub(crate) fn aligned_source(
    point: HookPoint,
    cache: &ActivationCache,
    map: &PositionMap,
) -> Result<Tensor, RunnerError> {
    let clean = cache.get(point)?;
    if map.is_identity() {
        return Ok(clean.clone());
    }
    if point.layout() == Layout::BatchHeadQueryKey {
        return Err(RunnerError::Input(format!(
            "`{point}` cannot be patched between prompts of different token lengths: attention patterns have one column per key position. Use a corruption of the same length."
        )));
    }
    let index: Vec<u32> = map.clean_of.iter().map(|c| c.unwrap_or(0) as u32).collect();
    let index = Tensor::from_vec(index, map.clean_of.len(), clean.device())?;
    Ok(clean.index_select(&index, 1)?)
}

/// Runs the sweep of `kind` over `cells`, `max_rows` cells per forward pass, calling
/// `progress` with the number of cells finished after each pass.
pub fn sweep(
    model: &HookedTransformer,
    pair: &PairSweep,
    kind: PatchKind,
    cells: &[CellIndex],
    max_rows: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<CellResult>, RunnerError> {
    let n_layers = model.dims().n_layers;
    let sources: Vec<Tensor> = (0..n_layers)
        .map(|l| aligned_source(HookPoint::block(l, kind.site()), pair.clean_cache, pair.map))
        .collect::<Result<_, _>>()?;
    let patched_positions = pair.map.patched_positions();
    let mut results = Vec::with_capacity(cells.len());
    for chunk in cells.chunks(max_rows.max(1)) {
        // One patch per layer present in the chunk, listing its rows' cells.
        let mut per_layer: Vec<Vec<Cell>> = vec![Vec::new(); n_layers];
        for (row, cell) in chunk.iter().enumerate() {
            let positions: Vec<Option<usize>> = match cell.position {
                Some(p) => vec![Some(p)],
                None if pair.map.is_identity() => vec![None],
                None => patched_positions.iter().map(|p| Some(*p)).collect(),
            };
            per_layer[cell.layer].extend(positions.into_iter().map(|position| Cell {
                row,
                position,
                head: cell.head,
            }));
        }
        let patches: Vec<Patch> = per_layer
            .into_iter()
            .enumerate()
            .filter(|(_, cells)| !cells.is_empty())
            .map(|(layer, cells)| {
                Patch::at_cells(
                    HookPoint::block(layer, kind.site()),
                    PatchValue::Replace(sources[layer].clone()),
                    cells,
                )
            })
            .collect();
        let rows = vec![pair.corrupted_tokens.to_vec(); chunk.len()];
        let metrics = pair.metrics_of_run(model, &rows, &patches)?;
        results.extend(
            chunk
                .iter()
                .zip(metrics)
                .map(|(index, metrics)| CellResult {
                    kind,
                    index: *index,
                    metrics,
                }),
        );
        progress(chunk.len());
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_maps() {
        assert_eq!(
            PositionMap::start(3, 4).clean_of,
            vec![Some(0), Some(1), Some(2), None]
        );
        assert_eq!(
            PositionMap::end(3, 4).clean_of,
            vec![None, Some(0), Some(1), Some(2)]
        );
        assert_eq!(
            PositionMap::end(4, 3).clean_of,
            vec![Some(1), Some(2), Some(3)]
        );
        assert!(PositionMap::identity(5).is_identity());
        assert!(!PositionMap::start(5, 4).is_identity());
    }
}
