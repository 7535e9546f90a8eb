//! Exact edge patching against a naive implementation built from ordinary hooks only:
//! one edge at a time, each receiver's own input emulated by two passes (the block
//! run on the stream plus the sender's delta with its other inputs held clean, then
//! the receiver's output patched into a clean pass). Sender outputs come from hooks
//! too (a head's output is `attn_out` with only that head's `z` left, minus `attn_out`
//! with none). Every ablation, both fixtures, within 1e-4.

use std::path::PathBuf;

use crate::common;

use actpatch_circuits::{exact_edges, Ablation, EdgePair, Graph, Receiver, Sender};
use actpatch_hooks::{BlockSite, CacheFilter, HookPoint, Hooks, Patch, Selection};
use actpatch_model::{Architecture, HookedTransformer, Readout};
use candle_core::Tensor;
use common::{fixture, pair_and_swap};

fn at(layer: usize, site: BlockSite) -> HookPoint {
    HookPoint::block(layer, site)
}

/// The logit difference of `tokens` with `patches` applied, and the activations of `cache`.
fn run(
    model: &HookedTransformer,
    tokens: &[u32],
    answers: [u32; 2],
    patches: &[Patch],
    cache: &[HookPoint],
) -> (f32, actpatch_hooks::ActivationCache) {
    let tokens = model.tokens_tensor(&[tokens.to_vec()]).unwrap();
    let mut hooks = Hooks::new(patches, CacheFilter::only(cache.to_vec()));
    let logits = model
        .forward(&tokens, &mut hooks, Readout::LastPosition)
        .unwrap(); // [1, d_vocab]
    let row: Vec<f32> = logits.squeeze(0).unwrap().to_vec1().unwrap();
    (
        row[answers[0] as usize] - row[answers[1] as usize],
        hooks.into_cache(),
    )
}

/// The outputs `[pos, d_model]` of the senders `wanted` (all when `None`) on `tokens`,
/// from hooks alone (the others: zeros, never read).
fn sender_outputs(
    model: &HookedTransformer,
    graph: &Graph,
    tokens: &[u32],
    answers: [u32; 2],
    wanted: Option<&[usize]>,
) -> Vec<Tensor> {
    let mut points = vec![HookPoint::Embed];
    for layer in 0..graph.n_layers {
        points.extend([at(layer, BlockSite::Z), at(layer, BlockSite::MlpOut)]);
    }
    let (_, cache) = run(model, tokens, answers, &[], &points);
    let embed = cache.get(HookPoint::Embed).unwrap().squeeze(0).unwrap();
    graph
        .senders
        .iter()
        .enumerate()
        .map(|(i, sender)| match *sender {
            _ if wanted.is_some_and(|w| !w.contains(&i)) => embed.zeros_like().unwrap(),
            Sender::Input => cache.get(HookPoint::Embed).unwrap().squeeze(0).unwrap(),
            Sender::Mlp { layer } => cache
                .get(at(layer, BlockSite::MlpOut))
                .unwrap()
                .squeeze(0)
                .unwrap(),
            // Gemma 2's heads pass a norm together: a head's output is defined as its
            // share at the run's norm scale (the model's `head_results`, whose sum is
            // checked in the model's tests), not a difference of two runs.
            Sender::Head { layer, head } if model.dims().arch == Architecture::Gemma2 => {
                let z = cache.get(at(layer, BlockSite::Z)).unwrap();
                let shares = model.head_results(layer, z).unwrap(); // [1, pos, head, d_model]
                shares
                    .squeeze(0)
                    .unwrap()
                    .narrow(1, head, 1)
                    .unwrap()
                    .squeeze(1)
                    .unwrap()
            }
            Sender::Head { layer, head } => {
                let others: Vec<usize> = (0..graph.n_heads).filter(|h| *h != head).collect();
                let only = Patch::zero(at(layer, BlockSite::Z)).heads(Selection::Only(others));
                let none = Patch::zero(at(layer, BlockSite::Z));
                let out = |patch: Patch| {
                    let (_, c) = run(
                        model,
                        tokens,
                        answers,
                        &[patch],
                        &[at(layer, BlockSite::AttnOut)],
                    );
                    c.get(at(layer, BlockSite::AttnOut))
                        .unwrap()
                        .squeeze(0)
                        .unwrap()
                };
                (out(only) - out(none)).unwrap()
            }
        })
        .collect()
}

/// The clean run's logit difference with edge `edge` carrying `delta` `[pos, d_model]`.
fn naive_edge(
    model: &HookedTransformer,
    graph: &Graph,
    pair: &EdgePair,
    edge: usize,
    delta: &Tensor,
) -> f32 {
    let receiver = graph.receivers[graph.edges[edge].receiver];
    let (tokens, answers) = (&pair.clean, pair.answers);
    let plus = |point: HookPoint| -> Patch {
        let (_, cache) = run(model, tokens, answers, &[], &[point]);
        let value = (cache.get(point).unwrap() + delta.unsqueeze(0).unwrap()).unwrap();
        Patch::replace(point, value)
    };
    match receiver {
        Receiver::Logits => {
            run(
                model,
                tokens,
                answers,
                &[plus(at(graph.n_layers - 1, BlockSite::ResidPost))],
                &[],
            )
            .0
        }
        Receiver::Mlp { layer } => {
            let out = at(layer, BlockSite::MlpOut);
            // The MLP reads resid_mid, or resid_pre in a parallel block (GPT-NeoX).
            let read = match graph.parallel {
                true => at(layer, BlockSite::ResidPre),
                false => at(layer, BlockSite::ResidMid),
            };
            let (_, stage) = run(model, tokens, answers, &[plus(read)], &[out]);
            let patch = Patch::replace(out, stage.get(out).unwrap().clone());
            run(model, tokens, answers, &[patch], &[]).0
        }
        Receiver::Head { layer, head, input } => {
            let sites = [BlockSite::Q, BlockSite::K, BlockSite::V];
            let (_, clean) = run(model, tokens, answers, &[], &sites.map(|s| at(layer, s)));
            let mut patches = vec![plus(at(layer, BlockSite::ResidPre))];
            for (i, site) in sites.iter().enumerate() {
                if i != input as usize {
                    patches.push(Patch::replace(
                        at(layer, *site),
                        clean.get(at(layer, *site)).unwrap().clone(),
                    ));
                }
            }
            let z = at(layer, BlockSite::Z);
            let (_, stage) = run(model, tokens, answers, &patches, &[z]);
            let patch =
                Patch::replace(z, stage.get(z).unwrap().clone()).heads(Selection::Only(vec![head]));
            run(model, tokens, answers, &[patch], &[]).0
        }
    }
}

/// Exact against the naive implementation on `edges` of `model`, every ablation.
fn check_edges(
    model: &HookedTransformer,
    prompts: [&str; 2],
    answers: [&str; 2],
    edges: Option<&[usize]>,
) {
    let graph = Graph::of_model(model);
    let pairs = pair_and_swap(model, prompts, answers);
    let answers = pairs[0].answers;
    let all: Vec<usize> = (0..graph.edges.len()).collect();
    let edges = edges.unwrap_or(&all);
    let senders: Vec<usize> = edges.iter().map(|e| graph.edges[*e].sender).collect();
    let outputs: Vec<Vec<Tensor>> = pairs
        .iter()
        .map(|p| sender_outputs(model, &graph, &p.corrupted, p.answers, Some(&senders)))
        .collect();
    let clean_outputs = sender_outputs(model, &graph, &pairs[0].clean, answers, Some(&senders));
    let ld_clean = run(model, &pairs[0].clean, answers, &[], &[]).0;
    for ablation in [Ablation::Patching, Ablation::Zero, Ablation::Mean] {
        let fast = exact_edges(model, &graph, &pairs, ablation, edges).unwrap();
        for &edge in edges {
            let e = &graph.edges[edge];
            let clean_out = &clean_outputs[e.sender];
            let ablated = match ablation {
                Ablation::Patching => outputs[0][e.sender].clone(),
                Ablation::Zero => clean_out.zeros_like().unwrap(),
                Ablation::Mean => {
                    ((&outputs[0][e.sender] + &outputs[1][e.sender]).unwrap() * 0.5).unwrap()
                }
            };
            let delta = (ablated - clean_out).unwrap();
            let naive = naive_edge(model, &graph, &pairs[0], edge, &delta) - ld_clean;
            let got = fast[0].scores[edge];
            assert!(
                (got - naive).abs() < 1e-4,
                "{ablation:?} {}: {got} vs naive {naive}",
                graph.edge_name(e)
            );
        }
    }
}

#[test]
fn exact_equals_one_edge_at_a_time_with_plain_hooks() {
    for name in ["tiny-gpt2", "tiny-llama"] {
        let model = HookedTransformer::from_dir(fixture(name)).unwrap();
        check_edges(
            &model,
            ["The Colosseum is in", "The Eiffel Tower is in"],
            [" Rome", " Paris"],
            None,
        );
    }
    // Gemma 2: norms after attention and MLP, soft-capping, sliding windows, GQA.
    let model = HookedTransformer::from_dir(fixture("tiny-gemma2")).unwrap();
    check_edges(
        &model,
        ["The capital of France is", "The capital of Italy is"],
        [" Paris", " Rome"],
        None,
    );
    // GPT-NeoX / Pythia: parallel blocks (the library's `parallel_attn_mlp` graph),
    // fused per-head q/k/v, partial rotary.
    let model = HookedTransformer::from_dir(fixture("tiny-pythia")).unwrap();
    assert!(model.parallel_attn_mlp());
    check_edges(
        &model,
        ["The capital of France is", "The capital of Italy is"],
        [" Paris", " Rome"],
        None,
    );
}

/// The same on SmolLM2-135M (30 layers, grouped-query attention: 9 query heads share 3
/// key/value heads), on edges into every kind of receiver across its depth. Needs
/// `just fetch-smollm2` (`ACTPATCH_SMOLLM2_GGUF` points elsewhere); `just test-real`.
#[test]
#[ignore]
fn exact_equals_plain_hooks_on_smollm2() {
    let path = std::env::var_os("ACTPATCH_SMOLLM2_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    let model = HookedTransformer::from_dir(&path).unwrap();
    let graph = Graph::of_model(&model);
    let name_of = |edge: &str| {
        graph
            .edges
            .iter()
            .position(|e| graph.edge_name(e) == edge)
            .unwrap()
    };
    let edges: Vec<usize> = [
        "input->a0.h0<q>",
        "input->a3.h4<k>",
        "a2.h1->a14.h7<v>",
        "m5->a20.h2<q>",
        "a19.h8->a23.h3<k>",
        "a12.h5->m12",
        "a28.h0->a29.h8<v>",
        "input->logits",
        "a23.h3->logits",
        "m29->logits",
    ]
    .iter()
    .map(|e| name_of(e))
    .collect();
    check_edges(
        &model,
        ["The capital of France is", "The capital of Italy is"],
        [" Paris", " Rome"],
        Some(&edges),
    );
}
