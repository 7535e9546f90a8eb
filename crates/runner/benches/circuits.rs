//! `just bench-circuits`: edge attribution on a random-weight GPT-2 with gpt2-small's
//! shapes (12 layers, 12 heads, d_model 768: 32,491 edges), 16 IOI-style pairs of 15
//! tokens with BOS (ABC corruption), the logit difference of the indirect object.
//! It times in one run:
//! (a) EAP over every edge;
//! (b) EAP-IG-inputs with 5 steps over every edge;
//! (c) exact edge patching of the top 500 edges of (b);
//! (d) EAP on one 1,024-token prompt, with the peak resident memory of that phase;
//! (e) a faithfulness curve of (b)'s circuits at MIB's 10 sizes over the 16 pairs
//!     (patching), with its CPR and CMD; (e0) the same under zero ablation, which
//!     runs every position (patching runs a pair from where its prompts differ).
//! It fails when exact and (b) are computed on different edges.
//!
//! `-- --quick` skips (d); `-- --only a` (or b, c, d, e) times one part (c and e need b);
//! `-- --device cuda:0` runs on that device (a build with `--features cuda`).

mod common;

use std::time::Instant;

use actpatch_circuits::{
    attribute, exact_edges, faithfulness_curve, mean_scores, Ablation, EdgePair, Graph, Method,
    Select, Size, MIB_FRACTIONS,
};
use actpatch_model::HookedTransformer;
use common::{
    load_random_gpt2, matmul_peak, peak_mib, reset_peak, BenchArgs, BoxError, D_MLP, D_MODEL,
};

const NAMES: [&str; 8] = [
    " Mary", " John", " Tom", " James", " Anna", " Paul", " Sarah", " David",
];

/// 16 pairs "When A and B went to the store, B gave a drink to" → " A" vs " B", the
/// corrupted prompt's second B replaced by a third name C.
fn ioi_pairs(model: &HookedTransformer) -> Result<Vec<EdgePair>, BoxError> {
    let mut pairs = Vec::new();
    for i in 0..16 {
        let (a, b, c) = (NAMES[i % 8], NAMES[(i + 1 + i / 8) % 8], NAMES[(i + 3) % 8]);
        let clean = format!("When{a} and{b} went to the store,{b} gave a drink to");
        let corrupted = format!("When{a} and{b} went to the store,{c} gave a drink to");
        let pair = EdgePair {
            clean: model.to_tokens(&clean, true)?,
            corrupted: model.to_tokens(&corrupted, true)?,
            answers: [model.to_single_token(a)?, model.to_single_token(b)?],
        };
        if pair.clean.len() != 15 || pair.corrupted.len() != 15 {
            return Err(format!("{clean:?} is {} tokens, not 15", pair.clean.len()).into());
        }
        pairs.push(pair);
    }
    Ok(pairs)
}

fn main() -> Result<(), BoxError> {
    actpatch_model::keep_large_buffers_in_heap(); // as the actpatch binary
    let args: Vec<String> = std::env::args().collect();
    let parsed = BenchArgs::parse(&args)?;
    if let Some(dir) = &parsed.write_model {
        return common::random_gpt2(dir);
    }
    let (model, dir) = load_random_gpt2(&args, parsed.device)?;
    println!(
        "device: {}; CPU threads: {}",
        parsed.device,
        candle_core::utils::get_num_threads()
    );
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1));
    let part = |p: &str| only.is_none_or(|o| o == p || (p == "b" && (o == "c" || o == "e")));
    let graph = Graph::of_model(&model);
    let pairs = ioi_pairs(&model)?;
    println!(
        "{} edges, {} pairs of 15 tokens",
        graph.edges.len(),
        pairs.len()
    );
    if part("a") {
        let clock = Instant::now();
        attribute(&model, &graph, &pairs, Method::Eap, Ablation::Patching)?;
        println!(
            "(a) eap, every edge: {:.2} s",
            clock.elapsed().as_secs_f64()
        );
    }
    if part("b") {
        ig_and_exact(&model, &graph, &pairs, (part("c"), part("e")))?;
    }
    if !parsed.quick && part("d") {
        long_prompt(&model, &graph)?;
    }
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

/// (b), and (c) on its top 500 edges.
fn ig_and_exact(
    model: &HookedTransformer,
    graph: &Graph,
    pairs: &[EdgePair],
    (exact, curve): (bool, bool),
) -> Result<(), BoxError> {
    let clock = Instant::now();
    let ig = attribute(
        model,
        graph,
        pairs,
        Method::EapIgInputs { steps: 5 },
        Ablation::Patching,
    )?;
    println!(
        "(b) eap-ig-inputs(5), every edge: {:.2} s",
        clock.elapsed().as_secs_f64()
    );
    let mean = mean_scores(&ig);
    if curve {
        // Under patching a pair's rows run from the first position its prompts differ
        // at (here the second B, 10 of 15); zero ablation runs every position.
        let sizes: Vec<Size> = MIB_FRACTIONS.iter().map(|f| Size::Fraction(*f)).collect();
        for (tag, ablation) in [("(e)", Ablation::Patching), ("(e0)", Ablation::Zero)] {
            let clock = Instant::now();
            let c =
                faithfulness_curve(model, graph, pairs, &mean, (ablation, Select::Abs), &sizes)?;
            println!(
                "{tag} faithfulness curve, 10 sizes × 16 pairs, {ablation:?}: {:.2} s (CPR {:.3}, CMD {:.3})",
                clock.elapsed().as_secs_f64(),
                c.cpr,
                c.cmd
            );
        }
    }
    if !exact {
        return Ok(());
    }
    let mut top: Vec<usize> = (0..mean.len()).collect();
    top.sort_by(|a, b| mean[*b].abs().total_cmp(&mean[*a].abs()));
    top.truncate(500);
    let peak_gflops = matmul_peak(model.device())?;
    let clock = Instant::now();
    let exact = exact_edges(model, graph, pairs, Ablation::Patching, &top)?;
    let secs = clock.elapsed().as_secs_f64();
    // Each row runs from its receiver's block on: the blocks a row runs, on average.
    let blocks: usize = (top.iter())
        .map(|e| graph.n_layers + 1 - actpatch_circuits::exact_group(graph, *e))
        .sum();
    let gflop = exact_flops(graph, pairs, &top) / 1e9;
    println!(
        "(c) exact, top 500 edges of (b): {secs:.2} s ({:.1} blocks a row on average, the logits' readout counted as one; {gflop:.0} GFLOP of matrix products, {:.0} GFLOP/s, {:.0} % of the matmul peak measured in this run, {peak_gflops:.1} GFLOP/s)",
        blocks as f64 / top.len() as f64,
        gflop / secs,
        100.0 * gflop / secs / peak_gflops,
    );
    if exact[0].scores.iter().all(|s| *s == 0.0) {
        return Err("exact scored none of the top edges".into());
    }
    Ok(())
}

/// FLOPs of the matrix products (c) needs at least: per (pair, edge), the blocks from
/// the receiver's on at the positions from the pair's first differing token, the last
/// block (when the receiver's block is an earlier one) at the last position only plus
/// its keys and values (GPT-2's whole `c_attn`) at the others. Attention scores, the
/// receiver head's own projection and the answers' columns of the unembedding are left
/// out (under 1 %).
fn exact_flops(graph: &Graph, pairs: &[EdgePair], top: &[usize]) -> f64 {
    let block = 2.0 * (4 * D_MODEL * D_MODEL + 2 * D_MODEL * D_MLP) as f64; // per position
    let keys_values = 2.0 * (3 * D_MODEL * D_MODEL) as f64;
    let last = graph.n_layers - 1;
    let mut flops = 0.0;
    for pair in pairs {
        let first = (pair.clean.iter().zip(&pair.corrupted))
            .position(|(a, b)| a != b)
            .unwrap_or(pair.clean.len());
        let positions = (pair.clean.len() - first) as f64;
        for edge in top {
            flops += match actpatch_circuits::exact_group(graph, *edge) {
                layer if layer < last => {
                    (last - layer) as f64 * block * positions
                        + keys_values * (positions - 1.0).max(0.0)
                        + block
                }
                layer if layer == last => block * positions,
                _ => 0.0, // the logits: the answers' columns only
            };
        }
    }
    flops
}

/// (d): EAP on one 1,024-token prompt, with the phase's peak resident memory.
fn long_prompt(model: &HookedTransformer, graph: &Graph) -> Result<(), BoxError> {
    let words = "the cat sat on the mat and looked at the dog while it rained outside ";
    let mut tokens = model.to_tokens(&words.repeat(63), true)?; // 1,009 tokens with BOS
    let more: Vec<u32> = tokens[1..]
        .iter()
        .cycle()
        .take(1024 - tokens.len())
        .copied()
        .collect();
    tokens.extend(more);
    let mut corrupted = tokens.clone();
    corrupted[1] = model.to_single_token(" dog")?;
    let pair = EdgePair {
        clean: tokens,
        corrupted,
        answers: [model.to_single_token(" the")?, model.to_single_token(" a")?],
    };
    reset_peak();
    let before = peak_mib();
    let clock = Instant::now();
    attribute(model, graph, &[pair], Method::Eap, Ablation::Patching)?;
    println!(
        "(d) eap, one 1,024-token prompt: {:.2} s, peak resident memory {:.0} MiB (before: {before:.0} MiB)",
        clock.elapsed().as_secs_f64(),
        peak_mib()
    );
    Ok(())
}
