//! The gradient at every receiver's input, from one differentiable pass per batch of
//! rows: each receiver input of the edge graph gets a zero variable of its own
//! ([`actpatch_model::edges`]), and the gradient with respect to it is the gradient at
//! that input. Short passes are differentiated as a whole; long ones block by block
//! (gradient checkpointing), so that one block's graph is alive at a time.

use actpatch_hooks::{BlockSite, CacheFilter, HookPoint, Hooks, Patch};
use actpatch_model::{EdgeInputs, FromPosition, HookedTransformer, Readout, ReceiverInputs};
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use crate::gradients::{
    answer_columns, answers_of, block_offset, logit_diffs, row_patches, Consume, GradRow,
};
use crate::graph::Graph;
use crate::prefix::CleanPrefixes;
use crate::Result;

/// One pass over rows of one length, differentiated as a whole: every receiver
/// block's gradients to `consume`. Probes after each projection keep the per-head
/// copies of the stream out of the differentiated graph; the model turns their
/// gradients into the inputs' ([`HookedTransformer::attention_input_gradients`]).
pub(crate) fn pass_whole(
    model: &HookedTransformer,
    graph: &Graph,
    (rows, prefixes): (&[&GradRow], &CleanPrefixes),
    consume: Consume,
) -> Result<()> {
    let n_layers = graph.n_layers;
    let (tokens, patches) = rows_input(model, rows)?;
    let (n, len) = tokens.dims2()?;
    // The rows' first position: the blocks run from there, after their group's keys
    // and values ([`GradRow::from`]).
    let from = rows
        .first()
        .map_or(0, |r| r.from)
        .min(len.saturating_sub(1));
    let embedding_only = |r: &&GradRow| matches!(r.replace, None | Some((HookPoint::Embed, _)));
    if from > 0 && !rows.iter().all(|r| r.from == from && embedding_only(r)) {
        let reason =
            "rows of one pass from a later position: one first position, embeddings replaced only";
        return Err(candle_core::Error::Msg(reason.into()).into());
    }
    let pos = len - from;
    let mut probes = Vec::with_capacity(n_layers);
    let mut inputs = EdgeInputs::none(n_layers);
    if from > 0 {
        let groups: Vec<usize> = rows.iter().map(|r| r.group).collect();
        let layers = (0..n_layers)
            .map(|layer| prefixes.rows(layer, from, &groups).map(Some)) // [rows, from, kv_head, d_head] each
            .collect::<Result<_>>()?;
        inputs.from_position = Some(FromPosition {
            start: from,
            layers,
        });
    }
    for layer in 0..n_layers {
        let (layer_probes, receivers) = Probes::new(model, graph, (n, pos))?;
        inputs.layers[layer] = Some(receivers);
        probes.push(layer_probes);
    }
    let logits_probe = Var::zeros((n, pos, graph.d_model), DType::F32, model.device())?;
    inputs.logits = Some(logits_probe.as_tensor().clone());
    let streams: Vec<HookPoint> = (0..n_layers).map(HookPoint::resid_pre).collect();
    let mut hooks = Hooks::new(&patches, CacheFilter::only(streams.clone()));
    let (columns, answers) = answer_columns(&answers_of(rows));
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
pub(crate) fn pass_by_blocks(
    model: &HookedTransformer,
    graph: &Graph,
    rows: &[&GradRow],
    consume: Consume,
) -> Result<()> {
    let n_layers = graph.n_layers;
    let (tokens, patches) = rows_input(model, rows)?;
    // The streams entering each block and the logits' input, with the rows' patches.
    let streams: Vec<HookPoint> = (0..n_layers)
        .map(HookPoint::resid_pre)
        .chain([HookPoint::block(n_layers - 1, BlockSite::ResidPost)])
        .collect();
    let mut hooks = Hooks::new(&patches, CacheFilter::only(streams.clone()));
    let none = EdgeInputs::none(n_layers);
    let (columns, _) = answer_columns(&answers_of(rows));
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

/// The rows' tokens `[rows, pos]` and their patches.
fn rows_input(model: &HookedTransformer, rows: &[&GradRow]) -> Result<(Tensor, Vec<Patch>)> {
    let tokens: Vec<Vec<u32>> = rows.iter().map(|r| r.tokens.clone()).collect();
    Ok((model.tokens_tensor(&tokens)?, row_patches(rows)?))
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
    let (columns, answers) = answer_columns(&answers_of(rows));
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
