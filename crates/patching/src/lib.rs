//! Activation patching on hooked transformers: which parts of a model cause its
//! answer, cell by cell.
//!
//! A [`Pair`] is a clean and a corrupted prompt with two answers. A sweep patches one
//! run (the *target*) with the other's activations (the *source*) at one [`PatchKind`]
//! site, one cell (layer, head, position) at a time, and scores each patched run by
//! its normalized logit difference, (ld − ld_corrupted) / (ld_clean − ld_corrupted):
//! 0 is the corrupted run, 1 the clean one. [`Direction::Denoising`] patches clean
//! activations into the corrupted run, [`Direction::Noising`] corrupted ones into the
//! clean run. Names and semantics follow TransformerLens's `patching` module.
//!
//! ```
//! use actpatch_model::HookedTransformer;
//! use actpatch_patching::{Align, Direction, Pair, PatchKind, Sweep};
//!
//! # let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-gpt2");
//! let model = HookedTransformer::from_dir(dir)?; // a folder or a .gguf file
//! let pair = Pair::from_prompts(
//!     &model,
//!     "The Colosseum is in",
//!     "The Eiffel Tower is in",
//!     [" Rome", " Paris"],
//!     Align::Strict,
//! )?;
//! let baselines = pair.baselines(&model)?;
//! let cells = Sweep::new(&[PatchKind::ResidPost, PatchKind::HeadOut])
//!     .directions(&Direction::BOTH)
//!     .run(&model, &pair, &baselines)?;
//! for cell in cells.iter().take(3) {
//!     println!(
//!         "{} {} layer {} position {:?}: {:.3}",
//!         cell.direction, cell.kind, cell.index.layer, cell.index.position,
//!         cell.metrics.normalized_logit_diff
//!     );
//! }
//! // The last layer's output at the final position is all the logits read: patching it
//! // gives the source run, clean (1) when denoising, corrupted (0) when noising.
//! let (last_layer, last) = (model.dims().n_layers - 1, pair.corrupted_tokens.len() - 1);
//! for (direction, want) in [(Direction::Denoising, 1.0), (Direction::Noising, 0.0)] {
//!     let cell = cells.iter().find(|c| {
//!         c.direction == direction && c.kind == PatchKind::ResidPost
//!             && c.index.layer == last_layer && c.index.position == Some(last)
//!     }).unwrap();
//!     assert!((cell.metrics.normalized_logit_diff - want).abs() < 1e-4);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Layout: [`kind`] (the named kinds: site and cell axes), [`positions`] (alignment
//! maps), [`Pair`] and [`Baselines`], [`DirectedPair`] (one direction, ready to
//! patch; every method starts from it), [`naive`] and [`fast`] (the two exact
//! sweeps), [`Sweep`] and [`PairSweeper`] (the generic entry points), [`path`] (path
//! patching: a sender head's effect through chosen receivers, naive and fast). A new
//! method is one module taking a [`DirectedPair`].

pub mod attribution;
mod cells;
mod directed;
mod direction;
mod error;
pub mod fast;
pub mod gaussian;
pub mod kind;
pub mod naive;
mod pair;
pub mod path;
pub mod positions;
mod runs;
mod score;
mod sweep;

pub use actpatch_metrics::{Answers, Baseline, CellMetrics};
pub use attribution::{attribute, attribute_all, Attribution, Method, Request};
pub use cells::{cells_of, hook_points, rows_for_budget, CellIndex, CellResult};
pub use directed::{check_kinds, DirectedPair};
pub use direction::Direction;
pub use error::{PatchingError, Result};
pub use fast::SweepBatch;
pub use kind::{CellAxes, PatchKind};
pub use pair::{Baselines, Pair};
pub use positions::{Align, PositionMap};
pub use runs::PairRuns;
pub use score::{MetricSet, Scorer};
pub use sweep::{Execution, PairSweeper, Sweep};
