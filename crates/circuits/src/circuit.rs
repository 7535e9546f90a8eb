//! A circuit: a set of the graph's edges, chosen from scores as the EAP-IG library
//! chooses them (`Graph.apply_topn`, then `Graph.prune`).

use crate::graph::{Graph, Receiver, Sender};

/// How edges are ranked when a circuit takes the top `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Select {
    /// By |score| (the library's `absolute=True`, MIB's default).
    #[default]
    Abs,
    /// By signed score, largest first.
    Signed,
}

impl Select {
    pub const NAMES: &'static str = "\"abs\", \"signed\"";

    pub fn parse(name: &str) -> Option<Select> {
        match name {
            "abs" => Some(Select::Abs),
            "signed" => Some(Select::Signed),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Select::Abs => "abs",
            Select::Signed => "signed",
        }
    }
}

/// The top `n` edges by `select` (ties: the earlier edge in the graph's order), then
/// pruned: `in_graph[edge]`.
pub fn top_edges(graph: &Graph, scores: &[f32], n: usize, select: Select) -> Vec<bool> {
    let key = |i: usize| match select {
        Select::Abs => scores[i].abs(),
        Select::Signed => scores[i],
    };
    let mut order: Vec<usize> = (0..graph.edges.len()).collect();
    order.sort_by(|a, b| key(*b).total_cmp(&key(*a)).then(a.cmp(b)));
    let mut in_graph = vec![false; graph.edges.len()];
    for &edge in order.iter().take(n) {
        in_graph[edge] = true;
    }
    prune(graph, &mut in_graph);
    in_graph
}

/// The library's `Graph.prune`: repeatedly, a node stays only with an edge out and an
/// edge in (the input counts as having one), and an edge only between two nodes that
/// stay (the logits always do), until nothing changes.
pub fn prune(graph: &Graph, in_graph: &mut [bool]) {
    let node_of = |receiver: Receiver| -> Option<usize> {
        match receiver {
            Receiver::Head { layer, head, .. } => {
                Some(graph.sender_index(Sender::Head { layer, head }))
            }
            Receiver::Mlp { layer } => Some(graph.sender_index(Sender::Mlp { layer })),
            Receiver::Logits => None,
        }
    };
    loop {
        let mut outgoing = vec![false; graph.senders.len()];
        let mut incoming = vec![false; graph.senders.len()];
        incoming[0] = true;
        for (edge, &kept) in graph.edges.iter().zip(in_graph.iter()) {
            if kept {
                outgoing[edge.sender] = true;
                if let Some(node) = node_of(graph.receivers[edge.receiver]) {
                    incoming[node] = true;
                }
            }
        }
        let node_in: Vec<bool> = outgoing
            .iter()
            .zip(&incoming)
            .map(|(o, i)| *o && *i)
            .collect();
        let mut changed = false;
        for (edge, kept) in graph.edges.iter().zip(in_graph.iter_mut()) {
            let receiver_in = node_of(graph.receivers[edge.receiver]).is_none_or(|n| node_in[n]);
            if *kept && !(node_in[edge.sender] && receiver_in) {
                *kept = false;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
}
