//! The edge graph, node for node and edge for edge the EAP-IG library's
//! (`eap.graph.Graph.from_model`), so that scores join with its files and MIB's.
//!
//! Senders (the library's forward nodes): `input` (`hook_embed`, the token embeddings
//! only: position embeddings and output biases belong to no node), `a{layer}.h{head}`
//! (`attn.hook_result`, one head's output into the residual stream), `m{layer}`
//! (`hook_mlp_out`). Receivers: each head's query, key and value input
//! (`hook_q_input`, …, edges named `…->a{layer}.h{head}<q>`), each MLP's input
//! (`hook_mlp_in`) and `logits` (`blocks.{last}.hook_resid_post`). A sender feeds every
//! receiver after it: a head the heads and MLPs of later layers, and its own layer's
//! MLP unless attention and MLP run in parallel (GPT-NeoX), where an MLP reads the
//! same residual stream as its layer's heads.

use std::fmt;

/// A node that writes into the residual stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sender {
    Input,
    Head { layer: usize, head: usize },
    Mlp { layer: usize },
}

/// Which input of a head a receiver is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Qkv {
    Q,
    K,
    V,
}

impl Qkv {
    pub const ALL: [Qkv; 3] = [Qkv::Q, Qkv::K, Qkv::V];

    pub fn letter(self) -> &'static str {
        match self {
            Qkv::Q => "q",
            Qkv::K => "k",
            Qkv::V => "v",
        }
    }
}

/// A node input that reads the residual stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Receiver {
    Head {
        layer: usize,
        head: usize,
        input: Qkv,
    },
    Mlp {
        layer: usize,
    },
    Logits,
}

/// One edge: indices into [`Graph::senders`] and [`Graph::receivers`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    pub sender: usize,
    pub receiver: usize,
}

/// A model's edge graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    pub n_layers: usize,
    pub n_heads: usize,
    pub d_model: usize,
    /// Attention and MLP read the same residual stream (GPT-NeoX's `use_parallel_residual`).
    pub parallel: bool,
    /// In the library's forward order: `input`, then per layer its heads and its MLP.
    pub senders: Vec<Sender>,
    /// Per layer every head's q inputs, then k, then v, then the MLP; `logits` last.
    pub receivers: Vec<Receiver>,
    /// In the library's order (`Graph.edges`), which its files and MIB's keep.
    pub edges: Vec<Edge>,
}

impl Graph {
    /// The graph of a model with `n_layers` blocks of `n_heads` heads (query heads:
    /// grouped-query models are ungrouped, as the library requires).
    pub fn new(n_layers: usize, n_heads: usize, d_model: usize, parallel: bool) -> Graph {
        let mut senders = vec![Sender::Input];
        let mut receivers = Vec::new();
        for layer in 0..n_layers {
            senders.extend((0..n_heads).map(|head| Sender::Head { layer, head }));
            senders.push(Sender::Mlp { layer });
            for input in Qkv::ALL {
                receivers.extend((0..n_heads).map(|head| Receiver::Head { layer, head, input }));
            }
            receivers.push(Receiver::Mlp { layer });
        }
        receivers.push(Receiver::Logits);
        let mut graph = Graph {
            n_layers,
            n_heads,
            d_model,
            parallel,
            senders,
            receivers,
            edges: Vec::new(),
        };
        graph.edges = graph.library_edges();
        graph
    }

    /// The edges in the order `Graph.from_model` adds them: per layer, every sender so
    /// far into each head's q, k, v; then into the MLP (after the layer's heads join
    /// the stream, or before in parallel blocks); at the end every sender into the logits.
    fn library_edges(&self) -> Vec<Edge> {
        let mut edges = Vec::new();
        let mut stream: Vec<usize> = vec![0];
        for layer in 0..self.n_layers {
            let heads: Vec<usize> = (0..self.n_heads)
                .map(|head| self.sender_index(Sender::Head { layer, head }))
                .collect();
            let mlp = self.sender_index(Sender::Mlp { layer });
            for &sender in &stream {
                for head in 0..self.n_heads {
                    for input in Qkv::ALL {
                        let receiver = self.receiver_index(Receiver::Head { layer, head, input });
                        edges.push(Edge { sender, receiver });
                    }
                }
                if self.parallel {
                    let receiver = self.receiver_index(Receiver::Mlp { layer });
                    edges.push(Edge { sender, receiver });
                }
            }
            stream.extend(&heads);
            if !self.parallel {
                for &sender in &stream {
                    let receiver = self.receiver_index(Receiver::Mlp { layer });
                    edges.push(Edge { sender, receiver });
                }
            }
            stream.push(mlp);
        }
        let logits = self.receivers.len() - 1;
        edges.extend(stream.iter().map(|&sender| Edge {
            sender,
            receiver: logits,
        }));
        edges
    }

    /// A sender's index in [`Graph::senders`] (the library's forward index).
    pub fn sender_index(&self, sender: Sender) -> usize {
        match sender {
            Sender::Input => 0,
            Sender::Head { layer, head } => 1 + layer * (self.n_heads + 1) + head,
            Sender::Mlp { layer } => 1 + layer * (self.n_heads + 1) + self.n_heads,
        }
    }

    /// A receiver's index in [`Graph::receivers`].
    pub fn receiver_index(&self, receiver: Receiver) -> usize {
        let per_layer = 3 * self.n_heads + 1;
        match receiver {
            Receiver::Head { layer, head, input } => {
                layer * per_layer + (input as usize) * self.n_heads + head
            }
            Receiver::Mlp { layer } => layer * per_layer + 3 * self.n_heads,
            Receiver::Logits => self.n_layers * per_layer,
        }
    }

    /// The edge's name as the library writes it: `a0.h1->a1.h0<q>`, `m0->logits`.
    pub fn edge_name(&self, edge: &Edge) -> String {
        let receiver = self.receivers[edge.receiver];
        let sender = self.senders[edge.sender];
        match receiver {
            Receiver::Head { input, .. } => {
                format!("{sender}->{}<{}>", ReceiverNode(receiver), input.letter())
            }
            _ => format!("{sender}->{}", ReceiverNode(receiver)),
        }
    }

    /// The names of every node, in the library's order (`Graph.nodes`).
    pub fn node_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.senders.iter().map(|s| s.to_string()).collect();
        names.push("logits".into());
        names
    }

    /// The layer a receiver reads at (the last block's for the logits).
    pub fn receiver_layer(&self, receiver: usize) -> usize {
        match self.receivers[receiver] {
            Receiver::Head { layer, .. } | Receiver::Mlp { layer } => layer,
            Receiver::Logits => self.n_layers.saturating_sub(1),
        }
    }
}

impl fmt::Display for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sender::Input => write!(f, "input"),
            Sender::Head { layer, head } => write!(f, "a{layer}.h{head}"),
            Sender::Mlp { layer } => write!(f, "m{layer}"),
        }
    }
}

impl Sender {
    /// The TransformerLens hook its output is (`hook_embed`, `blocks.3.attn.hook_result`).
    pub fn hook(&self) -> String {
        match self {
            Sender::Input => "hook_embed".into(),
            Sender::Head { layer, .. } => format!("blocks.{layer}.attn.hook_result"),
            Sender::Mlp { layer } => format!("blocks.{layer}.hook_mlp_out"),
        }
    }

    /// The head index within the hook, for head senders.
    pub fn head(&self) -> Option<usize> {
        match self {
            Sender::Head { head, .. } => Some(*head),
            _ => None,
        }
    }
}

/// A receiver's node name (`a1.h0`, `m1`, `logits`).
pub struct ReceiverNode(pub Receiver);

impl fmt::Display for ReceiverNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Receiver::Head { layer, head, .. } => write!(f, "a{layer}.h{head}"),
            Receiver::Mlp { layer } => write!(f, "m{layer}"),
            Receiver::Logits => write!(f, "logits"),
        }
    }
}

impl Receiver {
    /// `q`, `k`, `v`, `mlp` or `logits`.
    pub fn input_name(&self) -> &'static str {
        match self {
            Receiver::Head { input, .. } => input.letter(),
            Receiver::Mlp { .. } => "mlp",
            Receiver::Logits => "logits",
        }
    }

    /// The TransformerLens hook that is its input (with `use_split_qkv_input`).
    pub fn hook(&self, n_layers: usize) -> String {
        match self {
            Receiver::Head { layer, input, .. } => {
                format!("blocks.{layer}.hook_{}_input", input.letter())
            }
            Receiver::Mlp { layer } => format!("blocks.{layer}.hook_mlp_in"),
            Receiver::Logits => format!("blocks.{}.hook_resid_post", n_layers.saturating_sub(1)),
        }
    }

    /// The head index within the hook, for head inputs.
    pub fn head(&self) -> Option<usize> {
        match self {
            Receiver::Head { head, .. } => Some(*head),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// gpt2-small's graph has 32,491 edges (the library's count), and
    /// n_forward = 1 + L·(H+1), n_backward = L·(3H+1) + 1 nodes.
    #[test]
    fn gpt2_small_has_the_librarys_edge_count() {
        let graph = Graph::new(12, 12, 768, false);
        assert_eq!(graph.edges.len(), 32_491);
        assert_eq!(graph.senders.len(), 1 + 12 * 13);
        assert_eq!(graph.receivers.len(), 12 * 37 + 1);
    }

    /// Parallel blocks (the library's `parallel_attn_mlp`): an MLP reads what its
    /// layer's heads read, so it gets no edge from them: (1 + l·(H+1))·(3H+1) edges into
    /// layer l, 1 + L·(H+1) into the logits.
    #[test]
    fn parallel_graphs_have_no_edges_from_a_layers_heads_to_its_mlp() {
        let graph = Graph::new(2, 4, 32, true);
        assert_eq!(graph.edges.len(), 13 + 6 * 13 + 11);
        let names: Vec<String> = graph.edges.iter().map(|e| graph.edge_name(e)).collect();
        assert_eq!(names[12], "input->m0");
        assert_eq!(names[13], "input->a1.h0<q>");
        assert!(!names.contains(&"a1.h0->m1".to_string()));
        assert!(names.contains(&"a0.h0->m1".to_string()));
    }

    #[test]
    fn names_follow_the_library() {
        let graph = Graph::new(2, 4, 32, false);
        let names: Vec<String> = graph.edges.iter().map(|e| graph.edge_name(e)).collect();
        assert_eq!(names[0], "input->a0.h0<q>");
        assert_eq!(names[1], "input->a0.h0<k>");
        assert_eq!(names[12], "input->m0");
        assert_eq!(names[13], "a0.h0->m0");
        assert_eq!(names.last().unwrap(), "m1->logits");
        assert_eq!(names.len(), 110);
    }
}
