//! Causal tracing by full forward passes: one patched run per cell and draw, as ROME's
//! `trace_with_patch` (the reference the fast trace is checked against).

use actpatch_hooks::{Cell, HookPoint, Patch, PatchValue};
use actpatch_model::{HookedTransformer, Readout};
use candle_core::Tensor;

use crate::gaussian::{embed_patch, AnswerScore, NoisedPrompt, TraceIndex};
use crate::{Direction, Result};

/// The sum over the draws of each cell's scores.
pub(crate) fn trace(
    prompt: &NoisedPrompt,
    model: &HookedTransformer,
    direction: Direction,
    cells: &[TraceIndex],
    max_rows: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<AnswerScore>> {
    let samples = prompt.samples();
    let per_pass = (max_rows / samples).max(1);
    let mut sums = Vec::with_capacity(cells.len());
    for chunk in cells.chunks(per_pass) {
        let scores = run_chunk(prompt, model, direction, chunk)?;
        // Row r = cell r / samples, draw r % samples.
        sums.extend(
            scores
                .chunks(samples)
                .map(|draws| (draws.iter()).fold(AnswerScore::default(), |acc, s| acc + *s)),
        );
        progress(chunk.len());
    }
    Ok(sums)
}

/// One pass over every draw of every cell of `chunk`: the scores of its rows.
fn run_chunk(
    prompt: &NoisedPrompt,
    model: &HookedTransformer,
    direction: Direction,
    chunk: &[TraceIndex],
) -> Result<Vec<AnswerScore>> {
    let samples = prompt.samples();
    let n_rows = chunk.len() * samples;
    let n_layers = model.dims().n_layers;
    // Each restored hook point with the cells (rows and position) it restores.
    let mut restored: Vec<(HookPoint, Vec<Cell>)> = Vec::new();
    for (c, cell) in chunk.iter().enumerate() {
        for layer in prompt.spec.layers(cell.kind, cell.layer, n_layers) {
            let point = HookPoint::block(layer, cell.kind.site());
            let rows = (0..samples).map(|s| Cell {
                row: c * samples + s,
                position: Some(cell.position),
                head: None,
                key: None,
            });
            match restored.iter_mut().find(|(p, _)| *p == point) {
                Some((_, cells)) => cells.extend(rows),
                None => restored.push((point, rows.collect())),
            }
        }
    }
    let mut patches = Vec::with_capacity(restored.len() + 1);
    if direction == Direction::Denoising {
        patches.push(embed_patch(prompt.noised_embeddings(), n_rows)?);
    }
    for (point, cells) in restored {
        let source = match direction {
            // The clean activation, the same for every row.
            Direction::Denoising => prompt.source(direction, point, 0)?,
            // Each row's own draw: the noised activations tiled over the cells.
            Direction::Noising => {
                let draws = (0..samples)
                    .map(|s| prompt.source(direction, point, s))
                    .collect::<Result<Vec<_>>>()?;
                let one_cell = Tensor::cat(&draws, 0)?; // [samples, pos, …]
                Tensor::cat(&vec![one_cell; chunk.len()], 0)?
            }
        };
        patches.push(Patch::at_cells(point, PatchValue::Replace(source), cells));
    }
    let rows = vec![prompt.tokens.clone(); n_rows];
    let logits = model.run_with_patches(&rows, &patches, Readout::LastPosition)?; // [rows, d_vocab]
    prompt.scores(&logits)
}
