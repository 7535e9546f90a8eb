//! The gradient of the logit difference at every receiver's input, from one
//! differentiable pass per batch of rows: each receiver input of the edge graph gets a
//! zero variable of its own ([`actpatch_model::edges`]), and the gradient with
//! respect to it is the gradient at that input.

use actpatch_hooks::{HookPoint, Hooks, Patch, Selection};
use actpatch_model::{EdgeInputs, HookedTransformer, Readout, ReceiverInputs};
use candle_core::{DType, Tensor, Var};

use crate::graph::Graph;
use crate::Result;

/// One row of a gradient pass: a prompt, the answers whose logit difference is
/// differentiated, and optionally a value `[1, pos, d_model]` in place of one hook
/// point's (token embeddings moved towards the corrupted run, a layer's output
/// interpolated).
pub struct GradRow {
    pub tokens: Vec<u32>,
    /// (correct, incorrect)
    pub answers: [u32; 2],
    pub replace: Option<(HookPoint, Tensor)>,
}

/// Rows × positions per pass: the split inputs keep a copy of the residual stream per
/// head and input in the graph until the backward pass.
const ROW_POSITIONS_PER_PASS: usize = 64;

/// Each row's receiver gradients `[receiver, pos, d_model]` (graph order), and the
/// logit difference of each row.
pub fn receiver_gradients(
    model: &HookedTransformer,
    graph: &Graph,
    rows: &[GradRow],
) -> Result<(Vec<Tensor>, Vec<f32>)> {
    let mut grads = Vec::with_capacity(rows.len());
    let mut diffs = Vec::with_capacity(rows.len());
    let mut start = 0;
    while start < rows.len() {
        let pos = rows[start].tokens.len();
        let per_pass = (ROW_POSITIONS_PER_PASS / pos.max(1)).max(1);
        let mut end = start + 1;
        while end < rows.len() && end - start < per_pass && rows[end].tokens.len() == pos {
            end += 1;
        }
        let (g, d) = pass(model, graph, &rows[start..end])?;
        grads.extend(g);
        diffs.extend(d);
        start = end;
    }
    Ok((grads, diffs))
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

/// One pass over rows of one length.
fn pass(
    model: &HookedTransformer,
    graph: &Graph,
    rows: &[GradRow],
) -> Result<(Vec<Tensor>, Vec<f32>)> {
    let (n, pos, d_model, heads) = (
        rows.len(),
        rows[0].tokens.len(),
        graph.d_model,
        graph.n_heads,
    );
    let device = model.device();
    let zeros = |shape: &[usize]| Var::zeros(shape, DType::F32, device);
    let mut vars: Vec<[Var; 4]> = Vec::with_capacity(graph.n_layers);
    let mut inputs = EdgeInputs::none(graph.n_layers);
    for layer in 0..graph.n_layers {
        let head_shape = [n, pos, heads, d_model];
        let layer_vars = [
            zeros(&head_shape)?,
            zeros(&head_shape)?,
            zeros(&head_shape)?,
            zeros(&[n, pos, d_model])?,
        ];
        inputs.layers[layer] = Some(ReceiverInputs {
            q: Some(layer_vars[0].as_tensor().clone()),
            k: Some(layer_vars[1].as_tensor().clone()),
            v: Some(layer_vars[2].as_tensor().clone()),
            mlp: Some(layer_vars[3].as_tensor().clone()),
        });
        vars.push(layer_vars);
    }
    let logits_var = zeros(&[n, pos, d_model])?;
    inputs.logits = Some(logits_var.as_tensor().clone());

    let tokens: Vec<Vec<u32>> = rows.iter().map(|r| r.tokens.clone()).collect();
    let tokens = model.tokens_tensor(&tokens)?;
    let patches = row_patches(rows)?;
    let mut hooks = Hooks::patching(&patches);
    let logits = model.forward_edges(&tokens, &mut hooks, Readout::LastPosition, &inputs, true)?; // [rows, d_vocab]
    let answers: Vec<[u32; 2]> = rows.iter().map(|r| r.answers).collect();
    let diffs = logit_diffs(&logits, &answers)?; // [rows]
    let store = diffs.sum_all()?.backward()?;
    let grad_of = |var: &Var| -> Result<Tensor> {
        match store.get(var.as_tensor()) {
            Some(g) => Ok(g.clone()),
            None => Ok(var.as_tensor().zeros_like()?),
        }
    };
    let mut per_layer = Vec::with_capacity(graph.n_layers);
    for layer_vars in &vars {
        let mut parts = Vec::with_capacity(4);
        for var in &layer_vars[..3] {
            parts.push(grad_of(var)?.permute((0, 2, 1, 3))?); // [rows, head, pos, d_model]
        }
        parts.push(grad_of(&layer_vars[3])?.unsqueeze(1)?); // [rows, 1, pos, d_model]
        per_layer.push(Tensor::cat(&parts, 1)?);
    }
    per_layer.push(grad_of(&logits_var)?.unsqueeze(1)?);
    let all = Tensor::cat(&per_layer, 1)?.contiguous()?; // [rows, receiver, pos, d_model]
    let grads = (0..n)
        .map(|i| Ok(all.get(i)?))
        .collect::<Result<Vec<_>>>()?;
    Ok((grads, diffs.to_vec1::<f32>()?))
}

/// One patch per hook point that some rows replace, each selecting those rows.
fn row_patches(rows: &[GradRow]) -> Result<Vec<Patch>> {
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
        let Some(template) = rows.iter().find_map(at_point) else {
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
