//! Concept statistics: the cells of many pairs, keyed by what each position *is*
//! (its role), summarized per (concept, direction, kind, layer, head, role).

use std::collections::BTreeMap;

use rayon::prelude::*;

use crate::bootstrap::{mean_interval, BootstrapSpec, Resamples};

/// A concept cell: where, in role terms, a value was measured.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CellKey {
    pub concept: String,
    pub direction: String,
    pub kind: String,
    pub layer: u32,
    pub head: Option<u32>,
    /// `None` for kinds without a position axis (every position patched at once).
    pub role: Option<String>,
}

/// One patched cell of one pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub key: CellKey,
    /// The pair, as an index into the concept's [`PairInfo`] list.
    pub pair: usize,
    /// The normalized effect, (ld − ld_corrupted) / (ld_clean − ld_corrupted).
    pub normalized: f64,
    /// The patched logit difference `ld`.
    pub patched: f64,
}

/// What the statistics need of a pair: its baselines and its group (template).
#[derive(Debug, Clone, PartialEq)]
pub struct PairInfo {
    pub concept: String,
    /// Pairs of the same group (e.g. filled from one template) are resampled together.
    pub group: String,
    pub clean_logit_diff: f64,
    pub corrupted_logit_diff: f64,
}

/// One row of the concept table.
#[derive(Debug, Clone, PartialEq)]
pub struct ConceptStat {
    pub key: CellKey,
    pub n_pairs: usize,
    /// Mean over pairs of the normalized effect.
    pub mean: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    /// Σ(ld − ld_corrupted) / Σ(ld_clean − ld_corrupted) over the same pairs.
    pub ratio_of_sums: f64,
}

/// Summarizes `observations` of the pairs `pairs`. A pair with several positions of
/// one role (e.g. `subject.mid`) counts once, with the mean of those positions.
/// Each concept's pairs are resampled once (seed: `spec.seed` mixed with the concept's
/// name) and every cell of the concept uses the same resamples.
pub fn summarize(
    pairs: &[PairInfo],
    observations: &[Observation],
    spec: BootstrapSpec,
) -> Vec<ConceptStat> {
    // Key → pair → (sum normalized, sum patched, count).
    let mut cells: BTreeMap<&CellKey, BTreeMap<usize, (f64, f64, usize)>> = BTreeMap::new();
    for o in observations {
        let slot = cells.entry(&o.key).or_default().entry(o.pair).or_default();
        slot.0 += o.normalized;
        slot.1 += o.patched;
        slot.2 += 1;
    }
    let mut resamples: BTreeMap<&str, (Vec<usize>, Resamples)> = BTreeMap::new();
    for key in cells.keys() {
        let concept = key.concept.as_str();
        if !resamples.contains_key(concept) {
            resamples.insert(concept, concept_resamples(pairs, concept, spec));
        }
    }
    // Each cell on its own (on every core); the same resamples per concept, so the
    // result does not depend on the order.
    let cells: Vec<_> = cells.into_iter().collect();
    cells
        .par_iter()
        .filter_map(|(key, per_pair)| {
            let (members, draws) = &resamples[key.concept.as_str()];
            cell_stat(key, per_pair, (pairs, members), draws, spec.level)
        })
        .collect()
}

/// One concept cell: its pairs' values, their mean and interval over `draws`, and the
/// ratio of sums.
fn cell_stat(
    key: &CellKey,
    per_pair: &BTreeMap<usize, (f64, f64, usize)>,
    (pairs, members): (&[PairInfo], &[usize]),
    draws: &Resamples,
    level: f64,
) -> Option<ConceptStat> {
    let values: Vec<Option<f64>> = (members.iter())
        .map(|p| per_pair.get(p).map(|(sum, _, n)| sum / *n as f64))
        .collect();
    let (mean, interval) = mean_interval(&values, draws, level)?;
    let (mut moved, mut gap) = (0.0, 0.0);
    for (pair, (_, patched, n)) in per_pair {
        let info = &pairs[*pair];
        moved += patched / *n as f64 - info.corrupted_logit_diff;
        gap += info.clean_logit_diff - info.corrupted_logit_diff;
    }
    Some(ConceptStat {
        key: key.clone(),
        n_pairs: per_pair.len(),
        mean,
        ci_low: interval.low,
        ci_high: interval.high,
        ratio_of_sums: moved / gap,
    })
}

/// The pairs of `concept` (indices into `pairs`) and their resamples.
fn concept_resamples(
    pairs: &[PairInfo],
    concept: &str,
    spec: BootstrapSpec,
) -> (Vec<usize>, Resamples) {
    let members: Vec<usize> = (0..pairs.len())
        .filter(|i| pairs[*i].concept == concept)
        .collect();
    let mut names: Vec<&str> = Vec::new();
    let groups: Vec<usize> = (members.iter())
        .map(|i| {
            let group = pairs[*i].group.as_str();
            names.iter().position(|g| *g == group).unwrap_or_else(|| {
                names.push(group);
                names.len() - 1
            })
        })
        .collect();
    let seed = spec.seed ^ fnv1a(concept);
    (members, Resamples::new(&groups, spec.draws, seed))
}

/// FNV-1a of `text`: a stable per-concept seed offset (not `DefaultHasher`, whose
/// output may change between Rust versions).
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(role: &str) -> CellKey {
        CellKey {
            concept: "c".into(),
            direction: "denoising".into(),
            kind: "resid_pre".into(),
            layer: 0,
            head: None,
            role: Some(role.into()),
        }
    }

    #[test]
    fn ratio_of_sums_and_roles_of_several_positions() {
        let pairs = vec![
            PairInfo {
                concept: "c".into(),
                group: "a".into(),
                clean_logit_diff: 3.0,
                corrupted_logit_diff: -1.0,
            },
            PairInfo {
                concept: "c".into(),
                group: "b".into(),
                clean_logit_diff: 1.0,
                corrupted_logit_diff: 0.0,
            },
        ];
        let obs = |pair, role: &str, patched: f64| {
            let info: &PairInfo = &pairs[pair];
            let gap = info.clean_logit_diff - info.corrupted_logit_diff;
            Observation {
                key: key(role),
                pair,
                normalized: (patched - info.corrupted_logit_diff) / gap,
                patched,
            }
        };
        // Pair 0 has two `mid` positions (patched 1 and 3 → mean 2, normalized 0.75);
        // pair 1 one (patched 0.5 → 0.5).
        let observations = vec![
            obs(0, "s.mid", 1.0),
            obs(0, "s.mid", 3.0),
            obs(1, "s.mid", 0.5),
        ];
        let stats = summarize(&pairs, &observations, BootstrapSpec::default());
        assert_eq!(stats.len(), 1);
        let s = &stats[0];
        assert_eq!(s.n_pairs, 2);
        assert!((s.mean - 0.625).abs() < 1e-12);
        // (2 − (−1) + 0.5 − 0) / (4 + 1) = 0.7
        assert!((s.ratio_of_sums - 0.7).abs() < 1e-12);
        assert!(s.ci_low <= s.mean && s.mean <= s.ci_high);
    }
}
