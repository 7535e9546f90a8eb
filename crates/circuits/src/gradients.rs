//! The gradient of the logit difference at every receiver's input, from one
//! differentiable pass per batch of rows: each receiver input of the edge graph gets a
//! zero variable of its own ([`actpatch_model::edges`]), and the gradient with
//! respect to it is the gradient at that input.

use actpatch_hooks::{CacheFilter, HookPoint, Hooks, Patch, Selection};
use actpatch_model::{EdgeInputs, HookedTransformer, Readout, ReceiverInputs};
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

/// The mean receiver gradient of each group, in the graph's receiver order as blocks
/// `[receivers, pos, d_model]` (per layer each input's heads, then the MLP; the logits),
/// of rows, groups numbered from 0: rows of one length run together in batches, rows
/// of any group.
pub fn receiver_gradients(
    model: &HookedTransformer,
    graph: &Graph,
    rows: &[GradRow],
) -> Result<Vec<Vec<Tensor>>> {
    let n_groups = rows.iter().map(|r| r.group + 1).max().unwrap_or(0);
    // Per group, the sum of its rows' gradients in the layout of the inputs.
    let mut sums: Vec<Option<Vec<Tensor>>> = vec![None; n_groups];
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
        let grads = pass(model, graph, &chunk)?;
        for (i, row) in chunk.iter().enumerate() {
            let parts: Vec<Tensor> = grads
                .iter()
                .map(|g| g.get(i))
                .collect::<std::result::Result<_, _>>()?;
            let sum = &mut sums[row.group];
            *sum = Some(match sum.take() {
                Some(s) => s
                    .iter()
                    .zip(&parts)
                    .map(|(a, b)| a + b)
                    .collect::<std::result::Result<_, _>>()?,
                None => parts,
            });
            counts[row.group] += 1;
        }
        start = end;
    }
    sums.into_iter()
        .zip(counts)
        .map(|(sum, n)| match sum {
            Some(parts) => receiver_major(graph, &parts)?
                .into_iter()
                .map(|part| Ok((part / n as f64)?))
                .collect(),
            None => Err(CircuitError::NoPairs),
        })
        .collect()
}

/// One row's gradients (per layer q, k, v `[head, pos, d_model]`,
/// the MLP's `[pos, d_model]`; the logits' last) as `[receiver, pos, d_model]`.
fn receiver_major(graph: &Graph, parts: &[Tensor]) -> Result<Vec<Tensor>> {
    let mut ordered = Vec::with_capacity(parts.len());
    for layer in 0..graph.n_layers {
        ordered.extend(parts[4 * layer..4 * layer + 3].iter().cloned()); // [head, pos, d_model]
        ordered.push(parts[4 * layer + 3].unsqueeze(0)?);
    }
    if let Some(logits) = parts.last() {
        ordered.push(logits.unsqueeze(0)?);
    }
    Ok(ordered)
}

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

/// One pass over rows of one length: the gradient at every receiver input, per layer
/// q, k, v `[rows, head, pos, d_model]` and the MLP's `[rows, pos, d_model]`, then the
/// logits' `[rows, pos, d_model]`. Probes after each projection keep the per-head
/// copies of the stream out of the differentiated graph; the model turns their
/// gradients into the inputs' ([`HookedTransformer::attention_input_gradients`]).
fn pass(model: &HookedTransformer, graph: &Graph, rows: &[&GradRow]) -> Result<Vec<Tensor>> {
    let (n, pos, d_model, heads) = (
        rows.len(),
        rows[0].tokens.len(),
        graph.d_model,
        graph.n_heads,
    );
    let d_head = model.dims().d_head;
    let device = model.device();
    let zeros = |shape: &[usize]| Var::zeros(shape, DType::F32, device);
    // Per layer: probes after the q, k and v projections (per query head), and at the
    // MLP's input.
    let mut vars: Vec<[Var; 4]> = Vec::with_capacity(graph.n_layers);
    let mut inputs = EdgeInputs::none(graph.n_layers);
    for layer in 0..graph.n_layers {
        let head_shape = [n, pos, heads, d_head];
        let layer_vars = [
            zeros(&head_shape)?,
            zeros(&head_shape)?,
            zeros(&head_shape)?,
            zeros(&[n, pos, d_model])?,
        ];
        let t = |i: usize| layer_vars[i].as_tensor().clone();
        inputs.layers[layer] = Some(ReceiverInputs {
            projected: Some([t(0), t(1), t(2)]),
            mlp: Some(t(3)),
            ..ReceiverInputs::default()
        });
        vars.push(layer_vars);
    }
    let logits_var = zeros(&[n, pos, d_model])?;
    inputs.logits = Some(logits_var.as_tensor().clone());

    let tokens: Vec<Vec<u32>> = rows.iter().map(|r| r.tokens.clone()).collect();
    let tokens = model.tokens_tensor(&tokens)?;
    let patches = row_patches(rows)?;
    let streams: Vec<HookPoint> = (0..graph.n_layers).map(HookPoint::resid_pre).collect();
    let mut hooks = Hooks::new(&patches, CacheFilter::only(streams.clone()));
    // Only the answers' columns of the unembedding: ids once each, rows pick theirs.
    let mut columns: Vec<u32> = rows.iter().flat_map(|r| r.answers).collect();
    columns.sort_unstable();
    columns.dedup();
    let readout = Readout::LastPositionColumns(&columns);
    let logits = model.forward_edges(&tokens, &mut hooks, readout, &inputs, true)?; // [rows, columns]
    let answers: Vec<[u32; 2]> = rows
        .iter()
        .map(|r| {
            r.answers
                .map(|id| columns.binary_search(&id).unwrap_or(0) as u32)
        })
        .collect();
    let diffs = logit_diffs(&logits, &answers)?; // [rows]
    let store = diffs.sum_all()?.backward()?;
    let grad_of = |var: &Var| -> Result<Tensor> {
        match store.get(var.as_tensor()) {
            Some(g) => Ok(g.clone()),
            None => Ok(var.as_tensor().zeros_like()?),
        }
    };
    let cache = hooks.into_cache();
    let mut grads = Vec::with_capacity(4 * graph.n_layers + 1);
    for (layer, layer_vars) in vars.iter().enumerate() {
        let resid_pre = cache.get(streams[layer])?.detach(); // [rows, pos, d_model]
        let projected = [
            grad_of(&layer_vars[0])?,
            grad_of(&layer_vars[1])?,
            grad_of(&layer_vars[2])?,
        ];
        let [q, k, v] = model.attention_input_gradients(
            layer,
            &resid_pre,
            [&projected[0], &projected[1], &projected[2]],
        )?; // [rows, head, pos, d_model] each
        grads.extend([q, k, v, grad_of(&layer_vars[3])?]); // the MLP's: [rows, pos, d_model]
    }
    grads.push(grad_of(&logits_var)?);
    Ok(grads)
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
