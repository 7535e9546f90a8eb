//! Where attribution reads a pair's activations: the positions that receive a source
//! activation, and the queries and keys the QK fix of AtP* recomputes attention from.

use actpatch_hooks::{ActivationCache, BlockSite, HookPoint, Layout};
use actpatch_model::HookedTransformer;
use candle_core::Tensor;

use super::qk_fix::Attention;
use crate::{DirectedPair, PatchKind, PatchingError, Result};

/// Which target positions receive a source activation.
pub(crate) struct Positions {
    /// `[pos]`: 1 where patched, 0 elsewhere.
    mask: Tensor,
    identity: bool,
}

impl Positions {
    pub fn new(model: &HookedTransformer, pair: &DirectedPair) -> Result<Positions> {
        let patched = pair.map.patched_positions();
        let mask: Vec<f32> = (0..pair.map.n_target())
            .map(|p| f32::from(u8::from(patched.contains(&p))))
            .collect();
        Ok(Positions {
            mask: Tensor::from_vec(mask, pair.map.n_target(), model.device())?,
            identity: pair.map.is_identity(),
        })
    }

    /// `difference` (`[1, pos, ...]` at `point`) with positions that receive nothing
    /// set to 0.
    pub fn only_patched(&self, point: HookPoint, difference: &Tensor) -> Result<Tensor> {
        if self.identity || point.layout() == Layout::BatchHeadQueryKey {
            return Ok(difference.clone());
        }
        let mut shape = vec![1; difference.rank()];
        shape[1] = self.mask.dim(0)?;
        Ok(difference.broadcast_mul(&self.mask.reshape(shape)?)?)
    }
}

/// Where attention reads queries and keys, for AtP*'s QK fix: after rotary embedding
/// where the model has one.
pub(crate) struct QkSites {
    pub query: BlockSite,
    pub key: BlockSite,
}

impl QkSites {
    /// The sites when a swept kind patches queries or keys; `None` otherwise, and on a
    /// rotary model whose pair is not position-aligned: a query moved to another
    /// position would need another rotation, so those q/k cells get AtP (with GradDrop)
    /// through the softmax's gradient instead.
    pub fn of(
        model: &HookedTransformer,
        pair: &DirectedPair,
        kinds: &[PatchKind],
    ) -> Option<QkSites> {
        let wanted = kinds
            .iter()
            .any(|k| matches!(k.site(), BlockSite::Q | BlockSite::K));
        let rotary = model.hook_space().sites.contains(&BlockSite::RotQ);
        match (wanted, rotary) {
            (false, _) => None,
            (true, true) if !pair.map.is_identity() => None,
            (true, true) => Some(QkSites {
                query: BlockSite::RotQ,
                key: BlockSite::RotK,
            }),
            (true, false) => Some(QkSites {
                query: BlockSite::Q,
                key: BlockSite::K,
            }),
        }
    }

    /// Layer `layer`'s target attention and the query and key steps to the source.
    pub fn attention(
        &self,
        model: &HookedTransformer,
        layer: usize,
        source: &ActivationCache,
        target: &ActivationCache,
        pair: &DirectedPair,
        positions: &Positions,
    ) -> Result<Attention> {
        let at = |site| HookPoint::block(layer, site);
        let dims = model.dims();
        let n_rep = dims.n_heads / dims.n_kv_heads.max(1);
        // [1, pos, head, d_head] → [head, pos, d_head], keys repeated over query heads.
        let heads_first = |x: &Tensor, rep: usize| -> Result<Tensor> {
            let x = x.squeeze(0)?.transpose(0, 1)?.contiguous()?;
            if rep == 1 {
                return Ok(x);
            }
            let (kv, pos, d) = x.dims3()?;
            Ok(x.unsqueeze(1)?
                .broadcast_as((kv, rep, pos, d))?
                .reshape((kv * rep, pos, d))?)
        };
        let step = |site| -> Result<Tensor> {
            let source = pair.align(at(site), source.get(at(site))?)?;
            positions.only_patched(at(site), &(source - target.get(at(site))?)?)
        };
        if !dims.n_heads.is_multiple_of(dims.n_kv_heads.max(1)) {
            return Err(PatchingError::Tensor(candle_core::Error::Msg(
                "query heads are not a multiple of key/value heads".into(),
            )));
        }
        // [head, query, key]: 0 where the target run's scores are finite, −∞ where masked.
        let scores = target.get(at(BlockSite::AttnScores))?.squeeze(0)?;
        let visible = scores.ge(-1e30)?;
        let mask = visible.where_cond(
            &scores.zeros_like()?,
            &(scores.ones_like()? * f64::NEG_INFINITY)?,
        )?;
        Ok(Attention {
            q: heads_first(target.get(at(self.query))?, 1)?,
            q_step: heads_first(&step(self.query)?, 1)?,
            k: heads_first(target.get(at(self.key))?, n_rep)?,
            k_step: heads_first(&step(self.key)?, n_rep)?,
            spec: model.attention_spec(layer)?,
            mask,
            n_rep,
        })
    }
}
