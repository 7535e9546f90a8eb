//! What a path ends in: the logits, or the q, k or v input of chosen later heads.

use std::fmt;

use actpatch_hooks::{ActivationCache, BlockSite, Cell, HookPoint, Patch, PatchValue};
use actpatch_model::ModelDims;
use serde::Deserialize;

use crate::cells::cells_of;
use crate::{CellIndex, PatchKind, PatchingError, Result};

/// Which input of a receiver head a path is measured through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiverInput {
    /// `attn.hook_q`
    Q,
    /// `attn.hook_k` (key/value heads under grouped-query attention)
    K,
    /// `attn.hook_v` (key/value heads under grouped-query attention)
    V,
}

impl ReceiverInput {
    pub fn name(self) -> &'static str {
        match self {
            ReceiverInput::Q => "q",
            ReceiverInput::K => "k",
            ReceiverInput::V => "v",
        }
    }

    pub fn site(self) -> BlockSite {
        match self {
            ReceiverInput::Q => BlockSite::Q,
            ReceiverInput::K => BlockSite::K,
            ReceiverInput::V => BlockSite::V,
        }
    }

    /// How many heads the input has in each layer.
    pub fn n_heads(self, dims: &ModelDims) -> usize {
        match self {
            ReceiverInput::Q => dims.n_heads,
            ReceiverInput::K | ReceiverInput::V => dims.n_kv_heads,
        }
    }
}

/// One receiver head: `layer.head` (a key/value head for k and v inputs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReceiverHead {
    pub layer: usize,
    pub head: usize,
}

impl fmt::Display for ReceiverHead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.layer, self.head)
    }
}

/// Where the paths of a path-patching sweep end.
#[derive(Debug, Clone, PartialEq)]
pub enum Receivers {
    /// The next-token logits (through every MLP and norm after the sender).
    Logits,
    /// The `input` of `heads` at the target positions `positions` (`None`: all).
    Heads {
        input: ReceiverInput,
        heads: Vec<ReceiverHead>,
        positions: Option<Vec<usize>>,
    },
}

impl Receivers {
    /// The receiver heads' layers, in order, without repeats (none for the logits).
    pub fn layers(&self) -> Vec<usize> {
        match self {
            Receivers::Logits => Vec::new(),
            Receivers::Heads { heads, .. } => {
                let mut layers: Vec<usize> = heads.iter().map(|h| h.layer).collect();
                layers.sort_unstable();
                layers.dedup();
                layers
            }
        }
    }

    /// Whether a sender head of layer `layer` can reach a receiver: any layer for the
    /// logits, a layer before the last receiver's otherwise.
    pub fn reaches(&self, layer: usize) -> bool {
        match self.layers().last() {
            None => true,
            Some(last) => layer < *last,
        }
    }

    /// The sender cells of `kind` ([`PatchKind::Path`] or [`PatchKind::PathByPos`]) at
    /// the target `positions` that can reach a receiver, in table order.
    pub fn senders(
        &self,
        kind: PatchKind,
        dims: &ModelDims,
        positions: &[usize],
    ) -> Vec<CellIndex> {
        cells_of(kind, dims, positions)
            .into_iter()
            .filter(|c| self.reaches(c.layer))
            .collect()
    }

    /// An error naming the first receiver that the model or the prompt does not have.
    pub fn check(&self, dims: &ModelDims, n_pos: usize) -> Result<()> {
        let Receivers::Heads {
            input,
            heads,
            positions,
        } = self
        else {
            return Ok(());
        };
        let bad = |reason: String| Err(PatchingError::Receivers { reason });
        if heads.is_empty() {
            return bad("no receiver heads".into());
        }
        let n_heads = input.n_heads(dims);
        for h in heads {
            if h.layer >= dims.n_layers || h.head >= n_heads {
                return bad(format!(
                    "receiver head {h} does not exist: the model has layers 0..{} with {n_heads} {} heads each",
                    dims.n_layers - 1,
                    input.name()
                ));
            }
        }
        if let Some(p) = positions.iter().flatten().find(|p| **p >= n_pos) {
            return bad(format!(
                "receiver position {p} is outside the patched run's {n_pos} tokens"
            ));
        }
        if positions.as_ref().is_some_and(|p| p.is_empty()) {
            return bad("no receiver positions".into());
        }
        Ok(())
    }

    /// The hook points the frozen pass records (none for the logits).
    pub fn points(&self) -> Vec<HookPoint> {
        match self {
            Receivers::Logits => Vec::new(),
            Receivers::Heads { input, .. } => self
                .layers()
                .into_iter()
                .map(|l| HookPoint::block(l, input.site()))
                .collect(),
        }
    }

    /// The second pass's patches: on each row, the recorded value of every receiver
    /// after that row's sender (`sender_layers[row]`; a receiver at or before it
    /// records the target run's own value, so patching it would change nothing).
    /// `recorded` holds `[rows, pos, head, d_head]` at [`Receivers::points`]; `offset`
    /// is subtracted from the positions, for passes over a later span.
    pub fn patches(
        &self,
        recorded: &ActivationCache,
        sender_layers: &[usize],
        offset: usize,
    ) -> Result<Vec<Patch>> {
        let Receivers::Heads {
            heads, positions, ..
        } = self
        else {
            return Ok(Vec::new());
        };
        let mut patches = Vec::new();
        for point in self.points() {
            let layer = point.layer().unwrap_or(0);
            let layer_heads: Vec<usize> = (heads.iter())
                .filter(|h| h.layer == layer)
                .map(|h| h.head)
                .collect();
            let mut cells = Vec::new();
            for (row, _) in (sender_layers.iter().enumerate()).filter(|(_, l)| **l < layer) {
                for head in &layer_heads {
                    let cell = |position| Cell {
                        row,
                        position,
                        head: Some(*head),
                        key: None,
                    };
                    match positions {
                        None => cells.push(cell(None)),
                        Some(list) => cells.extend(list.iter().map(|p| cell(Some(p - offset)))),
                    }
                }
            }
            if !cells.is_empty() {
                let value = recorded.get(point)?.clone();
                patches.push(Patch::at_cells(point, PatchValue::Replace(value), cells));
            }
        }
        Ok(patches)
    }
}

impl fmt::Display for Receivers {
    /// `logits`, or e.g. `q of 9.6 9.9 10.0 at 14` (`at all` for every position).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Receivers::Logits => f.write_str("logits"),
            Receivers::Heads {
                input,
                heads,
                positions,
            } => {
                let heads: Vec<String> = heads.iter().map(|h| h.to_string()).collect();
                let at = match positions {
                    None => "all".to_string(),
                    Some(list) => list
                        .iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join(" "),
                };
                write!(f, "{} of {} at {at}", input.name(), heads.join(" "))
            }
        }
    }
}
