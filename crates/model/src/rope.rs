//! Rotary position embeddings' settings, read from a Hugging Face `config.json` in either
//! of its two spellings, and their inverse frequencies as transformers computes them.
//!
//! - transformers ≥ 5 writes `rope_parameters`: `{"rope_type", "rope_theta",
//!   "partial_rotary_factor", and the scaling's own keys}`;
//! - older configs (and most checkpoints on the hub) write `rope_theta` and
//!   `rope_scaling` (`{"rope_type"` or `"type", ...}`), GPT-NeoX `rotary_emb_base` and
//!   `rotary_pct`.
//!
//! Scaling types: none (`default`) and Llama 3.x's `llama3`; anything else is refused
//! with the key, its value and what is supported.

use std::path::Path;

use serde_json::Value;

use crate::{ModelError, Result};

/// The scaling types actpatch computes.
pub const SUPPORTED_SCALING: &str = "none (null or rope_type \"default\") and \"llama3\"";

/// How the inverse frequencies are rescaled.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    /// Llama 3.1/3.2 (`rope_type = "llama3"`): low frequencies divided by `factor`,
    /// high ones kept, the band between interpolated.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
    /// One divisor per frequency, as llama.cpp stores Llama 3 scaling in GGUF files
    /// (tensor `rope_freqs.weight`).
    Factors(Vec<f32>),
}

/// A model's rotary embedding: base, how much of each head rotates, and scaling.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeConfig {
    pub theta: f64,
    /// Fraction of each head's dimensions that rotate (GPT-NeoX `rotary_pct`).
    pub partial_rotary_factor: f64,
    pub scaling: RopeScaling,
}

impl RopeConfig {
    pub fn plain(theta: f64) -> Self {
        RopeConfig {
            theta,
            partial_rotary_factor: 1.0,
            scaling: RopeScaling::None,
        }
    }

    /// Reads a config's rotary settings; `default_theta` where the config gives none.
    pub fn from_config(config: &Value, default_theta: f64, path: &Path) -> Result<Self> {
        let fields = Fields::of(config, path)?;
        let theta = match fields.number("rope_theta")? {
            Some(t) => t,
            None => fields.number("rotary_emb_base")?.unwrap_or(default_theta),
        };
        let partial_rotary_factor = match fields.number("partial_rotary_factor")? {
            Some(f) => f,
            None => fields.number("rotary_pct")?.unwrap_or(1.0),
        };
        if !(partial_rotary_factor > 0.0 && partial_rotary_factor <= 1.0) {
            return Err(unsupported(
                path,
                "partial_rotary_factor",
                &Value::from(partial_rotary_factor),
                "a fraction in (0, 1]",
            ));
        }
        Ok(RopeConfig {
            theta,
            partial_rotary_factor,
            scaling: fields.scaling()?,
        })
    }

    /// How many of a head's `d_head` dimensions rotate (transformers: `int(d_head * factor)`).
    pub fn rotary_dim(&self, d_head: usize) -> usize {
        (d_head as f64 * self.partial_rotary_factor) as usize
    }

    /// The inverse frequencies `[rotary_dim / 2]`, as transformers computes them in f32.
    pub fn inv_freq(&self, rotary_dim: usize) -> Vec<f32> {
        let plain = (0..rotary_dim / 2).map(|i| {
            let exponent = (2 * i) as f32 / rotary_dim as f32;
            1.0 / (self.theta as f32).powf(exponent)
        });
        match &self.scaling {
            RopeScaling::None => plain.collect(),
            RopeScaling::Factors(factors) => {
                plain.zip(factors).map(|(f, divisor)| f / divisor).collect()
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old_context,
            } => plain
                .map(|inv_freq| {
                    let inv_freq = inv_freq as f64;
                    let wavelen = 2.0 * std::f64::consts::PI / inv_freq;
                    let (low_wavelen, high_wavelen) = (
                        old_context / low_freq_factor,
                        old_context / high_freq_factor,
                    );
                    if wavelen < high_wavelen {
                        inv_freq as f32
                    } else if wavelen > low_wavelen {
                        (inv_freq / factor) as f32
                    } else {
                        let smooth = (old_context / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        ((1.0 - smooth) * inv_freq / factor + smooth * inv_freq) as f32
                    }
                })
                .collect(),
        }
    }
}

/// Where a config keeps its rotary settings: `rope_parameters` (transformers ≥ 5) or
/// `rope_scaling`, with top-level keys as the fallback.
struct Fields<'a> {
    config: &'a Value,
    params: Option<&'a serde_json::Map<String, Value>>,
    prefix: &'static str,
    path: &'a Path,
}

impl<'a> Fields<'a> {
    fn of(config: &'a Value, path: &'a Path) -> Result<Self> {
        let present = |key| config.get(key).filter(|v| !v.is_null());
        let (params, prefix) = match present("rope_parameters") {
            Some(p) => (Some(p), "rope_parameters"),
            None => (present("rope_scaling"), "rope_scaling"),
        };
        let params = match params {
            Some(Value::Object(map)) => Some(map),
            Some(other) => {
                return Err(unsupported(
                    path,
                    prefix,
                    other,
                    "an object such as {\"rope_type\": \"llama3\", ...}",
                ))
            }
            None => None,
        };
        Ok(Fields {
            config,
            params,
            prefix,
            path,
        })
    }

    /// A number under the rotary settings' object, else at the top level.
    fn number(&self, key: &str) -> Result<Option<f64>> {
        let found = self
            .params
            .and_then(|p| p.get(key))
            .map(|v| (format!("{}.{key}", self.prefix), v))
            .or_else(|| self.config.get(key).map(|v| (key.to_string(), v)));
        match found {
            None | Some((_, Value::Null)) => Ok(None),
            Some((name, v)) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| unsupported(self.path, &name, v, "a number")),
        }
    }

    fn scaling(&self) -> Result<RopeScaling> {
        let kind = self
            .params
            .and_then(|p| p.get("rope_type").or_else(|| p.get("type")));
        let has_factor = self.params.is_some_and(|p| p.contains_key("factor"));
        match kind.and_then(Value::as_str) {
            None if kind.is_none() && !has_factor => Ok(RopeScaling::None),
            Some("default") => Ok(RopeScaling::None),
            Some("llama3") => {
                let required = |key: &str| -> Result<f64> {
                    self.number(key)?.ok_or_else(|| ModelError::Config {
                        path: self.path.to_path_buf(),
                        reason: format!(
                            "{} of type \"llama3\" needs `{key}` (factor, low_freq_factor, high_freq_factor, original_max_position_embeddings)",
                            self.prefix
                        ),
                    })
                };
                Ok(RopeScaling::Llama3 {
                    factor: required("factor")?,
                    low_freq_factor: required("low_freq_factor")?,
                    high_freq_factor: required("high_freq_factor")?,
                    original_max_position_embeddings: required("original_max_position_embeddings")?,
                })
            }
            _ => {
                let key = match self.params.is_some_and(|p| p.contains_key("rope_type")) {
                    true => "rope_type",
                    false => "type",
                };
                Err(unsupported(
                    self.path,
                    &format!("{}.{key}", self.prefix),
                    kind.unwrap_or(&Value::Null),
                    SUPPORTED_SCALING,
                ))
            }
        }
    }
}

fn unsupported(path: &Path, key: &str, value: &Value, supported: &str) -> ModelError {
    ModelError::UnsupportedOption {
        path: path.to_path_buf(),
        key: key.to_string(),
        value: value.to_string(),
        supported: supported.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(config: Value) -> Result<RopeConfig> {
        RopeConfig::from_config(&config, 10_000.0, Path::new("config.json"))
    }

    #[test]
    fn legacy_and_v5_spellings_agree() {
        let legacy = parse(json!({
            "rope_theta": 500000.0,
            "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
        }))
        .unwrap();
        let v5 = parse(json!({
            "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                                "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                "original_max_position_embeddings": 8192}
        }))
        .unwrap();
        assert_eq!(legacy, v5);
        assert_eq!(legacy.theta, 500000.0);
    }

    #[test]
    fn neox_rotary_pct_and_base() {
        let legacy = parse(json!({"rotary_pct": 0.25, "rotary_emb_base": 10000})).unwrap();
        let v5 = parse(
            json!({"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                                  "partial_rotary_factor": 0.25}}),
        )
        .unwrap();
        assert_eq!(legacy, v5);
        assert_eq!(legacy.rotary_dim(64), 16);
    }

    #[test]
    fn no_settings_is_plain_rotary_with_the_default_base() {
        assert_eq!(parse(json!({})).unwrap(), RopeConfig::plain(10_000.0));
        assert_eq!(
            parse(json!({"rope_scaling": null, "rope_theta": 5.0})).unwrap(),
            RopeConfig::plain(5.0)
        );
    }

    #[test]
    fn other_scaling_types_are_refused_naming_key_value_and_supported() {
        for (config, key, value) in [
            (
                json!({"rope_scaling": {"type": "linear", "factor": 2.0}}),
                "rope_scaling.type",
                "\"linear\"",
            ),
            (
                json!({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}),
                "rope_scaling.rope_type",
                "\"yarn\"",
            ),
            (
                json!({"rope_parameters": {"rope_type": "dynamic", "rope_theta": 1.0}}),
                "rope_parameters.rope_type",
                "\"dynamic\"",
            ),
        ] {
            let err = parse(config).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains(key) && msg.contains(value) && msg.contains("llama3"),
                "{msg}"
            );
        }
    }

    #[test]
    fn llama3_bands() {
        // d 16, theta 10000: wavelengths 6.3 (kept), 19.9 (smoothed), ≥ 62.8 (÷ factor)
        let rope = parse(
            json!({"rope_parameters": {"rope_type": "llama3", "rope_theta": 10000.0,
            "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32}}),
        )
        .unwrap();
        let plain = RopeConfig::plain(10_000.0).inv_freq(16);
        let scaled = rope.inv_freq(16);
        assert_eq!(scaled[0], plain[0]);
        assert!(scaled[1] < plain[1] && scaled[1] > plain[1] / 8.0);
        for i in 2..8 {
            assert!((scaled[i] - plain[i] / 8.0).abs() <= plain[i] * 1e-6);
        }
    }
}
