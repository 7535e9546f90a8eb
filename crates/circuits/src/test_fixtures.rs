//! The tiny checkpoints of `tests/fixtures` for unit tests.

use actpatch_model::HookedTransformer;

/// Every family with an edge graph: GPT-2, Llama (grouped-query attention), Pythia
/// (parallel blocks) and Gemma 2 (sliding windows, norms after attention and MLP).
pub(crate) const EVERY_FAMILY: [&str; 4] =
    ["tiny-gpt2", "tiny-llama", "tiny-pythia", "tiny-gemma2"];

/// The fixture `name` (e.g. `tiny-gpt2`).
pub(crate) fn load(name: &str) -> HookedTransformer {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    HookedTransformer::from_dir(dir.join(name)).expect("a fixture checkpoint")
}
