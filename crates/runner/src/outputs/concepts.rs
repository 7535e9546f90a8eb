//! The concept table (`concepts.parquet`): every swept pair that passed validation,
//! its cells keyed by role, summarized per (concept, direction, kind, layer, head,
//! role) with a bootstrap interval (see [`actpatch_concepts`]).

use std::collections::BTreeMap;

use actpatch_concepts::roles::order_roles;
use actpatch_concepts::{summarize, CellKey, ConceptStat, Observation, PairInfo};
use actpatch_patching::Direction;
use actpatch_report::ConceptRow;

use crate::experiment::Experiment;
use crate::gaussian::GaussianPlan;
use crate::outputs::SweptPair;

/// A run's concept statistics, in table order.
pub struct ConceptTable {
    pub stats: Vec<ConceptStat>,
    /// Per concept and direction, the roles of its target prompts in prompt order.
    pub role_order: BTreeMap<(String, Direction), Vec<String>>,
    /// Per concept, the pairs summarized.
    pub n_pairs: BTreeMap<String, usize>,
    /// The concepts of Gaussian-noise pairs, with one of their plans (the noise and the
    /// metric are the run's).
    pub gaussian: BTreeMap<String, GaussianPlan>,
}

/// The pairs a concept is summarized over (a concept needs two): swept and passed, or every swept pair when
/// the experiment turns validation off (`[validate] enabled = false`, exploring).
fn summarized<'a>(experiment: &Experiment, swept: &'a [SweptPair<'a>]) -> Vec<&'a SweptPair<'a>> {
    let all = !experiment.validate.enabled;
    swept.iter().filter(|p| all || p.plan.passed()).collect()
}

impl ConceptTable {
    pub fn compute(experiment: &Experiment, swept: &[SweptPair]) -> ConceptTable {
        let pairs = summarized(experiment, swept);
        let (infos, observations) = observations(&pairs);
        let spec = experiment.statistics.bootstrap_spec();
        let mut stats = summarize(&infos, &observations, spec);
        let role_order = role_orders(experiment, &pairs);
        let mut n_pairs = BTreeMap::new();
        for info in &infos {
            *n_pairs.entry(info.concept.clone()).or_insert(0) += 1;
        }
        // A concept of one pair has nothing to summarize: its cells are the pair's.
        n_pairs.retain(|_, n| *n >= 2);
        stats.retain(|s| n_pairs.contains_key(&s.key.concept));
        sort_stats(experiment, &role_order, &mut stats);
        let gaussian = (pairs.iter())
            .filter_map(|p| Some((p.plan.spec.concept.clone(), p.plan.gaussian.clone()?)))
            .collect();
        ConceptTable {
            stats,
            role_order,
            n_pairs,
            gaussian,
        }
    }

    /// The rows of `concepts.parquet`.
    pub fn rows(&self, experiment: &str, model: &str, run_id: &str) -> Vec<ConceptRow> {
        (self.stats.iter())
            .map(|s| ConceptRow {
                run_id: run_id.to_string(),
                experiment: experiment.to_string(),
                concept: s.key.concept.clone(),
                model: model.to_string(),
                direction: s.key.direction.clone(),
                kind: s.key.kind.clone(),
                layer: s.key.layer,
                head: s.key.head,
                role: s.key.role.clone(),
                n_pairs: s.n_pairs as u32,
                mean: s.mean,
                ci_low: s.ci_low,
                ci_high: s.ci_high,
                ratio_of_sums: s.ratio_of_sums,
            })
            .collect()
    }
}

/// The pairs' baselines and groups, and every cell of theirs keyed by role.
fn observations(pairs: &[&SweptPair]) -> (Vec<PairInfo>, Vec<Observation>) {
    let mut infos = Vec::with_capacity(pairs.len());
    let mut observations = Vec::new();
    for pair in pairs {
        let plan = pair.plan;
        // The metric's baselines: logit differences, or p(answer) under Gaussian noise.
        let Some(baseline) = plan.baseline() else {
            continue;
        };
        infos.push(PairInfo {
            concept: plan.spec.concept.clone(),
            group: (plan.spec.group.clone()).unwrap_or_else(|| plan.name.clone()),
            clean_logit_diff: baseline.clean_logit_diff,
            corrupted_logit_diff: baseline.corrupted_logit_diff,
        });
        for r in &pair.results {
            let role = match r.index.position {
                Some(p) => match plan.role(r.direction, p) {
                    Some(role) => Some(role.to_string()),
                    None => continue,
                },
                None => None,
            };
            observations.push(Observation {
                key: CellKey {
                    concept: plan.spec.concept.clone(),
                    direction: r.direction.name().to_string(),
                    kind: r.kind.name().to_string(),
                    layer: r.index.layer as u32,
                    head: r.index.head.map(|h| h as u32),
                    role,
                },
                pair: infos.len() - 1,
                normalized: r.metrics.normalized_logit_diff,
                patched: r.metrics.logit_diff,
            });
        }
    }
    (infos, observations)
}

/// Table order: concept, direction and kind as the experiment lists them, layer,
/// head, then roles in prompt order.
fn sort_stats(
    experiment: &Experiment,
    role_order: &BTreeMap<(String, Direction), Vec<String>>,
    stats: &mut [ConceptStat],
) {
    let kind_rank = |name: &str| {
        (experiment.sweep.kinds.iter())
            .position(|k| k.name() == name)
            .unwrap_or(usize::MAX)
    };
    let role_rank = |s: &ConceptStat| {
        let direction = Direction::BOTH
            .into_iter()
            .find(|d| d.name() == s.key.direction);
        let order = direction.and_then(|d| role_order.get(&(s.key.concept.clone(), d)));
        match (&s.key.role, order) {
            (Some(role), Some(order)) => order.iter().position(|o| o == role).unwrap_or(usize::MAX),
            _ => 0,
        }
    };
    stats.sort_by_cached_key(|s| {
        (
            s.key.concept.clone(),
            s.key.direction != "denoising",
            kind_rank(&s.key.kind),
            s.key.layer,
            s.key.head,
            role_rank(s),
        )
    });
}

/// Roles in prompt order per concept and direction (over the target prompts).
fn role_orders(
    experiment: &Experiment,
    pairs: &[&SweptPair],
) -> BTreeMap<(String, Direction), Vec<String>> {
    let mut out = BTreeMap::new();
    for direction in experiment.sweep.direction.directions() {
        let mut by_concept: BTreeMap<&str, Vec<&[String]>> = BTreeMap::new();
        for pair in pairs {
            let roles = match direction {
                Direction::Denoising => &pair.plan.corrupted_roles,
                Direction::Noising => &pair.plan.clean_roles,
            };
            by_concept
                .entry(pair.plan.spec.concept.as_str())
                .or_default()
                .push(roles);
        }
        for (concept, prompts) in by_concept {
            out.insert((concept.to_string(), direction), order_roles(prompts));
        }
    }
    out
}
