//! Statistics of a comparison: matched and unmatched cells, the absolute difference of
//! the normalized logit difference, Pearson and Spearman correlation per patch kind,
//! and the cells that changed most.

use std::collections::BTreeMap;

use actpatch_report::CompareRow;

/// |B − A| at or below this counts as unchanged: rounding of the depth-bin means, not a
/// change. (`--fail-above` compares with its own threshold.)
pub const UNCHANGED_BELOW: f64 = 1e-12;

/// One patch kind's numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct KindStats {
    pub kind: String,
    pub matched: usize,
    pub only_a: usize,
    pub only_b: usize,
    /// Over matched cells with finite values in both runs; `NaN` when there are none.
    pub max_abs: f64,
    pub mean_abs: f64,
    /// `NaN` when fewer than two cells, or one side is constant.
    pub pearson: f64,
    pub spearman: f64,
}

/// The whole comparison's numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub matched: usize,
    pub only_a: usize,
    pub only_b: usize,
    pub max_abs: f64,
    pub mean_abs: f64,
    /// Matched cells where exactly one run has a non-finite value.
    pub finite_mismatch: usize,
    pub per_kind: Vec<KindStats>,
    /// Matched cells whose |B − A| exceeds [`UNCHANGED_BELOW`], largest first.
    pub changed: Vec<CompareRow>,
    /// With `--fail-above X`: the matched cells that differ by more than X.
    pub exceeding: Option<usize>,
}

/// |B − A| of a matched cell: infinite when exactly one side is non-finite, 0 when
/// both are the same non-finite value; `None` for an unmatched cell.
pub fn abs_change(row: &CompareRow) -> Option<f64> {
    let (a, b) = (row.a?, row.b?);
    Some(match (a.is_finite(), b.is_finite()) {
        (true, true) => (b - a).abs(),
        (false, false) if a.is_nan() == b.is_nan() && (a.is_nan() || a == b) => 0.0,
        _ => f64::INFINITY,
    })
}

fn max_mean(diffs: &[f64]) -> (f64, f64) {
    if diffs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let max = diffs.iter().fold(0.0f64, |m, d| m.max(*d));
    (max, diffs.iter().sum::<f64>() / diffs.len() as f64)
}

/// Pearson's correlation of `x` and `y`; `NaN` for fewer than two points or zero variance.
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len());
    if n < 2 {
        return f64::NAN;
    }
    let mean = |v: &[f64]| v[..n].iter().sum::<f64>() / n as f64;
    let (mx, my) = (mean(x), mean(y));
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (dx, dy) = (x[i] - mx, y[i] - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if sxx == 0.0 || syy == 0.0 {
        return f64::NAN;
    }
    (sxy / (sxx * syy).sqrt()).clamp(-1.0, 1.0)
}

/// Ranks from 1, ties sharing their mean rank.
pub fn ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
    let mut ranks = vec![0.0; v.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && v[order[end]] == v[order[start]] {
            end += 1;
        }
        let rank = (start + end + 1) as f64 / 2.0; // mean of start+1 ..= end
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        start = end;
    }
    ranks
}

/// Spearman's rank correlation: Pearson's on the ranks, ties averaged.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&ranks(x), &ranks(y))
}

fn kind_stats(kind: &str, rows: &[&CompareRow]) -> KindStats {
    let count = |status: &str| rows.iter().filter(|r| r.status == status).count();
    let pairs: Vec<(f64, f64)> = rows
        .iter()
        .filter_map(|r| r.a.zip(r.b))
        .filter(|(a, b)| a.is_finite() && b.is_finite())
        .collect();
    let diffs: Vec<f64> = pairs.iter().map(|(a, b)| (b - a).abs()).collect();
    let (max_abs, mean_abs) = max_mean(&diffs);
    let (xs, ys): (Vec<f64>, Vec<f64>) = pairs.into_iter().unzip();
    KindStats {
        kind: kind.to_string(),
        matched: count("matched"),
        only_a: count("only_a"),
        only_b: count("only_b"),
        max_abs,
        mean_abs,
        pearson: pearson(&xs, &ys),
        spearman: spearman(&xs, &ys),
    }
}

/// Summarises joined rows; counts the cells over `fail_above` when it is given.
pub fn summarize(rows: &[CompareRow], fail_above: Option<f64>) -> Summary {
    let mut kinds: BTreeMap<&str, Vec<&CompareRow>> = BTreeMap::new();
    for r in rows {
        kinds.entry(r.kind.as_str()).or_default().push(r);
    }
    let per_kind: Vec<KindStats> = kinds.iter().map(|(k, rs)| kind_stats(k, rs)).collect();
    let changes: Vec<f64> = rows.iter().filter_map(abs_change).collect();
    let finite: Vec<f64> = changes.iter().copied().filter(|d| d.is_finite()).collect();
    let (max_abs, mean_abs) = max_mean(&finite);
    let mut changed: Vec<(f64, &CompareRow)> = rows
        .iter()
        .filter_map(|r| abs_change(r).map(|d| (d, r)))
        .filter(|(d, _)| *d > UNCHANGED_BELOW)
        .collect();
    changed.sort_by(|x, y| y.0.total_cmp(&x.0));
    Summary {
        matched: rows.iter().filter(|r| r.status == "matched").count(),
        only_a: rows.iter().filter(|r| r.status == "only_a").count(),
        only_b: rows.iter().filter(|r| r.status == "only_b").count(),
        max_abs,
        mean_abs,
        finite_mismatch: changes.len() - finite.len(),
        per_kind,
        changed: changed.into_iter().map(|(_, r)| r.clone()).collect(),
        exceeding: fail_above.map(|x| changes.iter().filter(|d| **d > x).count()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlations_of_known_vectors() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert!((pearson(&x, &[2.0, 4.0, 6.0, 8.0, 10.0]) - 1.0).abs() < 1e-12);
        assert!((pearson(&x, &[5.0, 4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        // Monotone but not linear: Spearman 1, Pearson below.
        let y = [1.0, 4.0, 9.0, 16.0, 100.0];
        assert!((spearman(&x, &y) - 1.0).abs() < 1e-12);
        assert!(
            (pearson(&x, &y) - 0.795_203_6).abs() < 1e-6,
            "{}",
            pearson(&x, &y)
        );
        assert!(pearson(&x, &[1.0; 5]).is_nan());
        assert_eq!(ranks(&[10.0, 20.0, 10.0, 30.0]), vec![1.5, 3.0, 1.5, 4.0]);
    }
}
