//! The differentiable passes of attribution. Every row a set of directed pairs needs —
//! a prompt as it is, with a layer's gradient dropped, or with its input moved along a
//! path — runs as a row of a batched forward pass (rows of prompts of one length share
//! a batch), which caches every row's activations; one backward pass per batch gives
//! the gradient of the logit difference of the rows that ask for it. The caches and
//! the gradients come from the same pass, so no prompt runs twice. GradDrop's rows
//! run after, through the blocks below their layers only
//! ([`super::grad_drop`]).

use actpatch_hooks::{ActivationCache, CacheFilter, HookPoint, Hooks, Patch};
use actpatch_model::{HookedTransformer, Readout};
use candle_core::Tensor;

use crate::Result;

/// What one batch row computes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Row {
    /// The prompt as it is.
    Plain,
    /// GradDrop's L^ℓ (Kramár et al. 2024): the prompt with layer `l`'s contributions
    /// to the residual stream (`hook_attn_out`, `hook_mlp_out`) held constant in the
    /// backward pass. The loss no longer depends on them, so they and every activation
    /// inside block `l` get gradient 0; the residual stream keeps its skip path. The
    /// forward values are the plain run's ([`super::grad_drop`] computes the gradients from
    /// the plain row's and a pass through blocks `0..l`).
    DropLayer(usize),
    /// The prompt with its token embeddings (`hook_embed`) moved `alpha` of the way
    /// along input path `path` (integrated gradients).
    Towards { alpha: f64, path: usize },
}

/// One row of a pass: which prompt, what the row does, and whether the backward pass
/// differentiates its logit difference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PassRow {
    pub prompt: usize,
    pub row: Row,
    pub loss: bool,
}

/// The straight line from a prompt's token embeddings to another run's, at the
/// prompt's positions: `start + alpha · step`, `[1, pos, d_model]` each.
pub(crate) struct InputPath {
    pub start: Tensor,
    pub step: Tensor,
}

/// Everything the passes run: the prompts, the rows, the input paths (with every
/// prompt's `hook_embed` when there are any), the answers whose logit difference is
/// the loss, and where to cache and probe.
pub(crate) struct PassPlan<'a> {
    pub prompts: Vec<&'a [u32]>,
    pub rows: Vec<PassRow>,
    pub paths: Vec<InputPath>,
    /// Per prompt `[1, pos, d_model]`; only needed with [`Row::Towards`] rows.
    pub embeddings: Vec<Tensor>,
    /// (correct, incorrect) token ids.
    pub answers: [u32; 2],
    pub cache_points: Vec<HookPoint>,
    pub grad_points: Vec<HookPoint>,
}

/// Rows × positions per forward-and-backward pass: the graph of every row stays in
/// memory until its backward pass (about 1.8 MB per row and position on gpt2-small).
const ROW_POSITIONS_PER_PASS: usize = 128;

/// What the full passes computed: every row but GradDrop's.
pub(crate) struct FullPasses {
    /// Per plan row: (pass, row within the pass); unused for GradDrop rows.
    at: Vec<(usize, usize)>,
    /// Per pass: the activations at the cache points, `[rows, ...]`.
    caches: Vec<ActivationCache>,
    /// Per pass: the gradients at the probe points, `[rows, ...]` (none without a
    /// loss row).
    grads: Vec<ActivationCache>,
}

impl FullPasses {
    /// Plan row `row`'s activations at every cache point, `[1, ...]` each.
    pub fn cache_of(&self, row: usize, points: &[HookPoint]) -> Result<ActivationCache> {
        let (pass, r) = self.at[row];
        let mut cache = ActivationCache::default();
        for point in points {
            cache.insert(*point, self.caches[pass].get(*point)?.narrow(0, r, 1)?);
        }
        Ok(cache)
    }

    /// The gradient at `point` of plan row `row` (run in a full pass), `[1, ...]`.
    pub fn grad(&self, row: usize, point: HookPoint) -> Result<Tensor> {
        let (pass, r) = self.at[row];
        Ok(self.grads[pass].get(point)?.narrow(0, r, 1)?)
    }
}

/// Plan rows `rows` grouped by prompt length, in chunks of at most
/// [`ROW_POSITIONS_PER_PASS`] rows × positions (at least one row).
pub(crate) fn chunks_by_length(plan: &PassPlan, rows: &[usize]) -> Vec<Vec<usize>> {
    let length = |i: &usize| plan.prompts[plan.rows[*i].prompt].len();
    let mut lengths: Vec<usize> = rows.iter().map(length).collect();
    lengths.sort_unstable();
    lengths.dedup();
    let mut chunks = Vec::new();
    for n in lengths {
        let of_length: Vec<usize> = rows.iter().copied().filter(|i| length(i) == n).collect();
        let rows_per_pass = (ROW_POSITIONS_PER_PASS / n.max(1)).max(1);
        chunks.extend(of_length.chunks(rows_per_pass).map(|c| c.to_vec()));
    }
    chunks
}

/// Runs plan rows `rows` (no GradDrop row), grouped by prompt length in batches of at
/// most [`ROW_POSITIONS_PER_PASS`] rows × positions, probing `grad_points`.
pub(crate) fn run_full(
    model: &HookedTransformer,
    plan: &PassPlan,
    rows: &[usize],
    grad_points: &[HookPoint],
) -> Result<FullPasses> {
    let mut passes = FullPasses {
        at: vec![(0, 0); plan.rows.len()],
        caches: Vec::new(),
        grads: Vec::new(),
    };
    for chunk in chunks_by_length(plan, rows) {
        for (r, row) in chunk.iter().enumerate() {
            passes.at[*row] = (passes.caches.len(), r);
        }
        let (cache, grads) = pass(model, plan, &chunk, grad_points)?;
        passes.caches.push(cache);
        passes.grads.push(grads);
    }
    Ok(passes)
}

/// One forward pass of plan rows `chunk` (prompts of one length), and one backward pass
/// of the sum of their differentiated logit differences: (activations, gradients).
fn pass(
    model: &HookedTransformer,
    plan: &PassPlan,
    chunk: &[usize],
    grad_points: &[HookPoint],
) -> Result<(ActivationCache, ActivationCache)> {
    let rows: Vec<PassRow> = chunk.iter().map(|i| plan.rows[*i]).collect();
    let n = rows.len();
    let device = model.device();
    let tokens: Vec<Vec<u32>> = rows
        .iter()
        .map(|r| plan.prompts[r.prompt].to_vec())
        .collect();
    let tokens = model.tokens_tensor(&tokens)?;
    let patches = match rows.iter().any(|r| matches!(r.row, Row::Towards { .. })) {
        true => vec![moved_inputs(plan, &rows)?],
        false => Vec::new(),
    };
    let differentiated = rows.iter().any(|r| r.loss);
    let mut hooks = Hooks::new(&patches, CacheFilter::only(plan.cache_points.clone()));
    if differentiated {
        hooks = hooks.probing(CacheFilter::only(grad_points.to_vec()));
    }
    let logits = model.forward_differentiable(
        &tokens,
        &mut hooks,
        Readout::LastPositionColumns(&plan.answers),
    )?; // [rows, 2]
    let mut grads = ActivationCache::default();
    if differentiated {
        let logit_diff = (logits.narrow(1, 0, 1)? - logits.narrow(1, 1, 1)?)?; // [rows, 1]
        let weights: Vec<f32> = rows.iter().map(|r| f32::from(u8::from(r.loss))).collect();
        let weights = Tensor::from_vec(weights, (n, 1), device)?;
        // Rows are independent: the gradient of the sum is each row's own gradient.
        let store = (logit_diff * weights)?.sum_all()?.backward()?;
        for point in grad_points {
            let probe = hooks.probes().get(*point)?;
            let grad = match store.get(probe) {
                Some(g) => g.clone(),
                None => probe.zeros_like()?, // nothing after this point reaches the logits
            };
            grads.insert(*point, grad);
        }
    }
    Ok((hooks.into_cache(), grads))
}

/// The patch of `hook_embed` putting each [`Row::Towards`] row at `alpha` along its
/// path and every other row at its own prompt's embeddings: `[rows, pos, d_model]`.
fn moved_inputs(plan: &PassPlan, rows: &[PassRow]) -> Result<Patch> {
    let inputs: Vec<Tensor> = rows
        .iter()
        .map(|r| match r.row {
            Row::Towards { alpha, path } => {
                let path = &plan.paths[path];
                Ok((&path.start + (&path.step * alpha)?)?)
            }
            _ => Ok(plan.embeddings[r.prompt].clone()),
        })
        .collect::<Result<_>>()?;
    Ok(Patch::replace(HookPoint::Embed, Tensor::cat(&inputs, 0)?))
}
