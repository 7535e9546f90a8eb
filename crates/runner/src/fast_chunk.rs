//! One batch of a fast sweep: cells that start at the same position, run layer by
//! layer, each row joining when the sweep reaches its layer.
//!
//! Two reuses beyond the caller's:
//! - A cell patching one position of a site after the block input (`attn_out`,
//!   `mlp_out`, a head's `z`, …) changes only that position in its own layer: that
//!   layer runs for the one position, and the row joins the batch at the next layer.
//! - In the last layer only the final position's output is read: the other positions
//!   contribute their keys and values, nothing else is computed for them.

use std::collections::BTreeMap;

use actpatch_hooks::{BlockSite, Cell, HookPoint, Hooks, Layout, Patch, PatchValue};
use actpatch_model::{BaseRun, HookedTransformer, Span};
use candle_core::Tensor;

use crate::sweep_fast::SweepWork;
use crate::RunnerError;

/// A cell to run: its layer, head, and the absolute positions it patches.
pub(crate) struct Job {
    pub layer: usize,
    pub head: Option<usize>,
    pub positions: Vec<usize>,
}

/// What every batch starting at one position shares.
pub(crate) struct StartGroup<'a> {
    pub model: &'a HookedTransformer,
    pub corrupted: &'a BaseRun,
    pub site: BlockSite,
    pub start: usize,
    pub len: usize,
    /// Positions `start..start + len`.
    pub span: Span<'a>,
    /// Per layer, the clean source narrowed to the frame's positions.
    pub sources: Vec<Tensor>,
    /// Each cell patches the one position `start` of a site after the block input.
    pub single_position: bool,
}

impl StartGroup<'_> {
    /// Corrupted `resid_pre` of `layer` at positions `from..from + len`, once per row:
    /// `[rows, len, d_model]`.
    fn corrupted_rows(
        &self,
        layer: usize,
        from: usize,
        len: usize,
        rows: usize,
    ) -> Result<Tensor, RunnerError> {
        Ok(self.corrupted.resid_pre(layer, from, len, rows)?)
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

    /// Block `layer` for positions `start..start + len` of `rows` (`[n, len, d_model]`).
    fn full_block(
        &self,
        layer: usize,
        rows: Tensor,
        patches: &[Patch],
        work: &mut SweepWork,
    ) -> Result<Tensor, RunnerError> {
        let n = rows.dim(0)?;
        work.block_row_positions += n * self.len;
        work.attention_row_position_keys += n * self.len * (self.start + self.len);
        Ok(self
            .model
            .run_block(layer, rows, &self.span, &mut Hooks::patching(patches))?)
    }

    /// The last block, for the final position only: `[n, len, d_model]` → `[n, 1, d_model]`.
    fn last_block(
        &self,
        layer: usize,
        rows: Tensor,
        work: &mut SweepWork,
    ) -> Result<Tensor, RunnerError> {
        let (n, len, _) = rows.dims3()?;
        if len == 1 {
            return self.full_block(layer, rows, &[], work);
        }
        work.kv_row_positions += n * (len - 1);
        work.block_row_positions += n;
        work.attention_row_position_keys += n * (self.start + len);
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
                    position: Some(p - self.start),
                    head: jobs[*j].head,
                })
            })
            .collect()
    }

    /// Block `layer` at the one position `position`, patched there, for the jobs
    /// `ids`: `[n, 1, d_model]`, the rest of the prompt read from the corrupted cache.
    fn one_position(
        &self,
        layer: usize,
        position: usize,
        ids: &[usize],
        jobs: &[Job],
        axis: usize,
        work: &mut SweepWork,
    ) -> Result<Tensor, RunnerError> {
        let cells = ids
            .iter()
            .enumerate()
            .map(|(row, j)| Cell {
                row,
                position: Some(0),
                head: jobs[*j].head,
            })
            .collect();
        let source = self.sources[layer].narrow(axis, position - self.start, 1)?;
        let patches = self.patch(layer, source, cells);
        let base = self.corrupted_rows(layer, position, 1, ids.len())?;
        work.block_row_positions += ids.len();
        work.attention_row_position_keys += ids.len() * (position + 1);
        let span = self.model.span(self.corrupted, position, 1)?;
        Ok(self
            .model
            .run_block(layer, base, &span, &mut Hooks::patching(&patches))?)
    }

    /// Corrupted rows of `layer` over the frame, with `position` replaced by `value`
    /// (`[n, 1, d_model]`): `[n, len, d_model]`.
    fn rows_with(
        &self,
        layer: usize,
        position: usize,
        value: Tensor,
    ) -> Result<Tensor, RunnerError> {
        let n = value.dim(0)?;
        let rows = self.corrupted_rows(layer, self.start, self.len, n)?;
        let at = position - self.start;
        let mut parts = Vec::new();
        if at > 0 {
            parts.push(rows.narrow(1, 0, at)?);
        }
        parts.push(value);
        if at + 1 < self.len {
            parts.push(rows.narrow(1, at + 1, self.len - at - 1)?);
        }
        Ok(Tensor::cat(&parts, 1)?)
    }

    /// Runs `jobs` (in layer order) to the end of the model. Returns the final
    /// position's residual stream `[rows, 1, d_model]` and the job of each row.
    pub fn run(
        &self,
        jobs: &[Job],
        work: &mut SweepWork,
    ) -> Result<(Tensor, Vec<usize>), RunnerError> {
        let n_layers = self.model.dims().n_layers;
        let last = n_layers - 1;
        let first = jobs.iter().map(|j| j.layer).min().unwrap_or(n_layers);
        let axis = if HookPoint::block(0, self.site).layout() == Layout::BatchHeadQueryKey {
            2
        } else {
            1
        };
        let mut resid: Option<Tensor> = None; // [rows, len, d_model]
        let mut order: Vec<usize> = Vec::new();
        let mut pending: Vec<(Tensor, Vec<usize>)> = Vec::new(); // rows joining at the next layer
        let mut finished: Vec<(Tensor, Vec<usize>)> = Vec::new(); // [n, 1, d_model]
        let append = |resid: &mut Option<Tensor>, rows: Tensor| -> Result<(), RunnerError> {
            *resid = Some(match resid.take() {
                None => rows,
                Some(r) => Tensor::cat(&[&r, &rows], 0)?,
            });
            Ok(())
        };
        for layer in first..n_layers {
            for (rows, ids) in pending.drain(..) {
                append(&mut resid, rows)?;
                order.extend(ids);
            }
            let joining: Vec<usize> = (0..jobs.len())
                .filter(|j| jobs[*j].layer == layer)
                .collect();
            let mut patch_cells = Vec::new();
            if joining.is_empty() {
            } else if self.single_position {
                // This layer at the one patched position; the row joins at the next.
                let mut by_position: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
                for j in &joining {
                    by_position
                        .entry(jobs[*j].positions[0])
                        .or_default()
                        .push(*j);
                }
                for (position, ids) in by_position {
                    let out = self.one_position(layer, position, &ids, jobs, axis, work)?; // [n, 1, d_model]
                    if layer == last {
                        finished.push((out, ids));
                    } else {
                        pending.push((self.rows_with(layer + 1, position, out)?, ids));
                    }
                }
            } else if self.site == BlockSite::ResidPre {
                // The block input itself: patch the rows before the block, no hook.
                let cells = self.cells_of(&joining, jobs, 0);
                let base = self.corrupted_rows(layer, self.start, self.len, joining.len())?;
                let point = HookPoint::block(layer, self.site);
                let rows = Patch::at_cells(
                    point,
                    PatchValue::Replace(self.sources[layer].clone()),
                    cells,
                )
                .apply(&base)?;
                append(&mut resid, rows)?;
                order.extend(joining);
            } else {
                patch_cells = self.cells_of(&joining, jobs, order.len());
                append(
                    &mut resid,
                    self.corrupted_rows(layer, self.start, self.len, joining.len())?,
                )?;
                order.extend(joining);
            }
            let Some(current) = resid.take() else {
                continue;
            };
            resid = Some(if layer == last && patch_cells.is_empty() {
                self.last_block(layer, current, work)?
            } else {
                let patches = self.patch(layer, self.sources[layer].clone(), patch_cells);
                self.full_block(layer, current, &patches, work)?
            });
        }
        let mut parts = Vec::new();
        let mut ids = Vec::new();
        if let Some(resid) = resid {
            let len = resid.dim(1)?;
            parts.push(resid.narrow(1, len - 1, 1)?);
            ids.extend(order);
        }
        for (rows, job_ids) in finished {
            parts.push(rows);
            ids.extend(job_ids);
        }
        Ok((Tensor::cat(&parts, 0)?, ids))
    }
}
