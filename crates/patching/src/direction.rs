//! Which way a patch goes. Both directions patch one run (the *target*) with
//! activations of the other (the *source*) and report the same normalized logit
//! difference, (ld − ld_corrupted) / (ld_clean − ld_corrupted): the clean run is 1 and
//! the corrupted run 0 in both.

use std::fmt;

use serde::Deserialize;

/// The direction of a patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Clean activations patched into the corrupted run: is the component
    /// *sufficient* to restore the clean behaviour? (target corrupted, source clean)
    Denoising,
    /// Corrupted activations patched into the clean run: is the component
    /// *necessary* for it? (target clean, source corrupted)
    Noising,
}

impl Direction {
    pub const BOTH: [Direction; 2] = [Direction::Denoising, Direction::Noising];

    /// The name in experiment files and tables.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Denoising => "denoising",
            Direction::Noising => "noising",
        }
    }

    pub fn from_name(name: &str) -> Option<Direction> {
        Direction::BOTH.into_iter().find(|d| d.name() == name)
    }

    /// Whether the run being patched is the clean one.
    pub fn target_is_clean(self) -> bool {
        self == Direction::Noising
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
