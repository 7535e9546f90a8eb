//! Passes from a pair's first differing position ([`PairRuns::first_position`]): the
//! keys and values of the positions before it come from the pair's clean run, the
//! same in every row that patches edges of that pair.

use actpatch_model::{BaseRun, HookedTransformer};
use candle_core::Tensor;

use crate::runs::PairRuns;
use crate::{EdgePair, Result};

/// The clean runs' keys and values, for the pairs that start after position 0.
pub(crate) struct CleanPrefixes {
    bases: Vec<Option<BaseRun>>,
}

impl CleanPrefixes {
    /// One clean run per pair whose first position is after 0 (prompts of one length
    /// in one pass).
    pub fn new(model: &HookedTransformer, pairs: &[EdgePair], runs: &[PairRuns]) -> Result<Self> {
        let mut bases: Vec<Option<BaseRun>> = (0..pairs.len()).map(|_| None).collect();
        let mut lengths: Vec<usize> = pairs.iter().map(|p| p.clean.len()).collect();
        lengths.sort_unstable();
        lengths.dedup();
        for len in lengths {
            let members: Vec<usize> = (0..pairs.len())
                .filter(|p| pairs[*p].clean.len() == len && runs[*p].first_position > 0)
                .collect();
            if members.is_empty() {
                continue;
            }
            let prompts: Vec<&[u32]> = members.iter().map(|p| pairs[*p].clean.as_slice()).collect();
            for (p, base) in members.iter().zip(model.base_runs(&prompts, [])?) {
                bases[*p] = Some(base);
            }
        }
        Ok(CleanPrefixes { bases })
    }

    /// Block `layer`'s keys and values at positions `0..start` for rows of `pairs`
    /// (a pair index per row): `[row, start, kv_head, d_head]` each.
    pub fn rows(&self, layer: usize, start: usize, pairs: &[usize]) -> Result<(Tensor, Tensor)> {
        let mut keys = Vec::with_capacity(pairs.len());
        let mut values = Vec::with_capacity(pairs.len());
        for p in pairs {
            let base = self.bases[*p].as_ref().ok_or_else(|| {
                candle_core::Error::Msg(format!("pair {p} has no clean run to start after 0"))
            })?;
            let (k, v) = base.keys_values(layer, start)?;
            keys.push(k);
            values.push(v);
        }
        Ok((Tensor::cat(&keys, 0)?, Tensor::cat(&values, 0)?))
    }
}
