//! The edge products `Δ_s · ḡ_r` of every sender and receiver, per group of rows: the
//! receivers' gradients of each pass ([`crate::gradient_passes`]) contracted with the
//! senders' deltas.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

use actpatch_model::HookedTransformer;
use candle_core::Tensor;

use crate::batches::batches;
use crate::gradient_passes::{pass_by_blocks, pass_whole};
use crate::gradients::GradRow;
use crate::graph::Graph;
use crate::prefix::CleanPrefixes;
use crate::{CircuitError, Result};

/// Rows × positions per pass: the split inputs keep a copy of the residual stream per
/// head and input in the graph until the backward pass.
const ROW_POSITIONS_PER_PASS: usize = 256;

/// Per group of rows (numbered from 0), the products `Δ_s · ḡ_r` of every sender `s`
/// and receiver `r`, `[sender][receiver]` row-major: `ḡ_r` is the mean over the group's
/// rows of the gradient at the receiver's input, `Δ_s` the group's `deltas` entry
/// `[sender, pos, d_model]`. Rows of one length run together in batches; each
/// receiver block's gradients are summed over a group's rows in the batch and
/// contracted with its deltas as soon as they are computed, so no receiver's gradient
/// outlives its block (a 1,024-token prompt's would take GBs).
/// Rows from a later position attend to `prefixes`' run of their group before it.
pub(crate) fn receiver_products(
    model: &HookedTransformer,
    graph: &Graph,
    (rows, prefixes): (&[GradRow], &CleanPrefixes),
    deltas: &[&Tensor],
) -> Result<Vec<Vec<f32>>> {
    products_with(
        model,
        graph,
        (rows, prefixes, deltas),
        ROW_POSITIONS_PER_PASS,
    )
}

/// [`receiver_products`], differentiating passes of more than `by_blocks_above` rows ×
/// positions block by block.
fn products_with(
    model: &HookedTransformer,
    graph: &Graph,
    (rows, prefixes, deltas): (&[GradRow], &CleanPrefixes, &[&Tensor]),
    by_blocks_above: usize,
) -> Result<Vec<Vec<f32>>> {
    let n_groups = rows.iter().map(|r| r.group + 1).max().unwrap_or(0);
    if deltas.len() < n_groups {
        return Err(CircuitError::NoPairs);
    }
    let mut sums = GroupSums::new(graph, &deltas[..n_groups])?;
    let mut order: Vec<usize> = (0..rows.len()).collect();
    // Stable: rows keep their order within a length and first position (a group's
    // rows share both).
    let shape = |i: &usize| (rows[*i].tokens.len(), rows[*i].from);
    order.sort_by_key(shape);
    let positions = |(len, from): &(usize, usize)| len - from;
    for range in batches(&order, shape, (positions, ROW_POSITIONS_PER_PASS)) {
        let (len, from) = shape(&order[range.start]);
        let chunk: Vec<&GradRow> = order[range].iter().map(|i| &rows[*i]).collect();
        let members = sums.members(&chunk);
        // Long passes (one row each) are contracted block by block as they come (all
        // positions); short ones, from the rows' first position, add their gradients
        // up per group and block, contracted once at the end (fewer, larger products).
        let by_blocks = (len - from) * chunk.len() > by_blocks_above;
        let mut take =
            |offset: usize, block: &Tensor| sums.take(&members, (offset, block), by_blocks);
        match by_blocks {
            true => pass_by_blocks(model, graph, &chunk, &mut take)?,
            false => pass_whole(model, graph, (&chunk, prefixes), &mut take)?,
        }
    }
    sums.finish()
}

/// The products of each group, as the passes hand over their blocks.
struct GroupSums {
    /// Each group's deltas as one contiguous `[sender, pos · d_model]` matrix.
    deltas: Vec<Tensor>,
    /// `[sender][receiver]` row-major, per group.
    products: Vec<Vec<f32>>,
    /// Per group, the gradients of short passes summed per block, by (the positions the
    /// pass ran, the block's first receiver): the blocks of one length sit together.
    pending: Vec<BTreeMap<(usize, usize), Tensor>>,
    counts: Vec<usize>,
}

impl GroupSums {
    fn new(graph: &Graph, deltas: &[&Tensor]) -> Result<Self> {
        let size = graph.senders.len() * graph.receivers.len();
        Ok(GroupSums {
            deltas: (deltas.iter())
                .map(|d| Ok(d.flatten_from(1)?.contiguous()?))
                .collect::<Result<_>>()?,
            products: vec![vec![0f32; size]; deltas.len()],
            pending: vec![BTreeMap::new(); deltas.len()],
            counts: vec![0; deltas.len()],
        })
    }

    /// The chunk's rows of each group as (group, first row, rows): consecutive, as the
    /// rows are ordered; counted.
    fn members(&mut self, chunk: &[&GradRow]) -> Vec<(usize, usize, usize)> {
        let mut members: Vec<(usize, usize, usize)> = Vec::new();
        for (i, row) in chunk.iter().enumerate() {
            match members.last_mut() {
                Some((group, _, n)) if *group == row.group => *n += 1,
                _ => members.push((row.group, i, 1)),
            }
            self.counts[row.group] += 1;
        }
        members
    }

    /// One receiver block's gradients `[rows, receivers, pos, d_model]` of a pass:
    /// summed over each group's rows, then contracted now or kept for the end.
    fn take(
        &mut self,
        members: &[(usize, usize, usize)],
        (offset, block): (usize, &Tensor),
        contract_now: bool,
    ) -> Result<()> {
        for &(group, first, rows) in members {
            // Row by row: elementwise adds (a reduction over the first axis is slow).
            let mut grad = block.get(first)?; // [receivers, pos, d_model]
            for row in first + 1..first + rows {
                grad = (grad + block.get(row)?)?;
            }
            if contract_now {
                contract(
                    &mut self.products[group],
                    (&self.deltas[group], offset),
                    &grad,
                )?;
                continue;
            }
            match self.pending[group].entry((grad.dim(1)?, offset)) {
                Entry::Occupied(mut sum) => {
                    let total = (sum.get() + &grad)?;
                    sum.insert(total);
                }
                Entry::Vacant(slot) => {
                    slot.insert(grad);
                }
            }
        }
        Ok(())
    }

    /// Each group's products, the kept gradients contracted, divided by its rows: the
    /// blocks of one length as one product (a few wide products, not one thin product
    /// per block).
    fn finish(mut self) -> Result<Vec<Vec<f32>>> {
        for (group, pending) in self.pending.iter().enumerate() {
            let n = self.counts[group];
            if n == 0 {
                return Err(CircuitError::NoPairs);
            }
            let products = &mut self.products[group];
            let blocks: Vec<(usize, usize, &Tensor)> = (pending.iter())
                .map(|((pos, offset), grad)| (*pos, *offset, grad))
                .collect();
            for of_length in blocks.chunk_by(|a, b| a.0 == b.0) {
                let of_length: Vec<(usize, &Tensor)> = of_length
                    .iter()
                    .map(|(_, offset, grad)| (*offset, *grad))
                    .collect();
                contract_blocks(products, &self.deltas[group], &of_length)?;
            }
            products.iter_mut().for_each(|v| *v /= n as f32);
        }
        Ok(self.products)
    }
}

/// Adds `Δ · gᵀ` of the block of receivers starting at `offset` to `products`
/// (`[sender][receiver]` row-major): `delta` `[sender, pos · d_model]`, `grad`
/// `[receivers, pos, d_model]` or, from a pass of the last positions only, fewer
/// positions (the deltas before them are 0).
fn contract(products: &mut [f32], (delta, offset): (&Tensor, usize), grad: &Tensor) -> Result<()> {
    contract_blocks(products, delta, &[(offset, grad)])
}

/// [`contract`] of several blocks of one length (each `(offset, grad)`) as one product.
fn contract_blocks(
    products: &mut [f32],
    delta: &Tensor,
    blocks: &[(usize, &Tensor)],
) -> Result<()> {
    let Some((_, first)) = blocks.first() else {
        return Ok(());
    };
    let (_, pos, d_model) = first.dims3()?;
    let n_receivers = products.len() / delta.dim(0)?;
    let skipped = delta.dim(1)?.saturating_sub(pos * d_model);
    let delta = delta.narrow(1, skipped, pos * d_model)?; // [sender, pos · d_model]
    let grads: Vec<&Tensor> = blocks.iter().map(|(_, grad)| *grad).collect();
    let grad = Tensor::cat(&grads, 0)?; // [receivers of the blocks, pos, d_model]
    let grad = grad.reshape((grad.dim(0)?, pos * d_model))?;
    let columns = delta.matmul(&grad.t()?)?.to_vec2::<f32>()?; // [sender, receivers of the blocks]
    for (sender, row) in columns.iter().enumerate() {
        let mut values = row.iter();
        for (offset, block) in blocks {
            let at = sender * n_receivers + offset;
            for (out, value) in products[at..at + block.dim(0)?].iter_mut().zip(&mut values) {
                *out += value;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run of each group's first prompt, for its rows' passes from their first position.
    fn group_prefixes(model: &HookedTransformer, rows: &[GradRow]) -> CleanPrefixes {
        let n_groups = rows.iter().map(|r| r.group + 1).max().unwrap_or(0);
        let mut prompts: Vec<Option<&[u32]>> = vec![None; n_groups];
        for row in rows.iter().filter(|r| r.from > 0) {
            prompts[row.group].get_or_insert(row.tokens.as_slice());
        }
        CleanPrefixes::of_prompts(model, &prompts).unwrap()
    }

    /// Differentiating block by block gives the whole pass's products.
    #[test]
    fn passes_by_blocks_equal_whole_passes() {
        for fixture in ["tiny-gpt2", "tiny-llama"] {
            let model = crate::test_fixtures::load(fixture);
            let graph = Graph::of_model(&model);
            let clean = model.to_tokens("The Colosseum is in", true).unwrap();
            let corrupted = model.to_tokens("The Eiffel Tower is in", true).unwrap();
            let answers = [
                model.to_single_token(" Rome").unwrap(),
                model.to_single_token(" Paris").unwrap(),
            ];
            // Any deltas do: both passes contract the same gradients with them.
            let shape = (graph.senders.len(), clean.len(), graph.d_model);
            let count = shape.0 * shape.1 * shape.2;
            let delta = (Tensor::arange(0u32, count as u32, model.device()).unwrap())
                .to_dtype(candle_core::DType::F32)
                .unwrap();
            let delta = (delta * 0.37)
                .unwrap()
                .sin()
                .unwrap()
                .reshape(shape)
                .unwrap();
            // Two rows of one group (the clean and the corrupted prompt) and one alone.
            let row = |tokens: &[u32], group| GradRow {
                tokens: tokens.to_vec(),
                answers,
                replace: None,
                group,
                from: 0,
            };
            let rows = [row(&clean, 0), row(&corrupted, 0), row(&clean, 1)];
            let deltas = [&delta, &delta];
            let prefixes = group_prefixes(&model, &rows);
            let inputs = (&rows[..], &prefixes, &deltas[..]);
            let whole = products_with(&model, &graph, inputs, usize::MAX).unwrap();
            let blocks = products_with(&model, &graph, inputs, 0).unwrap();
            for (w, b) in whole.iter().flatten().zip(blocks.iter().flatten()) {
                assert!(
                    (w - b).abs() < 1e-5 * (1.0 + w.abs()),
                    "{fixture}: {w} vs {b}"
                );
            }
            assert!(whole[0].iter().any(|v| v.abs() > 1e-3));
        }
    }

    /// A pass from the rows' first position gives the products of a pass from 0 when
    /// the deltas are 0 before it: the gradients there are never read, and no later
    /// one flows through them (every family, with the grouped, windowed and parallel
    /// attention of the fixtures).
    #[test]
    fn passes_from_the_first_position_equal_passes_from_zero() {
        for fixture in crate::test_fixtures::EVERY_FAMILY {
            let model = crate::test_fixtures::load(fixture);
            let graph = Graph::of_model(&model);
            let clean = model.to_tokens("The capital of France is", true).unwrap();
            let corrupted = model.to_tokens("The capital of Italy is", true).unwrap();
            let from = clean
                .iter()
                .zip(&corrupted)
                .position(|(a, b)| a != b)
                .unwrap();
            assert!(from > 0);
            let answers = [
                model.to_single_token(" Rome").unwrap(),
                model.to_single_token(" Paris").unwrap(),
            ];
            let (senders, pos, d_model) = (graph.senders.len(), clean.len(), graph.d_model);
            let values: Vec<f32> = (0..senders * pos * d_model)
                .map(|i| match (i / d_model) % pos < from {
                    true => 0.0,
                    false => (i as f32 * 0.37).sin(),
                })
                .collect();
            let delta = Tensor::from_vec(values, (senders, pos, d_model), model.device()).unwrap();
            let rows = |from: usize| {
                [&clean, &corrupted].map(|tokens| GradRow {
                    tokens: tokens.clone(),
                    answers,
                    replace: None,
                    group: 0,
                    from,
                })
            };
            let all = |from| {
                let rows = rows(from);
                let prefixes = group_prefixes(&model, &rows);
                products_with(&model, &graph, (&rows, &prefixes, &[&delta]), usize::MAX)
            };
            let (short, full) = (all(from).unwrap(), all(0).unwrap());
            for (s, f) in short[0].iter().zip(&full[0]) {
                assert!(
                    (s - f).abs() < 1e-4 * (1.0 + f.abs()),
                    "{fixture}: {s} vs {f}"
                );
            }
            assert!(
                full[0].iter().any(|v| v.abs() > 1e-3),
                "{fixture}: all products 0"
            );
        }
    }
}
