//! The rows of a gradient pass and what every pass shares: which answers' columns the
//! logit difference reads, the rows' patches, where each receiver block starts, and
//! what a pass hands its gradients to. The passes are in [`crate::gradient_passes`],
//! the contraction with the senders' deltas in [`crate::products`].

use actpatch_hooks::{HookPoint, Hooks, Patch, Selection};
use actpatch_model::{HookedTransformer, Readout};
use candle_core::{DType, Tensor};

use crate::graph::Graph;
use crate::Result;

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
    /// The first position whose gradients are read: the group's deltas are 0 before it
    /// and every row of the group runs as its first row's prompt there (the same
    /// tokens, nothing replaced), so a short pass runs the positions from here on
    /// only, attending to that prompt's keys and values before it. The same for every
    /// row of a group.
    pub from: usize,
}

/// Where each receiver block starts in [`Graph::receivers`]: per layer its q, k and v
/// heads, then its MLP; the logits last.
pub(crate) fn block_offset(graph: &Graph, layer: usize, block: usize) -> usize {
    layer * (3 * graph.n_heads + 1) + block * graph.n_heads
}

/// What a pass hands each receiver block's gradients to: the block's first receiver
/// and its gradients `[rows, receivers, pos, d_model]`.
pub(crate) type Consume<'c> = &'c mut dyn FnMut(usize, &Tensor) -> Result<()>;

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

/// The answers' columns of the unembedding (ids once each) and each row's answers as
/// indices into them.
pub(crate) fn answer_columns(rows: &[[u32; 2]]) -> (Vec<u32>, Vec<[u32; 2]>) {
    let mut columns: Vec<u32> = rows.iter().flatten().copied().collect();
    columns.sort_unstable();
    columns.dedup();
    let answers = rows
        .iter()
        .map(|answers| answers.map(|id| columns.binary_search(&id).unwrap_or(0) as u32))
        .collect();
    (columns, answers)
}

/// Each row's answers (correct, incorrect), for [`answer_columns`].
pub(crate) fn answers_of(rows: &[&GradRow]) -> Vec<[u32; 2]> {
    rows.iter().map(|r| r.answers).collect()
}

/// The logit difference of each row of a residual stream entering the final norm
/// `[rows, pos, d_model]` (its last position read), through the answers' columns of
/// the unembedding only: `[rows]`.
pub(crate) fn readout_logit_diffs(
    model: &HookedTransformer,
    resid: &Tensor,
    answers: &[[u32; 2]],
) -> Result<Vec<f32>> {
    let (columns, answers) = answer_columns(answers);
    let readout = Readout::LastPositionColumns(&columns);
    let logits = model.readout(resid, &mut Hooks::none(), readout)?; // [rows, columns]
    logit_diff_values(&logits, &answers)
}

/// [`logit_diffs`] as f32 values on the host, whatever the model's dtype.
pub(crate) fn logit_diff_values(logits: &Tensor, answers: &[[u32; 2]]) -> Result<Vec<f32>> {
    Ok(logit_diffs(&logits.to_dtype(DType::F32)?, answers)?.to_vec1::<f32>()?)
}

/// One patch per hook point that some rows replace, each selecting those rows.
pub(crate) fn row_patches(rows: &[&GradRow]) -> Result<Vec<Patch>> {
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
