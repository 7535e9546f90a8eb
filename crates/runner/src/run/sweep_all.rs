//! Sweeping a run's pairs: each pair's cells saved as it finishes (read back when a
//! resumed run already has them), pairs one per core at once on the CPU.

use std::cmp::Reverse;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use actpatch_model::HookedTransformer;
use indicatif::ProgressBar;

use super::partial::{self, partial_dir, partial_path, results_from_rows, test_point};
use super::progress::{cells_bar, ProgressMode};
use super::{sweep_gaussian, sweep_pair};
use crate::experiment::Experiment;
use crate::options::RunOptions;
use crate::outputs::{cell_rows, SweptPair};
use crate::validate::PairPlan;
use crate::RunnerError;

/// What sweeping the pairs of one run needs.
pub(super) struct SweepContext<'a> {
    pub(super) model: &'a HookedTransformer,
    pub(super) experiment: &'a Experiment,
    pub(super) options: &'a RunOptions,
    pub(super) run_dir: &'a Path,
    pub(super) run_id: &'a str,
}

impl SweepContext<'_> {
    /// Sweeps every pair (reading back those a resumed run already saved), saving
    /// each as it finishes.
    pub(super) fn sweep_all<'p>(
        &self,
        to_sweep: &[&'p PairPlan],
    ) -> Result<Vec<SweptPair<'p>>, RunnerError> {
        let cells: Vec<usize> = (to_sweep.iter())
            .map(|p| sweep_pair::cell_count(self.experiment, self.model, p))
            .collect();
        let total: usize = cells.iter().sum();
        let workers = self.pair_workers(to_sweep.len());
        let at_once = match workers {
            1 => "one at a time".to_string(),
            n => format!("{n} at once"),
        };
        self.options.say(format!(
            "sweeping {} pairs ({at_once}): {total} cells",
            to_sweep.len()
        ));
        let bar = cells_bar(total as u64, ProgressMode::detect(self.options.quiet));
        self.options.watch(&bar);
        let partial = partial_dir(self.run_dir);
        std::fs::create_dir_all(&partial).map_err(|source| RunnerError::Write {
            source: Box::new(actpatch_report::ReportError::Write {
                path: partial.clone(),
                source,
            }),
            resume: Some(self.run_dir.to_path_buf()),
        })?;
        let options = RunOptions {
            max_batch_mib: (self.options.max_batch_mib / workers).max(1),
            ..self.options.clone()
        };
        let swept = match workers {
            1 => self.sweep_in_order(to_sweep, &options, &bar)?,
            _ => {
                // The largest pairs first, so that the last to finish is a small one.
                let mut order: Vec<usize> = (0..to_sweep.len()).collect();
                order.sort_by_key(|&i| Reverse(cells[i]));
                self.sweep_at_once((to_sweep, &order), workers, &options, &bar)?
            }
        };
        bar.finish_and_clear();
        Ok(swept)
    }

    /// One pair after another, in the file's order.
    fn sweep_in_order<'p>(
        &self,
        to_sweep: &[&'p PairPlan],
        options: &RunOptions,
        bar: &ProgressBar,
    ) -> Result<Vec<SweptPair<'p>>, RunnerError> {
        let mut swept = Vec::with_capacity(to_sweep.len());
        for plan in to_sweep {
            swept.push(self.sweep_or_read_back(plan, options, bar)?);
            test_point(swept.len())?;
        }
        Ok(swept)
    }

    /// `workers` threads, each taking the next pair in `order` until none is left; the
    /// pairs' own passes share rayon's pool. After a failure no new pair starts, and
    /// the first failed pair in the file's order is the run's error. Returns the pairs
    /// in the file's order.
    fn sweep_at_once<'p>(
        &self,
        (to_sweep, order): (&[&'p PairPlan], &[usize]),
        workers: usize,
        options: &RunOptions,
        bar: &ProgressBar,
    ) -> Result<Vec<SweptPair<'p>>, RunnerError> {
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let slots: Vec<Mutex<Option<Result<SweptPair<'p>, RunnerError>>>> =
            to_sweep.iter().map(|_| Mutex::new(None)).collect();
        let work = || {
            while !failed.load(Ordering::Relaxed) {
                let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    break;
                };
                let pair = self.sweep_or_read_back(to_sweep[i], options, bar);
                failed.fetch_or(pair.is_err(), Ordering::Relaxed);
                if let Ok(mut slot) = slots[i].lock() {
                    *slot = Some(pair);
                }
            }
        };
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(work);
            }
        });
        (slots.into_iter())
            .filter_map(|slot| slot.into_inner().ok().flatten())
            .collect()
    }

    /// How many pairs to sweep at once: one per core on the CPU (a pair's own passes
    /// keep both cores busy only part of the time: small matrix products, one
    /// attention per start position), each with an equal share of
    /// `--max-batch-memory`; one at a time on a GPU, and where a test stops the run
    /// after a given pair ([`test_point`]).
    fn pair_workers(&self, pairs: usize) -> usize {
        if !self.model.device().is_cpu() || partial::test_points_set() {
            return 1;
        }
        rayon::current_num_threads().clamp(1, pairs.max(1))
    }

    fn sweep_or_read_back<'p>(
        &self,
        plan: &'p PairPlan,
        options: &RunOptions,
        bar: &ProgressBar,
    ) -> Result<SweptPair<'p>, RunnerError> {
        let saved = partial_path(self.run_dir, plan.index);
        if saved.is_file() {
            let rows = actpatch_report::tables::read_cells(&saved).map_err(RunnerError::read)?;
            bar.inc(rows.len() as u64);
            self.options.say(format!(
                "{}: {} cells read back from {}",
                plan.name,
                rows.len(),
                saved.display()
            ));
            let (results, paths) = results_from_rows(&rows, &saved, plan.baseline())?;
            return Ok(SweptPair {
                plan,
                results,
                paths,
                skipped: sweep_pair::skipped_kinds(self.experiment, plan),
                costs: Vec::new(), // not recorded in the partial table
            });
        }
        let (model, experiment) = (self.model, self.experiment);
        let pair = match plan.gaussian {
            Some(_) => sweep_gaussian::sweep_gaussian(model, experiment, plan, options, bar)?,
            None => sweep_pair::sweep_pair(model, experiment, plan, options, bar)?,
        };
        // A pair cut short by a stop request is not saved: a resumed run sweeps it.
        self.options.stop_point(self.run_dir)?;
        let rows = cell_rows(
            self.experiment,
            self.model,
            self.run_id,
            std::slice::from_ref(&pair),
        );
        actpatch_report::tables::write_cells(&saved, &rows)
            .map_err(RunnerError::write_run(self.run_dir))?;
        Ok(pair)
    }
}
