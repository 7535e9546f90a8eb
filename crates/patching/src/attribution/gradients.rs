//! Gradients of the logit difference at hook points, for attribution: one batched,
//! differentiable forward pass of the target prompt and one backward pass, each batch
//! row a variant of the run (plain, a layer's gradient dropped, an interpolated input).

use actpatch_hooks::{ActivationCache, BlockSite, CacheFilter, HookPoint, Hooks, Patch};
use actpatch_model::{HookedTransformer, Readout};
use candle_core::Tensor;

use crate::{DirectedPair, Result};

/// What one batch row of a gradient pass is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Row {
    /// The target run as it is.
    Plain,
    /// GradDrop's L^ℓ (Kramár et al. 2024): the target run with layer `l`'s
    /// contributions to the residual stream (`hook_attn_out`, `hook_mlp_out`) held
    /// constant in the backward pass ([`Hooks::stopping`]). The loss no longer depends
    /// on them, so they and every activation inside block `l` get gradient 0; the
    /// residual stream keeps its skip path.
    DropLayer(usize),
    /// The target run with its token embeddings moved `alpha` of the way to the
    /// source run's (integrated gradients).
    Towards(f64),
}

/// Gradients of the logit difference (correct − incorrect answer, final position)
/// with respect to the activations at some hook points, one batch row per [`Row`].
pub(crate) struct Gradients {
    /// Per point `[rows, ...]` (the activation's shape with the batch axis = rows).
    grads: ActivationCache,
    /// Rows computed (forward and backward), for the cost.
    pub rows: usize,
}

impl Gradients {
    /// The gradient at `point`, `[rows, ...]`.
    pub fn at(&self, point: HookPoint) -> Result<&Tensor> {
        Ok(self.grads.get(point)?)
    }
}

/// Rows per forward-and-backward pass: the graph of every row stays in memory until
/// its backward pass.
const ROWS_PER_PASS: usize = 8;

/// The gradients at `points` of the target run of `pair`, one row per `rows`, in that
/// order. [`Row::Towards`] rows move along `path`.
pub(crate) fn gradients(
    model: &HookedTransformer,
    pair: &DirectedPair,
    points: &[HookPoint],
    rows: &[Row],
    path: Option<&InputPath>,
) -> Result<Gradients> {
    let mut parts: Vec<ActivationCache> = Vec::new();
    for chunk in rows.chunks(ROWS_PER_PASS) {
        parts.push(pass(model, pair, points, chunk, path)?);
    }
    let mut grads = ActivationCache::default();
    for point in points {
        let per_chunk: Vec<&Tensor> = parts
            .iter()
            .map(|p| p.get(*point))
            .collect::<std::result::Result<_, _>>()?;
        grads.insert(*point, Tensor::cat(&per_chunk, 0)?);
    }
    Ok(Gradients {
        grads,
        rows: rows.len(),
    })
}

/// One forward and backward pass of `rows`: the gradient at each point `[rows, ...]`.
fn pass(
    model: &HookedTransformer,
    pair: &DirectedPair,
    points: &[HookPoint],
    rows: &[Row],
    path: Option<&InputPath>,
) -> Result<ActivationCache> {
    let n = rows.len();
    let device = model.device();
    let tokens = model.tokens_tensor(&vec![pair.target_tokens.to_vec(); n])?;
    let patches = match path {
        Some(path) if rows.iter().any(|r| matches!(r, Row::Towards(_))) => {
            vec![towards_source(model, path, rows)?]
        }
        _ => Vec::new(),
    };
    let mut hooks =
        Hooks::new(&patches, CacheFilter::Nothing).probing(CacheFilter::only(points.to_vec()));
    for layer in 0..model.dims().n_layers {
        let dropped: Vec<u8> = rows
            .iter()
            .map(|r| u8::from(*r == Row::DropLayer(layer)))
            .collect();
        if dropped.contains(&1) {
            let mask = Tensor::from_vec(dropped, n, device)?;
            for site in [BlockSite::AttnOut, BlockSite::MlpOut] {
                hooks = hooks.stopping(HookPoint::block(layer, site), mask.clone());
            }
        }
    }
    let answers = [pair.scorer.answers.correct, pair.scorer.answers.incorrect];
    let logits = model.forward_differentiable(
        &tokens,
        &mut hooks,
        Readout::LastPositionColumns(&answers),
    )?; // [rows, 2]
    let logit_diff = (logits.narrow(1, 0, 1)? - logits.narrow(1, 1, 1)?)?; // [rows, 1]
                                                                           // Rows are independent: the gradient of the sum is each row's own gradient.
    let store = logit_diff.sum_all()?.backward()?;
    let mut grads = ActivationCache::default();
    for point in points {
        let probe = hooks.probes().get(*point)?;
        let grad = match store.get(probe) {
            Some(g) => g.clone(),
            None => probe.zeros_like()?, // nothing after this point reaches the logits
        };
        grads.insert(*point, grad);
    }
    Ok(grads)
}

/// The straight line from the target run's token embeddings to the source run's, at
/// target positions: `target + alpha · step`, `[1, pos, d_model]` each.
pub(crate) struct InputPath {
    pub target: Tensor,
    pub step: Tensor,
}

/// The patch of `hook_embed` putting row r at `alpha_r` along `path` (0 for rows that
/// are not [`Row::Towards`]).
fn towards_source(model: &HookedTransformer, path: &InputPath, rows: &[Row]) -> Result<Patch> {
    let alphas: Vec<f32> = rows
        .iter()
        .map(|r| match r {
            Row::Towards(alpha) => *alpha as f32,
            _ => 0.0,
        })
        .collect();
    let alphas = Tensor::from_vec(alphas, (rows.len(), 1, 1), model.device())?;
    let moved = path
        .target
        .broadcast_add(&path.step.broadcast_mul(&alphas)?)?; // [rows, pos, d_model]
    Ok(Patch::replace(HookPoint::Embed, moved))
}
