//! Which logits a forward pass computes, and the unembedding that computes them.

use candle_core::Tensor;

use crate::{ModelError, Result};

/// Which logits a forward pass computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readout<'a> {
    /// `[batch, pos, d_vocab]`
    AllPositions,
    /// `[batch, d_vocab]`: the next-token logits only, all that patching metrics need.
    LastPosition,
    /// `[batch, columns.len()]`: the next-token logits of these token ids only (e.g.
    /// the two answers, for logit-difference metrics: no full-vocabulary unembedding).
    LastPositionColumns(&'a [u32]),
}

impl Readout<'_> {
    /// `normalized` `[batch, pos, d_model]`, `w_u` `[d_model, d_vocab]` (any strides,
    /// e.g. a transposed view of the embedding) → logits.
    pub fn unembed(
        self,
        normalized: &Tensor,
        w_u: &Tensor,
        b_u: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (batch, pos, d_model) = normalized.dims3()?;
        let last = || -> Result<Tensor> {
            Ok(normalized
                .narrow(1, pos - 1, 1)?
                .reshape((batch, d_model))?)
        };
        let (rows, w_u, b_u) = match self {
            Readout::AllPositions => (
                normalized.reshape((batch * pos, d_model))?,
                w_u.clone(),
                b_u.cloned(),
            ),
            Readout::LastPosition => (last()?, w_u.clone(), b_u.cloned()),
            Readout::LastPositionColumns(ids) => {
                let d_vocab = w_u.dim(1)?;
                if let Some(id) = ids.iter().find(|id| **id as usize >= d_vocab) {
                    return Err(ModelError::TokenOutOfRange {
                        id: *id,
                        vocab: d_vocab,
                    });
                }
                let ids = Tensor::from_slice(ids, ids.len(), w_u.device())?;
                let b_u = b_u.map(|b| b.index_select(&ids, 0)).transpose()?;
                // The columns of w_u, as rows of the embedding when w_u is its transposed view.
                let columns = match w_u.t()?.is_contiguous() {
                    true => w_u.t()?.index_select(&ids, 0)?.t()?,
                    false => w_u.contiguous()?.index_select(&ids, 1)?,
                };
                (last()?, columns, b_u) // w_u: [d_model, columns]
            }
        };
        let logits = match crate::fused::linear(&rows, &w_u, b_u.as_ref())? {
            Some(logits) => logits,
            None => {
                let logits = rows.matmul(&w_u)?;
                match b_u {
                    Some(b) => logits.broadcast_add(&b)?,
                    None => logits,
                }
            }
        };
        Ok(match self {
            Readout::AllPositions => logits.reshape((batch, pos, ()))?,
            _ => logits,
        })
    }
}
