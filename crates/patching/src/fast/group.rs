//! One start group of a fast sweep: cells whose runs start at the same position, run
//! layer by layer, each row joining when the sweep reaches its layer (the batch driver,
//! [`super::batch`], runs the groups of a batch side by side).
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

/// The rows of one start group's jobs as they move through the layers.
#[derive(Default)]
pub(crate) struct Batch {
    /// `[rows, len, d_model]`: the rows running over the whole span.
    pub resid: Option<Tensor>,
    /// The job of each row of `resid`.
    order: Vec<usize>,
    /// Rows that join at the next layer (`[n, len, d_model]`) and their jobs.
    pub pending: Vec<(Tensor, Vec<usize>)>,
    /// Rows that ended in the last layer at their own position (`[n, 1, d_model]`).
    pub finished: Vec<(Tensor, Vec<usize>)>,
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
    pub fn into_final(self) -> Result<(Tensor, Vec<usize>)> {
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
    pub fn start(&self) -> usize {
        self.span.start()
    }

    pub fn len(&self) -> usize {
        self.span.len()
    }

    /// The axis of the site's positions (query positions for patterns).
    pub fn position_axis(&self) -> usize {
        match HookPoint::block(0, self.site).layout() {
            Layout::BatchHeadQueryKey => 2,
            _ => 1,
        }
    }

    /// The patch of `cells` at this layer's site, from the source.
    pub fn patch(&self, layer: usize, cells: Vec<Cell>) -> Vec<Patch> {
        self.patch_with(layer, self.sources[layer].clone(), cells)
    }

    pub fn patch_with(&self, layer: usize, source: Tensor, cells: Vec<Cell>) -> Vec<Patch> {
        if cells.is_empty() {
            return Vec::new();
        }
        vec![Patch::at_cells(
            HookPoint::block(layer, self.site),
            PatchValue::Replace(source),
            cells,
        )]
    }

    /// Block `layer` over the span for `rows` (`[n, len, d_model]`), with `patches`.
    pub fn full_block(
        &self,
        layer: usize,
        rows: Tensor,
        patches: &[Patch],
        work: &mut SweepWork,
    ) -> Result<Tensor> {
        self.count_block(rows.dim(0)?, work);
        Ok(self
            .model
            .run_block(layer, rows, &self.span, &mut Hooks::patching(patches))?)
    }

    /// Adds block work over the whole span for `n` rows to `work`.
    pub fn count_block(&self, n: usize, work: &mut SweepWork) {
        work.block_row_positions += n * self.len();
        work.attention_row_position_keys += n * self.len() * (self.start() + self.len());
    }

    /// Adds the last block's work (keys and values of the span, the rest at the final
    /// position) for `n` rows to `work`.
    pub fn count_last_block(&self, n: usize, work: &mut SweepWork) {
        work.kv_row_positions += n * (self.len() - 1);
        work.block_row_positions += n;
        work.attention_row_position_keys += n * (self.start() + self.len());
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

    /// Target rows of `layer` over the span, with `position` replaced by `value`
    /// (`[n, 1, d_model]`): `[n, len, d_model]`.
    pub fn rows_with(&self, layer: usize, position: usize, value: Tensor) -> Result<Tensor> {
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

    /// Readies block `layer` for `jobs` (in layer order): rows pending from the layer
    /// before and the jobs of this layer join `batch`. Returns the cells to patch in
    /// this layer's block (none when the patches were applied to the rows here), and
    /// the single-position jobs joining here by position (run by [`super::single`]).
    pub fn enter(&self, layer: usize, jobs: &[Job], batch: &mut Batch) -> Result<Entered> {
        for (rows, ids) in std::mem::take(&mut batch.pending) {
            batch.append(rows, ids)?;
        }
        let joining: Vec<usize> = (0..jobs.len())
            .filter(|j| jobs[*j].layer == layer)
            .collect();
        let mut entered = Entered::default();
        if joining.is_empty() {
        } else if self.single_position {
            let mut by_position: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
            for j in joining {
                by_position.entry(jobs[j].positions[0]).or_default().push(j);
            }
            entered.singles = by_position.into_iter().collect();
        } else {
            entered.cells = self.join(layer, joining, jobs, batch)?;
        }
        Ok(entered)
    }
}

/// What joins a start group's batch at one layer.
#[derive(Default)]
pub(crate) struct Entered {
    /// Cells to patch in the layer's block.
    pub cells: Vec<Cell>,
    /// Single-position jobs by position: they run their own layer at that position
    /// first, and join at the next layer.
    pub singles: Vec<(usize, Vec<usize>)>,
}
