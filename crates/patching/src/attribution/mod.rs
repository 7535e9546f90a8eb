//! Attribution patching: every cell of every kind estimated at once from gradients,
//! instead of one patched run per cell. Equations are those of Kramár, Lieberum, Shah,
//! Nanda 2024, "AtP*: An efficient and scalable method for localizing LLM behaviour to
//! components" (arXiv:2403.00745), with the source run in place of their x_noise and
//! the target run in place of x_clean (the patched run is the target):
//!
//! - [`Method::Atp`] (Nanda 2022; the paper's AtP): the first-order estimate
//!   I_AtP(n) = (n(x_source) − n(x_target))ᵀ · ∂L/∂n at the target run, summed over a
//!   cell's elements ([`first_order::linear`]). One forward pass of each prompt, one
//!   backward pass.
//! - [`Method::AtpStar`] (the paper's AtP*): AtP with its two fixes. The QK fix
//!   ([`qk_fix`]): a query or key cell's patched attention pattern is computed exactly,
//!   and only the step from the pattern on is linear,
//!   I_AtPfix(n) = Σ_t (A_patched(t) − A(t))ᵀ · ∂L/∂A(t). GradDrop
//!   ([`passes::Row::DropLayer`], [`combine`]): one more backward pass per layer ℓ
//!   with layer ℓ's residual-stream writes held constant, giving
//!   I_AtP+GD_ℓ(n) = (n(x_source) − n(x_target))ᵀ · ∂L^ℓ/∂n, combined as
//!   ĉ_AtP+GD(n) = 1/(L − 1) Σ_ℓ |I_AtP+GD_ℓ(n)|. The paper's AtP* estimates the size
//!   of an effect; actpatch gives it the sign of the QK-fixed AtP estimate so that it
//!   sits on the same signed scale as the other methods.
//! - [`Method::Ig`]: integrated gradients along the straight line from the target run's
//!   token embeddings to the source run's, m steps at α = k/m (k = 1..m): the averaged
//!   gradient times (a_source − a_target).
//!
//! L is the logit difference (correct − incorrect answer at the final position).
//! Estimates are in logit-difference units, reported as the target run's value plus
//! the estimate, so normalized values read as exact ones do (denoising: 0 + estimate /
//! gap; noising: 1 + estimate / gap).

//!
//! All of a call's prompts run as rows of batched differentiable passes
//! ([`passes`]): both directions of a pair need the same two prompts, so
//! [`attribute_all`] estimates them together from one pass.

mod first_order;
mod grad_drop;
mod gradients;
mod method;
mod passes;
mod plan;
pub(crate) mod qk_fix;
mod sites;

use actpatch_hooks::{BlockSite, HookPoint};
use actpatch_metrics::CellMetrics;
use actpatch_model::HookedTransformer;
use candle_core::Tensor;

use crate::{CellIndex, CellResult, DirectedPair, Direction, PatchKind, PatchingError, Result};
use first_order::{linear, Dense};
use gradients::{run_passes, Passes};
pub use method::Method;
use plan::{plan, PairRows};
use sites::Positions;

/// Estimated cells and what they cost.
pub struct Attribution {
    pub results: Vec<CellResult>,
    /// Forward-pass equivalents: each forward pass of one prompt counts 1, each
    /// backward pass 2 (a share of them when several pairs were estimated at once).
    pub passes: f64,
}

/// Estimates `cells` of each kind with `method` (an approximate one), `ig_steps`
/// steps for [`Method::Ig`].
pub fn attribute(
    model: &HookedTransformer,
    pair: &DirectedPair,
    kinds: &[(PatchKind, Vec<CellIndex>)],
    method: Method,
    ig_steps: usize,
) -> Result<Attribution> {
    let mut one = attribute_all(model, &[(pair, kinds)], method, ig_steps)?;
    Ok(one.remove(0))
}

/// The cells of each kind to estimate for one directed pair.
pub type Request<'a, 'p> = (&'a DirectedPair<'p>, &'a [(PatchKind, Vec<CellIndex>)]);

/// [`attribute`] for several directed pairs at once (e.g. both directions of one
/// pair), one [`Attribution`] per request, in order: their prompts run as rows of
/// shared passes, and each request is given an equal share of the passes. Requests
/// with other answer tokens than the first's are estimated on their own.
pub fn attribute_all(
    model: &HookedTransformer,
    requests: &[Request],
    method: Method,
    ig_steps: usize,
) -> Result<Vec<Attribution>> {
    let all_kinds = requests.iter().flat_map(|(_, kinds)| kinds.iter());
    if let Some((kind, _)) = all_kinds.clone().find(|(k, _)| crate::path::is_path(*k)) {
        return Err(PatchingError::NeedsReceivers { kind: *kind });
    }
    let answers = |p: &DirectedPair| (p.scorer.answers.correct, p.scorer.answers.incorrect);
    let first = requests.first().map(|(p, _)| answers(p));
    if let Some(other) = requests.iter().position(|(p, _)| Some(answers(p)) != first) {
        let mut first = attribute_all(model, &requests[..other], method, ig_steps)?;
        first.extend(attribute_all(model, &requests[other..], method, ig_steps)?);
        return Ok(first);
    }
    let mut sweep_kinds: Vec<PatchKind> = all_kinds.map(|(k, _)| *k).collect();
    sweep_kinds.sort();
    sweep_kinds.dedup();
    let pairs: Vec<&DirectedPair> = requests.iter().map(|(p, _)| *p).collect();
    let (pass_plan, pair_rows) = plan(model, &pairs, &sweep_kinds, (method, ig_steps))?;
    let passes = run_passes(model, &pass_plan)?;
    let share = passes.passes / requests.len().max(1) as f64;
    requests
        .iter()
        .zip(&pair_rows)
        .map(|((pair, kinds), rows)| {
            let estimate = Estimate {
                model,
                pair,
                rows,
                passes: &passes,
                cache_points: &pass_plan.cache_points,
            };
            Ok(Attribution {
                results: estimate.cells(kinds, method)?,
                passes: share,
            })
        })
        .collect()
}

/// One directed pair's estimates from the passes.
struct Estimate<'a> {
    model: &'a HookedTransformer,
    pair: &'a DirectedPair<'a>,
    rows: &'a PairRows,
    passes: &'a Passes,
    cache_points: &'a [HookPoint],
}

impl Estimate<'_> {
    /// Every cell of `kinds`, estimated with `method`.
    fn cells(
        &self,
        kinds: &[(PatchKind, Vec<CellIndex>)],
        method: Method,
    ) -> Result<Vec<CellResult>> {
        let (model, pair) = (self.model, self.pair);
        let n_layers = model.dims().n_layers;
        let source = self.passes.cache_of(self.rows.source, self.cache_points)?;
        let target = self.passes.cache_of(self.rows.target, self.cache_points)?;
        let positions = Positions::new(model, pair)?;
        let difference = |point: HookPoint| -> Result<Tensor> {
            let source = pair.align(point, source.get(point)?)?;
            positions.only_patched(point, &(source - target.get(point)?)?)
        };
        let grad = |point| self.passes.grads_of(&self.rows.grads, point);
        let target_logit_diff = match pair.direction {
            Direction::Denoising => pair.scorer.baseline.corrupted_logit_diff,
            Direction::Noising => pair.scorer.baseline.clean_logit_diff,
        };
        let mut results = Vec::new();
        for (kind, cells) in kinds {
            let mut per_layer: Vec<Option<Dense>> = (0..n_layers).map(|_| None).collect();
            for cell in cells {
                let dense = match &mut per_layer[cell.layer] {
                    Some(dense) => dense,
                    slot => {
                        let point = HookPoint::block(cell.layer, kind.site());
                        let dense = match (&self.rows.fix, kind.site()) {
                            (Some(fix), BlockSite::Q | BlockSite::K) => {
                                let attention = fix.attention(
                                    model, cell.layer, &source, &target, pair, &positions,
                                )?;
                                let pattern_grad =
                                    grad(HookPoint::block(cell.layer, BlockSite::Pattern))?;
                                match kind.site() {
                                    BlockSite::Q => {
                                        qk_fix::queries(*kind, &attention, &pattern_grad)?
                                    }
                                    _ => qk_fix::keys(*kind, &attention, &pattern_grad)?,
                                }
                            }
                            _ if method == Method::Ig => {
                                linear(*kind, &difference(point)?, &grad(point)?.mean_keepdim(0)?)?
                            }
                            _ => linear(*kind, &difference(point)?, &grad(point)?)?,
                        };
                        slot.insert(dense)
                    }
                };
                let estimate = combine(method, dense, *kind, cell, n_layers);
                let logit_diff = target_logit_diff + estimate;
                results.push(estimated_cell(pair, (*kind, method), *cell, logit_diff));
            }
        }
        Ok(results)
    }
}

/// A cell whose patched logit difference is estimated as `logit_diff` (an estimate
/// has no probability or KL divergence).
fn estimated_cell(
    pair: &DirectedPair,
    (kind, method): (PatchKind, Method),
    index: CellIndex,
    logit_diff: f64,
) -> CellResult {
    CellResult {
        direction: pair.direction,
        kind,
        method,
        index,
        metrics: CellMetrics {
            logit_diff,
            normalized_logit_diff: pair.scorer.baseline.normalize(logit_diff),
            logprob_diff: logit_diff,
            prob_correct: None,
            kl_div: None,
        },
    }
}

/// One cell's estimate from its rows: AtP and IG have one; AtP* combines its GradDrop
/// rows (row 1 + ℓ holds I_AtP+GD_ℓ(n), layer ℓ's writes held constant) as Kramár et
/// al. 2024 define the GradDrop estimate:
///
/// ĉ_AtP+GD(n) = 1/(L − 1) · Σ_{ℓ=1..L} |I_AtP+GD_ℓ(n)|.
///
/// A node inside block ℓ(n) (a head's q/k/v/pattern/output, `attn_out`, `mlp_out`) has
/// gradient 0 when its own layer is dropped, so L − 1 terms remain and a node whose
/// effect is all direct scores exactly |AtP|. The paper's nodes all sit inside blocks;
/// the residual-stream kinds (`resid_pre`, `resid_mid`, `resid_post`) lose no term, and
/// actpatch divides their sum by L, the same rule (the number of terms a node keeps).
/// The magnitude gets the sign of row 0 (AtP, QK-fixed for q/k cells), so that AtP*
/// sits on the same signed scale as the other methods.
fn combine(
    method: Method,
    dense: &Dense,
    kind: PatchKind,
    cell: &CellIndex,
    n_layers: usize,
) -> f64 {
    let plain = dense.get(0, kind, cell);
    if method != Method::AtpStar || dense.rows() == 1 {
        return plain;
    }
    let terms = match kind.site() {
        BlockSite::ResidPre | BlockSite::ResidMid | BlockSite::ResidPost => n_layers,
        _ => n_layers - 1,
    };
    if terms == 0 {
        return plain; // one layer: nothing after the node to cancel its effect
    }
    let dropped: f64 = (1..dense.rows())
        .map(|r| dense.get(r, kind, cell).abs())
        .sum();
    let magnitude = dropped / terms as f64;
    if plain < 0.0 {
        -magnitude
    } else {
        magnitude
    }
}
