//! How far an approximation (attribution patching) is from the exact sweep:
//! `attribution.parquet`, one row per (pair, direction, kind, method), and the
//! report's "Attribution accuracy" section.
//!
//! Effects are normalized logit differences minus the target run's own value (0 when
//! denoising, 1 when noising), so that |effect| ranks cells in both directions.

use std::fmt::Write;

use crate::schema::{Column, Table};

/// The agreement of one method's estimates with the exact effects of the same cells.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Agreement {
    pub cells: u32,
    /// `None` when either side has no variance.
    pub pearson: Option<f64>,
    /// Pearson correlation of the ranks (ties get their mean rank).
    pub spearman: Option<f64>,
    /// Share of the exact top-10 cells by |effect| among the method's top 10.
    pub recall_top10: f64,
    /// The same for the top 1 % of cells (at least one cell).
    pub recall_top1pct: f64,
    /// Cells with |exact effect| ≥ [`LARGE_EFFECT`].
    pub large_cells: u32,
    /// Of those, the cells the method ranks outside its top 10 % by |estimate|.
    pub false_negatives: u32,
    /// Share of cells with |exact effect| ≥ [`SIGN_FLOOR`] whose estimate has the
    /// same sign; `None` when there are none.
    pub sign_agreement: Option<f64>,
    pub max_abs_error: f64,
    pub median_abs_error: f64,
}

/// An exact effect this large (normalized units) must not be missed.
pub const LARGE_EFFECT: f64 = 0.1;
/// Effects smaller than this have no meaningful sign.
pub const SIGN_FLOOR: f64 = 1e-3;

/// Indices of the `k` largest |values| (ties: the earlier cell first).
fn top(values: &[f64], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|a, b| values[*b].abs().total_cmp(&values[*a].abs()).then(a.cmp(b)));
    order.truncate(k);
    order
}

fn recall(exact: &[f64], estimate: &[f64], k: usize) -> f64 {
    let k = k.min(exact.len());
    if k == 0 {
        return 0.0;
    }
    let method = top(estimate, k);
    let hits = top(exact, k).iter().filter(|i| method.contains(i)).count();
    hits as f64 / k as f64
}

fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

/// Ranks from 1, ties sharing their mean rank.
fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|a, b| values[*a].total_cmp(&values[*b]));
    let mut ranks = vec![0.0; values.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && values[order[j + 1]] == values[order[i]] {
            j += 1;
        }
        let mean = (i + j) as f64 / 2.0 + 1.0;
        for o in &order[i..=j] {
            ranks[*o] = mean;
        }
        i = j + 1;
    }
    ranks
}

/// The agreement of `estimate` with `exact` (effects of the same cells, in order).
pub fn agreement(exact: &[f64], estimate: &[f64]) -> Agreement {
    let n = exact.len().min(estimate.len());
    let (exact, estimate) = (&exact[..n], &estimate[..n]);
    if n == 0 {
        return Agreement::default();
    }
    let mut errors: Vec<f64> = exact
        .iter()
        .zip(estimate)
        .map(|(a, b)| (b - a).abs())
        .collect();
    errors.sort_by(f64::total_cmp);
    let median = match n % 2 {
        1 => errors[n / 2],
        _ => (errors[n / 2 - 1] + errors[n / 2]) / 2.0,
    };
    let top_tenth = top(estimate, n.div_ceil(10));
    let large: Vec<usize> = (0..n).filter(|i| exact[*i].abs() >= LARGE_EFFECT).collect();
    let signed: Vec<usize> = (0..n).filter(|i| exact[*i].abs() >= SIGN_FLOOR).collect();
    let same_sign = signed
        .iter()
        .filter(|i| exact[**i].signum() == estimate[**i].signum() && estimate[**i] != 0.0)
        .count();
    Agreement {
        cells: n as u32,
        pearson: pearson(exact, estimate),
        spearman: pearson(&ranks(exact), &ranks(estimate)),
        recall_top10: recall(exact, estimate, 10),
        recall_top1pct: recall(exact, estimate, n.div_ceil(100)),
        large_cells: large.len() as u32,
        false_negatives: large.iter().filter(|i| !top_tenth.contains(i)).count() as u32,
        sign_agreement: (!signed.is_empty()).then(|| same_sign as f64 / signed.len() as f64),
        max_abs_error: errors[n - 1],
        median_abs_error: median,
    }
}

/// One (pair, direction, kind, method) of `attribution.parquet`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AccuracyRow {
    pub run_id: String,
    pub concept: String,
    pub pair: String,
    pub direction: String,
    pub kind: String,
    pub method: String,
    pub agreement: Agreement,
    /// The method's time for this pair and direction, every kind at once.
    pub seconds: Option<f64>,
    /// Its forward-pass equivalents (forward passes, plus 2 per backward pass).
    pub passes: Option<f64>,
    /// The exact sweep's time for this kind.
    pub exact_seconds: Option<f64>,
    /// The exact sweep's patched runs for this kind (one per cell).
    pub exact_passes: Option<f64>,
}

/// `attribution.parquet`, one line per column.
pub static ACCURACY: Table<AccuracyRow> = Table {
    file: "attribution.parquet",
    columns: &[
        Column::text("run_id", |r| &r.run_id, |r, v| r.run_id = v),
        Column::text("concept", |r| &r.concept, |r, v| r.concept = v),
        Column::text("pair", |r| &r.pair, |r, v| r.pair = v),
        Column::text("direction", |r| &r.direction, |r, v| r.direction = v),
        Column::text("kind", |r| &r.kind, |r, v| r.kind = v),
        Column::text("method", |r| &r.method, |r, v| r.method = v),
        Column::u32("cells", |r| r.agreement.cells, |r, v| r.agreement.cells = v),
        Column::opt_f64(
            "pearson",
            |r| r.agreement.pearson,
            |r, v| r.agreement.pearson = v,
        ),
        Column::opt_f64(
            "spearman",
            |r| r.agreement.spearman,
            |r, v| r.agreement.spearman = v,
        ),
        Column::f64(
            "recall_top10",
            |r| r.agreement.recall_top10,
            |r, v| r.agreement.recall_top10 = v,
        ),
        Column::f64(
            "recall_top1pct",
            |r| r.agreement.recall_top1pct,
            |r, v| r.agreement.recall_top1pct = v,
        ),
        Column::u32(
            "large_cells",
            |r| r.agreement.large_cells,
            |r, v| r.agreement.large_cells = v,
        ),
        Column::u32(
            "false_negatives",
            |r| r.agreement.false_negatives,
            |r, v| r.agreement.false_negatives = v,
        ),
        Column::opt_f64(
            "sign_agreement",
            |r| r.agreement.sign_agreement,
            |r, v| r.agreement.sign_agreement = v,
        ),
        Column::f64(
            "max_abs_error",
            |r| r.agreement.max_abs_error,
            |r, v| r.agreement.max_abs_error = v,
        ),
        Column::f64(
            "median_abs_error",
            |r| r.agreement.median_abs_error,
            |r, v| r.agreement.median_abs_error = v,
        ),
        Column::opt_f64("seconds", |r| r.seconds, |r, v| r.seconds = v),
        Column::opt_f64("passes", |r| r.passes, |r, v| r.passes = v),
        Column::opt_f64(
            "exact_seconds",
            |r| r.exact_seconds,
            |r, v| r.exact_seconds = v,
        ),
        Column::opt_f64(
            "exact_passes",
            |r| r.exact_passes,
            |r, v| r.exact_passes = v,
        ),
    ],
};

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}"))
        .unwrap_or_else(|| "–".into())
}

/// The report's "Attribution accuracy" section: one table row per accuracy row, then
/// `figures` (heading, image path): the scatter plots of estimated against exact
/// effects.
pub fn render_section(rows: &[AccuracyRow], figures: &[(String, String)]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut md = String::from("## Attribution accuracy\n\n");
    let _ = writeln!(
        md,
        "Each approximation against the exact sweep of the same cells (effects in normalized units, the target run's value subtracted). Recall: share of the exact top-k cells by |effect| in the method's top k. False negatives: cells with |exact| ≥ {LARGE_EFFECT} that the method ranks outside its top 10 %. Sign: cells with |exact| ≥ {SIGN_FLOOR} whose estimate has the same sign. Cost: the method's seconds and forward-pass equivalents for every kind at once (directions estimated together share the call equally), next to the exact sweep's for this kind (one pass per cell). All of it is in `attribution.parquet`.\n"
    );
    md.push_str("| pair | direction | kind | method | cells | pearson | spearman | recall@10 | recall@1% | false neg. / large | sign | max err | median err | s (passes) | exact s (runs) |\n");
    md.push_str("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        let a = &r.agreement;
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {} / {} | {} | {:.3} | {:.3} | {} ({}) | {} ({}) |",
            r.pair.replace('|', "\\|"),
            r.direction,
            r.kind,
            r.method,
            a.cells,
            opt(a.pearson, 3),
            opt(a.spearman, 3),
            a.recall_top10,
            a.recall_top1pct,
            a.false_negatives,
            a.large_cells,
            opt(a.sign_agreement, 2),
            a.max_abs_error,
            a.median_abs_error,
            opt(r.seconds, 3),
            opt(r.passes, 0),
            opt(r.exact_seconds, 3),
            opt(r.exact_passes, 0),
        );
    }
    md.push('\n');
    if !figures.is_empty() {
        md.push_str("Estimated against exact effect, one point per cell of every pair and direction, one figure per kind (on the diagonal the estimate is exact):\n\n");
    }
    for (heading, image) in figures {
        let _ = writeln!(md, "### {heading}\n\n![{heading}]({image})\n");
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_of_a_hand_checked_example() {
        // Twelve cells; the estimate swaps the two largest cells' order, misses the
        // third (cell 2: 0.3 estimated 0.0) and flips the sign of cell 3.
        let exact = [
            0.9, -0.5, 0.3, 0.05, 0.02, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
        ];
        let estimate = [
            0.4, -0.8, 0.0, -0.05, 0.02, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
        ];
        let a = agreement(&exact, &estimate);
        assert_eq!(a.cells, 12);
        // Top 1 % = 1 cell: exact's is cell 0, the estimate's cell 1.
        assert_eq!(a.recall_top1pct, 0.0);
        // Top 10: exact {0,1,2,3,4,5..9 by index among zeros}; the estimate ranks cell 2
        // (0.0) among the zeros by index: top 10 of the estimate = {1,0,3,4,2,5,6,7,8,9}.
        assert_eq!(a.recall_top10, 1.0);
        // Large cells (|exact| ≥ 0.1): 0, 1, 2; top 10 % of 12 = 2 cells {1, 0}: cell 2
        // is a false negative.
        assert_eq!((a.large_cells, a.false_negatives), (3, 1));
        // Signed cells (|exact| ≥ 1e-3): 0, 1, 2, 3, 4; same sign: 0, 1, 4 (cell 2's
        // estimate is 0, cell 3 flipped).
        assert_eq!(a.sign_agreement, Some(3.0 / 5.0));
        assert!((a.max_abs_error - 0.5).abs() < 1e-12);
        // Errors: 0.5, 0.3, 0.3, 0.1, then eight zeros: the median is 0.
        assert_eq!(a.median_abs_error, 0.0);
        // Pearson by hand: mean exact 0.0641667, mean estimate −0.0358333.
        let (mx, my) = (0.77 / 12.0, -0.43 / 12.0);
        let sxy: f64 = exact
            .iter()
            .zip(&estimate)
            .map(|(a, b)| (a - mx) * (b - my))
            .sum();
        let sxx: f64 = exact.iter().map(|a| (a - mx) * (a - mx)).sum();
        let syy: f64 = estimate.iter().map(|b| (b - my) * (b - my)).sum();
        assert!((a.pearson.unwrap() - sxy / (sxx * syy).sqrt()).abs() < 1e-12);
        // Spearman by hand: exact's ranks [12, 1, 11, 10, 9, 5 × 7] (seven zeros share
        // ranks 2..8), the estimate's [12, 1, 6.5, 2, 11, 6.5 × 7] (eight zeros share
        // 3..10); both mean 6.5: Σ dx·dy = 56, Σ dx² = 115, Σ dy² = 101.
        let spearman = 56.0 / (115.0f64 * 101.0).sqrt();
        assert!((a.spearman.unwrap() - spearman).abs() < 1e-12);
        assert!((spearman - 0.519_611_099_979_298).abs() < 1e-12); // pandas, below
    }

    /// Twenty-five cells without ties, every statistic against pandas 2 / numpy:
    ///
    /// ```python
    /// s, t = pd.Series(exact), pd.Series(estimate)
    /// s.corr(t); s.rank().corr(t.rank())                   # Pearson, Spearman
    /// top = lambda v, k: set(np.argsort(-np.abs(v), kind="stable")[:k])
    /// len(top(exact, 10) & top(estimate, 10)) / 10           # recall@10
    /// [i for i in range(25) if abs(exact[i]) >= 0.1 and i not in top(estimate, 3)]
    /// np.abs(estimate - exact).max(); np.median(np.abs(estimate - exact))
    /// ```
    #[test]
    fn statistics_match_pandas_on_cells_without_ties() {
        let exact = [
            0.62, -0.41, 0.33, -0.27, 0.21, 0.18, -0.15, 0.12, 0.09, -0.07, 0.06, 0.05, -0.04,
            0.035, 0.03, -0.025, 0.02, 0.015, -0.01, 0.008, 0.006, -0.004, 0.003, 0.002, 0.0005,
        ];
        let estimate = [
            0.50, -0.05, 0.40, -0.30, 0.02, 0.25, -0.12, 0.10, 0.11, 0.07, 0.06, 0.03, -0.045,
            0.01, 0.04, -0.02, 0.025, 0.012, 0.009, 0.007, -0.006, -0.003, 0.004, 0.001, -0.0002,
        ];
        let a = agreement(&exact, &estimate);
        assert_eq!(a.cells, 25);
        assert!((a.pearson.unwrap() - 0.868_427_116_430_068_9).abs() < 1e-12);
        assert!((a.spearman.unwrap() - 0.836_923_076_923_076_9).abs() < 1e-12);
        // Top 10 by |exact|: cells 0..=9; by |estimate|: 0, 2, 3, 5, 6, 8, 7, 9, 10, 1
        // (cell 4's 0.21 is estimated 0.02).
        assert_eq!(a.recall_top10, 0.9);
        // 1 % of 25 cells rounds up to 1: cell 0 in both.
        assert_eq!(a.recall_top1pct, 1.0);
        // |exact| ≥ 0.1: cells 0..=7; the estimate's top 10 % (3 cells): 0, 2, 3.
        assert_eq!((a.large_cells, a.false_negatives), (8, 5));
        // |exact| ≥ 1e-3: 24 cells (not the last); signs differ at cells 9, 18, 20.
        assert_eq!(a.sign_agreement, Some(21.0 / 24.0));
        assert!((a.max_abs_error - 0.36).abs() < 1e-12); // cell 1
        assert!((a.median_abs_error - 0.019).abs() < 1e-12);
    }

    #[test]
    fn a_perfect_estimate_agrees_fully() {
        // Two large cells among twenty: the top 10 % (2 cells) holds them both.
        let mut exact = [0.0; 20];
        exact[..3].copy_from_slice(&[0.5, -0.2, 0.05]);
        let a = agreement(&exact, &exact);
        assert_eq!(a.pearson, Some(1.0));
        assert_eq!(a.spearman, Some(1.0));
        assert_eq!((a.recall_top10, a.recall_top1pct), (1.0, 1.0));
        assert_eq!((a.false_negatives, a.max_abs_error), (0, 0.0));
        assert_eq!(a.sign_agreement, Some(1.0));
    }

    #[test]
    fn ties_share_their_mean_rank() {
        assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), vec![3.5, 1.0, 3.5, 2.0]);
    }
}
