//! `[circuit]` in a sharded run. Exact edge effects, the costly part, are split by
//! receiver block ([`exact_group`]: the edges into one block's heads' queries, keys and
//! values and its MLP, or into the logits, which share batched passes): each shard
//! measures the blocks [`assign`] gives it and writes them to `exact/shard=i-of-n.json`. The merge scores the
//! gradient methods again (seconds), reads the exact effects back, and runs the rest of
//! the circuit stage (tables, files, curves) as a single process does, so the merged
//! tables equal a single run's byte for byte.

use std::path::Path;

use actpatch_circuits::{exact_group, Graph, Method, PairScores};
use actpatch_model::HookedTransformer;
use serde::{Deserialize, Serialize};

use super::circuit_scores::{edge_pairs_of, exact_edge_list, exact_run, score_methods};
use super::folder::create_subfolder;
use crate::experiment::Experiment;
use crate::options::RunOptions;
use crate::shard::assign::assign;
use crate::shard::{layout, ShardSpec};
use crate::validate::PairPlan;
use crate::RunnerError;

/// One shard's exact effects: the edges it measured and their effect on each pair.
#[derive(Serialize, Deserialize)]
struct ExactPart {
    /// Indices into the graph's edges.
    edges: Vec<usize>,
    pairs: Vec<PairPart>,
}

#[derive(Serialize, Deserialize)]
struct PairPart {
    /// The effect of each of `edges`, in that order.
    scores: Vec<f32>,
    ld_clean: f32,
    ld_corrupted: f32,
}

/// The receiver blocks of `edges`, in run order, and the shard each goes to (the
/// costliest first: edges × blocks their passes run).
fn owners(graph: &Graph, edges: &[usize], count: usize) -> Vec<(usize, usize)> {
    let mut groups: Vec<usize> = edges.iter().map(|&e| exact_group(graph, e)).collect();
    groups.sort_unstable();
    groups.dedup();
    let costs: Vec<u64> = groups
        .iter()
        .map(|group| {
            let in_group = edges.iter().filter(|&&e| exact_group(graph, e) == *group);
            (in_group.count() * (graph.n_layers + 1 - group)) as u64
        })
        .collect();
    groups.into_iter().zip(assign(&costs, count)).collect()
}

/// Shard `shard`'s part of the exact effects (nothing when the run has none).
pub(super) fn run_part(
    model: &HookedTransformer,
    experiment: &Experiment,
    options: &RunOptions,
    run_dir: &Path,
    (pairs, shard): (&[&PairPlan], ShardSpec),
) -> Result<(), RunnerError> {
    let Some(spec) = &experiment.circuit else {
        return Ok(());
    };
    let (methods, ablation) = spec.resolve().map_err(RunnerError::Input)?;
    let graph = Graph::of_model(model);
    let edge_pairs = edge_pairs_of(pairs);
    // Only the method that picks the exact edges: the first one other than exact.
    let first: Vec<Method> = (methods.iter().copied())
        .filter(|m| *m != Method::Exact && spec.exact_top.is_some())
        .take(1)
        .collect();
    let scored = score_methods(model, &graph, &edge_pairs, (&first, ablation), options)?;
    let Some(edges) = exact_edge_list(spec, &methods, &graph, &scored) else {
        return Ok(());
    };
    let mine: Vec<usize> = owners(&graph, &edges, shard.count)
        .into_iter()
        .filter(|(_, owner)| *owner == shard.index)
        .flat_map(|(group, _)| {
            let graph = &graph;
            edges
                .iter()
                .copied()
                .filter(move |&e| exact_group(graph, e) == group)
        })
        .collect();
    let per_pair = exact_run((model, &graph, &edge_pairs, options), ablation, &mine)?;
    let part = ExactPart {
        pairs: per_pair
            .iter()
            .map(|p| PairPart {
                scores: mine.iter().map(|&e| p.scores[e]).collect(),
                ld_clean: p.ld_clean,
                ld_corrupted: p.ld_corrupted,
            })
            .collect(),
        edges: mine,
    };
    let text = serde_json::to_string(&part).map_err(|e| {
        RunnerError::Input(format!("cannot encode shard {shard}'s exact effects: {e}"))
    })?;
    let path = layout::exact_part_path(run_dir, shard);
    create_subfolder(run_dir, layout::EXACT_DIR)?;
    actpatch_report::atomic::write_bytes_atomic(&path, text.as_bytes())
        .map_err(RunnerError::write_run(run_dir))
}

/// The exact effects of `edges` on every pair, from the parts of the run's `count`
/// shards, as one process computes them (0 for the edges not measured).
pub(super) fn read_parts(
    run_dir: &Path,
    count: usize,
    graph: &Graph,
    edges: &[usize],
) -> Result<Vec<PairScores>, RunnerError> {
    let mut per_pair: Vec<PairScores> = Vec::new();
    let mut covered = vec![false; graph.edges.len()];
    for index in 0..count {
        let shard = ShardSpec { index, count };
        let path = layout::exact_part_path(run_dir, shard);
        let part: ExactPart = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()))
            .map_err(|why| {
                RunnerError::Input(format!(
                    "cannot merge {}: shard {shard}'s exact edge effects ({}) cannot be read: {why}. Run that shard again.",
                    run_dir.display(),
                    path.display()
                ))
            })?;
        if per_pair.is_empty() {
            per_pair = (part.pairs.iter())
                .map(|p| PairScores {
                    scores: vec![0.0; graph.edges.len()],
                    ld_clean: p.ld_clean,
                    ld_corrupted: p.ld_corrupted,
                })
                .collect();
        }
        let fits = part.pairs.len() == per_pair.len()
            && part
                .pairs
                .iter()
                .all(|p| p.scores.len() == part.edges.len())
            && part.edges.iter().all(|&e| e < graph.edges.len());
        if !fits {
            return Err(mismatch(run_dir, shard));
        }
        for (scores, p) in per_pair.iter_mut().zip(&part.pairs) {
            for (&edge, &score) in part.edges.iter().zip(&p.scores) {
                scores.scores[edge] = score;
            }
        }
        for &edge in &part.edges {
            covered[edge] = true;
        }
    }
    let measured = covered.iter().filter(|c| **c).count();
    if measured != edges.len() || edges.iter().any(|&e| !covered[e]) {
        return Err(RunnerError::Input(format!(
            "cannot merge {}: the shards measured {measured} edges' exact effects, but this run's [circuit] asks for {} (were the shards run with another experiment file or model?)",
            run_dir.display(),
            edges.len()
        )));
    }
    Ok(per_pair)
}

fn mismatch(run_dir: &Path, shard: ShardSpec) -> RunnerError {
    RunnerError::Input(format!(
        "cannot merge {}: shard {shard}'s exact edge effects do not fit this run's pairs and graph (another experiment or model?). Run that shard again.",
        run_dir.display()
    ))
}
