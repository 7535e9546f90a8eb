//! `[corruption]`: how a pair's corrupted run is made. By default from its `corrupted`
//! prompt; with `kind = "gaussian"` by noise on the input embeddings of its `subject`'s
//! tokens (ROME's causal tracing, [`actpatch_patching::gaussian`]).
//!
//! ```toml
//! [corruption]
//! kind = "gaussian"        # every pair of the file (or per [[datasets]]/[[pairs]] entry:
//!                          # corruption = "gaussian")
//! samples = 10             # noise draws per prompt, averaged
//! seed = 0                 # recorded in the manifest
//! noise_multiplier = 3.0   # ν = 3 × the std of the embedding matrix's entries (ROME)
//! # noise = 0.1            # …or ν itself
//! window = 10              # layers restored per attn_out / mlp_out cell (ROME: 10)
//! metric = "prob"          # p(answer); or "logit"
//! ```
//!
//! `corruption = "gaussian"` (a string) is short for the table with only `kind`.

use std::fmt;

use actpatch_patching::gaussian::{GaussianSpec, NoiseLevel, TraceMetric};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// Where a pair's corrupted run comes from.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum CorruptionKind {
    /// The pair's `corrupted` prompt.
    #[default]
    Prompt,
    /// Noise on the input embeddings of the `subject`'s tokens.
    Gaussian,
}

impl CorruptionKind {
    pub fn name(self) -> &'static str {
        match self {
            CorruptionKind::Prompt => "prompt",
            CorruptionKind::Gaussian => "gaussian",
        }
    }
}

/// `[corruption]`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CorruptionSpec {
    /// The default of every pair without its own `corruption`.
    #[serde(default)]
    pub kind: CorruptionKind,
    /// Noise draws per prompt (default 10, as ROME).
    #[serde(default = "default_samples")]
    pub samples: usize,
    /// The draws' seed (recorded in the manifest); every prompt draws from it.
    #[serde(default)]
    pub seed: u64,
    /// ν as a multiple of the standard deviation of the token embedding matrix's
    /// entries (default 3, as ROME).
    pub noise_multiplier: Option<f64>,
    /// ν itself, instead of `noise_multiplier`.
    pub noise: Option<f64>,
    /// Layers restored per `attn_out` / `mlp_out` cell, centred on its layer (ROME: 10).
    #[serde(default = "default_window")]
    pub window: usize,
    /// What is normalized: `"prob"` (p(answer), default) or `"logit"`.
    #[serde(default)]
    pub metric: TraceMetric,
}

/// ROME's multiplier of the embedding matrix's standard deviation.
pub const DEFAULT_NOISE_MULTIPLIER: f64 = 3.0;

fn default_samples() -> usize {
    10
}

fn default_window() -> usize {
    1
}

impl Default for CorruptionSpec {
    fn default() -> Self {
        CorruptionSpec {
            kind: CorruptionKind::Prompt,
            samples: default_samples(),
            seed: 0,
            noise_multiplier: None,
            noise: None,
            window: default_window(),
            metric: TraceMetric::Prob,
        }
    }
}

impl CorruptionSpec {
    /// The engine's spec; ν from `noise`, else `noise_multiplier` (default 3) × std.
    pub fn gaussian(&self) -> GaussianSpec {
        GaussianSpec {
            samples: self.samples,
            seed: self.seed,
            noise: match self.noise {
                Some(scale) => NoiseLevel::Absolute(scale),
                None => NoiseLevel::EmbeddingStds(
                    self.noise_multiplier.unwrap_or(DEFAULT_NOISE_MULTIPLIER),
                ),
            },
            window: self.window,
            metric: self.metric,
        }
    }

    /// Whether any key other than `kind` differs from its default.
    pub fn has_gaussian_keys(&self) -> bool {
        let defaults = CorruptionSpec {
            kind: self.kind,
            ..CorruptionSpec::default()
        };
        *self != defaults
    }

    /// What the types cannot say.
    pub fn check(&self) -> Result<(), String> {
        if self.samples == 0 || self.samples > 10_000 {
            return Err(format!(
                "[corruption] samples = {} must be between 1 and 10000 (noise draws per prompt; ROME uses 10, the default)",
                self.samples
            ));
        }
        if self.window == 0 {
            return Err("[corruption] window = 0: give the number of layers each attn_out / mlp_out cell restores, 1 (the cell's layer, default) or more (ROME uses 10)".into());
        }
        if self.noise.is_some() && self.noise_multiplier.is_some() {
            return Err("[corruption] has both `noise` (ν itself) and `noise_multiplier` (ν as a multiple of the embedding matrix's standard deviation): keep one".into());
        }
        for (key, value) in [
            ("noise", self.noise),
            ("noise_multiplier", self.noise_multiplier),
        ] {
            if let Some(value) = value.filter(|v| !(v.is_finite() && *v >= 0.0)) {
                return Err(format!(
                    "[corruption] {key} = {value} must be a finite number ≥ 0 (e.g. noise_multiplier = 3.0, ROME's)"
                ));
            }
        }
        Ok(())
    }
}

/// `[corruption]` as a table, or `corruption = "gaussian"` for the table with only
/// `kind`.
pub fn string_or_table<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<CorruptionSpec, D::Error> {
    struct StringOrTable;

    impl<'de> Visitor<'de> for StringOrTable {
        type Value = CorruptionSpec;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("corruption = \"prompt\" or \"gaussian\", or a [corruption] table")
        }

        fn visit_str<E: de::Error>(self, value: &str) -> Result<CorruptionSpec, E> {
            let kind = CorruptionKind::deserialize(de::value::StrDeserializer::<E>::new(value))?;
            Ok(CorruptionSpec {
                kind,
                ..CorruptionSpec::default()
            })
        }

        fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<CorruptionSpec, M::Error> {
            CorruptionSpec::deserialize(de::value::MapAccessDeserializer::new(map))
        }
    }

    deserializer.deserialize_any(StringOrTable)
}
