//! AtP* against independent computations of its two fixes (Kramár et al. 2024), on
//! tiny GPT-2, Llama (grouped-query, rotary) and Gemma 2 (soft-capped scores, a
//! sliding window, `query_pre_attn_scalar`), both directions of their golden pairs:
//!
//! - GradDrop: each term I_AtP+GD_ℓ(n) recomputed from the gradient of a separate run
//!   whose layer-ℓ writes (`hook_attn_out`, `hook_mlp_out`) are replaced by constants
//!   (the target run's values), then combined as ĉ = 1/(L − 1) Σ_ℓ |I_ℓ| (1/L for
//!   residual-stream cells), signed as AtP;
//! - the QK fix: the patched attention pattern of every q/k cell taken from a real
//!   patched forward pass, times the pattern's gradient in each GradDrop run.
//!
//! Every cell of every such kind within 1e-4 (relative above 1).

use crate::common;

use actpatch_hooks::{ActivationCache, BlockSite, CacheFilter, Cell, HookPoint, Hooks, Patch};
use actpatch_model::{HookedTransformer, Readout};
use actpatch_patching::{
    attribute, Align, Baselines, CellAxes, CellIndex, DirectedPair, Direction, Method, MetricSet,
    Pair, PatchKind,
};
use candle_core::{IndexOp, Tensor};
use common::fixtures;

/// The kinds GradDrop is checked on through first-order estimates.
const LINEAR_KINDS: [PatchKind; 10] = [
    PatchKind::ResidPre,
    PatchKind::ResidMid,
    PatchKind::ResidPost,
    PatchKind::AttnOut,
    PatchKind::MlpOut,
    PatchKind::HeadOut,
    PatchKind::HeadOutByPos,
    PatchKind::HeadV,
    PatchKind::HeadVByPos,
    PatchKind::HeadPattern,
];

/// The kinds the QK fix estimates.
const QK_KINDS: [PatchKind; 4] = [
    PatchKind::HeadQ,
    PatchKind::HeadQByPos,
    PatchKind::HeadK,
    PatchKind::HeadKByPos,
];

/// A fixture model and the strict pairs of its `golden.json`.
fn load(dir: &str) -> (HookedTransformer, Vec<(Pair, Baselines)>) {
    let model = HookedTransformer::from_dir(fixtures().join(dir)).unwrap();
    let text = std::fs::read_to_string(fixtures().join(dir).join("golden.json")).unwrap();
    let golden: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut pairs = Vec::new();
    for p in golden["pairs"].as_object().unwrap().values() {
        let text = |k: &str| p[k].as_str().unwrap().to_string();
        let answers = [text("correct"), text("incorrect")];
        let pair = Pair::from_prompts(
            &model,
            &text("clean"),
            &text("corrupted"),
            [answers[0].as_str(), answers[1].as_str()],
            Align::Strict,
        )
        .unwrap();
        let baselines = pair.baselines(&model).unwrap();
        pairs.push((pair, baselines));
    }
    (model, pairs)
}

/// Gradients of the logit difference at `points` of the target run with `patches`
/// applied (each `[1, ...]`; zero where nothing downstream reaches the logits).
fn gradients(
    model: &HookedTransformer,
    directed: &DirectedPair,
    points: &[HookPoint],
    patches: &[Patch],
) -> ActivationCache {
    let tokens = model
        .tokens_tensor(&[directed.target_tokens.to_vec()])
        .unwrap();
    let mut hooks =
        Hooks::new(patches, CacheFilter::Nothing).probing(CacheFilter::only(points.to_vec()));
    let answers = [
        directed.scorer.answers.correct,
        directed.scorer.answers.incorrect,
    ];
    let logits = model
        .forward_differentiable(&tokens, &mut hooks, Readout::LastPositionColumns(&answers))
        .unwrap(); // [1, 2]
    let logit_diff = (logits.i((0, 0)).unwrap() - logits.i((0, 1)).unwrap()).unwrap();
    let store = logit_diff.backward().unwrap();
    let mut grads = ActivationCache::default();
    for point in points {
        let probe = hooks.probes().get(*point).unwrap();
        let grad = match store.get(probe) {
            Some(g) => g.clone(),
            None => probe.zeros_like().unwrap(),
        };
        grads.insert(*point, grad);
    }
    grads
}

/// The gradients of the plain target run (`None`) and of GradDrop's run for each layer
/// ℓ: layer ℓ's writes replaced by the target's own values (constants), so nothing
/// flows back through them; the writes themselves get gradient 0 (L^ℓ does not depend
/// on them).
fn graddrop_gradients(
    model: &HookedTransformer,
    directed: &DirectedPair,
    target: &ActivationCache,
    points: &[HookPoint],
) -> Vec<ActivationCache> {
    let mut runs = vec![gradients(model, directed, points, &[])];
    for layer in 0..model.dims().n_layers {
        let writes = [BlockSite::AttnOut, BlockSite::MlpOut].map(|s| HookPoint::block(layer, s));
        let frozen: Vec<Patch> = writes
            .iter()
            .map(|p| Patch::replace(*p, target.get(*p).unwrap().clone()))
            .collect();
        let mut grads = gradients(model, directed, points, &frozen);
        for write in writes.iter().filter(|w| points.contains(w)) {
            let zero = grads.get(*write).unwrap().zeros_like().unwrap();
            grads.insert(*write, zero);
        }
        runs.push(grads);
    }
    runs
}

/// Σ over the elements `cell` of `kind` patches of `product` (`[1, ...]` at its site).
fn cell_sum(kind: PatchKind, product: &Tensor, cell: &CellIndex) -> f64 {
    let x = product.i(0).unwrap();
    let part = match (kind.axes(), kind.site()) {
        (CellAxes::Position, _) => x.i(cell.position.unwrap()).unwrap(),
        (CellAxes::HeadPosition, _) => x.i((cell.position.unwrap(), cell.head.unwrap())).unwrap(),
        (CellAxes::Head, BlockSite::Pattern) => x.i(cell.head.unwrap()).unwrap(),
        (CellAxes::Head, _) => x.narrow(1, cell.head.unwrap(), 1).unwrap(),
        (CellAxes::HeadDestSrc, _) => unreachable!("not checked here"),
    };
    part.sum_all().unwrap().to_scalar::<f32>().unwrap() as f64
}

/// The GradDrop estimate from the terms (row 0: plain AtP, then one per layer).
fn graddrop(terms: &[f64], kind: PatchKind, n_layers: usize) -> f64 {
    let resid = matches!(
        kind.site(),
        BlockSite::ResidPre | BlockSite::ResidMid | BlockSite::ResidPost
    );
    let n_terms = if resid { n_layers } else { n_layers - 1 };
    let magnitude = terms[1..].iter().map(|t| t.abs()).sum::<f64>() / n_terms as f64;
    if terms[0] < 0.0 {
        -magnitude
    } else {
        magnitude
    }
}

/// The AtP* estimates of `kinds`, cell by cell, minus the target run's logit difference.
fn atp_star(
    model: &HookedTransformer,
    directed: &DirectedPair,
    kinds: &[PatchKind],
) -> Vec<(PatchKind, CellIndex, f64)> {
    let cells: Vec<_> = kinds
        .iter()
        .map(|k| (*k, directed.cells(model, *k, None).unwrap()))
        .collect();
    let target_logit_diff = match directed.direction {
        Direction::Denoising => directed.scorer.baseline.corrupted_logit_diff,
        Direction::Noising => directed.scorer.baseline.clean_logit_diff,
    };
    attribute(model, directed, &cells, Method::AtpStar, 1)
        .unwrap()
        .results
        .iter()
        .map(|r| (r.kind, r.index, r.metrics.logit_diff - target_logit_diff))
        .collect()
}

fn assert_close(what: &str, got: f64, want: f64) {
    assert!(
        (got - want).abs() <= 1e-4 * want.abs().max(1.0),
        "{what}: AtP* {got} vs reference {want}"
    );
}

/// Every direction of every golden pair of fixture `dir`.
fn each_directed(
    dir: &str,
    kinds: &[PatchKind],
    check: &dyn Fn(&HookedTransformer, &DirectedPair),
) {
    let (model, pairs) = load(dir);
    for (pair, baselines) in &pairs {
        for direction in Direction::BOTH {
            let directed = DirectedPair::new(
                &model,
                pair,
                baselines,
                direction,
                kinds,
                MetricSet::LogitDiff,
            )
            .unwrap();
            check(&model, &directed);
        }
    }
}

fn check_graddrop(dir: &str) {
    each_directed(dir, &LINEAR_KINDS, &|model, directed| {
        let n_layers = model.dims().n_layers;
        let points: Vec<HookPoint> = LINEAR_KINDS
            .iter()
            .flat_map(|k| (0..n_layers).map(move |l| HookPoint::block(l, k.site())))
            .collect();
        let (_, target) = model
            .run_with_cache(
                &[directed.target_tokens.to_vec()],
                CacheFilter::only(points.clone()),
            )
            .unwrap();
        let runs = graddrop_gradients(model, directed, &target, &points);
        for (kind, cell, got) in atp_star(model, directed, &LINEAR_KINDS) {
            let point = HookPoint::block(cell.layer, kind.site());
            let step = (directed.source.get(point).unwrap() - target.get(point).unwrap()).unwrap();
            let terms: Vec<f64> = runs
                .iter()
                .map(|g| cell_sum(kind, &(&step * g.get(point).unwrap()).unwrap(), &cell))
                .collect();
            let what = format!("{dir} {} {kind} {cell:?}", directed.direction);
            assert_close(&what, got, graddrop(&terms, kind, n_layers));
        }
    });
}

/// `cell` of a q/k `kind` as a patch at `site` (where attention reads it).
fn qk_patch(kind: PatchKind, cell: &CellIndex, site: BlockSite, source: &Tensor) -> Patch {
    let position = match kind.axes() {
        CellAxes::HeadPosition => cell.position,
        _ => None,
    };
    let one = Cell {
        row: 0,
        position,
        head: cell.head,
        key: None,
    };
    Patch::at_cells(
        HookPoint::block(cell.layer, site),
        actpatch_hooks::PatchValue::Replace(source.clone()),
        vec![one],
    )
}

fn check_qk_fix(dir: &str) {
    each_directed(dir, &QK_KINDS, &|model, directed| {
        let n_layers = model.dims().n_layers;
        let rotary = model.hook_space().sites.contains(&BlockSite::RotQ);
        let patterns: Vec<HookPoint> = (0..n_layers)
            .map(|l| HookPoint::block(l, BlockSite::Pattern))
            .collect();
        let writes: Vec<HookPoint> = (0..n_layers)
            .flat_map(|l| [BlockSite::AttnOut, BlockSite::MlpOut].map(|s| HookPoint::block(l, s)))
            .collect();
        let cached: Vec<HookPoint> = patterns.iter().chain(&writes).copied().collect();
        let target_rows = [directed.target_tokens.to_vec()];
        let (_, target) = model
            .run_with_cache(&target_rows, CacheFilter::only(cached))
            .unwrap();
        let runs = graddrop_gradients(model, directed, &target, &patterns);
        // Attention reads rotated queries and keys: patch those (the pairs are aligned).
        let (read_q, read_k) = match rotary {
            true => (BlockSite::RotQ, BlockSite::RotK),
            false => (BlockSite::Q, BlockSite::K),
        };
        let read: Vec<HookPoint> = (0..n_layers)
            .flat_map(|l| [read_q, read_k].map(|s| HookPoint::block(l, s)))
            .collect();
        let (_, source) = model
            .run_with_cache(&[directed.source_tokens.to_vec()], CacheFilter::only(read))
            .unwrap();
        let mut checked = 0;
        for (kind, cell, got) in atp_star(model, directed, &QK_KINDS) {
            let site = match kind.site() {
                BlockSite::Q => read_q,
                _ => read_k,
            };
            let source = source.get(HookPoint::block(cell.layer, site)).unwrap();
            let pattern_point = HookPoint::block(cell.layer, BlockSite::Pattern);
            let patch = qk_patch(kind, &cell, site, source);
            let mut hooks = Hooks::new(
                std::slice::from_ref(&patch),
                CacheFilter::only([pattern_point]),
            );
            let tokens = model.tokens_tensor(&target_rows).unwrap();
            model
                .forward(&tokens, &mut hooks, Readout::LastPosition)
                .unwrap();
            let patched = hooks.cache().get(pattern_point).unwrap();
            let change = (patched - target.get(pattern_point).unwrap()).unwrap(); // [1, head, q, k]
            let terms: Vec<f64> = runs
                .iter()
                .map(|g| {
                    let product = (&change * g.get(pattern_point).unwrap()).unwrap();
                    product.sum_all().unwrap().to_scalar::<f32>().unwrap() as f64
                })
                .collect();
            let what = format!("{dir} {} {kind} {cell:?}", directed.direction);
            assert_close(&what, got, graddrop(&terms, kind, n_layers));
            checked += 1;
        }
        assert!(checked > 20, "{checked}");
    });
}

#[test]
fn graddrop_matches_runs_with_frozen_layer_writes() {
    for dir in ["tiny-gpt2", "tiny-llama", "tiny-gemma2"] {
        check_graddrop(dir);
    }
}

#[test]
fn qk_fix_matches_patterns_of_patched_runs() {
    for dir in ["tiny-gpt2", "tiny-llama", "tiny-gemma2"] {
        check_qk_fix(dir);
    }
}
