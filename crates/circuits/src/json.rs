//! Circuit files in the EAP-IG library's graph JSON (`Graph.to_json` /
//! `Graph.from_json`), which MIB's scoring code reads: `cfg` (`n_layers`, `n_heads`,
//! `parallel_attn_mlp`, `d_model`), `nodes` (`{name: {"in_graph": bool}}`, `logits`
//! always in), `edges` (`{name: {"score": float, "in_graph": bool}}`), in the
//! library's order (written in order by hand: `serde_json`'s maps sort their keys).

use std::fmt::Write;

use crate::graph::Graph;

/// The graph JSON of `scores` (one per edge, graph order), the edges of `in_graph`
/// marked in and the nodes they touch with them (every node when `in_graph` is `None`).
pub fn graph_json(graph: &Graph, scores: &[f32], in_graph: Option<&[bool]>) -> String {
    let edge_in = |i: usize| in_graph.is_none_or(|flags| flags.get(i).copied().unwrap_or(false));
    let mut node_in = vec![in_graph.is_none(); graph.senders.len()];
    for (i, edge) in graph.edges.iter().enumerate() {
        if edge_in(i) {
            node_in[edge.sender] = true;
        }
    }
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    let mut out = String::new();
    let _ = write!(
        out,
        "{{\"cfg\": {{\"n_layers\": {}, \"n_heads\": {}, \"parallel_attn_mlp\": {}, \"d_model\": {}}}, \"nodes\": {{",
        graph.n_layers, graph.n_heads, graph.parallel, graph.d_model
    );
    for (i, name) in graph.node_names().into_iter().enumerate() {
        let in_graph = node_in.get(i).copied().unwrap_or(true); // logits: always
        let sep = if i == 0 { "" } else { ", " };
        let _ = write!(out, "{sep}{}: {{\"in_graph\": {in_graph}}}", quote(&name));
    }
    out.push_str("}, \"edges\": {");
    for (i, edge) in graph.edges.iter().enumerate() {
        let score = serde_json::Value::from(f64::from(scores.get(i).copied().unwrap_or(0.0)));
        let sep = if i == 0 { "" } else { ", " };
        let _ = write!(
            out,
            "{sep}{}: {{\"score\": {score}, \"in_graph\": {}}}",
            quote(&graph.edge_name(edge)),
            edge_in(i)
        );
    }
    out.push_str("}}\n");
    out
}

/// The circuit of a graph JSON file (`in_graph` per edge; edges the file leaves out are
/// out, as `Graph.from_json` leaves them), after checking that its `cfg` is `graph`'s.
/// `Err`: what is wrong, for a message naming the file.
pub fn read_circuit(graph: &Graph, text: &str) -> Result<Vec<bool>, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    for key in ["cfg", "nodes", "edges"] {
        if value.get(key).is_none() {
            return Err(format!("no `{key}`: a circuit file is the EAP-IG library's graph JSON (`cfg`, `nodes`, `edges`)"));
        }
    }
    let cfg = &value["cfg"];
    let wanted = [
        ("n_layers", serde_json::Value::from(graph.n_layers)),
        ("n_heads", serde_json::Value::from(graph.n_heads)),
        ("parallel_attn_mlp", serde_json::Value::from(graph.parallel)),
    ];
    for (key, want) in wanted {
        if cfg.get(key) != Some(&want) {
            return Err(format!(
                "its cfg.{key} is {}, but this model's graph has {key} = {want}: the file is a circuit of another model",
                cfg.get(key).map_or("missing".to_string(), |v| v.to_string())
            ));
        }
    }
    let edges = value["edges"]
        .as_object()
        .ok_or("`edges` is not an object")?;
    let names: std::collections::HashMap<String, usize> = graph
        .edges
        .iter()
        .enumerate()
        .map(|(i, e)| (graph.edge_name(e), i))
        .collect();
    let mut in_graph = vec![false; graph.edges.len()];
    for (name, edge) in edges {
        let index = names
            .get(name)
            .ok_or_else(|| format!("edge `{name}` is not in this model's graph"))?;
        in_graph[*index] = edge
            .get("in_graph")
            .and_then(|v| v.as_bool())
            .ok_or_else(|| format!("edge `{name}` has no boolean `in_graph`"))?;
    }
    Ok(in_graph)
}
