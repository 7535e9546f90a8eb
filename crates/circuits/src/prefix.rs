//! Passes from a pair's first differing position ([`PairRuns::first_position`]): the
//! keys and values of the positions before it come from the pair's clean run, the
//! same in every row that patches edges of that pair or differentiates its runs.

use actpatch_model::BaseRun;
use candle_core::Tensor;

use crate::runs::PairRuns;
use crate::Result;

/// Runs' keys and values, per prompt: a pair's clean run, or the first prompt of a group
/// of gradient rows.
pub(crate) struct CleanPrefixes {
    bases: Vec<Option<BaseRun>>,
}

impl CleanPrefixes {
    /// The clean run of each pair whose first position is after 0 (its sender run's:
    /// no pass of its own).
    pub fn of_pairs(runs: &[PairRuns]) -> Self {
        let bases = (runs.iter())
            .map(|run| (run.first_position > 0).then(|| run.clean.base.clone()))
            .collect();
        CleanPrefixes { bases }
    }

    /// No runs: for rows that all start at position 0.
    pub fn none() -> Self {
        CleanPrefixes { bases: Vec::new() }
    }

    /// A run of each prompt given (prompts of one length in one pass).
    #[cfg(test)]
    pub fn of_prompts(
        model: &actpatch_model::HookedTransformer,
        prompts: &[Option<&[u32]>],
    ) -> Result<Self> {
        let mut bases: Vec<Option<BaseRun>> = (0..prompts.len()).map(|_| None).collect();
        let mut lengths: Vec<usize> = prompts.iter().flatten().map(|p| p.len()).collect();
        lengths.sort_unstable();
        lengths.dedup();
        for len in lengths {
            let members: Vec<usize> = (0..prompts.len())
                .filter(|i| prompts[*i].is_some_and(|p| p.len() == len))
                .collect();
            let batch: Vec<&[u32]> = members.iter().filter_map(|i| prompts[*i]).collect();
            for (i, base) in members.iter().zip(model.base_runs(&batch, [])?) {
                bases[*i] = Some(base);
            }
        }
        Ok(CleanPrefixes { bases })
    }

    /// Block `layer`'s keys and values at positions `0..start` for rows of `prompts`
    /// (a prompt index per row): `[row, start, kv_head, d_head]` each.
    pub fn rows(&self, layer: usize, start: usize, prompts: &[usize]) -> Result<(Tensor, Tensor)> {
        let mut keys = Vec::with_capacity(prompts.len());
        let mut values = Vec::with_capacity(prompts.len());
        for p in prompts {
            let base = self.bases.get(*p).and_then(Option::as_ref).ok_or_else(|| {
                candle_core::Error::Msg(format!("prompt {p} has no run to start after 0"))
            })?;
            let (k, v) = base.keys_values(layer, start)?;
            keys.push(k);
            values.push(v);
        }
        Ok((Tensor::cat(&keys, 0)?, Tensor::cat(&values, 0)?))
    }
}
