//! The query, key and value inputs of each head (all positions and by position; key
//! and value heads under grouped-query attention) and single attention-pattern entries
//! against TransformerLens 2.15 (`golden_extra.json`), within 1e-4: both fixtures, both
//! pairs, both directions, on the fast and the naive path. The pattern-entry grid
//! exists for denoising only; noising is checked fast against naive.

use crate::golden;

use actpatch_patching::{fast, naive, DirectedPair, Direction, MetricSet, PatchKind};
use golden::{family, Golden};

const NEW_KINDS: [PatchKind; 7] = [
    PatchKind::HeadQ,
    PatchKind::HeadQByPos,
    PatchKind::HeadK,
    PatchKind::HeadKByPos,
    PatchKind::HeadV,
    PatchKind::HeadVByPos,
    PatchKind::HeadPatternByDestSrc,
];

fn check(fixture: &'static str) {
    let golden = Golden::load(fixture);
    let model = &golden.model;
    let mut checked = 0;
    for (name, pair, baselines) in &golden.pairs {
        for direction in Direction::BOTH {
            for kind in NEW_KINDS {
                let directed =
                    DirectedPair::new(model, pair, baselines, direction, &[kind], MetricSet::All)
                        .unwrap();
                let cells = directed.cells(model, kind, None).unwrap();
                let target = fast::target_run(model, &directed, &[kind]).unwrap();
                let fast =
                    fast::sweep(model, &directed, &target, kind, &cells, 16, &mut |_| {}).unwrap();
                let naive = naive::sweep(model, &directed, kind, &cells, 16, &mut |_| {}).unwrap();
                let heads = kind.n_heads(model.dims());
                if kind.site() != actpatch_hooks::BlockSite::Q
                    && kind != PatchKind::HeadPatternByDestSrc
                {
                    assert_eq!(heads, model.dims().n_kv_heads, "{kind}: key/value heads");
                }
                for ((f, n), cell) in fast.iter().zip(&naive).zip(&cells) {
                    let (f, n) = (
                        f.metrics.normalized_logit_diff,
                        n.metrics.normalized_logit_diff,
                    );
                    let label = format!("{fixture} {name} {direction} {kind} {cell:?}");
                    assert!((f - n).abs() < 1e-4, "{label}: fast {f} vs naive {n}");
                    if let Some(want) = golden.value(name, &family("exact", direction), kind, cell)
                    {
                        assert!((f - want).abs() < 1e-4, "{label}: {f} vs golden {want}");
                        checked += 1;
                    } else {
                        assert!(
                            kind == PatchKind::HeadPatternByDestSrc
                                && direction == Direction::Noising,
                            "{label}: no golden value"
                        );
                    }
                }
            }
        }
    }
    assert!(checked > 0);
}

#[test]
fn gpt2_qkv_and_pattern_entries_match_golden() {
    check("tiny-gpt2");
}

#[test]
fn llama_qkv_and_pattern_entries_match_golden() {
    check("tiny-llama");
}
