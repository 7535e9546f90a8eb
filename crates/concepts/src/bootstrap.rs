//! Percentile bootstrap over pairs, seeded.
//!
//! A [`Resamples`] is `draws` resamplings of a concept's pairs, drawn once and shared by
//! every cell of the concept (common random numbers: the intervals of neighbouring
//! cells differ by the data, not by the luck of the draw). Pairs may be grouped (by the
//! template they come from): then each draw first resamples the groups with
//! replacement, then the pairs within each chosen group, so that templates, not only
//! pairs, count as the unit of replication. The random stream is ChaCha8 from the seed
//! (`rand_chacha`), the same on every platform.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How the intervals are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BootstrapSpec {
    /// Resamplings (2000 by default).
    pub draws: usize,
    pub seed: u64,
    /// Coverage of the interval, e.g. 0.95.
    pub level: f64,
}

impl Default for BootstrapSpec {
    fn default() -> Self {
        BootstrapSpec {
            draws: 2000,
            seed: 0,
            level: 0.95,
        }
    }
}

/// A confidence interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

impl Interval {
    pub fn contains(&self, value: f64) -> bool {
        self.low <= value && value <= self.high
    }

    pub fn width(&self) -> f64 {
        self.high - self.low
    }
}

/// Resamplings of `n` pairs: each draw lists the pairs it picked (with repetition).
#[derive(Debug, Clone, PartialEq)]
pub struct Resamples {
    pub n_pairs: usize,
    pub draws: Vec<Vec<usize>>,
}

impl Resamples {
    /// `draws` resamplings of pairs whose group (template) is `groups[i]`: groups with
    /// replacement, then pairs within each group with replacement. One group, or
    /// every pair its own group, is plain resampling of pairs.
    pub fn new(groups: &[usize], draws: usize, seed: u64) -> Self {
        let mut members: Vec<(usize, Vec<usize>)> = Vec::new();
        for (pair, group) in groups.iter().enumerate() {
            match members.iter_mut().find(|(g, _)| g == group) {
                Some((_, m)) => m.push(pair),
                None => members.push((*group, vec![pair])),
            }
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = groups.len();
        let plain = members.len() <= 1 || members.len() == n;
        let draws = (0..draws)
            .map(|_| match plain {
                true => (0..n).map(|_| rng.gen_range(0..n)).collect(),
                false => {
                    let mut picked = Vec::with_capacity(n);
                    for _ in 0..members.len() {
                        let (_, group) = &members[rng.gen_range(0..members.len())];
                        picked
                            .extend((0..group.len()).map(|_| group[rng.gen_range(0..group.len())]));
                    }
                    picked
                }
            })
            .collect();
        Resamples { n_pairs: n, draws }
    }
}

/// The `q` quantile (0..=1) of sorted `values`, interpolating linearly between order
/// statistics (numpy's default, `method="linear"`).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (below, frac) = (at.floor() as usize, at - at.floor());
    let above = (below + 1).min(sorted.len() - 1);
    sorted[below] + (sorted[above] - sorted[below]) * frac
}

/// The mean of `values` (one per pair; `None` where a pair has no value) and its
/// percentile interval over `resamples`. `None` when no pair has a value. A draw that
/// picked only pairs without a value is left out.
pub fn mean_interval(
    values: &[Option<f64>],
    resamples: &Resamples,
    level: f64,
) -> Option<(f64, Interval)> {
    let present: Vec<f64> = values.iter().flatten().copied().collect();
    if present.is_empty() {
        return None;
    }
    let mean = present.iter().sum::<f64>() / present.len() as f64;
    let mut means: Vec<f64> = resamples
        .draws
        .iter()
        .filter_map(|draw| {
            let (sum, count) = draw
                .iter()
                .filter_map(|i| values.get(*i).copied().flatten())
                .fold((0.0, 0usize), |(s, c), v| (s + v, c + 1));
            (count > 0).then(|| sum / count as f64)
        })
        .collect();
    means.sort_by(f64::total_cmp);
    let tail = (1.0 - level) / 2.0;
    let interval = Interval {
        low: quantile(&means, tail),
        high: quantile(&means, 1.0 - tail),
    };
    Some((mean, interval))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_matches_numpy_linear() {
        // numpy.quantile([1, 2, 4, 8], [0, 0.25, 0.5, 0.975, 1]) = 1, 1.75, 3, 7.7, 8
        let v = [1.0, 2.0, 4.0, 8.0];
        for (q, want) in [
            (0.0, 1.0),
            (0.25, 1.75),
            (0.5, 3.0),
            (0.975, 7.7),
            (1.0, 8.0),
        ] {
            assert!((quantile(&v, q) - want).abs() < 1e-12, "q {q}");
        }
    }

    #[test]
    fn same_seed_same_draws_other_seed_other_draws() {
        let groups: Vec<usize> = (0..30).collect();
        assert_eq!(
            Resamples::new(&groups, 50, 7),
            Resamples::new(&groups, 50, 7)
        );
        assert_ne!(
            Resamples::new(&groups, 50, 7),
            Resamples::new(&groups, 50, 8)
        );
    }

    #[test]
    fn grouped_draws_keep_whole_templates() {
        // Three templates of 4, 4 and 2 pairs: every draw picks 3 groups, and each
        // picked group contributes as many pairs as it has, all from itself.
        let groups = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2];
        let resamples = Resamples::new(&groups, 200, 1);
        for draw in &resamples.draws {
            let sizes: Vec<usize> = draw
                .chunk_by(|a, b| groups[*a] == groups[*b])
                .map(|c| c.len())
                .collect();
            assert!(sizes.iter().sum::<usize>() == draw.len());
            assert!(
                sizes.iter().all(|s| [2, 4, 6, 8, 10, 12].contains(s)),
                "{sizes:?}"
            );
        }
    }

    #[test]
    fn missing_values_are_left_out() {
        let values = [Some(1.0), None, Some(3.0)];
        let resamples = Resamples::new(&[0, 1, 2], 500, 3);
        let (mean, interval) = mean_interval(&values, &resamples, 0.95).unwrap();
        assert_eq!(mean, 2.0);
        assert!(interval.low >= 1.0 && interval.high <= 3.0);
        assert!(mean_interval(&[None, None], &resamples, 0.95).is_none());
    }
}
