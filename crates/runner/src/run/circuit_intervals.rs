//! Bootstrap intervals over pairs for `[circuit]`: on the mean score of each method's
//! strongest edges, and on each curve's CPR and CMD (MIB scores a batch: each draw's
//! curve is built from its pairs' mean logit differences, then its areas). Pairs are
//! resampled as the concept tables resample them (`[statistics]`: draws, seed, level;
//! pairs of one template together).

use actpatch_circuits::faithfulness::{areas, Curve, CurvePoint};
use actpatch_concepts::bootstrap::{mean_interval, quantile, Resamples};
use actpatch_concepts::Interval;

use crate::experiment::Experiment;
use crate::validate::PairPlan;

/// The run's resamplings of `pairs` (one group per template, or per pair).
pub fn resamples(experiment: &Experiment, pairs: &[&PairPlan]) -> Resamples {
    let mut names: Vec<String> = Vec::new();
    let groups: Vec<usize> = pairs
        .iter()
        .map(|p| {
            let group = p.spec.group.clone().unwrap_or_else(|| p.name.clone());
            match names.iter().position(|n| *n == group) {
                Some(i) => i,
                None => {
                    names.push(group);
                    names.len() - 1
                }
            }
        })
        .collect();
    let spec = experiment.statistics;
    Resamples::new(&groups, spec.bootstrap, spec.seed)
}

/// The interval of the mean of `values` (one per pair of `members`, indices into the
/// resampled pairs).
pub fn mean_of(values: &[f64], resamples: &Resamples, level: f64) -> Option<Interval> {
    let values: Vec<Option<f64>> = values.iter().map(|v| Some(*v)).collect();
    mean_interval(&values, resamples, level).map(|(_, interval)| interval)
}

/// The intervals of a curve's CPR and CMD.
pub fn areas_of(curve: &Curve, resamples: &Resamples, level: f64) -> (Interval, Interval) {
    let mean = |values: &[f32], draw: &[usize]| -> f64 {
        draw.iter().map(|i| f64::from(values[*i])).sum::<f64>() / draw.len().max(1) as f64
    };
    let (mut cprs, mut cmds) = (Vec::new(), Vec::new());
    for draw in &resamples.draws {
        let (empty, full) = (
            mean(&curve.empty_per_pair, draw),
            mean(&curve.full_per_pair, draw),
        );
        let points: Vec<CurvePoint> = curve
            .points
            .iter()
            .map(|p| {
                let ld = mean(&p.per_pair, draw);
                CurvePoint {
                    faithfulness: (ld - empty) / (full - empty),
                    logit_diff: ld,
                    per_pair: Vec::new(),
                    ..p.clone()
                }
            })
            .collect();
        let (cpr, cmd) = areas(&points);
        if cpr.is_finite() && cmd.is_finite() {
            cprs.push(cpr);
            cmds.push(cmd);
        }
    }
    let interval = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        let tail = (1.0 - level) / 2.0;
        Interval {
            low: quantile(&values, tail),
            high: quantile(&values, 1.0 - tail),
        }
    };
    (interval(cprs), interval(cmds))
}
