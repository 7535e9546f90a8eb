//! One direction of a pair, ready to patch: the target run's tokens, the source run's
//! activations at the swept sites re-indexed to target positions, and the scorer.
//! Every method of the engine (the naive and the fast exact sweep so far) starts here.

use actpatch_hooks::{ActivationCache, CacheFilter, HookPoint, Layout};
use actpatch_model::HookedTransformer;
use candle_core::Tensor;

use crate::cells::{cells_of, hook_points};
use crate::{
    Baselines, CellIndex, Direction, MetricSet, Pair, PairRuns, PatchKind, PatchingError,
    PositionMap, Result, Scorer,
};

/// Refuses the first of `kinds` whose hook point `model` does not have (GPT-NeoX's
/// parallel blocks have no `hook_resid_mid`), naming the kinds it has.
pub fn check_kinds(model: &HookedTransformer, kinds: &[PatchKind]) -> Result<()> {
    let space = model.hook_space();
    let has = |kind: &PatchKind| space.check(HookPoint::block(0, kind.site())).is_ok();
    match kinds.iter().find(|k| !has(k)) {
        None => Ok(()),
        Some(kind) => Err(PatchingError::KindNotInModel {
            kind: *kind,
            arch: model.dims().arch.name(),
            available: PatchKind::ALL
                .iter()
                .filter(|k| has(k))
                .map(|k| k.name())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// A pair seen from one direction: what is patched into what.
pub struct DirectedPair<'a> {
    pub direction: Direction,
    /// The run being patched.
    pub target_tokens: &'a [u32],
    /// The run whose activations are patched in.
    pub source_tokens: &'a [u32],
    /// Target position ← source position.
    pub map: PositionMap,
    /// The source run's activations at the sites of the swept kinds.
    pub source: ActivationCache,
    pub scorer: Scorer<'a>,
}

impl<'a> DirectedPair<'a> {
    /// Runs the source prompt once, caching the sites of `kinds`.
    pub fn new(
        model: &HookedTransformer,
        pair: &'a Pair,
        baselines: &'a Baselines,
        direction: Direction,
        kinds: &[PatchKind],
        metrics: MetricSet,
    ) -> Result<Self> {
        check_kinds(model, kinds)?;
        let points = hook_points(kinds, model.dims().n_layers);
        let source = match points.is_empty() {
            true => ActivationCache::default(),
            false => model.cache_activations(
                &[pair.source_tokens(direction).to_vec()],
                CacheFilter::only(points),
            )?,
        };
        Ok(DirectedPair {
            direction,
            target_tokens: pair.target_tokens(direction),
            source_tokens: pair.source_tokens(direction),
            map: pair.map(direction),
            source,
            scorer: Scorer {
                answers: pair.answers,
                baseline: baselines.baseline()?,
                clean_log_probs: &baselines.clean_log_probs,
                metrics,
            },
        })
    }

    /// [`DirectedPair::new`] from `runs` (which cached the sites of the swept kinds):
    /// no pass of its own.
    pub fn from_runs(
        model: &HookedTransformer,
        pair: &'a Pair,
        baselines: &'a Baselines,
        direction: Direction,
        kinds: &[PatchKind],
        (metrics, runs): (MetricSet, &PairRuns),
    ) -> Result<Self> {
        check_kinds(model, kinds)?;
        Ok(DirectedPair {
            direction,
            target_tokens: pair.target_tokens(direction),
            source_tokens: pair.source_tokens(direction),
            map: pair.map(direction),
            source: runs.source(direction).cache().clone(),
            scorer: Scorer {
                answers: pair.answers,
                baseline: baselines.baseline()?,
                clean_log_probs: &baselines.clean_log_probs,
                metrics,
            },
        })
    }

    /// Target positions that receive a source activation, narrowed to `only` when
    /// given.
    pub fn positions(&self, only: Option<&[usize]>) -> Vec<usize> {
        let patched = self.map.patched_positions();
        match only {
            Some(list) => patched.into_iter().filter(|p| list.contains(p)).collect(),
            None => patched,
        }
    }

    /// The cells of `kind` at the target positions (`only` narrows them); an error
    /// for a kind this pair cannot be patched with.
    pub fn cells(
        &self,
        model: &HookedTransformer,
        kind: PatchKind,
        only: Option<&[usize]>,
    ) -> Result<Vec<CellIndex>> {
        if kind.needs_equal_lengths() && !self.map.is_identity() {
            return Err(PatchingError::NeedsEqualLengths { kind });
        }
        let n_pos = self.target_tokens.len();
        if let Some(position) = only.and_then(|list| list.iter().find(|p| **p >= n_pos)) {
            return Err(PatchingError::PositionOutOfRange {
                position: *position,
                n_pos,
            });
        }
        Ok(cells_of(kind, model.dims(), &self.positions(only)))
    }

    /// The source activation at `point`, re-indexed so target position j holds what
    /// it receives: `[1, n_target, ...]` (positions that receive nothing hold the
    /// source's first position, and are never patched).
    pub fn aligned_source(&self, point: HookPoint) -> Result<Tensor> {
        self.align(point, self.source.get(point)?)
    }

    /// A source-run activation at `point` (`[batch, n_source, ...]`) re-indexed to
    /// target positions, as [`DirectedPair::aligned_source`].
    pub fn align(&self, point: HookPoint, source: &Tensor) -> Result<Tensor> {
        if self.map.is_identity() {
            return Ok(source.clone());
        }
        if point.layout() == Layout::BatchHeadQueryKey {
            return Err(PatchingError::NeedsEqualLengths {
                kind: PatchKind::HeadPattern,
            });
        }
        let index: Vec<u32> = self
            .map
            .source_of
            .iter()
            .map(|c| c.unwrap_or(0) as u32)
            .collect();
        let index = Tensor::from_vec(index, self.map.n_target(), source.device())?;
        Ok(source.index_select(&index, 1)?)
    }
}
