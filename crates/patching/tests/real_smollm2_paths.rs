//! Fast path patching equals the naive passes on SmolLM2-135M (30 layers, grouped-query
//! attention) on one IOI pair, both directions: what the 2-layer fixtures cannot show
//! (frozen passes through many layers, receivers in two layers, receivers at the final
//! position only, senders at one position). Ignored by default (needs the GGUF, `just
//! fetch-smollm2`; run by `just test-real`): the model is `ACTPATCH_SMOLLM2_GGUF`, by
//! default `<repo>/models/SmolLM2-135M-Instruct.Q4_1.gguf`.

use std::path::PathBuf;

use actpatch_model::HookedTransformer;
use actpatch_patching::path::{self, ReceiverHead, ReceiverInput, Receivers};
use actpatch_patching::{Align, CellIndex, DirectedPair, Direction, MetricSet, Pair, PatchKind};

fn gguf_path() -> PathBuf {
    std::env::var_os("ACTPATCH_SMOLLM2_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf")
        })
}

#[test]
#[ignore = "needs models/SmolLM2-135M-Instruct.Q4_1.gguf (just fetch-smollm2)"]
fn fast_path_patching_equals_naive_on_smollm2() {
    let model = HookedTransformer::from_dir(gguf_path()).unwrap();
    let pair = Pair::from_prompts(
        &model,
        "Then, Rachel and Nancy went to the station. Nancy gave a drink to",
        "Then, Amy and Tom went to the station. Alice gave a drink to",
        [" Rachel", " Nancy"],
        Align::Strict,
    )
    .unwrap();
    let baselines = pair.baselines(&model).unwrap();
    let n_pos = pair.clean_tokens.len();
    let heads = |list: &[(usize, usize)]| {
        (list.iter())
            .map(|(layer, head)| ReceiverHead {
                layer: *layer,
                head: *head,
            })
            .collect()
    };
    let sets = [
        Receivers::Logits,
        Receivers::Heads {
            input: ReceiverInput::Q,
            heads: heads(&[(20, 3), (24, 0), (24, 8)]),
            positions: Some(vec![n_pos - 1]),
        },
        Receivers::Heads {
            input: ReceiverInput::K,
            heads: heads(&[(12, 1)]),
            positions: None,
        },
    ];
    for direction in Direction::BOTH {
        let directed = DirectedPair::new(
            &model,
            &pair,
            &baselines,
            direction,
            &[PatchKind::Path],
            MetricSet::All,
        )
        .unwrap();
        let target = path::fast::target_run(&model, &directed).unwrap();
        for receivers in &sets {
            for kind in [PatchKind::Path, PatchKind::PathByPos] {
                let all = receivers.senders(kind, model.dims(), &directed.positions(None));
                // A spread of senders, to keep the naive passes short.
                let step = if kind == PatchKind::Path { 11 } else { 131 };
                let senders: Vec<CellIndex> = all.into_iter().step_by(step).collect();
                let what = (kind, receivers);
                let fast =
                    path::fast::sweep(&model, &directed, &target, what, &senders, 64, &mut |_| {})
                        .unwrap();
                let naive =
                    path::naive::sweep(&model, &directed, what, &senders, 16, &mut |_| {}).unwrap();
                for (f, n) in fast.iter().zip(&naive) {
                    assert_eq!(f.index, n.index);
                    let gap =
                        (f.metrics.normalized_logit_diff - n.metrics.normalized_logit_diff).abs();
                    assert!(
                        gap < 1e-4,
                        "{direction} {kind} {receivers} sender {:?}: fast {} naive {}",
                        f.index,
                        f.metrics.normalized_logit_diff,
                        n.metrics.normalized_logit_diff
                    );
                }
            }
        }
    }
}
