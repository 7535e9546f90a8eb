//! Partial forward passes: continue a cached run of one prompt from any layer, on any
//! number of rows, for a span of its positions.
//!
//! A patch at layer L leaves every layer before L unchanged, and attention is causal,
//! so a patch at position p leaves every position before p unchanged. A patching sweep
//! therefore runs each patched row from block L on, only at the positions from p on,
//! and reads the keys and values of the earlier positions from an unpatched run of the
//! same prompt — the [`BaseRun`]:
//!
//! ```
//! # use actpatch_model::{HookedTransformer, Readout};
//! # use actpatch_hooks::Hooks;
//! # let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-gpt2");
//! let model = HookedTransformer::from_dir(dir)?;
//! let tokens = model.to_tokens("The Eiffel Tower is in", true)?;
//! let base = model.base_run(&tokens, [])?; // block inputs, keys and values of every layer
//!
//! // Layer 1 onwards, positions 3.. of the prompt, 4 rows (e.g. 4 patched cells).
//! let (layer, start) = (1, 3);
//! let span = model.span(&base, start, tokens.len() - start)?;
//! let mut resid = base.resid_pre(layer, start, span.len(), 4)?; // [4, len, d_model]
//! // ... patch `resid` (or pass patching hooks) ...
//! let last_layer = model.dims().n_layers - 1;
//! for l in layer..last_layer {
//!     resid = model.run_block(l, resid, &span, &mut Hooks::none())?;
//! }
//! let final_resid = model.run_block_final(last_layer, resid, &span, &mut Hooks::none())?; // [4, 1, d_model]
//! let logits = model.readout(&final_resid, &mut Hooks::none(), Readout::LastPosition)?; // [4, d_vocab]
//!
//! // Unpatched rows reproduce the base run.
//! let diff = (logits.get(0)? - base.logits().get(0)?)?.abs()?.max(0)?.to_scalar::<f32>()?;
//! assert!(diff < 1e-4);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The architecture decides what a base run caches (its block inputs, its keys — after
//! rotary embedding where there is one — and values) and which sites feed the keys and
//! values ([`HookedTransformer::site_feeds_keys_values`]).

use actpatch_hooks::{ActivationCache, BlockSite, CacheFilter, HookPoint, Hooks, Patch};
use candle_core::Tensor;

use crate::arch::ArchModel;
use crate::attention::{Frame, KvPrefix};
use crate::{HookedTransformer, ModelError, Readout, Result};

/// An unpatched run of one prompt, cached for partial forward passes: every layer's
/// block input (`hook_resid_pre`), keys and values, the extra hook points asked for,
/// and the next-token logits. Cloning shares the cached tensors.
#[derive(Clone)]
pub struct BaseRun {
    cache: ActivationCache,
    /// `[1, d_vocab]`
    logits: Tensor,
    n_pos: usize,
    key_site: BlockSite,
}

impl BaseRun {
    /// Everything the run cached (batch axis 1).
    pub fn cache(&self) -> &ActivationCache {
        &self.cache
    }

    /// The next-token logits `[1, d_vocab]`.
    pub fn logits(&self) -> &Tensor {
        &self.logits
    }

    /// The prompt's length in tokens.
    pub fn n_pos(&self) -> usize {
        self.n_pos
    }

    /// Block `layer`'s input at positions `from..from + len`, repeated for `rows` rows:
    /// `[rows, len, d_model]`, ready to be patched and run.
    pub fn resid_pre(&self, layer: usize, from: usize, len: usize, rows: usize) -> Result<Tensor> {
        let resid = self
            .cache
            .get(HookPoint::resid_pre(layer))?
            .narrow(1, from, len)?; // [1, len, d_model]
        let d_model = resid.dim(2)?;
        Ok(resid.broadcast_as((rows, len, d_model))?.contiguous()?)
    }

    /// Keys and values of layer `layer` at positions `0..start`, `[1, start, kv_head,
    /// d_head]` each (keys after rotary where the family has it): what a pass from
    /// position `start` attends to before its own positions
    /// ([`HookedTransformer::block_edges_from`]).
    pub fn keys_values(&self, layer: usize, start: usize) -> Result<(Tensor, Tensor)> {
        let k = self.cache.get(HookPoint::block(layer, self.key_site))?;
        let v = self.cache.get(HookPoint::block(layer, BlockSite::V))?;
        Ok((k.narrow(1, 0, start)?, v.narrow(1, 0, start)?))
    }

    /// Keys and values of layer `layer` at positions `0..start` (`[1, start, kv_head,
    /// d_head]` each), `None` when `start` is 0.
    pub(crate) fn prefix(&self, layer: usize, start: usize) -> Result<Option<KvPrefix>> {
        if start == 0 {
            return Ok(None);
        }
        let k = self.cache.get(HookPoint::block(layer, self.key_site))?;
        let v = self.cache.get(HookPoint::block(layer, BlockSite::V))?;
        Ok(Some(KvPrefix::new(
            k.narrow(1, 0, start)?,
            v.narrow(1, 0, start)?,
        )))
    }
}

/// Positions `start..start + len` of a base run's prompt: what a partial pass computes.
/// Positions before `start` are read from the base run's keys and values.
pub struct Span<'a> {
    pub(crate) base: &'a BaseRun,
    pub(crate) start: usize,
    pub(crate) len: usize,
    pub(crate) frame: Frame,
}

impl Span<'_> {
    pub fn start(&self) -> usize {
        self.start
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl HookedTransformer {
    /// Runs `tokens` once, unpatched, caching what partial passes continue from and
    /// the `extra` hook points (e.g. the sites a sweep compares with its source run).
    pub fn base_run(
        &self,
        tokens: &[u32],
        extra: impl IntoIterator<Item = HookPoint>,
    ) -> Result<BaseRun> {
        self.base_run_patched(tokens, &[], extra)
    }

    /// [`HookedTransformer::base_run`] of a run with `patches` applied (batch axis 1),
    /// e.g. noise on the input embeddings: partial passes then continue the patched run.
    pub fn base_run_patched(
        &self,
        tokens: &[u32],
        patches: &[Patch],
        extra: impl IntoIterator<Item = HookPoint>,
    ) -> Result<BaseRun> {
        let key_site = self.arch.key_site();
        let mut hooks = Hooks::new(patches, self.base_run_points(extra));
        let tensor = self.tokens_tensor(&[tokens.to_vec()])?;
        let logits = self.forward(&tensor, &mut hooks, Readout::LastPosition)?;
        Ok(BaseRun {
            cache: hooks.into_cache(),
            logits,
            n_pos: tokens.len(),
            key_site,
        })
    }

    /// What a base run caches: every layer's block input, keys and values, and `extra`.
    fn base_run_points(&self, extra: impl IntoIterator<Item = HookPoint>) -> CacheFilter {
        let sites = [BlockSite::ResidPre, self.arch.key_site(), BlockSite::V];
        let points: Vec<HookPoint> = (0..self.dims().n_layers)
            .flat_map(|l| sites.iter().map(move |s| HookPoint::block(l, *s)))
            .chain(extra)
            .collect();
        CacheFilter::only(points)
    }

    /// [`HookedTransformer::base_run`] of several prompts of one length in one pass
    /// (one batch row each, the weights read once): one run per prompt, in order.
    pub fn base_runs(
        &self,
        prompts: &[&[u32]],
        extra: impl IntoIterator<Item = HookPoint>,
    ) -> Result<Vec<BaseRun>> {
        let key_site = self.arch.key_site();
        let mut hooks = Hooks::caching(self.base_run_points(extra));
        let rows: Vec<Vec<u32>> = prompts.iter().map(|p| p.to_vec()).collect();
        let tensor = self.tokens_tensor(&rows)?; // [prompts, pos]
        let logits = self.forward(&tensor, &mut hooks, Readout::LastPosition)?; // [prompts, d_vocab]
        let cache = hooks.into_cache();
        (0..prompts.len())
            .map(|row| {
                let mut own = ActivationCache::default();
                for (point, tensor) in cache.iter() {
                    own.insert(*point, tensor.narrow(0, row, 1)?);
                }
                Ok(BaseRun {
                    cache: own,
                    logits: logits.narrow(0, row, 1)?,
                    n_pos: rows[row].len(),
                    key_site,
                })
            })
            .collect()
    }

    /// Positions `start..start + len` of `base`'s prompt.
    pub fn span<'a>(&self, base: &'a BaseRun, start: usize, len: usize) -> Result<Span<'a>> {
        if len == 0 || start + len > base.n_pos {
            return Err(ModelError::Span {
                start,
                len,
                n_pos: base.n_pos,
            });
        }
        Ok(Span {
            base,
            start,
            len,
            frame: self.arch.frame(start, len, &self.device)?,
        })
    }

    /// Block `layer` on rows `resid_pre` `[rows, len, d_model]` holding the positions of
    /// `span`: `[rows, len, d_model]`. Hook points see span-relative positions.
    pub fn run_block(
        &self,
        layer: usize,
        resid_pre: Tensor,
        span: &Span,
        hooks: &mut Hooks,
    ) -> Result<Tensor> {
        self.check_rows(layer, &resid_pre, span)?;
        let prefix = span.base.prefix(layer, span.start)?;
        self.arch
            .block_forward(layer, resid_pre, &span.frame, prefix.as_ref(), hooks)
    }

    /// Block `layer` computed for the span's last position only, as the last layer
    /// needs for next-token logits: rows `[rows, len, d_model]` → `[rows, 1, d_model]`.
    /// The other positions of the span contribute their keys and values (computed from
    /// the rows, no hooks); hook points run at the last position only (position 0).
    pub fn run_block_final(
        &self,
        layer: usize,
        resid_pre: Tensor,
        span: &Span,
        hooks: &mut Hooks,
    ) -> Result<Tensor> {
        self.check_rows(layer, &resid_pre, span)?;
        let len = span.len;
        if len == 1 {
            return self.run_block(layer, resid_pre, span, hooks);
        }
        let prefix = span.base.prefix(layer, span.start)?;
        let frame = (span.start, len);
        last_position_block(self.arch.as_ref(), layer, resid_pre, frame, prefix, hooks)
    }

    /// Blocks `layer..` on rows `resid_pre` `[rows, len, d_model]` holding the
    /// positions of `span`, then the readout of the span's last position (the prompt's
    /// final position when the span reaches the end): the logits `readout` asks for.
    /// `hooks` run in every block (span-relative positions).
    pub fn run_from(
        &self,
        layer: usize,
        resid_pre: Tensor,
        span: &Span,
        hooks: &mut Hooks,
        readout: Readout,
    ) -> Result<Tensor> {
        let mut resid = resid_pre;
        for l in layer..self.dims().n_layers {
            resid = self.run_block(l, resid, span, hooks)?;
        }
        self.readout(&resid, hooks, readout)
    }

    /// Whether a site's value at one position can reach the other positions of its
    /// own layer (it feeds that layer's keys and values). In the last layer a patch
    /// anywhere else reaches the next-token logits only from the final position.
    pub fn site_feeds_keys_values(&self, site: BlockSite) -> bool {
        self.arch.site_feeds_keys_values(site)
    }

    pub(crate) fn check_rows(&self, layer: usize, resid_pre: &Tensor, span: &Span) -> Result<()> {
        self.check_layer(layer)?;
        let (_, len, d_model) = resid_pre.dims3()?;
        if len != span.len || d_model != self.dims().d_model {
            return Err(ModelError::SpanRows {
                shape: resid_pre.dims().to_vec(),
                len: span.len,
                d_model: self.dims().d_model,
            });
        }
        Ok(())
    }
}

/// Block `layer` of `arch` computed for the last of positions `start..start + len`
/// only (rows `[rows, len, d_model]` → `[rows, 1, d_model]`, `len` ≥ 2), after
/// `prefix`'s keys and values of the positions before `start`: the earlier positions
/// give their keys and values (computed from the rows, no hooks), and hook points run
/// at the last position only. What the last layer needs for next-token logits.
pub(crate) fn last_position_block(
    arch: &dyn ArchModel,
    layer: usize,
    resid_pre: Tensor,
    (start, len): (usize, usize),
    prefix: Option<KvPrefix>,
    hooks: &mut Hooks,
) -> Result<Tensor> {
    let device = resid_pre.device().clone();
    let earlier = arch.frame(start, len - 1, &device)?;
    let (k, v) = arch.block_keys_values(layer, &resid_pre.narrow(1, 0, len - 1)?, &earlier)?; // [rows, len - 1, kv_head, d_head]
    let prefix = match prefix {
        Some(cached) => cached.then(&k, &v),
        None => KvPrefix::new(k, v),
    };
    let last = arch.frame(start + len - 1, 1, &device)?;
    arch.block_forward(
        layer,
        resid_pre.narrow(1, len - 1, 1)?,
        &last,
        Some(&prefix),
        hooks,
    )
}
