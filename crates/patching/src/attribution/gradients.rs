//! Every row's activations and gradients: the full passes ([`super::passes`]), then
//! GradDrop's rows from their plain rows ([`super::grad_drop`]).

use actpatch_hooks::{ActivationCache, HookPoint};
use actpatch_model::HookedTransformer;
use candle_core::Tensor;

use super::grad_drop::{self, DropRow, Drops};
use super::passes::{run_full, FullPasses, PassPlan, Row};
use crate::Result;

/// What the passes of a plan computed.
pub(crate) struct Passes {
    full: FullPasses,
    drops: Drops,
    /// Forward-pass equivalents: one per full row, two more per differentiated one, and
    /// a GradDrop row's share of the blocks ([`Drops::passes`]).
    pub passes: f64,
}

impl Passes {
    /// Plan row `row`'s activations at every cache point, `[1, ...]` each (a GradDrop
    /// row's are its plain row's).
    pub fn cache_of(&self, row: usize, points: &[HookPoint]) -> Result<ActivationCache> {
        let row = self.drop_row(row).map_or(row, |drop| drop.plain);
        self.full.cache_of(row, points)
    }

    fn drop_row(&self, row: usize) -> Option<DropRow> {
        self.drops.rows.get(row).copied().flatten()
    }

    /// The gradients of plan rows `rows` at `point`, `[rows.len(), ...]` in that order.
    pub fn grads_of(&self, rows: &[usize], point: HookPoint) -> Result<Tensor> {
        let parts: Vec<Tensor> = rows
            .iter()
            .map(|row| match self.drop_row(*row) {
                Some(drop) => self.drops.grad(&self.full, &drop, point),
                None => self.full.grad(*row, point),
            })
            .collect::<Result<_>>()?;
        Ok(Tensor::cat(&parts, 0)?)
    }
}

/// Runs `plan`: its full rows ([`run_full`], probing also what GradDrop reads), then
/// its GradDrop rows ([`grad_drop::run`]).
pub(crate) fn run_passes(model: &HookedTransformer, plan: &PassPlan) -> Result<Passes> {
    let (dropped, full_rows): (Vec<usize>, Vec<usize>) =
        (0..plan.rows.len()).partition(|i| matches!(plan.rows[*i].row, Row::DropLayer(_)));
    let mut grad_points = plan.grad_points.clone();
    if !dropped.is_empty() {
        for point in grad_drop::injection_points(model.dims().n_layers) {
            if !grad_points.contains(&point) {
                grad_points.push(point);
            }
        }
    }
    let full = run_full(model, plan, &full_rows, &grad_points)?;
    let drops = grad_drop::run(model, plan, &dropped, &full)?;
    let differentiated = full_rows.iter().filter(|i| plan.rows[**i].loss).count();
    let passes = (full_rows.len() + 2 * differentiated) as f64 + drops.passes;
    Ok(Passes {
        full,
        drops,
        passes,
    })
}
