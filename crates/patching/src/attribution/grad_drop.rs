//! GradDrop's rows (AtP*, Kramár et al. 2024) without a full pass each. A row that
//! holds layer ℓ's writes (`hook_attn_out`, `hook_mlp_out`) constant in the backward
//! pass has the plain row's forward values, so:
//! - above layer ℓ its gradients are the plain row's;
//! - inside block ℓ they are 0, and at its residual-stream points (`resid_pre`,
//!   `resid_mid`, `resid_post`) they are the plain row's gradient at `resid_post(ℓ)`:
//!   with both writes constant only the skip path is left;
//! - below layer ℓ they are that gradient carried back through blocks 0..ℓ: a pass of
//!   the prompt through those blocks only
//!   ([`HookedTransformer::forward_differentiable_to`]), differentiating
//!   `Σ resid_pre(ℓ) · g` with `g` the plain gradient, held constant.
//!
//! So a row costs ℓ of the L blocks forward and backward instead of all of them and
//! the plain row is shared: about half of AtP*'s passes.

use actpatch_hooks::{ActivationCache, BlockSite, CacheFilter, HookPoint, Hooks};
use actpatch_model::HookedTransformer;
use candle_core::Tensor;

use super::passes::{chunks_by_length, FullPasses, PassPlan, Row};
use crate::{PatchingError, Result};

/// One GradDrop row: the layer it drops, the plan row of its prompt's plain
/// differentiated run, and where its pass below the layer put it (none for layer 0).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DropRow {
    pub layer: usize,
    pub plain: usize,
    pub at: Option<(usize, usize)>,
}

/// The GradDrop rows of a plan and the gradients of their passes below their layers.
#[derive(Default)]
pub(crate) struct Drops {
    /// Per plan row, when it is a GradDrop row.
    pub rows: Vec<Option<DropRow>>,
    /// Per pass: the gradients at the probe points, `[rows running at the point's
    /// layer, ...]` (a pass's rows in non-increasing order of their layer).
    grads: Vec<ActivationCache>,
    /// Forward-pass equivalents: 3 · ℓ / L per row (ℓ blocks forward and backward).
    pub passes: f64,
}

/// The points whose plain gradients a GradDrop row reads: every layer's `resid_post`.
pub(crate) fn injection_points(n_layers: usize) -> Vec<HookPoint> {
    (0..n_layers)
        .map(|l| HookPoint::block(l, BlockSite::ResidPost))
        .collect()
}

/// The passes of plan rows `dropped` (all [`Row::DropLayer`]), reading the plain
/// gradients from `full` (whose grad points hold [`injection_points`]).
pub(crate) fn run(
    model: &HookedTransformer,
    plan: &PassPlan,
    dropped: &[usize],
    full: &FullPasses,
) -> Result<Drops> {
    let n_layers = model.dims().n_layers;
    let mut drops = Drops {
        rows: vec![None; plan.rows.len()],
        ..Drops::default()
    };
    for &i in dropped {
        let row = plan.rows[i];
        let Row::DropLayer(layer) = row.row else {
            return Err(plan_error("a GradDrop pass got a row that drops no layers"));
        };
        let plain = (plan.rows.iter())
            .position(|r| r.prompt == row.prompt && r.row == Row::Plain && r.loss)
            .ok_or_else(|| plan_error("a GradDrop row without its prompt's plain row"))?;
        drops.rows[i] = Some(DropRow {
            layer,
            plain,
            at: None,
        });
        drops.passes += 3.0 * layer as f64 / n_layers.max(1) as f64;
    }
    let below: Vec<usize> = (dropped.iter().copied())
        .filter(|i| drops.rows[*i].is_some_and(|d| d.layer > 0))
        .collect();
    for mut chunk in chunks_by_length(plan, &below) {
        let layer_of = |i: &usize| drops.rows[*i].map_or(0, |d| d.layer);
        chunk.sort_by_key(|i| std::cmp::Reverse(layer_of(i)));
        let rows: Vec<DropRow> = chunk.iter().filter_map(|i| drops.rows[*i]).collect();
        let grads = pass(model, plan, &chunk, &rows, full)?;
        for (r, i) in chunk.iter().enumerate() {
            if let Some(d) = &mut drops.rows[*i] {
                d.at = Some((drops.grads.len(), r));
            }
        }
        drops.grads.push(grads);
    }
    Ok(drops)
}

/// One pass of GradDrop rows `chunk` (prompts of one length, `rows` their
/// [`DropRow`]s, in non-increasing order of layer) through the blocks below their
/// layers, and its backward pass: the gradients at the plan's grad points.
fn pass(
    model: &HookedTransformer,
    plan: &PassPlan,
    chunk: &[usize],
    rows: &[DropRow],
    full: &FullPasses,
) -> Result<ActivationCache> {
    let tokens: Vec<Vec<u32>> = (chunk.iter())
        .map(|i| plan.prompts[plan.rows[*i].prompt].to_vec())
        .collect();
    let tokens = model.tokens_tensor(&tokens)?;
    let mut hooks = Hooks::none().probing(CacheFilter::only(plan.grad_points.clone()));
    let depths: Vec<usize> = rows.iter().map(|d| d.layer).collect();
    let inputs = model.forward_differentiable_to(&tokens, &mut hooks, &depths)?; // [1, pos, d_model] each
    let mut loss: Option<Tensor> = None;
    for (input, d) in inputs.iter().zip(rows) {
        let point = HookPoint::block(d.layer, BlockSite::ResidPost);
        let injected = full.grad(d.plain, point)?.detach(); // [1, pos, d_model]
        let term = (input * injected)?.sum_all()?;
        loss = Some(match loss {
            None => term,
            Some(sum) => (sum + term)?,
        });
    }
    let mut grads = ActivationCache::default();
    let Some(loss) = loss else {
        return Ok(grads);
    };
    let store = loss.backward()?;
    for point in &plan.grad_points {
        if !hooks.probes().contains(*point) {
            continue; // a layer no row of this pass reached
        }
        let probe = hooks.probes().get(*point)?;
        let grad = match store.get(probe) {
            Some(g) => g.clone(),
            None => probe.zeros_like()?,
        };
        grads.insert(*point, grad);
    }
    Ok(grads)
}

impl Drops {
    /// GradDrop row `d`'s gradient at `point` `[1, ...]` (see the module docs).
    pub fn grad(&self, full: &FullPasses, d: &DropRow, point: HookPoint) -> Result<Tensor> {
        let HookPoint::Block { layer, site } = point else {
            return Err(plan_error(
                "GradDrop gradients are read at block hook points",
            ));
        };
        if layer > d.layer {
            return full.grad(d.plain, point);
        }
        if layer == d.layer {
            return match site {
                BlockSite::ResidPre | BlockSite::ResidMid | BlockSite::ResidPost => {
                    full.grad(d.plain, HookPoint::block(layer, BlockSite::ResidPost))
                }
                _ => Ok(full.grad(d.plain, point)?.zeros_like()?),
            };
        }
        let (pass, r) =
            d.at.ok_or_else(|| plan_error("a GradDrop row below its layer without a pass"))?;
        Ok(self.grads[pass].get(point)?.narrow(0, r, 1)?)
    }
}

fn plan_error(reason: &str) -> PatchingError {
    PatchingError::PassPlan {
        reason: reason.into(),
    }
}
