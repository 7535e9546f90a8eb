//! Which rows the passes of an attribution run: every prompt of the directed pairs
//! once, each pair's differentiated rows on its target prompt (by method), and a plain
//! row for every prompt whose activations the estimates read.

use actpatch_hooks::{BlockSite, HookPoint};
use actpatch_model::HookedTransformer;
use candle_core::Tensor;

use super::method::Method;
use super::passes::{InputPath, PassPlan, PassRow, Row};
use super::sites::{Positions, QkSites};
use crate::{DirectedPair, PatchKind, Result};

/// One directed pair's rows in the plan.
pub(crate) struct PairRows {
    /// The plan row whose activations are the target run's.
    pub target: usize,
    /// The plan row whose activations are the source run's.
    pub source: usize,
    /// The pair's differentiated rows, in [`rows_of`] order.
    pub grads: Vec<usize>,
    /// Where the QK fix reads queries and keys (AtP* with q/k kinds).
    pub fix: Option<QkSites>,
}

/// `sites` of every layer.
pub(crate) fn sites(sites: &[BlockSite], n_layers: usize) -> Vec<HookPoint> {
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

/// The differentiated rows of `method` on one target prompt; `path` is the pair's
/// input path for [`Method::Ig`].
fn rows_of(method: Method, n_layers: usize, ig_steps: usize, path: usize) -> Vec<Row> {
    let steps = ig_steps.max(1);
    match method {
        Method::Atp | Method::Exact => vec![Row::Plain],
        Method::AtpStar => std::iter::once(Row::Plain)
            .chain((0..n_layers).map(Row::DropLayer))
            .collect(),
        Method::Ig => (1..=steps)
            .map(|k| Row::Towards {
                alpha: k as f64 / steps as f64,
                path,
            })
            .collect(),
    }
}

/// The index of `tokens` in `prompts`, added when new.
fn prompt<'a>(prompts: &mut Vec<&'a [u32]>, tokens: &'a [u32]) -> usize {
    match prompts.iter().position(|p| *p == tokens) {
        Some(i) => i,
        None => {
            prompts.push(tokens);
            prompts.len() - 1
        }
    }
}

/// The row giving prompt `p`'s plain activations, added (not differentiated) when none.
fn plain_row(rows: &mut Vec<PassRow>, p: usize) -> usize {
    let plain = rows
        .iter()
        .position(|r| r.prompt == p && r.row == Row::Plain);
    plain.unwrap_or_else(|| {
        rows.push(PassRow {
            prompt: p,
            row: Row::Plain,
            loss: false,
        });
        rows.len() - 1
    })
}

/// The straight line from the target's `hook_embed` to the source's (re-indexed to
/// target positions; zero at positions that receive nothing).
fn input_path(
    model: &HookedTransformer,
    pair: &DirectedPair,
    target: &Tensor,
    source: &Tensor,
) -> Result<InputPath> {
    let step = (pair.align(HookPoint::Embed, source)? - target)?;
    Ok(InputPath {
        start: target.clone(),
        step: Positions::new(model, pair)?.only_patched(HookPoint::Embed, &step)?,
    })
}

/// The points to cache (the kinds' sites; the QK fix's queries, keys and scores) and
/// to probe for gradients (the kinds' sites; the QK fix's patterns).
fn points(
    kinds: &[PatchKind],
    pairs: &[PairRows],
    n_layers: usize,
) -> (Vec<HookPoint>, Vec<HookPoint>) {
    let mut cache_points = site_points(kinds, n_layers);
    let mut grad_points = cache_points.clone();
    if let Some(fix) = pairs.iter().find_map(|p| p.fix.as_ref()) {
        cache_points.extend(sites(
            &[fix.query, fix.key, BlockSite::AttnScores],
            n_layers,
        ));
        grad_points.extend(sites(&[BlockSite::Pattern], n_layers));
    }
    (cache_points, grad_points)
}

/// The passes that estimate `kinds` of every pair of `pairs` (which share their answer
/// tokens) with `method`, and where each pair's rows are.
pub(crate) fn plan<'a>(
    model: &HookedTransformer,
    pairs: &[&'a DirectedPair],
    kinds: &[PatchKind],
    (method, ig_steps): (Method, usize),
) -> Result<(PassPlan<'a>, Vec<PairRows>)> {
    let n_layers = model.dims().n_layers;
    let mut prompts = Vec::new();
    let ends: Vec<(usize, usize)> = pairs
        .iter()
        .map(|p| {
            (
                prompt(&mut prompts, p.target_tokens),
                prompt(&mut prompts, p.source_tokens),
            )
        })
        .collect();
    let embeddings = match method {
        Method::Ig => prompts
            .iter()
            .map(|p| Ok(model.embeddings(&[p.to_vec()])?))
            .collect::<Result<Vec<_>>>()?,
        _ => Vec::new(),
    };
    let (mut rows, mut paths, mut grads) = (Vec::new(), Vec::new(), Vec::new());
    for (pair, (target, source)) in pairs.iter().zip(&ends) {
        if method == Method::Ig {
            paths.push(input_path(
                model,
                pair,
                &embeddings[*target],
                &embeddings[*source],
            )?);
        }
        let start = rows.len();
        rows.extend(
            rows_of(method, n_layers, ig_steps, paths.len().saturating_sub(1))
                .into_iter()
                .map(|row| PassRow {
                    prompt: *target,
                    row,
                    loss: true,
                }),
        );
        grads.push((start..rows.len()).collect::<Vec<_>>());
    }
    let mut pair_rows = Vec::new();
    for ((pair, (target, source)), grads) in pairs.iter().zip(&ends).zip(grads) {
        let fix = (method == Method::AtpStar)
            .then(|| QkSites::of(model, pair, kinds))
            .flatten();
        pair_rows.push(PairRows {
            target: plain_row(&mut rows, *target),
            source: plain_row(&mut rows, *source),
            grads,
            fix,
        });
    }
    let (cache_points, grad_points) = points(kinds, &pair_rows, n_layers);
    let answers = pairs
        .first()
        .map(|p| [p.scorer.answers.correct, p.scorer.answers.incorrect])
        .unwrap_or_default();
    let plan = PassPlan {
        prompts,
        rows,
        paths,
        embeddings,
        answers,
        cache_points,
        grad_points,
    };
    Ok((plan, pair_rows))
}
