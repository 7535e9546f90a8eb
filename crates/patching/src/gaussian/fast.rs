//! Causal tracing by partial passes: the numbers of `naive.rs`, computing only what a
//! restoration can change.
//!
//! - Each draw's target run (the noised run when denoising, the clean run when noising)
//!   is run once and cached ([`HookedTransformer::base_run_patched`]); a cell's rows
//!   start at the first layer of its window from that cache.
//! - Attention is causal: a cell at position p leaves positions before p unchanged, so
//!   only positions p.. run, with the earlier keys and values read from the cache.
//! - Positions before the subject never see the noise: their clean and noised
//!   activations are equal, so their cells are the unpatched target run.
//! - Cells at one position run together layer by layer, each row joining at its
//!   window's first layer; in the last layer only the final position is computed when
//!   no row restores anything there.

use std::collections::BTreeMap;

use actpatch_hooks::{Cell, HookPoint, Hooks, Patch, PatchValue};
use actpatch_model::{BaseRun, HookedTransformer, Readout, Span};
use candle_core::Tensor;

use crate::gaussian::{AnswerScore, NoisedPrompt, TraceIndex};
use crate::{Direction, Result};

/// One cell's rows in a batch: the cell and the layers it restores.
#[derive(Debug, Clone)]
struct Job {
    cell: usize,
    layers: std::ops::Range<usize>,
}

/// The sum over the draws of each cell's scores.
pub(crate) fn trace(
    prompt: &NoisedPrompt,
    model: &HookedTransformer,
    direction: Direction,
    cells: &[TraceIndex],
    max_rows: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<AnswerScore>> {
    let n_layers = model.dims().n_layers;
    let mut unchanged = Vec::new();
    let mut by_position: BTreeMap<usize, Vec<Job>> = BTreeMap::new();
    for (i, cell) in cells.iter().enumerate() {
        if cell.position < prompt.subject.start {
            unchanged.push(i);
            continue;
        }
        let layers = prompt.spec.layers(cell.kind, cell.layer, n_layers);
        by_position
            .entry(cell.position)
            .or_default()
            .push(Job { cell: i, layers });
    }
    let clean_base = match direction {
        Direction::Noising => Some(model.base_run(&prompt.tokens, [])?),
        Direction::Denoising => None,
    };
    let mut sums = vec![AnswerScore::default(); cells.len()];
    let samples = prompt.samples();
    for draw in 0..samples {
        let noised_base;
        let target = match &clean_base {
            Some(base) => base,
            None => {
                let embed = Patch::replace(HookPoint::Embed, prompt.noised_embed_of(draw)?);
                noised_base = model.base_run_patched(&prompt.tokens, &[embed], [])?;
                &noised_base
            }
        };
        let unpatched = prompt.scores(target.logits())?[0];
        for i in &unchanged {
            sums[*i] = sums[*i] + unpatched;
        }
        let last_draw = draw + 1 == samples;
        if last_draw && !unchanged.is_empty() {
            progress(unchanged.len());
        }
        let draw_run = DrawRun {
            prompt,
            model,
            direction,
            draw,
            target,
            cells,
        };
        for (position, jobs) in &by_position {
            let mut jobs = jobs.clone();
            jobs.sort_by_key(|j| j.layers.start);
            for chunk in jobs.chunks(max_rows.max(1)) {
                let scores = draw_run.run(*position, chunk)?;
                for (job, score) in chunk.iter().zip(scores) {
                    sums[job.cell] = sums[job.cell] + score;
                }
                if last_draw {
                    progress(chunk.len());
                }
            }
        }
    }
    Ok(sums)
}

/// One draw's target run and what its restorations take.
struct DrawRun<'a> {
    prompt: &'a NoisedPrompt,
    model: &'a HookedTransformer,
    direction: Direction,
    draw: usize,
    target: &'a BaseRun,
    cells: &'a [TraceIndex],
}

impl DrawRun<'_> {
    /// The scores of `jobs` (cells at `position`, sorted by their window's first
    /// layer), run from their windows on positions `position..`.
    fn run(&self, position: usize, jobs: &[Job]) -> Result<Vec<AnswerScore>> {
        let model = self.model;
        let n_layers = model.dims().n_layers;
        let n_pos = self.target.n_pos();
        let span = model.span(self.target, position, n_pos - position)?;
        let first = jobs.iter().map(|j| j.layers.start).min().unwrap_or(0);
        let mut resid: Option<Tensor> = None; // [rows, len, d_model], rows in job order
        let mut joined = 0;
        for layer in first..n_layers {
            let joining = jobs[joined..]
                .iter()
                .take_while(|j| j.layers.start == layer)
                .count();
            if joining > 0 {
                let rows = self
                    .target
                    .resid_pre(layer, position, span.len(), joining)?;
                resid = Some(match resid.take() {
                    None => rows,
                    Some(r) => Tensor::cat(&[&r, &rows], 0)?,
                });
                joined += joining;
            }
            let Some(current) = resid.take() else {
                continue;
            };
            let patches = self.patches(layer, &jobs[..joined], &span)?;
            resid = Some(if layer + 1 == n_layers && patches.is_empty() {
                model.run_block_final(layer, current, &span, &mut Hooks::none())?
            // [rows, 1, d_model]
            } else {
                let out = model.run_block(layer, current, &span, &mut Hooks::patching(&patches))?;
                match layer + 1 == n_layers {
                    true => out.narrow(1, span.len() - 1, 1)?,
                    false => out,
                }
            });
        }
        let Some(last) = resid else {
            return Ok(Vec::new());
        };
        let logits = model.readout(&last, &mut Hooks::none(), Readout::LastPosition)?; // [rows, d_vocab]
        self.prompt.scores(&logits)
    }

    /// The restorations of block `layer` for the rows of `jobs` (row i = job i): one
    /// patch per restored site, at the span's first position.
    fn patches(&self, layer: usize, jobs: &[Job], span: &Span) -> Result<Vec<Patch>> {
        let mut restored: Vec<(HookPoint, Vec<Cell>)> = Vec::new();
        for (row, job) in jobs.iter().enumerate() {
            if !job.layers.contains(&layer) {
                continue;
            }
            let point = HookPoint::block(layer, self.cells[job.cell].kind.site());
            let cell = Cell {
                row,
                position: Some(0),
                head: None,
                key: None,
            };
            match restored.iter_mut().find(|(p, _)| *p == point) {
                Some((_, cells)) => cells.push(cell),
                None => restored.push((point, vec![cell])),
            }
        }
        restored
            .into_iter()
            .map(|(point, cells)| {
                let source = self.prompt.source(self.direction, point, self.draw)?; // [1, pos, …]
                let source = source.narrow(1, span.start(), span.len())?;
                Ok(Patch::at_cells(point, PatchValue::Replace(source), cells))
            })
            .collect()
    }
}
