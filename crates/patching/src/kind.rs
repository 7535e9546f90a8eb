//! The named patch kinds: which hook point each patches and what one cell of it is.
//!
//! As in TransformerLens's `patching.py`, a kind is a thin description over the one
//! generic sweep: its site ([`PatchKind::site`]) and its cell axes
//! ([`PatchKind::axes`]). Adding a kind is one enum arm in each `match` below.

use std::fmt;

use actpatch_hooks::BlockSite;
use actpatch_model::ModelDims;
use serde::Deserialize;

/// What a sweep patches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatchKind {
    /// `hook_resid_pre`, by layer × position.
    ResidPre,
    /// `hook_resid_mid`, by layer × position.
    ResidMid,
    /// `hook_resid_post`, by layer × position.
    ResidPost,
    /// `hook_attn_out`, by layer × position.
    AttnOut,
    /// `hook_mlp_out`, by layer × position.
    MlpOut,
    /// Each head's `hook_z` at every position, by layer × head.
    HeadOut,
    /// Each head's `hook_z` at one position, by layer × head × position.
    HeadOutByPos,
    /// Each head's `hook_pattern` (all query positions), by layer × head.
    HeadPattern,
    /// Path patching: each sender head's `hook_z` (all positions), through the
    /// receivers of a `[[sweep.paths]]` entry ([`crate::path`]), by layer × head.
    Path,
    /// Path patching from each sender head at one position, by layer × head × position.
    PathByPos,
    /// Each head's query input `hook_q` at every position, by layer × head.
    HeadQ,
    /// Each head's `hook_q` at one position, by layer × head × position.
    HeadQByPos,
    /// Each key/value head's key input `hook_k` at every position, by layer × key/value head.
    HeadK,
    /// Each key/value head's `hook_k` at one position.
    HeadKByPos,
    /// Each key/value head's value input `hook_v` at every position.
    HeadV,
    /// Each key/value head's `hook_v` at one position.
    HeadVByPos,
    /// One entry of a head's `hook_pattern`, by layer × head × destination (query)
    /// position × source (key) position.
    HeadPatternByDestSrc,
}

/// The axes of one kind's cells, besides the layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellAxes {
    /// One cell per (layer, position).
    Position,
    /// One cell per (layer, head), patching every position.
    Head,
    /// One cell per (layer, head, position).
    HeadPosition,
    /// One cell per (layer, head, destination position, source position ≤ destination).
    HeadDestSrc,
}

impl PatchKind {
    pub const ALL: [PatchKind; 17] = [
        PatchKind::ResidPre,
        PatchKind::ResidMid,
        PatchKind::ResidPost,
        PatchKind::AttnOut,
        PatchKind::MlpOut,
        PatchKind::HeadOut,
        PatchKind::HeadOutByPos,
        PatchKind::HeadPattern,
        PatchKind::Path,
        PatchKind::PathByPos,
        PatchKind::HeadQ,
        PatchKind::HeadQByPos,
        PatchKind::HeadK,
        PatchKind::HeadKByPos,
        PatchKind::HeadV,
        PatchKind::HeadVByPos,
        PatchKind::HeadPatternByDestSrc,
    ];

    /// The name in experiment files and tables.
    pub fn name(self) -> &'static str {
        match self {
            PatchKind::ResidPre => "resid_pre",
            PatchKind::ResidMid => "resid_mid",
            PatchKind::ResidPost => "resid_post",
            PatchKind::AttnOut => "attn_out",
            PatchKind::MlpOut => "mlp_out",
            PatchKind::HeadOut => "head_out",
            PatchKind::HeadOutByPos => "head_out_by_pos",
            PatchKind::HeadPattern => "head_pattern",
            PatchKind::Path => "path",
            PatchKind::PathByPos => "path_by_pos",
            PatchKind::HeadQ => "head_q",
            PatchKind::HeadQByPos => "head_q_by_pos",
            PatchKind::HeadK => "head_k",
            PatchKind::HeadKByPos => "head_k_by_pos",
            PatchKind::HeadV => "head_v",
            PatchKind::HeadVByPos => "head_v_by_pos",
            PatchKind::HeadPatternByDestSrc => "head_pattern_by_dest_src",
        }
    }

    /// The hook point this kind patches in each layer.
    pub fn site(self) -> BlockSite {
        match self {
            PatchKind::ResidPre => BlockSite::ResidPre,
            PatchKind::ResidMid => BlockSite::ResidMid,
            PatchKind::ResidPost => BlockSite::ResidPost,
            PatchKind::AttnOut => BlockSite::AttnOut,
            PatchKind::MlpOut => BlockSite::MlpOut,
            PatchKind::HeadOut
            | PatchKind::HeadOutByPos
            | PatchKind::Path
            | PatchKind::PathByPos => BlockSite::Z,
            PatchKind::HeadPattern | PatchKind::HeadPatternByDestSrc => BlockSite::Pattern,
            PatchKind::HeadQ | PatchKind::HeadQByPos => BlockSite::Q,
            PatchKind::HeadK | PatchKind::HeadKByPos => BlockSite::K,
            PatchKind::HeadV | PatchKind::HeadVByPos => BlockSite::V,
        }
    }

    /// What one cell of this kind is.
    pub fn axes(self) -> CellAxes {
        match self {
            PatchKind::ResidPre
            | PatchKind::ResidMid
            | PatchKind::ResidPost
            | PatchKind::AttnOut
            | PatchKind::MlpOut => CellAxes::Position,
            PatchKind::HeadOut
            | PatchKind::HeadPattern
            | PatchKind::HeadQ
            | PatchKind::HeadK
            | PatchKind::HeadV
            | PatchKind::Path => CellAxes::Head,
            PatchKind::HeadOutByPos
            | PatchKind::HeadQByPos
            | PatchKind::HeadKByPos
            | PatchKind::HeadVByPos
            | PatchKind::PathByPos => CellAxes::HeadPosition,
            PatchKind::HeadPatternByDestSrc => CellAxes::HeadDestSrc,
        }
    }

    /// Whether the kind patches the attention pattern, which has one column per key
    /// position and so cannot be moved between prompts of different token lengths.
    pub fn needs_equal_lengths(self) -> bool {
        self.site() == BlockSite::Pattern
    }

    /// The kind named `name` (as in the tables and experiment files).
    pub fn from_name(name: &str) -> Option<PatchKind> {
        PatchKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Every kind's name, for messages.
    pub fn names() -> String {
        PatchKind::ALL.map(|k| k.name()).join(", ")
    }

    pub fn has_head(self) -> bool {
        self.axes() != CellAxes::Position
    }

    pub fn by_position(self) -> bool {
        self.axes() != CellAxes::Head
    }

    /// How many heads a cell can name: the site's head axis (key/value heads for
    /// keys and values under grouped-query attention).
    pub fn n_heads(self, dims: &ModelDims) -> usize {
        match self.site() {
            BlockSite::K | BlockSite::V | BlockSite::RotK => dims.n_kv_heads,
            _ => dims.n_heads,
        }
    }
}

impl fmt::Display for PatchKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
