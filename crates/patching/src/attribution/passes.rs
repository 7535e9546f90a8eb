//! The differentiable passes of attribution. Every row a set of directed pairs needs —
//! a prompt as it is, with a layer's gradient dropped, or with its input moved along a
//! path — runs as a row of a batched forward pass (rows of prompts of one length share
//! a batch), which caches every row's activations; one backward pass per batch gives
//! the gradient of the logit difference of the rows that ask for it. The caches and
//! the gradients come from the same pass, so no prompt runs twice.

use actpatch_hooks::{ActivationCache, BlockSite, CacheFilter, HookPoint, Hooks, Patch};
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
    /// backward pass ([`Hooks::stopping`]). The loss no longer depends on them, so they
    /// and every activation inside block `l` get gradient 0; the residual stream keeps
    /// its skip path. The forward values are the plain run's.
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

/// What the passes computed.
pub(crate) struct Passes {
    /// Per plan row: (pass, row within the pass).
    at: Vec<(usize, usize)>,
    /// Per pass: the activations at the cache points, `[rows, ...]`.
    caches: Vec<ActivationCache>,
    /// Per pass: the gradients at the probe points, `[rows, ...]` (none without a
    /// loss row).
    grads: Vec<ActivationCache>,
    /// Forward-pass equivalents: one per row, two more per differentiated row.
    pub passes: f64,
}

impl Passes {
    /// Plan row `row`'s activations at every cache point, `[1, ...]` each.
    pub fn cache_of(&self, row: usize, points: &[HookPoint]) -> Result<ActivationCache> {
        let (pass, r) = self.at[row];
        let mut cache = ActivationCache::default();
        for point in points {
            cache.insert(*point, self.caches[pass].get(*point)?.narrow(0, r, 1)?);
        }
        Ok(cache)
    }

    /// The gradients of plan rows `rows` at `point`, `[rows.len(), ...]` in that order.
    pub fn grads_of(&self, rows: &[usize], point: HookPoint) -> Result<Tensor> {
        let parts: Vec<Tensor> = rows
            .iter()
            .map(|row| {
                let (pass, r) = self.at[*row];
                Ok(self.grads[pass].get(point)?.narrow(0, r, 1)?)
            })
            .collect::<Result<_>>()?;
        Ok(Tensor::cat(&parts, 0)?)
    }
}

/// Runs `plan`: its rows grouped by prompt length, in batches of at most
/// [`ROW_POSITIONS_PER_PASS`] rows × positions (at least one row).
pub(crate) fn run_passes(model: &HookedTransformer, plan: &PassPlan) -> Result<Passes> {
    let mut lengths: Vec<usize> = plan
        .rows
        .iter()
        .map(|r| plan.prompts[r.prompt].len())
        .collect();
    lengths.sort_unstable();
    lengths.dedup();
    let mut passes = Passes {
        at: vec![(0, 0); plan.rows.len()],
        caches: Vec::new(),
        grads: Vec::new(),
        passes: 0.0,
    };
    for length in lengths {
        let of_length: Vec<usize> = (0..plan.rows.len())
            .filter(|i| plan.prompts[plan.rows[*i].prompt].len() == length)
            .collect();
        let rows_per_pass = (ROW_POSITIONS_PER_PASS / length.max(1)).max(1);
        for chunk in of_length.chunks(rows_per_pass) {
            for (r, row) in chunk.iter().enumerate() {
                passes.at[*row] = (passes.caches.len(), r);
            }
            let (cache, grads) = pass(model, plan, chunk)?;
            passes.caches.push(cache);
            passes.grads.push(grads);
        }
    }
    let differentiated = plan.rows.iter().filter(|r| r.loss).count();
    passes.passes = (plan.rows.len() + 2 * differentiated) as f64;
    Ok(passes)
}

/// One forward pass of plan rows `chunk` (prompts of one length), and one backward pass
/// of the sum of their differentiated logit differences: (activations, gradients).
fn pass(
    model: &HookedTransformer,
    plan: &PassPlan,
    chunk: &[usize],
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
        hooks = hooks.probing(CacheFilter::only(plan.grad_points.clone()));
    }
    for layer in 0..model.dims().n_layers {
        let dropped: Vec<u8> = rows
            .iter()
            .map(|r| u8::from(r.row == Row::DropLayer(layer)))
            .collect();
        if dropped.contains(&1) {
            let mask = Tensor::from_vec(dropped, n, device)?;
            for site in [BlockSite::AttnOut, BlockSite::MlpOut] {
                hooks = hooks.stopping(HookPoint::block(layer, site), mask.clone());
            }
        }
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
        for point in &plan.grad_points {
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
