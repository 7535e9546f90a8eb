//! How a cell's effect is computed: exactly, or by one of the attribution methods.

use std::fmt;

use serde::Deserialize;

/// How a cell's effect is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Default)]
pub enum Method {
    /// One patched run per cell (the fast or the naive sweep).
    #[default]
    #[serde(rename = "exact")]
    Exact,
    /// Attribution patching: the first-order estimate.
    #[serde(rename = "atp")]
    Atp,
    /// AtP with the QK fix and GradDrop (Kramár et al. 2024).
    #[serde(rename = "atp*")]
    AtpStar,
    /// Integrated gradients from the target run's input embeddings to the source's.
    #[serde(rename = "ig")]
    Ig,
}

impl Method {
    pub const ALL: [Method; 4] = [Method::Exact, Method::Atp, Method::AtpStar, Method::Ig];

    /// The name in experiment files and tables.
    pub fn name(self) -> &'static str {
        match self {
            Method::Exact => "exact",
            Method::Atp => "atp",
            Method::AtpStar => "atp*",
            Method::Ig => "ig",
        }
    }

    pub fn from_name(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.name() == name)
    }

    pub fn is_exact(self) -> bool {
        self == Method::Exact
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
