//! The edge mode's two ways to the gradient at every head's q, k and v input agree, on
//! every family with an edge graph: autograd through a copy of the stream per head
//! (`ReceiverInputs::q/k/v` as variables: each head's own norm and projection in the
//! graph), and probes after the projections turned into input gradients by the
//! projection's transpose and the norm's backward (`attention_input_gradients`), which
//! is what edge attribution runs.

use std::path::PathBuf;

use actpatch_hooks::{CacheFilter, HookPoint, Hooks};
use actpatch_model::{EdgeInputs, HookedTransformer, Readout, ReceiverInputs};
use candle_core::{DType, Tensor, Var};

/// A fixture of every family with an edge graph (Llama twice: grouped and Qwen3's norms).
const EDGE_FAMILIES: [&str; 5] = [
    "tiny-gpt2",
    "tiny-llama",
    "tiny-qwen3",
    "tiny-pythia",
    "tiny-gemma2",
];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

/// The gradients at every layer's q, k, v inputs, `[head, pos, d_model]` each, the
/// first way (`split`) or the second.
fn input_gradients(
    model: &HookedTransformer,
    tokens: &[u32],
    answers: [u32; 2],
    split: bool,
) -> Vec<Tensor> {
    let dims = model.dims().clone();
    let pos = tokens.len();
    let device = model.device();
    let zeros = |shape: &[usize]| Var::zeros(shape, DType::F32, device).unwrap();
    let d_in = if split { dims.d_model } else { dims.d_head };
    let vars: Vec<[Var; 3]> = (0..dims.n_layers)
        .map(|_| [0, 1, 2].map(|_| zeros(&[1, pos, dims.n_heads, d_in])))
        .collect();
    let mut inputs = EdgeInputs::none(dims.n_layers);
    for (layer, v) in vars.iter().enumerate() {
        let t = |i: usize| v[i].as_tensor().clone();
        inputs.layers[layer] = Some(match split {
            true => ReceiverInputs {
                q: Some(t(0)),
                k: Some(t(1)),
                v: Some(t(2)),
                ..ReceiverInputs::default()
            },
            false => ReceiverInputs {
                projected: Some([t(0), t(1), t(2)]),
                ..ReceiverInputs::default()
            },
        });
    }
    let points: Vec<HookPoint> = (0..dims.n_layers).map(HookPoint::resid_pre).collect();
    let mut hooks = Hooks::caching(CacheFilter::only(points.clone()));
    let token_tensor = model.tokens_tensor(&[tokens.to_vec()]).unwrap();
    let logits = model
        .forward_edges(
            &token_tensor,
            &mut hooks,
            Readout::LastPositionColumns(&answers),
            &inputs,
            true,
        )
        .unwrap(); // [1, 2]
    let loss = (logits.narrow(1, 0, 1).unwrap() - logits.narrow(1, 1, 1).unwrap())
        .unwrap()
        .sum_all()
        .unwrap();
    let store = loss.backward().unwrap();
    let cache = hooks.into_cache();
    let mut out = Vec::new();
    for (layer, v) in vars.iter().enumerate() {
        let grads: Vec<Tensor> = v
            .iter()
            .map(|var| store.get(var.as_tensor()).unwrap().clone())
            .collect();
        if split {
            out.extend(
                grads
                    .iter()
                    .map(|g| g.squeeze(0).unwrap().transpose(0, 1).unwrap()),
            ); // [head, pos, d_model]
        } else {
            let resid_pre = cache.get(points[layer]).unwrap().detach();
            let [q, k, vv] = model
                .attention_input_gradients(layer, &resid_pre, [&grads[0], &grads[1], &grads[2]])
                .unwrap();
            out.extend([q, k, vv].map(|g| g.squeeze(0).unwrap())); // [head, pos, d_model]
        }
    }
    out
}

#[test]
fn projection_probes_give_each_heads_input_gradient() {
    for name in EDGE_FAMILIES {
        let model = HookedTransformer::from_dir(fixture(name)).unwrap();
        let tokens = model.to_tokens("The capital of France is", true).unwrap();
        let answers = [
            model.to_single_token(" Paris").unwrap(),
            model.to_single_token(" Rome").unwrap(),
        ];
        let split = input_gradients(&model, &tokens, answers, true);
        let probes = input_gradients(&model, &tokens, answers, false);
        let mut largest = 0f32;
        for (a, b) in split.iter().zip(&probes) {
            largest = largest.max(max_abs(&(a - b).unwrap()));
            let size = max_abs(a);
            assert!(size > 0.0, "{name}: a gradient of zeros proves nothing");
        }
        assert!(
            largest < 1e-4,
            "{name}: the two gradients differ by {largest}"
        );
    }
}

/// A head's output into the stream (`head_results`) adds up, over the heads, to the
/// attention output (neither fixture has an output bias): the plain sum of the heads'
/// results on Llama, and on Gemma 2, whose attention output passes a norm, each head's
/// share at the norm's scale of the run.
#[test]
fn head_outputs_add_up_to_the_attention_output() {
    use actpatch_hooks::BlockSite;
    for name in ["tiny-llama", "tiny-gemma2"] {
        let model = HookedTransformer::from_dir(fixture(name)).unwrap();
        let tokens = model.to_tokens("The capital of France is", true).unwrap();
        let points = [
            HookPoint::block(1, BlockSite::Z),
            HookPoint::block(1, BlockSite::AttnOut),
        ];
        let (_, cache) = model
            .run_with_cache(&[tokens], CacheFilter::only(points))
            .unwrap();
        let shares = model
            .head_results(1, cache.get(points[0]).unwrap())
            .unwrap(); // [1, pos, head, d_model]
        let sum = shares.sum(2).unwrap();
        let attn_out = cache.get(points[1]).unwrap();
        let gap = max_abs(&(sum - attn_out).unwrap());
        assert!(gap < 1e-5, "{name}: {gap}");
    }
}

/// An edge pass that reads next-token logits runs its last block at the last position
/// only (the earlier positions give their keys and values): the same logits as the
/// last position of the whole pass, on every family with an edge graph, with
/// receiver deltas in the first block and at the logits.
#[test]
fn last_position_logits_equal_the_whole_pass() {
    for name in EDGE_FAMILIES {
        let model = HookedTransformer::from_dir(fixture(name)).unwrap();
        let tokens = model.to_tokens("The capital of France is", true).unwrap();
        let (pos, d_model) = (tokens.len(), model.dims().d_model);
        let wave = |phase: f32| {
            let values: Vec<f32> = (0..pos * d_model)
                .map(|i| (i as f32 * 0.37 + phase).sin() * 0.5)
                .collect();
            Tensor::from_vec(values, (1, pos, d_model), model.device()).unwrap()
        };
        let mut inputs = EdgeInputs::none(model.dims().n_layers);
        inputs.layers[0] = Some(ReceiverInputs {
            mlp: Some(wave(0.0)),
            ..ReceiverInputs::default()
        });
        inputs.logits = Some(wave(1.0));
        let rows = model.tokens_tensor(&[tokens]).unwrap();
        let run = |readout| {
            (model.forward_edges(&rows, &mut Hooks::none(), readout, &inputs, false)).unwrap()
        };
        let whole = run(Readout::AllPositions).narrow(1, pos - 1, 1).unwrap(); // [1, 1, d_vocab]
        let last = run(Readout::LastPosition).unsqueeze(1).unwrap(); // [1, 1, d_vocab]
        let gap = max_abs(&(&whole - &last).unwrap());
        assert!(
            gap < 1e-4,
            "{name}: the last position's logits differ by {gap}"
        );
        let plain = (model.forward(&rows, &mut Hooks::none(), Readout::LastPosition))
            .unwrap()
            .unsqueeze(1)
            .unwrap();
        let moved = max_abs(&(&plain - &last).unwrap());
        assert!(
            moved > 1e-3,
            "{name}: the deltas moved the logits by {moved} only"
        );
    }
}

/// max |x| over every element.
fn max_abs(x: &Tensor) -> f32 {
    x.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}
