//! Circuits: which edges between a model's components carry a behaviour.
//!
//! [`Graph`] is the EAP-IG library's edge graph (Hanna, Pezzelle, Belinkov 2024; the
//! code the MIB benchmark's circuit track runs), node for node and edge for edge.
//! [`attribute`] scores every edge on clean/corrupted pairs with EAP, EAP-IG (on the
//! inputs, or on each sender group's activations), clean-corrupted gradients, or exact
//! edge patching, under patching, zero or mean ablation, in the library's direction
//! and units: the change of the logit difference when that edge alone carries the
//! ablated value into the clean run.
//!
//! ```no_run
//! use actpatch_circuits::{attribute, mean_scores, Ablation, EdgePair, Graph, Method};
//! use actpatch_model::HookedTransformer;
//!
//! let model = HookedTransformer::from_dir("tests/fixtures/tiny-gpt2")?;
//! let graph = Graph::of_model(&model);
//! let pair = EdgePair {
//!     clean: model.to_tokens("The Colosseum is in", true)?,
//!     corrupted: model.to_tokens("The Eiffel Tower is in", true)?,
//!     answers: [model.to_single_token(" Rome")?, model.to_single_token(" Paris")?],
//! };
//! let scores = attribute(&model, &graph, &[pair], Method::EapIgInputs { steps: 5 }, Ablation::Patching)?;
//! let mean = mean_scores(&scores); // one score per edge, in graph.edges' order
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod attribute;
mod batches;
pub mod circuit;
mod error;
mod evaluate;
mod exact;
pub mod faithfulness;
mod gradient_methods;
mod gradient_passes;
mod gradients;
pub mod graph;
pub mod json;
mod method;
mod prefix;
mod products;
mod runs;
mod senders;
#[cfg(test)]
mod test_fixtures;

pub use attribute::{attribute, exact_edges, mean_scores};
pub use circuit::{prune, top_edges, Select};
pub use error::{CircuitError, Result};
pub use exact::exact_group;
pub use faithfulness::{
    circuits_faithfulness, faithfulness_curve, Circuit, Curve, CurvePoint, Size, MIB_FRACTIONS,
};
pub use graph::{Edge, Graph, Qkv, Receiver, Sender};
pub use method::{Ablation, Method, ABLATIONS, DEFAULT_STEPS, METHODS};
pub use runs::{EdgePair, PairScores};

impl Graph {
    /// The graph of a loaded model (query heads; grouped-query models ungrouped).
    pub fn of_model(model: &actpatch_model::HookedTransformer) -> Graph {
        let dims = model.dims();
        Graph::new(
            dims.n_layers,
            dims.n_heads,
            dims.d_model,
            model.parallel_attn_mlp(),
        )
    }
}
