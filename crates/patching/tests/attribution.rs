//! Attribution patching against TransformerLens 2.15's gradients (`atp_denoising` /
//! `atp_noising` of `golden_extra.json`) within 1e-4, every kind of the file, both
//! fixtures, both directions; every method gives the target run's own value when the
//! clean and corrupted prompts are the same.

use crate::golden;

use actpatch_patching::{
    attribute, attribute_all, Align, DirectedPair, Direction, Method, MetricSet, Pair, PatchKind,
};
use golden::{family, Golden};

/// Every kind with an AtP grid in `golden_extra.json`.
const KINDS: [PatchKind; 14] = [
    PatchKind::ResidPre,
    PatchKind::ResidMid,
    PatchKind::ResidPost,
    PatchKind::AttnOut,
    PatchKind::MlpOut,
    PatchKind::HeadOut,
    PatchKind::HeadOutByPos,
    PatchKind::HeadPattern,
    PatchKind::HeadQ,
    PatchKind::HeadQByPos,
    PatchKind::HeadK,
    PatchKind::HeadKByPos,
    PatchKind::HeadV,
    PatchKind::HeadVByPos,
];

fn check_atp(fixture: &'static str) {
    let golden = Golden::load(fixture);
    let model = &golden.model;
    let mut checked = 0;
    for (name, pair, baselines) in &golden.pairs {
        for direction in Direction::BOTH {
            let directed =
                DirectedPair::new(model, pair, baselines, direction, &KINDS, MetricSet::All)
                    .unwrap();
            let kinds: Vec<_> = KINDS
                .iter()
                .map(|k| (*k, directed.cells(model, *k, None).unwrap()))
                .collect();
            let estimated = attribute(model, &directed, &kinds, Method::Atp, 10).unwrap();
            for cell in &estimated.results {
                let want = golden
                    .value(name, &family("atp", direction), cell.kind, &cell.index)
                    .unwrap();
                let got = cell.metrics.normalized_logit_diff;
                assert!(
                    (got - want).abs() < 1e-4,
                    "{fixture} {name} {direction} {} {:?}: {got} vs golden {want}",
                    cell.kind,
                    cell.index
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 500, "{checked}");
}

#[test]
fn gpt2_atp_matches_transformer_lens() {
    check_atp("tiny-gpt2");
}

#[test]
fn llama_atp_matches_transformer_lens() {
    check_atp("tiny-llama");
}

#[test]
fn identical_prompts_give_zero_estimated_effect() {
    for fixture in ["tiny-gpt2", "tiny-llama"] {
        let golden = Golden::load(fixture);
        let model = &golden.model;
        let prompt = "The Colosseum is in";
        let pair =
            Pair::from_prompts(model, prompt, prompt, [" Rome", " Paris"], Align::Strict).unwrap();
        // Identical prompts have no gap to normalize by: borrow a golden pair's
        // baselines; the estimate itself must be exactly zero.
        let baselines = &golden.pairs[0].2;
        // every node kind (path kinds need receivers and have no approximation)
        let all: Vec<PatchKind> = (PatchKind::ALL.into_iter())
            .filter(|k| !actpatch_patching::path::is_path(*k))
            .collect();
        for direction in Direction::BOTH {
            let directed =
                DirectedPair::new(model, &pair, baselines, direction, &all, MetricSet::All)
                    .unwrap();
            let kinds: Vec<_> = all
                .iter()
                .map(|k| (*k, directed.cells(model, *k, None).unwrap()))
                .collect();
            let target = match direction {
                Direction::Denoising => baselines.corrupted_logit_diff,
                Direction::Noising => baselines.clean_logit_diff,
            };
            for method in [Method::Atp, Method::AtpStar, Method::Ig] {
                let estimated = attribute(model, &directed, &kinds, method, 4).unwrap();
                for cell in &estimated.results {
                    assert_eq!(
                        cell.metrics.logit_diff, target,
                        "{fixture} {direction} {method} {} {:?}",
                        cell.kind, cell.index
                    );
                }
            }
        }
    }
}

/// Both directions estimated at once (their prompts share batched passes) give each
/// direction's own estimates: on an aligned golden pair and on a pair of different
/// lengths (whose prompts run in separate passes), every method, every kind.
#[test]
fn both_directions_at_once_equal_each_direction_alone() {
    let golden = Golden::load("tiny-llama");
    let model = &golden.model;
    let misaligned = Pair::from_prompts(
        model,
        "The Colosseum is in",
        "The old Eiffel Tower is in",
        [" Rome", " Paris"],
        Align::Start,
    )
    .unwrap();
    let misaligned_baselines = misaligned.baselines(model).unwrap();
    let (_, pair, baselines) = &golden.pairs[0];
    for (pair, baselines) in [(pair, baselines), (&misaligned, &misaligned_baselines)] {
        let directed: Vec<DirectedPair> = Direction::BOTH
            .iter()
            .map(|d| DirectedPair::new(model, pair, baselines, *d, &[], MetricSet::All).unwrap())
            .collect();
        let usable: Vec<PatchKind> = KINDS
            .into_iter()
            .filter(|k| !k.needs_equal_lengths() || directed[0].map.is_identity())
            .collect();
        // Each direction patches its own target prompt: its own cells.
        let cells: Vec<Vec<_>> = directed
            .iter()
            .map(|d| {
                (usable.iter())
                    .map(|k| (*k, d.cells(model, *k, None).unwrap()))
                    .collect()
            })
            .collect();
        for method in [Method::Atp, Method::AtpStar, Method::Ig] {
            let requests = [(&directed[0], &cells[0][..]), (&directed[1], &cells[1][..])];
            let both = attribute_all(model, &requests, method, 3).unwrap();
            for (one, (directed, kinds)) in both.iter().zip(requests) {
                let alone = attribute(model, directed, kinds, method, 3).unwrap();
                assert_eq!(one.results.len(), alone.results.len());
                for (a, b) in one.results.iter().zip(&alone.results) {
                    assert_eq!(
                        (a.kind, a.index, a.direction),
                        (b.kind, b.index, b.direction)
                    );
                    let (x, y) = (a.metrics.logit_diff, b.metrics.logit_diff);
                    assert!(
                        (x - y).abs() <= 1e-4 * y.abs().max(1.0),
                        "{method} {} {} {:?}: {x} together, {y} alone",
                        a.direction,
                        a.kind,
                        a.index
                    );
                }
            }
        }
    }
}
