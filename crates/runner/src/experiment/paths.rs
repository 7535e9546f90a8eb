//! `[[sweep.paths]]`: the receiver sets of path patching (kinds `path` and
//! `path_by_pos`), each swept as its own grid.
//!
//! ```toml
//! [[sweep.paths]]
//! receivers = "logits"
//!
//! [[sweep.paths]]
//! label = "name movers' queries"    # optional; the table's `receivers` column
//! receivers = "q"                    # "logits", "q", "k" or "v"
//! heads = ["9.6", "9.9", "10.0"]     # layer.head; or layer = 9 with heads = [6, 9]
//! positions = "end"                  # "all" (default), "end", or [positions]
//! ```

use std::fmt;

use actpatch_model::ModelDims;
use actpatch_patching::path::{ReceiverHead, ReceiverInput, Receivers};
use serde::Deserialize;

/// One `[[sweep.paths]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PathSpec {
    /// The receiver set's name in tables and figures (default: from the receivers).
    pub label: Option<String>,
    pub receivers: ReceiverKind,
    /// With `heads = [6, 9]` (or alone: every head of the layer).
    pub layer: Option<usize>,
    #[serde(default)]
    pub heads: Vec<HeadRef>,
    #[serde(default)]
    pub positions: ReceiverPositions,
}

/// What the paths end in.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ReceiverKind {
    Logits,
    Q,
    K,
    V,
}

/// A receiver head: a head number (of `layer`) or `"layer.head"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(
    untagged,
    expecting = "a head number such as 6 (with `layer`) or \"layer.head\" such as \"9.6\""
)]
pub enum HeadRef {
    Index(usize),
    Named(String),
}

impl fmt::Display for HeadRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadRef::Index(i) => write!(f, "{i}"),
            HeadRef::Named(s) => write!(f, "\"{s}\""),
        }
    }
}

/// The receivers' positions in the run being patched.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(
    untagged,
    expecting = "positions = \"all\", \"end\" (the final position) or a list of position numbers such as [3, 9]"
)]
pub enum ReceiverPositions {
    #[default]
    #[serde(skip)]
    Default,
    Keyword(PositionKeyword),
    List(Vec<usize>),
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PositionKeyword {
    All,
    End,
}

impl ReceiverPositions {
    /// The positions of a run of `n_pos` tokens (`None`: all).
    pub fn resolve(&self, n_pos: usize) -> Option<Vec<usize>> {
        match self {
            ReceiverPositions::Default | ReceiverPositions::Keyword(PositionKeyword::All) => None,
            ReceiverPositions::Keyword(PositionKeyword::End) => Some(vec![n_pos - 1]),
            ReceiverPositions::List(list) => Some(list.clone()),
        }
    }

    fn describe(&self) -> String {
        match self {
            ReceiverPositions::Default | ReceiverPositions::Keyword(PositionKeyword::All) => {
                "all".into()
            }
            ReceiverPositions::Keyword(PositionKeyword::End) => "end".into(),
            ReceiverPositions::List(list) => {
                let list: Vec<String> = list.iter().map(|p| p.to_string()).collect();
                list.join(" ")
            }
        }
    }

    /// The listed positions, if any.
    pub fn list(&self) -> Option<&[usize]> {
        match self {
            ReceiverPositions::List(list) => Some(list),
            _ => None,
        }
    }
}

impl PathSpec {
    fn input(&self) -> Option<ReceiverInput> {
        match self.receivers {
            ReceiverKind::Logits => None,
            ReceiverKind::Q => Some(ReceiverInput::Q),
            ReceiverKind::K => Some(ReceiverInput::K),
            ReceiverKind::V => Some(ReceiverInput::V),
        }
    }

    /// The name in tables and figures: `label`, or e.g. `logits`, `q of 9.6 9.9 at end`.
    pub fn label(&self) -> String {
        if let Some(label) = &self.label {
            return label.clone();
        }
        let Some(input) = self.input() else {
            return "logits".into();
        };
        let heads: Vec<String> = match self.layer {
            Some(layer) if self.heads.is_empty() => vec![format!("{layer}.*")],
            Some(layer) => self.heads.iter().map(|h| format!("{layer}.{h}")).collect(),
            None => self
                .heads
                .iter()
                .map(|h| h.to_string().trim_matches('"').to_string())
                .collect(),
        };
        format!(
            "{} of {} at {}",
            input.name(),
            heads.join(" "),
            self.positions.describe()
        )
    }

    /// What the types cannot say (before the model is loaded).
    pub fn check(&self) -> Result<(), String> {
        let label = self.label();
        if self.input().is_none() {
            if self.layer.is_some()
                || !self.heads.is_empty()
                || self.positions != ReceiverPositions::Default
            {
                return Err(format!("[[sweep.paths]] `{label}`: receivers = \"logits\" takes no `layer`, `heads` or `positions` (the logits are read at the final position); for heads' inputs write receivers = \"q\", \"k\" or \"v\""));
            }
            return Ok(());
        }
        if self.layer.is_none() && self.heads.is_empty() {
            return Err(format!("[[sweep.paths]] `{label}`: name the receiver heads, e.g. heads = [\"9.6\", \"10.0\"], or layer = 9 (every head of layer 9)"));
        }
        if self.label.as_deref().is_some_and(|l| l.trim().is_empty()) {
            return Err("[[sweep.paths]]: `label` is empty; leave it out for the default".into());
        }
        if self.positions.list().is_some_and(|l| l.is_empty()) {
            return Err(format!(
                "[[sweep.paths]] `{label}`: positions = [] lists no position"
            ));
        }
        Ok(())
    }

    /// The receiver heads on a model of `dims`; an error names a head it lacks.
    pub fn heads(&self, dims: &ModelDims) -> Result<Vec<ReceiverHead>, String> {
        let Some(input) = self.input() else {
            return Ok(Vec::new());
        };
        let label = self.label();
        let n_heads = input.n_heads(dims);
        let mut heads = Vec::new();
        match self.layer {
            Some(layer) if self.heads.is_empty() => {
                heads.extend((0..n_heads).map(|head| ReceiverHead { layer, head }))
            }
            Some(layer) => {
                for h in &self.heads {
                    let HeadRef::Index(head) = h else {
                        return Err(format!("[[sweep.paths]] `{label}`: with `layer = {layer}`, heads are head numbers (heads = [6, 9]); {h} names a layer too. Drop `layer` to list heads as \"layer.head\""));
                    };
                    heads.push(ReceiverHead { layer, head: *head });
                }
            }
            None => {
                for h in &self.heads {
                    heads.push(parse_head(h).ok_or_else(|| format!("[[sweep.paths]] `{label}`: {h} is not a head written \"layer.head\" (e.g. \"9.6\"); for head numbers of one layer add `layer`"))?);
                }
            }
        }
        if let Some(bad) = heads
            .iter()
            .find(|h| h.layer >= dims.n_layers || h.head >= n_heads)
        {
            let kv = match input {
                ReceiverInput::Q => "",
                _ => " key/value",
            };
            return Err(format!(
                "[[sweep.paths]] `{label}`: receiver head {bad} does not exist: the model has layers 0..={} with {n_heads}{kv} heads each (0..={})",
                dims.n_layers - 1,
                n_heads - 1
            ));
        }
        if heads.iter().all(|h| h.layer == 0) {
            return Err(format!("[[sweep.paths]] `{label}`: every receiver is in layer 0, so no sender head comes before it; choose receivers in later layers"));
        }
        Ok(heads)
    }

    /// The engine's receivers for a patched run of `n_pos` tokens.
    pub fn receivers(&self, dims: &ModelDims, n_pos: usize) -> Result<Receivers, String> {
        let Some(input) = self.input() else {
            return Ok(Receivers::Logits);
        };
        Ok(Receivers::Heads {
            input,
            heads: self.heads(dims)?,
            positions: self.positions.resolve(n_pos),
        })
    }
}

fn parse_head(h: &HeadRef) -> Option<ReceiverHead> {
    let HeadRef::Named(text) = h else {
        return None;
    };
    let (layer, head) = text.trim().split_once('.')?;
    Some(ReceiverHead {
        layer: layer.parse().ok()?,
        head: head.parse().ok()?,
    })
}
