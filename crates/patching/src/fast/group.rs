//! One batch of a fast sweep: cells whose runs start at the same position, run layer
//! by layer, each row joining when the sweep reaches its layer.
//!
//! Two reuses beyond the sweep's:
//! - A cell patching one position of a site after the block input (`attn_out`,
//!   `mlp_out`, a head's `z`, …) changes only that position in its own layer: that
//!   layer runs for the one position, and the row joins the batch at the next layer.
//! - In the last layer only the final position's output is read: the other positions
//!   contribute their keys and values, nothing else is computed for them
//!   ([`HookedTransformer::run_block_final`]).

use std::collections::BTreeMap;

use actpatch_hooks::{BlockSite, Cell, HookPoint, Hooks, Layout, Patch, PatchValue};
use actpatch_model::{BaseRun, HookedTransformer, Span};
use candle_core::Tensor;

use crate::fast::plan::{Job, SweepWork};
use crate::Result;

/// What every batch starting at one position shares.
pub(crate) struct StartGroup<'a> {
    pub model: &'a HookedTransformer,
    /// The unpatched target run.
    pub target: &'a BaseRun,
    pub site: BlockSite,
    /// Positions `start..` of the target prompt.
    pub span: Span<'a>,
    /// Per layer, the aligned source narrowed to the span's positions.
    pub sources: Vec<Tensor>,
    /// Each cell patches the one position of a site after the block input.
    pub single_position: bool,
}

/// The rows of a batch as it moves through the layers.
#[derive(Default)]
struct Batch {
    /// `[rows, len, d_model]`: the rows running over the whole span.
    resid: Option<Tensor>,
    /// The job of each row of `resid`.
    order: Vec<usize>,
    /// Rows that join at the next layer (`[n, len, d_model]`) and their jobs.
    pending: Vec<(Tensor, Vec<usize>)>,
    /// Rows that ended in the last layer at their own position (`[n, 1, d_model]`).
    finished: Vec<(Tensor, Vec<usize>)>,
}

impl Batch {
    fn append(&mut self, rows: Tensor, jobs: impl IntoIterator<Item = usize>) -> Result<()> {
        self.resid = Some(match self.resid.take() {
            None => rows,
            Some(r) => Tensor::cat(&[&r, &rows], 0)?,
        });
        self.order.extend(jobs);
        Ok(())
    }

    /// The final position's residual stream of every row `[rows, 1, d_model]` and the
    /// job of each row.
    fn into_final(self) -> Result<(Tensor, Vec<usize>)> {
        let mut parts = Vec::new();
        let mut ids = Vec::new();
        if let Some(resid) = self.resid {
            let len = resid.dim(1)?;
            parts.push(resid.narrow(1, len - 1, 1)?);
            ids.extend(self.order);
        }
        for (rows, job_ids) in self.finished {
            parts.push(rows);
            ids.extend(job_ids);
        }
        Ok((Tensor::cat(&parts, 0)?, ids))
    }
}

impl StartGroup<'_> {
    fn start(&self) -> usize {
        self.span.start()
    }

    fn len(&self) -> usize {
        self.span.len()
    }

    /// The axis of the site's positions (query positions for patterns).
    fn position_axis(&self) -> usize {
        match HookPoint::block(0, self.site).layout() {
            Layout::BatchHeadQueryKey => 2,
            _ => 1,
        }
    }

    fn patch(&self, layer: usize, source: Tensor, cells: Vec<Cell>) -> Vec<Patch> {
        if cells.is_empty() {
            return Vec::new();
        }
        vec![Patch::at_cells(
            HookPoint::block(layer, self.site),
            PatchValue::Replace(source),
            cells,
        )]
    }

    /// Block `layer` over the span for `rows` (`[n, len, d_model]`).
    fn full_block(
        &self,
        layer: usize,
        rows: Tensor,
        patches: &[Patch],
        work: &mut SweepWork,
    ) -> Result<Tensor> {
        let n = rows.dim(0)?;
        work.block_row_positions += n * self.len();
        work.attention_row_position_keys += n * self.len() * (self.start() + self.len());
        Ok(self
            .model
            .run_block(layer, rows, &self.span, &mut Hooks::patching(patches))?)
    }

    /// The last block, for the final position only: `[n, len, d_model]` → `[n, 1, d_model]`.
    fn last_block(&self, layer: usize, rows: Tensor, work: &mut SweepWork) -> Result<Tensor> {
        let (n, len, _) = rows.dims3()?;
        if len > 1 {
            work.kv_row_positions += n * (len - 1);
        }
        work.block_row_positions += n;
        work.attention_row_position_keys += n * (self.start() + len);
        Ok(self
            .model
            .run_block_final(layer, rows, &self.span, &mut Hooks::none())?)
    }

    /// Patch cells of the `joining` jobs, on rows `first_row..` of the batch.
    fn cells_of(&self, joining: &[usize], jobs: &[Job], first_row: usize) -> Vec<Cell> {
        joining
            .iter()
            .enumerate()
            .flat_map(|(k, j)| {
                jobs[*j].positions.iter().map(move |p| Cell {
                    row: first_row + k,
                    position: Some(p - self.start()),
                    head: jobs[*j].head,
                    key: jobs[*j].key,
                })
            })
            .collect()
    }

    /// Block `layer` at the one position `position`, patched there, for the jobs
    /// `ids`: `[n, 1, d_model]`, the rest of the prompt read from the target run.
    fn one_position(
        &self,
        layer: usize,
        position: usize,
        ids: &[usize],
        jobs: &[Job],
        work: &mut SweepWork,
    ) -> Result<Tensor> {
        let cells = ids
            .iter()
            .enumerate()
            .map(|(row, j)| Cell {
                row,
                position: Some(0),
                head: jobs[*j].head,
                key: jobs[*j].key,
            })
            .collect();
        let mut source =
            self.sources[layer].narrow(self.position_axis(), position - self.start(), 1)?;
        if self.position_axis() == 2 {
            // A pattern row at `position` has keys 0..=position only.
            source = source.narrow(3, 0, position + 1)?;
        }
        let patches = self.patch(layer, source, cells);
        let rows = self.target.resid_pre(layer, position, 1, ids.len())?;
        work.block_row_positions += ids.len();
        work.attention_row_position_keys += ids.len() * (position + 1);
        let span = self.model.span(self.target, position, 1)?;
        Ok(self
            .model
            .run_block(layer, rows, &span, &mut Hooks::patching(&patches))?)
    }

    /// Target rows of `layer` over the span, with `position` replaced by `value`
    /// (`[n, 1, d_model]`): `[n, len, d_model]`.
    fn rows_with(&self, layer: usize, position: usize, value: Tensor) -> Result<Tensor> {
        let n = value.dim(0)?;
        let (start, len) = (self.start(), self.len());
        let rows = self.target.resid_pre(layer, start, len, n)?;
        let at = position - start;
        let mut parts = Vec::new();
        if at > 0 {
            parts.push(rows.narrow(1, 0, at)?);
        }
        parts.push(value);
        if at + 1 < len {
            parts.push(rows.narrow(1, at + 1, len - at - 1)?);
        }
        Ok(Tensor::cat(&parts, 1)?)
    }

    /// The `joining` single-position jobs of `layer`: their own layer at their one
    /// position, then they join the batch at the next layer (or finish in the last).
    fn join_single_position(
        &self,
        layer: usize,
        joining: &[usize],
        jobs: &[Job],
        batch: &mut Batch,
        work: &mut SweepWork,
    ) -> Result<()> {
        let mut by_position: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for j in joining {
            by_position
                .entry(jobs[*j].positions[0])
                .or_default()
                .push(*j);
        }
        let last = self.model.dims().n_layers - 1;
        for (position, ids) in by_position {
            let out = self.one_position(layer, position, &ids, jobs, work)?; // [n, 1, d_model]
            if layer == last {
                batch.finished.push((out, ids));
            } else {
                batch
                    .pending
                    .push((self.rows_with(layer + 1, position, out)?, ids));
            }
        }
        Ok(())
    }

    /// The `joining` jobs of `layer` join the batch; returns the cells to patch in
    /// this layer's block (none for the block input, patched on the rows here).
    fn join(
        &self,
        layer: usize,
        joining: Vec<usize>,
        jobs: &[Job],
        batch: &mut Batch,
    ) -> Result<Vec<Cell>> {
        let base = self
            .target
            .resid_pre(layer, self.start(), self.len(), joining.len())?;
        if self.site == BlockSite::ResidPre {
            let cells = self.cells_of(&joining, jobs, 0);
            let source = PatchValue::Replace(self.sources[layer].clone());
            let rows =
                Patch::at_cells(HookPoint::block(layer, self.site), source, cells).apply(&base)?;
            batch.append(rows, joining)?;
            return Ok(Vec::new());
        }
        let cells = self.cells_of(&joining, jobs, batch.order.len());
        batch.append(base, joining)?;
        Ok(cells)
    }

    /// Runs `jobs` (in layer order) to the end of the model. Returns the final
    /// position's residual stream `[rows, 1, d_model]` and the job of each row.
    pub fn run(&self, jobs: &[Job], work: &mut SweepWork) -> Result<(Tensor, Vec<usize>)> {
        let n_layers = self.model.dims().n_layers;
        let first = jobs.iter().map(|j| j.layer).min().unwrap_or(n_layers);
        let mut batch = Batch::default();
        for layer in first..n_layers {
            for (rows, ids) in std::mem::take(&mut batch.pending) {
                batch.append(rows, ids)?;
            }
            let joining: Vec<usize> = (0..jobs.len())
                .filter(|j| jobs[*j].layer == layer)
                .collect();
            let mut patch_cells = Vec::new();
            if !joining.is_empty() && self.single_position {
                self.join_single_position(layer, &joining, jobs, &mut batch, work)?;
            } else if !joining.is_empty() {
                patch_cells = self.join(layer, joining, jobs, &mut batch)?;
            }
            let Some(current) = batch.resid.take() else {
                continue;
            };
            batch.resid = Some(if layer + 1 == n_layers && patch_cells.is_empty() {
                self.last_block(layer, current, work)?
            } else {
                let patches = self.patch(layer, self.sources[layer].clone(), patch_cells);
                self.full_block(layer, current, &patches, work)?
            });
        }
        batch.into_final()
    }
}
