//! The gradient of the logit difference at every receiver's input, from one
//! differentiable pass per batch of rows (differentiated block by block for long
//! prompts): each receiver input of the edge graph gets a zero variable of its own
//! ([`actpatch_model::edges`]), and the gradient with respect to it is the gradient at
//! that input. Each block's gradients are contracted with the senders' deltas as they
//! come ([`receiver_products`]).

use actpatch_hooks::{BlockSite, CacheFilter, HookPoint, Hooks, Patch, Selection};
use actpatch_model::{EdgeInputs, HookedTransformer, Readout, ReceiverInputs};
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use crate::graph::Graph;
use crate::{CircuitError, Result};

/// One row of a gradient pass: a prompt, the answers whose logit difference is
/// differentiated, optionally a value `[1, pos, d_model]` in place of one hook point's
/// (token embeddings moved towards the corrupted run, a layer's output interpolated),
/// and the group whose mean gradient it joins.
pub struct GradRow {
    pub tokens: Vec<u32>,
    /// (correct, incorrect)
    pub answers: [u32; 2],
    pub replace: Option<(HookPoint, Tensor)>,
    pub group: usize,
}

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
pub fn receiver_products(
    model: &HookedTransformer,
    graph: &Graph,
    rows: &[GradRow],
    deltas: &[&Tensor],
) -> Result<Vec<Vec<f32>>> {
    products_with(model, graph, (rows, deltas), ROW_POSITIONS_PER_PASS)
}

/// [`receiver_products`], differentiating passes of more than `by_blocks_above` rows ×
/// positions block by block.
fn products_with(
    model: &HookedTransformer,
    graph: &Graph,
    (rows, deltas): (&[GradRow], &[&Tensor]),
    by_blocks_above: usize,
) -> Result<Vec<Vec<f32>>> {
    let (n_senders, n_receivers) = (graph.senders.len(), graph.receivers.len());
    let n_groups = rows.iter().map(|r| r.group + 1).max().unwrap_or(0);
    if deltas.len() < n_groups {
        return Err(CircuitError::NoPairs);
    }
    // Each group's deltas as one contiguous [sender, pos · d_model] matrix, once.
    let deltas: Vec<Tensor> = (deltas.iter())
        .map(|d| Ok(d.flatten_from(1)?.contiguous()?))
        .collect::<Result<_>>()?;
    let mut products = vec![vec![0f32; n_senders * n_receivers]; n_groups];
    // Per group, the gradients of short passes summed per block (by its first receiver).
    let mut pending: Vec<BTreeMap<usize, Tensor>> = vec![BTreeMap::new(); n_groups];
    let mut counts = vec![0usize; n_groups];
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|i| rows[*i].tokens.len()); // stable: rows keep their order within a length
    let mut start = 0;
    while start < order.len() {
        let pos = rows[order[start]].tokens.len();
        let per_pass = (ROW_POSITIONS_PER_PASS / pos.max(1)).max(1);
        let mut end = start + 1;
        while end < order.len() && end - start < per_pass && rows[order[end]].tokens.len() == pos {
            end += 1;
        }
        let chunk: Vec<&GradRow> = order[start..end].iter().map(|i| &rows[*i]).collect();
        // The chunk's rows of each group: consecutive, as `order` keeps them.
        let mut members: Vec<(usize, usize, usize)> = Vec::new(); // (group, first, rows)
        for (i, row) in chunk.iter().enumerate() {
            match members.last_mut() {
                Some((group, _, n)) if *group == row.group => *n += 1,
                _ => members.push((row.group, i, 1)),
            }
            counts[row.group] += 1;
        }
        // Long passes (one row each) are contracted block by block as they come;
        // short ones add their gradients up per group and block, contracted once at
        // the end (fewer, larger products).
        let by_blocks = pos * chunk.len() > by_blocks_above;
        let mut take = |offset: usize, block: &Tensor| -> Result<()> {
            for &(group, first, rows) in &members {
                // Row by row: elementwise adds (a reduction over the first axis is slow).
                let mut grad = block.get(first)?; // [receivers, pos, d_model]
                for row in first + 1..first + rows {
                    grad = (grad + block.get(row)?)?;
                }
                match by_blocks {
                    true => contract(&mut products[group], (&deltas[group], offset), &grad)?,
                    false => {
                        let sum = pending[group].entry(offset);
                        match sum {
                            Entry::Occupied(mut e) => {
                                let total = (e.get() + &grad)?;
                                e.insert(total);
                            }
                            Entry::Vacant(e) => {
                                e.insert(grad);
                            }
                        }
                    }
                }
            }
            Ok(())
        };
        match by_blocks {
            true => pass_by_blocks(model, graph, &chunk, &mut take)?,
            false => pass_whole(model, graph, &chunk, &mut take)?,
        }
        start = end;
    }
    let groups = products.iter_mut().zip(pending).zip(counts).zip(&deltas);
    for (((products, pending), n), delta) in groups {
        if n == 0 {
            return Err(CircuitError::NoPairs);
        }
        for (offset, grad) in &pending {
            contract(products, (delta, *offset), grad)?;
        }
        products.iter_mut().for_each(|v| *v /= n as f32);
    }
    Ok(products)
}

/// Adds `Δ · gᵀ` of the block of receivers starting at `offset` to `products`
/// (`[sender][receiver]` row-major): `delta` `[sender, pos · d_model]`, `grad`
/// `[receivers, pos, d_model]`.
fn contract(products: &mut [f32], (delta, offset): (&Tensor, usize), grad: &Tensor) -> Result<()> {
    let (n, pos, d_model) = grad.dims3()?;
    let n_receivers = products.len() / delta.dim(0)?;
    let grad = grad.reshape((n, pos * d_model))?;
    let block = delta.matmul(&grad.t()?)?.to_vec2::<f32>()?; // [sender, receivers of the block]
    for (sender, row) in block.iter().enumerate() {
        let at = sender * n_receivers + offset;
        for (out, value) in products[at..at + n].iter_mut().zip(row) {
            *out += value;
        }
    }
    Ok(())
}

/// Where each receiver block starts in [`Graph::receivers`]: per layer its q, k and v
/// heads, then its MLP; the logits last.
fn block_offset(graph: &Graph, layer: usize, block: usize) -> usize {
    layer * (3 * graph.n_heads + 1) + block * graph.n_heads
}

/// What a pass hands each receiver block's gradients to: the block's first receiver
/// and its gradients `[rows, receivers, pos, d_model]`.
type Consume<'c> = &'c mut dyn FnMut(usize, &Tensor) -> Result<()>;

/// The logit difference of each row of last-position logits `[rows, d_vocab]`: `[rows]`.
pub(crate) fn logit_diffs(logits: &Tensor, answers: &[[u32; 2]]) -> Result<Tensor> {
    let device = logits.device();
    let correct: Vec<u32> = answers.iter().map(|a| a[0]).collect();
    let incorrect: Vec<u32> = answers.iter().map(|a| a[1]).collect();
    let n = answers.len();
    let pick = |ids: Vec<u32>| -> Result<Tensor> {
        let ids = Tensor::from_vec(ids, (n, 1), device)?;
        Ok(logits.gather(&ids, 1)?.squeeze(1)?)
    };
    Ok((pick(correct)? - pick(incorrect)?)?)
}

/// One pass over rows of one length, differentiated as a whole: every receiver
/// block's gradients to `consume`. Probes after each projection keep the per-head
/// copies of the stream out of the differentiated graph; the model turns their
/// gradients into the inputs' ([`HookedTransformer::attention_input_gradients`]).
fn pass_whole(
    model: &HookedTransformer,
    graph: &Graph,
    rows: &[&GradRow],
    consume: Consume,
) -> Result<()> {
    let n_layers = graph.n_layers;
    let tokens: Vec<Vec<u32>> = rows.iter().map(|r| r.tokens.clone()).collect();
    let tokens = model.tokens_tensor(&tokens)?;
    let (n, pos) = tokens.dims2()?;
    let mut probes = Vec::with_capacity(n_layers);
    let mut inputs = EdgeInputs::none(n_layers);
    for layer in 0..n_layers {
        let (layer_probes, receivers) = Probes::new(model, graph, (n, pos))?;
        inputs.layers[layer] = Some(receivers);
        probes.push(layer_probes);
    }
    let logits_probe = Var::zeros((n, pos, graph.d_model), DType::F32, model.device())?;
    inputs.logits = Some(logits_probe.as_tensor().clone());
    let patches = row_patches(rows)?;
    let streams: Vec<HookPoint> = (0..n_layers).map(HookPoint::resid_pre).collect();
    let mut hooks = Hooks::new(&patches, CacheFilter::only(streams.clone()));
    let (columns, answers) = answer_columns(rows);
    let readout = Readout::LastPositionColumns(&columns);
    let logits = model.forward_edges(&tokens, &mut hooks, readout, &inputs, true)?; // [rows, columns]
    let store = logit_diffs(&logits, &answers)?.sum_all()?.backward()?;
    let cache = hooks.into_cache();
    for (layer, layer_probes) in probes.iter().enumerate() {
        let resid_pre = cache.get(streams[layer])?.detach(); // [rows, pos, d_model]
        layer_probes.consume(model, graph, (layer, &resid_pre), &store, &mut *consume)?;
    }
    let logits_grad = gradient_of(&store, &logits_probe)?.unsqueeze(1)?;
    consume(block_offset(graph, n_layers, 0), &logits_grad)
}

/// One pass over rows of one length, differentiated block by block (gradient
/// checkpointing), for long prompts: a forward pass keeps only the residual stream
/// entering each block; then from the logits down, each block runs again on its input
/// as a variable, with its probes, and is differentiated against the gradient arriving
/// from above. One block's graph is alive at a time (a 1,024-token prompt's attention
/// would otherwise hold every layer's `[head, pos, pos]` tensors). The same gradients
/// as [`pass_whole`] (tested), about a tenth slower.
fn pass_by_blocks(
    model: &HookedTransformer,
    graph: &Graph,
    rows: &[&GradRow],
    consume: Consume,
) -> Result<()> {
    let n_layers = graph.n_layers;
    let tokens: Vec<Vec<u32>> = rows.iter().map(|r| r.tokens.clone()).collect();
    let tokens = model.tokens_tensor(&tokens)?;
    let patches = row_patches(rows)?;
    // The streams entering each block and the logits' input, with the rows' patches.
    let streams: Vec<HookPoint> = (0..n_layers)
        .map(HookPoint::resid_pre)
        .chain([HookPoint::block(n_layers - 1, BlockSite::ResidPost)])
        .collect();
    let mut hooks = Hooks::new(&patches, CacheFilter::only(streams.clone()));
    let none = EdgeInputs::none(n_layers);
    let (columns, _) = answer_columns(rows);
    let readout = Readout::LastPositionColumns(&columns);
    model.forward_edges(&tokens, &mut hooks, readout, &none, true)?;
    let cache = hooks.into_cache();
    let stream = |i: usize| -> Result<Tensor> { Ok(cache.get(streams[i])?.detach()) };

    // The logits: the gradient at their input is the one every block continues from.
    let mut grad_out = logits_gradient(model, rows, &stream(n_layers)?)?; // [rows, pos, d_model]
    consume(block_offset(graph, n_layers, 0), &grad_out.unsqueeze(1)?)?;
    for layer in (0..n_layers).rev() {
        let resid_pre = stream(layer)?; // [rows, pos, d_model]
        grad_out = block_gradients(
            model,
            graph,
            (layer, &resid_pre),
            (&patches, &grad_out),
            &mut *consume,
        )?;
    }
    Ok(())
}

/// The answers' columns of the unembedding (ids once each) and each row's answers as
/// indices into them.
fn answer_columns(rows: &[&GradRow]) -> (Vec<u32>, Vec<[u32; 2]>) {
    let mut columns: Vec<u32> = rows.iter().flat_map(|r| r.answers).collect();
    columns.sort_unstable();
    columns.dedup();
    let answers = rows
        .iter()
        .map(|r| {
            r.answers
                .map(|id| columns.binary_search(&id).unwrap_or(0) as u32)
        })
        .collect();
    (columns, answers)
}

/// One block's probes: zero variables after its q, k and v projections (per query
/// head) and at its MLP's input, and the receiver inputs that add them.
struct Probes {
    vars: [Var; 4],
}

impl Probes {
    fn new(
        model: &HookedTransformer,
        graph: &Graph,
        (rows, pos): (usize, usize),
    ) -> Result<(Self, ReceiverInputs)> {
        let device = model.device();
        let head_shape = (rows, pos, graph.n_heads, model.dims().d_head);
        let vars = [
            Var::zeros(head_shape, DType::F32, device)?,
            Var::zeros(head_shape, DType::F32, device)?,
            Var::zeros(head_shape, DType::F32, device)?,
            Var::zeros((rows, pos, graph.d_model), DType::F32, device)?,
        ];
        let probe = |i: usize| vars[i].as_tensor().clone();
        let inputs = ReceiverInputs {
            projected: Some([probe(0), probe(1), probe(2)]),
            mlp: Some(probe(3)),
            ..ReceiverInputs::default()
        };
        Ok((Probes { vars }, inputs))
    }

    /// The gradients at block `layer`'s q, k, v inputs `[rows, head, pos, d_model]` and
    /// its MLP's, from the probes' in `store`, to `consume`.
    fn consume(
        &self,
        model: &HookedTransformer,
        graph: &Graph,
        (layer, resid_pre): (usize, &Tensor),
        store: &GradStore,
        consume: Consume,
    ) -> Result<()> {
        let projected = [
            gradient_of(store, &self.vars[0])?,
            gradient_of(store, &self.vars[1])?,
            gradient_of(store, &self.vars[2])?,
        ];
        let qkv = model.attention_input_gradients(
            layer,
            resid_pre,
            [&projected[0], &projected[1], &projected[2]],
        )?; // [rows, head, pos, d_model] each
        for (input, grad) in qkv.iter().enumerate() {
            consume(block_offset(graph, layer, input), grad)?;
        }
        let mlp = gradient_of(store, &self.vars[3])?.unsqueeze(1)?; // [rows, 1, pos, d_model]
        consume(block_offset(graph, layer, 3), &mlp)
    }
}

/// The gradient of the rows' summed logit differences at the logits' input
/// `[rows, pos, d_model]` (the final residual stream).
fn logits_gradient(
    model: &HookedTransformer,
    rows: &[&GradRow],
    resid_final: &Tensor,
) -> Result<Tensor> {
    let input = Var::from_tensor(resid_final)?;
    let (columns, answers) = answer_columns(rows);
    let readout = Readout::LastPositionColumns(&columns);
    let logits = model.readout(input.as_tensor(), &mut Hooks::none(), readout)?; // [rows, columns]
    let store = logit_diffs(&logits, &answers)?.sum_all()?.backward()?;
    gradient_of(&store, &input)
}

/// Block `layer` run again on its input `resid_pre` as a variable, with its probes and
/// the rows' `patches`, and differentiated against `grad_out` (the gradient at its
/// output): its receivers' gradients to `consume`; returns the gradient at its input.
fn block_gradients(
    model: &HookedTransformer,
    graph: &Graph,
    (layer, resid_pre): (usize, &Tensor),
    (patches, grad_out): (&[Patch], &Tensor),
    consume: Consume,
) -> Result<Tensor> {
    let (rows, pos, _) = resid_pre.dims3()?;
    let (probes, inputs) = Probes::new(model, graph, (rows, pos))?;
    let input = Var::from_tensor(resid_pre)?;
    let mut hooks = Hooks::new(patches, CacheFilter::Nothing);
    let output = model.block_edges_differentiable(
        layer,
        input.as_tensor().clone(),
        Some(&inputs),
        &mut hooks,
    )?;
    let store = (output * grad_out)?.sum_all()?.backward()?;
    probes.consume(model, graph, (layer, resid_pre), &store, consume)?;
    gradient_of(&store, &input)
}

/// The gradient at `var` (zeros where the output does not depend on it).
fn gradient_of(store: &GradStore, var: &Var) -> Result<Tensor> {
    match store.get(var.as_tensor()) {
        Some(grad) => Ok(grad.clone()),
        None => Ok(var.as_tensor().zeros_like()?),
    }
}

/// One patch per hook point that some rows replace, each selecting those rows.
fn row_patches(rows: &[&GradRow]) -> Result<Vec<Patch>> {
    let mut points: Vec<HookPoint> = rows
        .iter()
        .filter_map(|r| r.replace.as_ref().map(|(point, _)| *point))
        .collect();
    points.sort();
    points.dedup();
    let mut patches = Vec::with_capacity(points.len());
    for point in points {
        let at_point = |row: &GradRow| match &row.replace {
            Some((p, value)) if *p == point => Some(value.clone()),
            _ => None,
        };
        let Some(template) = rows.iter().find_map(|row| at_point(row)) else {
            continue;
        };
        let mut selected = Vec::new();
        let mut values = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            match at_point(row) {
                Some(value) => {
                    selected.push(i);
                    values.push(value);
                }
                None => values.push(template.zeros_like()?), // masked out
            }
        }
        let source = Tensor::cat(&values, 0)?; // [rows, pos, d_model]
        patches.push(Patch::replace(point, source).rows(Selection::Only(selected)));
    }
    Ok(patches)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::pair_runs;
    use crate::{Ablation, EdgePair};

    /// Differentiating block by block gives the whole pass's products.
    #[test]
    fn passes_by_blocks_equal_whole_passes() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
        for fixture in ["tiny-gpt2", "tiny-llama"] {
            let model = HookedTransformer::from_dir(dir.join(fixture)).unwrap();
            let graph = Graph::of_model(&model);
            let clean = model.to_tokens("The Colosseum is in", true).unwrap();
            let corrupted = model.to_tokens("The Eiffel Tower is in", true).unwrap();
            let answers = [
                model.to_single_token(" Rome").unwrap(),
                model.to_single_token(" Paris").unwrap(),
            ];
            let pair = EdgePair {
                clean: clean.clone(),
                corrupted: corrupted.clone(),
                answers,
            };
            let runs = pair_runs(
                &model,
                &graph,
                std::slice::from_ref(&pair),
                Ablation::Patching,
            )
            .unwrap();
            // Two rows of one group (the clean and the corrupted prompt) and one alone.
            let row = |tokens: &[u32], group| GradRow {
                tokens: tokens.to_vec(),
                answers,
                replace: None,
                group,
            };
            let rows = [row(&clean, 0), row(&corrupted, 0), row(&clean, 1)];
            let deltas = [&runs[0].delta, &runs[0].delta];
            let whole = products_with(&model, &graph, (&rows, &deltas), usize::MAX).unwrap();
            let blocks = products_with(&model, &graph, (&rows, &deltas), 0).unwrap();
            for (w, b) in whole.iter().flatten().zip(blocks.iter().flatten()) {
                assert!(
                    (w - b).abs() < 1e-5 * (1.0 + w.abs()),
                    "{fixture}: {w} vs {b}"
                );
            }
            assert!(whole[0].iter().any(|v| v.abs() > 1e-3));
        }
    }
}
