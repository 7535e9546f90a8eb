//! Attribution patching: every cell of every kind estimated at once from gradients,
//! instead of one patched run per cell. Equations are those of Kramár, Lieberum, Shah,
//! Nanda 2024, "AtP*: An efficient and scalable method for localizing LLM behaviour to
//! components" (arXiv:2403.00745), with the source run in place of their x_noise and
//! the target run in place of x_clean (the patched run is the target):
//!
//! - [`Method::Atp`] (Nanda 2022; the paper's AtP): the first-order estimate
//!   I_AtP(n) = (n(x_source) − n(x_target))ᵀ · ∂L/∂n at the target run, summed over a
//!   cell's elements ([`first_order::linear`]). Two forward passes, one backward pass.
//! - [`Method::AtpStar`] (the paper's AtP*): AtP with its two fixes. The QK fix
//!   ([`qk_fix`]): a query or key cell's patched attention pattern is computed exactly,
//!   and only the step from the pattern on is linear,
//!   I_AtPfix(n) = Σ_t (A_patched(t) − A(t))ᵀ · ∂L/∂A(t). GradDrop
//!   ([`gradients::Row::DropLayer`], [`combine`]): one more backward pass per layer ℓ
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

mod first_order;
mod gradients;
pub(crate) mod qk_fix;

use std::fmt;

use actpatch_hooks::{BlockSite, CacheFilter, HookPoint, Layout};
use actpatch_metrics::CellMetrics;
use actpatch_model::HookedTransformer;
use candle_core::Tensor;
use serde::Deserialize;

use crate::{CellIndex, CellResult, DirectedPair, Direction, PatchKind, PatchingError, Result};
use first_order::{linear, Dense};
use gradients::{gradients, InputPath, Row};
use qk_fix::Attention;

/// How a cell's effect is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Default)]
pub enum Method {
    /// One patched run per cell (the fast or the naive sweep).
    #[default]
    #[serde(rename = "exact")]
    Exact,
    /// Attribution patching: the first-order estimate.
    #[serde(rename = "atp")]
    Atp,
    /// AtP with the QK fix and GradDrop (Kramár et al. 2024).
    #[serde(rename = "atp*")]
    AtpStar,
    /// Integrated gradients from the target run's input embeddings to the source's.
    #[serde(rename = "ig")]
    Ig,
}

impl Method {
    pub const ALL: [Method; 4] = [Method::Exact, Method::Atp, Method::AtpStar, Method::Ig];

    /// The name in experiment files and tables.
    pub fn name(self) -> &'static str {
        match self {
            Method::Exact => "exact",
            Method::Atp => "atp",
            Method::AtpStar => "atp*",
            Method::Ig => "ig",
        }
    }

    pub fn from_name(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.name() == name)
    }

    pub fn is_exact(self) -> bool {
        self == Method::Exact
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Estimated cells and what they cost.
pub struct Attribution {
    pub results: Vec<CellResult>,
    /// Forward-pass equivalents: each forward pass of one prompt counts 1, each
    /// backward pass 2.
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
    if let Some((kind, _)) = kinds.iter().find(|(k, _)| crate::path::is_path(*k)) {
        return Err(PatchingError::NeedsReceivers { kind: *kind });
    }
    let n_layers = model.dims().n_layers;
    let sweep_kinds: Vec<PatchKind> = kinds.iter().map(|(k, _)| *k).collect();
    let fix = QkSites::of(model, pair, &sweep_kinds, method);
    let (source_points, grad_points, target_points) =
        points_of(&sweep_kinds, fix.as_ref(), method, n_layers);
    let run = |tokens: &[u32], points: Vec<HookPoint>| {
        model.run_with_cache(&[tokens.to_vec()], CacheFilter::only(points))
    };
    let (_, source) = run(pair.source_tokens, source_points)?;
    let (_, target) = run(pair.target_tokens, target_points)?;
    let positions = Positions::new(model, pair)?;
    let difference = |point: HookPoint| -> Result<Tensor> {
        let source = pair.align(point, source.get(point)?)?;
        positions.only_patched(point, &(source - target.get(point)?)?)
    };

    let rows = rows_of(method, n_layers, ig_steps);
    let path = match method {
        Method::Ig => Some(InputPath {
            target: target.get(HookPoint::Embed)?.clone(),
            step: difference(HookPoint::Embed)?,
        }),
        _ => None,
    };
    let grads = gradients(model, pair, &grad_points, &rows, path.as_ref())?;

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
                    let grad = grads.at(point)?;
                    let dense = match (&fix, kind.site()) {
                        (Some(fix), BlockSite::Q | BlockSite::K) => {
                            let attention = fix
                                .attention(model, cell.layer, &source, &target, pair, &positions)?;
                            let pattern_grad =
                                grads.at(HookPoint::block(cell.layer, BlockSite::Pattern))?;
                            match kind.site() {
                                BlockSite::Q => qk_fix::queries(*kind, &attention, pattern_grad)?,
                                _ => qk_fix::keys(*kind, &attention, pattern_grad)?,
                            }
                        }
                        _ if method == Method::Ig => {
                            linear(*kind, &difference(point)?, &grad.mean_keepdim(0)?)?
                        }
                        _ => linear(*kind, &difference(point)?, grad)?,
                    };
                    slot.insert(dense)
                }
            };
            let estimate = combine(method, dense, *kind, cell, n_layers);
            let logit_diff = target_logit_diff + estimate;
            results.push(estimated_cell(pair, (*kind, method), *cell, logit_diff));
        }
    }
    let passes = 2.0 + 3.0 * grads.rows as f64;
    Ok(Attribution { results, passes })
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

/// The hook points to cache in the source run, to probe for gradients, and to cache
/// in the target run.
fn points_of(
    sweep_kinds: &[PatchKind],
    fix: Option<&QkSites>,
    method: Method,
    n_layers: usize,
) -> (Vec<HookPoint>, Vec<HookPoint>, Vec<HookPoint>) {
    let mut source_points = site_points(sweep_kinds, n_layers);
    let mut grad_points = source_points.clone();
    let mut target_points = source_points.clone();
    if let Some(fix) = fix {
        let attention_sites = [fix.query, fix.key];
        source_points.extend(sites(&attention_sites, n_layers));
        let read = [fix.query, fix.key, BlockSite::AttnScores];
        target_points.extend(sites(&read, n_layers));
        grad_points.extend(sites(&[BlockSite::Pattern], n_layers));
    }
    if method == Method::Ig {
        source_points.push(HookPoint::Embed);
        target_points.push(HookPoint::Embed);
    }
    (source_points, grad_points, target_points)
}

/// The batch rows of the gradient pass of `method`.
fn rows_of(method: Method, n_layers: usize, ig_steps: usize) -> Vec<Row> {
    let steps = ig_steps.max(1);
    match method {
        Method::Atp | Method::Exact => vec![Row::Plain],
        Method::AtpStar => std::iter::once(Row::Plain)
            .chain((0..n_layers).map(Row::DropLayer))
            .collect(),
        Method::Ig => (1..=steps)
            .map(|k| Row::Towards(k as f64 / steps as f64))
            .collect(),
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

/// `sites` of every layer.
fn sites(sites: &[BlockSite], n_layers: usize) -> Vec<HookPoint> {
    sites
        .iter()
        .flat_map(|s| (0..n_layers).map(move |l| HookPoint::block(l, *s)))
        .collect()
}

/// The hook points the sweep of `kinds` patches.
fn site_points(kinds: &[PatchKind], n_layers: usize) -> Vec<HookPoint> {
    let mut site_list: Vec<BlockSite> = kinds.iter().map(|k| k.site()).collect();
    site_list.sort();
    site_list.dedup();
    sites(&site_list, n_layers)
}

/// Which target positions receive a source activation.
struct Positions {
    /// `[pos]`: 1 where patched, 0 elsewhere.
    mask: Tensor,
    identity: bool,
}

impl Positions {
    fn new(model: &HookedTransformer, pair: &DirectedPair) -> Result<Positions> {
        let patched = pair.map.patched_positions();
        let mask: Vec<f32> = (0..pair.map.n_target())
            .map(|p| f32::from(u8::from(patched.contains(&p))))
            .collect();
        Ok(Positions {
            mask: Tensor::from_vec(mask, pair.map.n_target(), model.device())?,
            identity: pair.map.is_identity(),
        })
    }

    /// `difference` (`[1, pos, ...]` at `point`) with positions that receive nothing
    /// set to 0.
    fn only_patched(&self, point: HookPoint, difference: &Tensor) -> Result<Tensor> {
        if self.identity || point.layout() == Layout::BatchHeadQueryKey {
            return Ok(difference.clone());
        }
        let mut shape = vec![1; difference.rank()];
        shape[1] = self.mask.dim(0)?;
        Ok(difference.broadcast_mul(&self.mask.reshape(shape)?)?)
    }
}

/// Where attention reads queries and keys, for AtP*'s QK fix: after rotary embedding
/// where the model has one.
struct QkSites {
    query: BlockSite,
    key: BlockSite,
}

impl QkSites {
    /// The sites when `method` is AtP* and a swept kind patches queries or keys;
    /// `None` otherwise, and on a rotary model whose pair is not position-aligned: a
    /// query moved to another position would need another rotation, so those q/k cells
    /// get AtP (with GradDrop) through the softmax's gradient instead.
    fn of(
        model: &HookedTransformer,
        pair: &DirectedPair,
        kinds: &[PatchKind],
        method: Method,
    ) -> Option<QkSites> {
        let wanted = method == Method::AtpStar
            && kinds
                .iter()
                .any(|k| matches!(k.site(), BlockSite::Q | BlockSite::K));
        let rotary = model.hook_space().sites.contains(&BlockSite::RotQ);
        match (wanted, rotary) {
            (false, _) => None,
            (true, true) if !pair.map.is_identity() => None,
            (true, true) => Some(QkSites {
                query: BlockSite::RotQ,
                key: BlockSite::RotK,
            }),
            (true, false) => Some(QkSites {
                query: BlockSite::Q,
                key: BlockSite::K,
            }),
        }
    }

    /// Layer `layer`'s target attention and the query and key steps to the source.
    fn attention(
        &self,
        model: &HookedTransformer,
        layer: usize,
        source: &actpatch_hooks::ActivationCache,
        target: &actpatch_hooks::ActivationCache,
        pair: &DirectedPair,
        positions: &Positions,
    ) -> Result<Attention> {
        let at = |site| HookPoint::block(layer, site);
        let dims = model.dims();
        let n_rep = dims.n_heads / dims.n_kv_heads.max(1);
        // [1, pos, head, d_head] → [head, pos, d_head], keys repeated over query heads.
        let heads_first = |x: &Tensor, rep: usize| -> Result<Tensor> {
            let x = x.squeeze(0)?.transpose(0, 1)?.contiguous()?;
            if rep == 1 {
                return Ok(x);
            }
            let (kv, pos, d) = x.dims3()?;
            Ok(x.unsqueeze(1)?
                .broadcast_as((kv, rep, pos, d))?
                .reshape((kv * rep, pos, d))?)
        };
        let step = |site| -> Result<Tensor> {
            let source = pair.align(at(site), source.get(at(site))?)?;
            positions.only_patched(at(site), &(source - target.get(at(site))?)?)
        };
        if !dims.n_heads.is_multiple_of(dims.n_kv_heads.max(1)) {
            return Err(PatchingError::Tensor(candle_core::Error::Msg(
                "query heads are not a multiple of key/value heads".into(),
            )));
        }
        // [head, query, key]: 0 where the target run's scores are finite, −∞ where masked.
        let scores = target.get(at(BlockSite::AttnScores))?.squeeze(0)?;
        let visible = scores.ge(-1e30)?;
        let mask = visible.where_cond(
            &scores.zeros_like()?,
            &(scores.ones_like()? * f64::NEG_INFINITY)?,
        )?;
        Ok(Attention {
            q: heads_first(target.get(at(self.query))?, 1)?,
            q_step: heads_first(&step(self.query)?, 1)?,
            k: heads_first(target.get(at(self.key))?, n_rep)?,
            k_step: heads_first(&step(self.key)?, n_rep)?,
            spec: model.attention_spec(layer)?,
            mask,
            n_rep,
        })
    }
}
