use thiserror::Error;

/// Everything that can go wrong naming, caching or patching an activation.
#[derive(Debug, Error)]
pub enum HookError {
    #[error("unknown hook point `{name}`. Valid hook points (L is a layer number): {valid}")]
    UnknownHook { name: String, valid: String },

    #[error("hook point `{name}` asks for layer {layer}, but the model has {n_layers} layers (valid layers: 0..={})", n_layers.saturating_sub(1))]
    LayerOutOfRange {
        name: String,
        layer: usize,
        n_layers: usize,
    },

    #[error("this model has no hook point `{name}`. Its hook points are: {valid}")]
    NotInModel { name: String, valid: String },

    #[error("`{name}` is not in the activation cache (cached: {cached}). Cache it by including it in the cache filter.")]
    NotCached { name: String, cached: String },

    #[error("patch of `{name}`: {axis} index {index} is out of range (the activation has {size} {axis}s)")]
    IndexOutOfRange {
        name: String,
        axis: &'static str,
        index: usize,
        size: usize,
    },

    #[error("patch of `{name}` selects heads, but that hook point has no head axis")]
    NoHeadAxis { name: String },

    #[error("patch of `{name}`: a key position selects one attention-pattern entry, and `{name}` is not an attention pattern or score; patch `attn.hook_pattern` or `attn.hook_attn_scores`")]
    NoKeyAxis { name: String },

    #[error("patch of `{name}`: the patch value has shape {given:?}, which does not fit the activation's shape {activation:?}")]
    PatchShape {
        name: String,
        given: Vec<usize>,
        activation: Vec<usize>,
    },

    #[error("tensor operation failed at `{name}`: {source}")]
    Tensor {
        name: String,
        // Boxed: candle's error is large, and every `Result` of this crate carries it.
        #[source]
        source: Box<candle_core::Error>,
    },
}
