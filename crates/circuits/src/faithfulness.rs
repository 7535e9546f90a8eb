//! Faithfulness curves and the MIB benchmark's CPR and CMD (Mueller et al. 2025,
//! `evaluate_area_under_curve`): for each circuit size, the top edges of a method's
//! scores ([`crate::circuit::top_edges`]), the run with every other edge ablated, and
//! `f = (m(C) − m(∅)) / (m(full) − m(∅))` with `m` the logit difference averaged over
//! the pairs first. CPR is the area under `f` and CMD the area under `|1 − f|`, both
//! trapezoids over the fractions of edges on a linear axis.

use actpatch_model::HookedTransformer;

use crate::circuit::{top_edges, Select};
use crate::evaluate::evaluate_circuits;
use crate::graph::Graph;
use crate::runs::{check, pair_runs};
use crate::{Ablation, EdgePair, Method, Result};

/// MIB's circuit sizes, as fractions of the graph's edges.
pub const MIB_FRACTIONS: [f64; 10] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0];

/// One circuit size of a curve.
#[derive(Debug, Clone, PartialEq)]
pub struct CurvePoint {
    /// The size as a fraction of the graph's edges (the curve's x axis).
    pub fraction: f64,
    /// Edges asked for (`int(fraction · edges)` for fractions, as MIB counts them).
    pub requested: usize,
    /// Edges left after pruning.
    pub edges: usize,
    /// The mean logit difference over the pairs with only the circuit's edges.
    pub logit_diff: f64,
    pub faithfulness: f64,
    /// Each pair's logit difference with only the circuit's edges.
    pub per_pair: Vec<f32>,
}

/// A faithfulness curve.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    pub points: Vec<CurvePoint>,
    /// m(∅): every edge ablated (mean over pairs); per pair in `empty_per_pair`.
    pub ld_empty: f64,
    pub empty_per_pair: Vec<f32>,
    /// m(full): the clean runs (mean over pairs); per pair in `full_per_pair`.
    pub ld_full: f64,
    pub full_per_pair: Vec<f32>,
    pub cpr: f64,
    pub cmd: f64,
}

/// A circuit size: a fraction of the graph's edges, or a number of edges.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Size {
    Fraction(f64),
    Edges(usize),
}

impl Size {
    /// (fraction, edges asked for) in a graph of `n_edges` edges.
    fn resolve(self, n_edges: usize) -> (f64, usize) {
        match self {
            Size::Fraction(f) => (f, ((f * n_edges as f64) as usize).min(n_edges)),
            Size::Edges(n) => (n as f64 / n_edges.max(1) as f64, n.min(n_edges)),
        }
    }
}

/// The faithfulness curve of the circuits that `scores` (one per edge, graph order)
/// selects at each of `sizes`, under `ablation`, over `pairs`.
pub fn faithfulness_curve(
    model: &HookedTransformer,
    graph: &Graph,
    pairs: &[EdgePair],
    scores: &[f32],
    (ablation, select): (Ablation, Select),
    sizes: &[Size],
) -> Result<Curve> {
    let n_edges = graph.edges.len();
    let circuits: Vec<Circuit> = sizes
        .iter()
        .map(|size| {
            let (fraction, requested) = size.resolve(n_edges);
            Circuit {
                fraction,
                requested,
                in_graph: top_edges(graph, scores, requested, select),
            }
        })
        .collect();
    circuits_faithfulness(model, graph, pairs, ablation, &circuits)
}

/// A circuit to evaluate: its edges (`in_graph`, pruned already or not: it is pruned
/// as the library's `evaluate_graph` prunes), and where it sits on a curve.
#[derive(Debug, Clone, PartialEq)]
pub struct Circuit {
    pub fraction: f64,
    /// Edges asked for, before pruning.
    pub requested: usize,
    pub in_graph: Vec<bool>,
}

impl Circuit {
    /// A circuit given edge by edge (a circuit file): its size as asked.
    pub fn given(graph: &Graph, mut in_graph: Vec<bool>) -> Circuit {
        let requested = in_graph.iter().filter(|k| **k).count();
        crate::circuit::prune(graph, &mut in_graph);
        Circuit {
            fraction: requested as f64 / graph.edges.len().max(1) as f64,
            requested,
            in_graph,
        }
    }
}

/// The faithfulness of each of `circuits` under `ablation` over `pairs`, as the points
/// of a curve (CPR and CMD over them in the order given).
pub fn circuits_faithfulness(
    model: &HookedTransformer,
    graph: &Graph,
    pairs: &[EdgePair],
    ablation: Ablation,
    circuits: &[Circuit],
) -> Result<Curve> {
    check(model, pairs, Method::Exact, ablation)?;
    let runs = pair_runs(model, graph, pairs, ablation)?;
    let full_per_pair: Vec<f32> = runs.iter().map(|r| r.clean.logit_diff).collect();
    // Two circuits need no run: every edge is the clean run, and, under patching, no
    // edge is the corrupted run (every receiver reads corrupted outputs only).
    let known = |in_graph: &[bool]| -> Option<Vec<f32>> {
        match (in_graph.iter().all(|k| *k), in_graph.iter().any(|k| *k)) {
            (true, _) => Some(full_per_pair.clone()),
            (_, false) if ablation == Ablation::Patching => {
                Some(runs.iter().map(|r| r.corrupted.logit_diff).collect())
            }
            _ => None,
        }
    };
    let empty = vec![false; graph.edges.len()]; // ∅
    let mut edge_sets: Vec<&[bool]> = circuits.iter().map(|c| c.in_graph.as_slice()).collect();
    edge_sets.push(&empty);
    let to_run: Vec<Vec<bool>> = edge_sets
        .iter()
        .filter(|set| known(set).is_none())
        .map(|set| set.to_vec())
        .collect();
    let from = (pairs, &runs[..]);
    let mut run_lds = evaluate_circuits(model, graph, from, &to_run)?.into_iter();
    let lds: Vec<Vec<f32>> = edge_sets
        .iter()
        .map(|set| {
            (known(set).or_else(|| run_lds.next()))
                .ok_or_else(|| candle_core::Error::Msg("a circuit was not evaluated".into()))
        })
        .collect::<std::result::Result<_, _>>()?;
    let mean = |values: &[f32]| {
        values.iter().map(|v| f64::from(*v)).sum::<f64>() / values.len().max(1) as f64
    };
    let empty_per_pair = lds[circuits.len()].clone();
    let (ld_empty, ld_full) = (mean(&empty_per_pair), mean(&full_per_pair));
    let points: Vec<CurvePoint> = circuits
        .iter()
        .zip(&lds)
        .map(|(circuit, per_pair)| {
            let logit_diff = mean(per_pair);
            CurvePoint {
                fraction: circuit.fraction,
                requested: circuit.requested,
                edges: circuit.in_graph.iter().filter(|k| **k).count(),
                logit_diff,
                faithfulness: (logit_diff - ld_empty) / (ld_full - ld_empty),
                per_pair: per_pair.clone(),
            }
        })
        .collect();
    let (cpr, cmd) = areas(&points);
    Ok(Curve {
        points,
        ld_empty,
        empty_per_pair,
        ld_full,
        full_per_pair,
        cpr,
        cmd,
    })
}

/// CPR (area under f) and CMD (area under |1 − f|) over the points' fractions, by
/// trapezoids on a linear axis, as MIB's `evaluate_area_under_curve`.
pub fn areas(points: &[CurvePoint]) -> (f64, f64) {
    let (mut cpr, mut cmd) = (0.0, 0.0);
    for pair in points.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let width = b.fraction - a.fraction;
        cpr += width * (a.faithfulness + b.faithfulness) / 2.0;
        cmd += width * ((1.0 - a.faithfulness).abs() + (1.0 - b.faithfulness).abs()) / 2.0;
    }
    (cpr, cmd)
}
