//! Hook points, named exactly as TransformerLens names them.
//!
//! A [`HookPoint`] prints to and parses from TransformerLens's strings
//! (`blocks.3.attn.hook_z`, `ln_final.hook_scale`, …). Which points a model has
//! depends on its architecture ([`HookSpace`]): GPT-2 has `hook_pos_embed`, Llama has
//! `attn.hook_rot_q`/`hook_rot_k` and `mlp.hook_pre_linear`.

use std::fmt;
use std::str::FromStr;

use crate::HookError;

/// A place in one transformer block where an activation can be read or patched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlockSite {
    /// `hook_resid_pre`: the residual stream entering the block. `[batch, pos, d_model]`
    ResidPre,
    /// `ln1.hook_scale`: the first norm's divisor. `[batch, pos, 1]`
    Ln1Scale,
    /// `ln1.hook_normalized`: the first norm's output. `[batch, pos, d_model]`
    Ln1Normalized,
    /// `attn.hook_q`: queries. `[batch, pos, head, d_head]`
    Q,
    /// `attn.hook_k`: keys. `[batch, pos, kv_head, d_head]`
    K,
    /// `attn.hook_v`: values. `[batch, pos, kv_head, d_head]`
    V,
    /// `attn.hook_rot_q`: queries after rotary embedding (Llama). `[batch, pos, head, d_head]`
    RotQ,
    /// `attn.hook_rot_k`: keys after rotary embedding (Llama). `[batch, pos, kv_head, d_head]`
    RotK,
    /// `attn.hook_attn_scores`: scaled, causally masked scores. `[batch, head, query_pos, key_pos]`
    AttnScores,
    /// `attn.hook_pattern`: attention probabilities. `[batch, head, query_pos, key_pos]`
    Pattern,
    /// `attn.hook_z`: each head's weighted values. `[batch, pos, head, d_head]`
    Z,
    /// `hook_attn_out`: the attention layer's output. `[batch, pos, d_model]`
    AttnOut,
    /// `hook_resid_mid`: residual stream between attention and MLP. `[batch, pos, d_model]`
    ResidMid,
    /// `ln2.hook_scale`. `[batch, pos, 1]`
    Ln2Scale,
    /// `ln2.hook_normalized`. `[batch, pos, d_model]`
    Ln2Normalized,
    /// `mlp.hook_pre`: MLP pre-activation (Llama: the gate projection). `[batch, pos, d_mlp]`
    MlpPre,
    /// `mlp.hook_pre_linear`: the up projection of a gated MLP (Llama). `[batch, pos, d_mlp]`
    MlpPreLinear,
    /// `mlp.hook_post`: MLP activation. `[batch, pos, d_mlp]`
    MlpPost,
    /// `hook_mlp_out`: the MLP's output. `[batch, pos, d_model]`
    MlpOut,
    /// `hook_resid_post`: the residual stream leaving the block. `[batch, pos, d_model]`
    ResidPost,
    /// `attn.q_norm.hook_scale`: the per-head query RMSNorm's divisor (Qwen3).
    /// `[batch, pos, head, 1]` (TransformerLens flattens the leading axes)
    QNormScale,
    /// `attn.q_norm.hook_normalized`: queries divided by it, before the weight (Qwen3).
    /// `[batch, pos, head, d_head]`
    QNormNormalized,
    /// `attn.k_norm.hook_scale` (Qwen3). `[batch, pos, kv_head, 1]`
    KNormScale,
    /// `attn.k_norm.hook_normalized` (Qwen3). `[batch, pos, kv_head, d_head]`
    KNormNormalized,
    /// `ln1_post.hook_scale`: the norm after attention (Gemma 2). `[batch, pos, 1]`
    Ln1PostScale,
    /// `ln1_post.hook_normalized` (Gemma 2). `[batch, pos, d_model]`
    Ln1PostNormalized,
    /// `ln2_post.hook_scale`: the norm after the MLP (Gemma 2). `[batch, pos, 1]`
    Ln2PostScale,
    /// `ln2_post.hook_normalized` (Gemma 2). `[batch, pos, d_model]`
    Ln2PostNormalized,
}

/// How the axes of an activation are laid out, which decides what a patch can select.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `[batch, pos, features]` (residual stream, MLP activations, norm scales).
    BatchPos,
    /// `[batch, pos, head, d_head]` (q, k, v, z).
    BatchPosHead,
    /// `[batch, head, query_pos, key_pos]` (scores, pattern); positions select query rows.
    BatchHeadQueryKey,
}

impl BlockSite {
    /// Every block site in forward order.
    pub const ALL: [BlockSite; 28] = [
        BlockSite::ResidPre,
        BlockSite::Ln1Scale,
        BlockSite::Ln1Normalized,
        BlockSite::Q,
        BlockSite::K,
        BlockSite::V,
        BlockSite::QNormScale,
        BlockSite::QNormNormalized,
        BlockSite::KNormScale,
        BlockSite::KNormNormalized,
        BlockSite::RotQ,
        BlockSite::RotK,
        BlockSite::AttnScores,
        BlockSite::Pattern,
        BlockSite::Z,
        BlockSite::Ln1PostScale,
        BlockSite::Ln1PostNormalized,
        BlockSite::AttnOut,
        BlockSite::ResidMid,
        BlockSite::Ln2Scale,
        BlockSite::Ln2Normalized,
        BlockSite::MlpPre,
        BlockSite::MlpPreLinear,
        BlockSite::MlpPost,
        BlockSite::Ln2PostScale,
        BlockSite::Ln2PostNormalized,
        BlockSite::MlpOut,
        BlockSite::ResidPost,
    ];

    /// The sites only some families have: q/k norms (Qwen3), post-norms (Gemma 2).
    const QK_NORM: [BlockSite; 4] = [
        BlockSite::QNormScale,
        BlockSite::QNormNormalized,
        BlockSite::KNormScale,
        BlockSite::KNormNormalized,
    ];
    const POST_NORMS: [BlockSite; 4] = [
        BlockSite::Ln1PostScale,
        BlockSite::Ln1PostNormalized,
        BlockSite::Ln2PostScale,
        BlockSite::Ln2PostNormalized,
    ];

    /// The name after `blocks.L.`, as TransformerLens writes it.
    pub fn suffix(self) -> &'static str {
        match self {
            BlockSite::ResidPre => "hook_resid_pre",
            BlockSite::Ln1Scale => "ln1.hook_scale",
            BlockSite::Ln1Normalized => "ln1.hook_normalized",
            BlockSite::Q => "attn.hook_q",
            BlockSite::K => "attn.hook_k",
            BlockSite::V => "attn.hook_v",
            BlockSite::RotQ => "attn.hook_rot_q",
            BlockSite::RotK => "attn.hook_rot_k",
            BlockSite::AttnScores => "attn.hook_attn_scores",
            BlockSite::Pattern => "attn.hook_pattern",
            BlockSite::Z => "attn.hook_z",
            BlockSite::AttnOut => "hook_attn_out",
            BlockSite::ResidMid => "hook_resid_mid",
            BlockSite::Ln2Scale => "ln2.hook_scale",
            BlockSite::Ln2Normalized => "ln2.hook_normalized",
            BlockSite::MlpPre => "mlp.hook_pre",
            BlockSite::MlpPreLinear => "mlp.hook_pre_linear",
            BlockSite::MlpPost => "mlp.hook_post",
            BlockSite::MlpOut => "hook_mlp_out",
            BlockSite::ResidPost => "hook_resid_post",
            BlockSite::QNormScale => "attn.q_norm.hook_scale",
            BlockSite::QNormNormalized => "attn.q_norm.hook_normalized",
            BlockSite::KNormScale => "attn.k_norm.hook_scale",
            BlockSite::KNormNormalized => "attn.k_norm.hook_normalized",
            BlockSite::Ln1PostScale => "ln1_post.hook_scale",
            BlockSite::Ln1PostNormalized => "ln1_post.hook_normalized",
            BlockSite::Ln2PostScale => "ln2_post.hook_scale",
            BlockSite::Ln2PostNormalized => "ln2_post.hook_normalized",
        }
    }

    pub fn layout(self) -> Layout {
        match self {
            BlockSite::Q
            | BlockSite::K
            | BlockSite::V
            | BlockSite::RotQ
            | BlockSite::RotK
            | BlockSite::QNormScale
            | BlockSite::QNormNormalized
            | BlockSite::KNormScale
            | BlockSite::KNormNormalized
            | BlockSite::Z => Layout::BatchPosHead,
            BlockSite::AttnScores | BlockSite::Pattern => Layout::BatchHeadQueryKey,
            _ => Layout::BatchPos,
        }
    }
}

/// A named activation of the forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HookPoint {
    /// `hook_embed`: token embeddings. `[batch, pos, d_model]`
    Embed,
    /// `hook_pos_embed`: learned position embeddings (GPT-2). `[batch, pos, d_model]`
    PosEmbed,
    /// `blocks.{layer}.{site}`.
    Block { layer: usize, site: BlockSite },
    /// `ln_final.hook_scale`. `[batch, pos, 1]`
    LnFinalScale,
    /// `ln_final.hook_normalized`. `[batch, pos, d_model]`
    LnFinalNormalized,
}

impl HookPoint {
    pub fn block(layer: usize, site: BlockSite) -> Self {
        HookPoint::Block { layer, site }
    }

    pub fn resid_pre(layer: usize) -> Self {
        HookPoint::block(layer, BlockSite::ResidPre)
    }

    pub fn layer(&self) -> Option<usize> {
        match self {
            HookPoint::Block { layer, .. } => Some(*layer),
            _ => None,
        }
    }

    pub fn layout(&self) -> Layout {
        match self {
            HookPoint::Block { site, .. } => site.layout(),
            _ => Layout::BatchPos,
        }
    }

    /// Parses a TransformerLens name and checks it exists in `space`.
    pub fn parse_in(name: &str, space: &HookSpace) -> Result<Self, HookError> {
        let point: HookPoint = name.parse()?;
        space.check(point)?;
        Ok(point)
    }
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookPoint::Embed => f.write_str("hook_embed"),
            HookPoint::PosEmbed => f.write_str("hook_pos_embed"),
            HookPoint::Block { layer, site } => write!(f, "blocks.{layer}.{}", site.suffix()),
            HookPoint::LnFinalScale => f.write_str("ln_final.hook_scale"),
            HookPoint::LnFinalNormalized => f.write_str("ln_final.hook_normalized"),
        }
    }
}

const GLOBAL_NAMES: [(&str, HookPoint); 4] = [
    ("hook_embed", HookPoint::Embed),
    ("hook_pos_embed", HookPoint::PosEmbed),
    ("ln_final.hook_scale", HookPoint::LnFinalScale),
    ("ln_final.hook_normalized", HookPoint::LnFinalNormalized),
];

impl FromStr for HookPoint {
    type Err = HookError;

    /// Parses any TransformerLens name, whatever the model; see [`HookPoint::parse_in`]
    /// to also check the layer range and the architecture.
    fn from_str(name: &str) -> Result<Self, HookError> {
        let unknown = || HookError::UnknownHook {
            name: name.to_string(),
            valid: valid_forms(),
        };
        if let Some((_, point)) = GLOBAL_NAMES.iter().find(|(n, _)| *n == name) {
            return Ok(*point);
        }
        let rest = name.strip_prefix("blocks.").ok_or_else(unknown)?;
        let (layer, suffix) = rest.split_once('.').ok_or_else(unknown)?;
        let layer: usize = layer.parse().map_err(|_| unknown())?;
        let site = BlockSite::ALL
            .iter()
            .find(|s| s.suffix() == suffix)
            .ok_or_else(unknown)?;
        Ok(HookPoint::block(layer, *site))
    }
}

fn valid_forms() -> String {
    let mut forms: Vec<String> = GLOBAL_NAMES.iter().map(|(n, _)| n.to_string()).collect();
    forms.extend(
        BlockSite::ALL
            .iter()
            .map(|s| format!("blocks.L.{}", s.suffix())),
    );
    forms.join(", ")
}

/// Which hook points one model has: its layer count and architecture-specific sites.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookSpace {
    pub n_layers: usize,
    /// Global points the model has, in forward order.
    pub globals_before: Vec<HookPoint>,
    /// Block sites the model has, in forward order.
    pub sites: Vec<BlockSite>,
}

impl HookSpace {
    /// GPT-2's hook points (TransformerLens `HookedTransformer` on a GPT-2 config).
    pub fn gpt2(n_layers: usize) -> Self {
        HookSpace::rotary_without(n_layers, &[])
            .without(&[BlockSite::RotQ, BlockSite::RotK, BlockSite::MlpPreLinear])
            .with_globals(vec![HookPoint::Embed, HookPoint::PosEmbed])
    }

    /// Llama's hook points (Mistral, Qwen2 too): no `hook_pos_embed`; rotary and
    /// gated-MLP sites.
    pub fn llama(n_layers: usize) -> Self {
        HookSpace::rotary_without(n_layers, &[])
    }

    /// Qwen3's: Llama's plus the per-head query and key norms (`attn.q_norm.*`,
    /// `attn.k_norm.*`).
    pub fn qwen3(n_layers: usize) -> Self {
        HookSpace::rotary_without(n_layers, &BlockSite::QK_NORM)
    }

    /// Gemma 2's: Llama's plus the norms after attention and MLP (`ln1_post.*`,
    /// `ln2_post.*`).
    pub fn gemma2(n_layers: usize) -> Self {
        HookSpace::rotary_without(n_layers, &BlockSite::POST_NORMS)
    }

    /// GPT-NeoX's (Pythia): rotary, an ungated MLP, and no `hook_resid_mid` where
    /// attention and MLP run in parallel (as TransformerLens).
    pub fn neox(n_layers: usize, parallel: bool) -> Self {
        let space = HookSpace::rotary_without(n_layers, &[]).without(&[BlockSite::MlpPreLinear]);
        match parallel {
            true => space.without(&[BlockSite::ResidMid]),
            false => space,
        }
    }

    /// Every site but the family-specific ones not in `extras`; `hook_embed` only.
    fn rotary_without(n_layers: usize, extras: &[BlockSite]) -> Self {
        let sites = BlockSite::ALL
            .iter()
            .copied()
            .filter(|s| {
                extras.contains(s)
                    || !(BlockSite::QK_NORM.contains(s) || BlockSite::POST_NORMS.contains(s))
            })
            .collect();
        HookSpace {
            n_layers,
            globals_before: vec![HookPoint::Embed],
            sites,
        }
    }

    fn without(mut self, sites: &[BlockSite]) -> Self {
        self.sites.retain(|s| !sites.contains(s));
        self
    }

    fn with_globals(mut self, globals: Vec<HookPoint>) -> Self {
        self.globals_before = globals;
        self
    }

    /// Every hook point of the model, in forward order.
    pub fn all(&self) -> Vec<HookPoint> {
        let mut points = self.globals_before.clone();
        for layer in 0..self.n_layers {
            points.extend(self.sites.iter().map(|s| HookPoint::block(layer, *s)));
        }
        points.push(HookPoint::LnFinalScale);
        points.push(HookPoint::LnFinalNormalized);
        points
    }

    /// `Ok` when the model has this point; otherwise an error listing what it has.
    pub fn check(&self, point: HookPoint) -> Result<(), HookError> {
        match point {
            HookPoint::Block { layer, site } => {
                if layer >= self.n_layers {
                    return Err(HookError::LayerOutOfRange {
                        name: point.to_string(),
                        layer,
                        n_layers: self.n_layers,
                    });
                }
                if !self.sites.contains(&site) {
                    return Err(self.not_in_model(point));
                }
            }
            HookPoint::Embed | HookPoint::PosEmbed => {
                if !self.globals_before.contains(&point) {
                    return Err(self.not_in_model(point));
                }
            }
            HookPoint::LnFinalScale | HookPoint::LnFinalNormalized => {}
        }
        Ok(())
    }

    fn not_in_model(&self, point: HookPoint) -> HookError {
        let mut valid: Vec<String> = self.globals_before.iter().map(|p| p.to_string()).collect();
        valid.extend(
            self.sites
                .iter()
                .map(|s| format!("blocks.L.{}", s.suffix())),
        );
        valid.push("ln_final.hook_scale".into());
        valid.push("ln_final.hook_normalized".into());
        HookError::NotInModel {
            name: point.to_string(),
            valid: valid.join(", "),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips() {
        for point in HookSpace::llama(3).all() {
            let name = point.to_string();
            assert_eq!(name.parse::<HookPoint>().unwrap(), point, "{name}");
        }
        assert_eq!(HookSpace::gpt2(2).all().len(), 2 + 2 * 17 + 2);
    }

    #[test]
    fn tl_names_parse_to_the_right_point() {
        assert_eq!(
            "blocks.11.attn.hook_z".parse::<HookPoint>().unwrap(),
            HookPoint::block(11, BlockSite::Z)
        );
        assert_eq!(
            "ln_final.hook_scale".parse::<HookPoint>().unwrap(),
            HookPoint::LnFinalScale
        );
    }

    #[test]
    fn unknown_name_lists_valid_forms() {
        let err = "blocks.0.attn.hook_zz".parse::<HookPoint>().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("blocks.0.attn.hook_zz"), "{msg}");
        assert!(msg.contains("blocks.L.attn.hook_z"), "{msg}");
    }

    #[test]
    fn layer_out_of_range_names_the_range() {
        let err =
            HookPoint::parse_in("blocks.12.hook_resid_pre", &HookSpace::gpt2(12)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("layer 12") && msg.contains("0..=11"), "{msg}");
    }

    #[test]
    fn architecture_specific_points_are_checked() {
        let err = HookPoint::parse_in("hook_pos_embed", &HookSpace::llama(2)).unwrap_err();
        assert!(err.to_string().contains("hook_pos_embed"));
        assert!(HookPoint::parse_in("blocks.1.attn.hook_rot_q", &HookSpace::gpt2(2)).is_err());
        assert!(HookPoint::parse_in("blocks.1.attn.hook_rot_q", &HookSpace::llama(2)).is_ok());
    }

    #[test]
    fn family_specific_points() {
        let q_norm = "blocks.0.attn.q_norm.hook_normalized";
        assert!(HookPoint::parse_in(q_norm, &HookSpace::qwen3(2)).is_ok());
        assert!(HookPoint::parse_in(q_norm, &HookSpace::llama(2)).is_err());
        let post = "blocks.1.ln2_post.hook_scale";
        assert!(HookPoint::parse_in(post, &HookSpace::gemma2(2)).is_ok());
        assert!(HookPoint::parse_in(post, &HookSpace::qwen3(2)).is_err());
        let err = HookPoint::parse_in("blocks.0.hook_resid_mid", &HookSpace::neox(2, true))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("hook_resid_mid") && err.contains("hook_resid_post"),
            "{err}"
        );
        assert!(HookPoint::parse_in("blocks.0.hook_resid_mid", &HookSpace::neox(2, false)).is_ok());
        assert_eq!(HookSpace::llama(1).all().len(), 1 + 20 + 2);
        assert_eq!(HookSpace::qwen3(1).all().len(), 1 + 24 + 2);
        assert_eq!(HookSpace::gemma2(1).all().len(), 1 + 24 + 2);
        assert_eq!(HookSpace::neox(1, true).all().len(), 1 + 18 + 2);
        for space in [
            HookSpace::qwen3(2),
            HookSpace::gemma2(2),
            HookSpace::neox(2, true),
        ] {
            for point in space.all() {
                assert_eq!(point.to_string().parse::<HookPoint>().unwrap(), point);
            }
        }
    }
}
