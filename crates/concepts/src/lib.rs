//! Concept-level results: many pairs of one concept, aggregated by what each token
//! *is* rather than where it sits, with uncertainty.
//!
//! - [`roles`]: a role for every position of a prompt (`BOS`, `subject.first`,
//!   `subject.last`, `is`, `end`, …), from a template's slots, a named subject span, or
//!   the differing span of a free pair, so that pairs of different lengths line up.
//! - [`bootstrap`]: seeded percentile bootstrap over pairs, grouped by template.
//! - [`aggregate`]: the concept table, one row per (concept, direction, kind, layer,
//!   head, role) with the mean normalized effect, its interval, and the ratio of sums.
//!
//! ```
//! use actpatch_concepts::bootstrap::{mean_interval, Resamples};
//!
//! let effects = [0.9, 0.7, 1.1, 0.8, 1.0, 0.6].map(Some);
//! let groups: Vec<usize> = (0..effects.len()).collect(); // every pair its own group
//! let resamples = Resamples::new(&groups, 2000, 42);
//! let (mean, interval) = mean_interval(&effects, &resamples, 0.95).unwrap();
//! assert!((mean - 0.85).abs() < 1e-12);
//! assert!(interval.low > 0.6 && interval.high < 1.1 && interval.contains(mean));
//! ```

pub mod aggregate;
pub mod bootstrap;
pub mod roles;

pub use aggregate::{summarize, CellKey, ConceptStat, Observation, PairInfo};
pub use bootstrap::{BootstrapSpec, Interval, Resamples};
