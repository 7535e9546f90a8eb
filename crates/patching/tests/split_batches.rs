//! A sweep split along its batches (as a sharded run splits a pair between processes)
//! gives the numbers of the whole sweep bit for bit, on both execution paths.

use std::path::PathBuf;

use actpatch_model::HookedTransformer;
use actpatch_patching::{
    Align, CellResult, Direction, Execution, MetricSet, Pair, PairSweeper, PatchKind,
};

fn model() -> HookedTransformer {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-gpt2");
    HookedTransformer::from_dir(dir).unwrap()
}

#[test]
fn batches_swept_in_three_parts_equal_the_whole_sweep() {
    let model = model();
    let pair = Pair::from_prompts(
        &model,
        "The Colosseum is in",
        "The Eiffel Tower is in",
        [" Rome", " Paris"],
        Align::Start,
    )
    .unwrap();
    let baselines = pair.baselines(&model).unwrap();
    let kinds = [PatchKind::ResidPre, PatchKind::HeadOut, PatchKind::AttnOut];
    for execution in [Execution::Fast, Execution::Naive] {
        for direction in Direction::BOTH {
            let sweeper = PairSweeper::new(
                &model,
                &pair,
                &baselines,
                direction,
                &kinds,
                MetricSet::All,
                execution,
            )
            .unwrap();
            for kind in kinds {
                let cells = sweeper.cells(kind, None).unwrap();
                let max_rows = 2;
                let whole = sweeper.sweep(kind, &cells, max_rows, &mut |_| {}).unwrap();
                let batches = sweeper.batches(kind, &cells, max_rows).unwrap();
                let label = format!("{execution:?} {direction} {kind}");
                assert!(batches.len() >= 3, "{label}: {} batches", batches.len());
                assert_eq!(
                    batches.iter().map(|b| b.cells).sum::<usize>(),
                    cells.len(),
                    "{label}"
                );
                let mut parts: Vec<CellResult> = Vec::new();
                for part in 0..3 {
                    let keep = |batch: usize| batch % 3 == part;
                    let mut done = 0;
                    let swept = sweeper
                        .sweep_batches(kind, &cells, (max_rows, &keep), &mut |n| done += n)
                        .unwrap();
                    assert_eq!(
                        swept.len(),
                        done,
                        "{label}: progress counts the part's cells"
                    );
                    parts.extend(swept);
                }
                // Back in table order, every cell once, with the same bits.
                parts.sort_by_key(|r| r.index);
                assert_eq!(parts.len(), whole.len(), "{label}");
                for (part, whole) in parts.iter().zip(&whole) {
                    assert_eq!(part.index, whole.index, "{label}");
                    let bits = |r: &CellResult| {
                        let m = r.metrics;
                        (m.logit_diff.to_bits(), m.normalized_logit_diff.to_bits())
                    };
                    assert_eq!(bits(part), bits(whole), "{label} {:?}", part.index);
                    assert_eq!(part.metrics, whole.metrics, "{label} {:?}", part.index);
                }
            }
        }
    }
}
