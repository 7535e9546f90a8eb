//! Concept heatmaps (roles in prompt order against layers, cells whose interval
//! contains 0 faded and hatched) and the sentences that say where a concept's effect
//! sits.

use std::collections::BTreeSet;

use actpatch_concepts::roles::{BOS, END};
use actpatch_concepts::ConceptStat;
use actpatch_patching::{Direction, PatchKind};
use actpatch_report::{FigureSection, Heatmap};

use crate::outputs::concepts::ConceptTable;

/// The cells of one concept, direction and kind.
pub(crate) struct ConceptGrid<'a> {
    pub concept: &'a str,
    pub direction: Direction,
    pub kind: PatchKind,
    pub stats: Vec<&'a ConceptStat>,
    /// Roles in prompt order (empty for kinds without positions).
    pub roles: Vec<String>,
    pub n_pairs: usize,
    /// What the title adds for Gaussian-noise concepts (the noise, metric and window).
    pub note: Option<String>,
}

/// A row key: layer, and head for kinds with heads and positions.
type RowKey = (u32, Option<u32>);

/// The roles a concept figure shows: `BOS`, `end`, every span role (`subject.last`,
/// `diff.first`, …), and the words that at least half the pairs have (a word of one
/// template among six would make a column of few pairs).
fn shown_roles<'s>(stats: &[&'s ConceptStat], n_pairs: usize) -> BTreeSet<&'s str> {
    let mut most: std::collections::BTreeMap<&str, usize> = Default::default();
    for s in stats {
        if let Some(role) = s.key.role.as_deref() {
            let m = most.entry(role).or_insert(0);
            *m = (*m).max(s.n_pairs);
        }
    }
    (most.into_iter())
        .filter(|(role, n)| is_span_role(role) || [BOS, END].contains(role) || 2 * n >= n_pairs)
        .map(|(role, _)| role)
        .collect()
}

/// `subject.first`, `diff.mid`, `name1.last`, …
fn is_span_role(role: &str) -> bool {
    [".first", ".mid", ".last"]
        .iter()
        .any(|p| role.ends_with(p))
}

impl<'a> ConceptGrid<'a> {
    /// The grids of `concept` in `table`, direction by direction, kind by kind.
    pub fn all(
        table: &'a ConceptTable,
        concept: &'a str,
        directions: &[Direction],
        kinds: &[PatchKind],
    ) -> Vec<ConceptGrid<'a>> {
        let mut grids = Vec::new();
        for direction in directions {
            for kind in kinds {
                let stats: Vec<&ConceptStat> = (table.stats.iter())
                    .filter(|s| {
                        s.key.concept == concept
                            && s.key.direction == direction.name()
                            && s.key.kind == kind.name()
                    })
                    .collect();
                if stats.is_empty() {
                    continue;
                }
                let order = (table.role_order.get(&(concept.to_string(), *direction)))
                    .cloned()
                    .unwrap_or_default();
                let n_pairs = table.n_pairs.get(concept).copied().unwrap_or(0);
                let shown = shown_roles(&stats, n_pairs);
                let roles: Vec<String> = (order.into_iter())
                    .filter(|r| shown.contains(r.as_str()))
                    .collect();
                // Cells of roles not shown stay in concepts.parquet only.
                let stats = (stats.into_iter())
                    .filter(|s| s.key.role.as_ref().is_none_or(|r| roles.contains(r)))
                    .collect();
                grids.push(ConceptGrid {
                    concept,
                    direction: *direction,
                    kind: *kind,
                    roles,
                    stats,
                    n_pairs,
                    note: (table.gaussian.get(concept)).map(|g| g.title_note(*kind)),
                });
            }
        }
        grids
    }

    fn row_key(&self, s: &ConceptStat) -> RowKey {
        match self.kind.by_position() {
            true => (s.key.layer, s.key.head),
            false => (s.key.layer, None),
        }
    }

    fn col(&self, s: &ConceptStat) -> Option<usize> {
        match &s.key.role {
            Some(role) => self.roles.iter().position(|r| r == role),
            None => s.key.head.map(|h| h as usize),
        }
    }

    pub fn title(&self) -> String {
        let title = format!(
            "{} · {} pairs · {} · {}",
            self.concept, self.n_pairs, self.direction, self.kind
        );
        match &self.note {
            Some(note) => format!("{title} · {note}"),
            None => title,
        }
    }

    /// The heatmap: mean normalized effect per role (or head) and layer.
    pub fn heatmap(&self) -> Heatmap {
        let rows: Vec<RowKey> = (self.stats.iter().map(|s| self.row_key(s)))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let n_cols = match self.kind.by_position() {
            true => self.roles.len(),
            false => self
                .stats
                .iter()
                .filter_map(|s| self.col(s))
                .max()
                .map_or(0, |m| m + 1),
        };
        let mut values = vec![vec![f64::NAN; n_cols]; rows.len()];
        let mut faded = vec![vec![false; n_cols]; rows.len()];
        for s in &self.stats {
            let (Ok(r), Some(c)) = (rows.binary_search(&self.row_key(s)), self.col(s)) else {
                continue;
            };
            values[r][c] = s.mean;
            faded[r][c] = s.ci_low <= 0.0 && 0.0 <= s.ci_high;
        }
        let x_ticks = match self.kind.by_position() {
            true => self.roles.clone(),
            false => (0..n_cols).map(|h| format!("H{h}")).collect(),
        };
        let y_ticks = (rows.iter())
            .map(|(layer, head)| match head {
                Some(h) => format!("L{layer}H{h}"),
                None => format!("{layer}"),
            })
            .collect();
        Heatmap {
            title: self.title(),
            x_label: match self.kind.by_position() {
                true => "token role".into(),
                false => "head".into(),
            },
            y_label: "layer".into(),
            x_ticks,
            y_ticks,
            values,
            colorbar_label: "mean effect (faded: CI ∋ 0)".into(),
            faded,
        }
    }

    /// Where the effect sits, from the cells whose interval excludes 0: per layer the
    /// role with the largest mean among them, runs of layers with the same role, and
    /// the strongest cell.
    pub fn findings(&self) -> Option<String> {
        let significant: Vec<&&ConceptStat> = (self.stats.iter())
            .filter(|s| s.ci_low > 0.0 || s.ci_high < 0.0)
            .collect();
        let label = format!(
            "**{}**, {} `{}` ({} pairs)",
            self.concept, self.direction, self.kind, self.n_pairs
        );
        let strongest = significant
            .iter()
            .max_by(|a, b| a.mean.abs().total_cmp(&b.mean.abs()))?;
        let place = |s: &ConceptStat| match (&s.key.role, s.key.head) {
            (Some(role), Some(h)) => format!("`{role}`, L{}H{h}", s.key.layer),
            (Some(role), None) => format!("`{role}`, layer {}", s.key.layer),
            (None, Some(h)) => format!("L{}H{h}", s.key.layer),
            (None, None) => format!("layer {}", s.key.layer),
        };
        let mut text = format!(
            "{label}: {} of {} cells have a 95% interval that excludes 0; the strongest is {} at {:.2} [{:.2}, {:.2}]",
            significant.len(),
            self.stats.len(),
            place(strongest),
            strongest.mean,
            strongest.ci_low,
            strongest.ci_high
        );
        let residual = matches!(
            self.kind,
            PatchKind::ResidPre | PatchKind::ResidMid | PatchKind::ResidPost
        );
        if residual {
            let runs = dominant_runs(&significant);
            if !runs.is_empty() {
                let parts: Vec<String> = (runs.iter())
                    .map(|(role, first, last)| match first == last {
                        true => format!("`{role}` at layer {first}"),
                        false => format!("`{role}` in layers {first}–{last}"),
                    })
                    .collect();
                text.push_str(&format!(
                    ". Layer by layer the largest such effect sits at {}",
                    parts.join(", then ")
                ));
                if let Some(moves) = movement(&runs) {
                    text.push_str(&format!("; {moves}"));
                }
            }
        }
        if !residual {
            let mut top: Vec<&&&ConceptStat> =
                significant.iter().filter(|s| s.mean > 0.0).collect();
            top.sort_by(|a, b| b.mean.total_cmp(&a.mean));
            let parts: Vec<String> = (top.iter().skip(1).take(2))
                .map(|s| format!("{} ({:.2})", place(s), s.mean))
                .collect();
            if !parts.is_empty() {
                text.push_str(&format!("; next: {}", parts.join(", ")));
            }
        }
        text.push('.');
        Some(text)
    }
}

/// Per layer, the role with the largest positive mean among `significant` cells,
/// merged into runs of consecutive layers: (role, first layer, last layer).
fn dominant_runs(significant: &[&&ConceptStat]) -> Vec<(String, u32, u32)> {
    let layers: BTreeSet<u32> = significant.iter().map(|s| s.key.layer).collect();
    let mut runs: Vec<(String, u32, u32)> = Vec::new();
    for layer in layers {
        let best = (significant.iter())
            .filter(|s| s.key.layer == layer && s.mean > 0.0)
            .max_by(|a, b| a.mean.total_cmp(&b.mean));
        let Some(role) = best.and_then(|s| s.key.role.clone()) else {
            continue;
        };
        match runs.last_mut() {
            Some((last_role, _, end)) if *last_role == role && *end + 1 == layer => *end = layer,
            _ => runs.push((role, layer, layer)),
        }
    }
    runs
}

/// "the effect moves from `subject.last` to the final position (`end`) between layers
/// 23 and 24", when the last run is `end` and the one before it a span role.
fn movement(runs: &[(String, u32, u32)]) -> Option<String> {
    let [.., before, last] = runs else {
        return None;
    };
    (is_span_role(&before.0) && last.0 == END).then(|| {
        format!(
            "the effect moves from `{}` to the final position (`end`) between layers {} and {}",
            before.0, before.2, last.1
        )
    })
}

/// One figure section per grid, saved by `save`; the grid's findings collected.
pub(crate) fn concept_figures(
    grids: &[ConceptGrid],
    mut save: impl FnMut(&str, &Heatmap) -> Result<Option<String>, actpatch_report::ReportError>,
) -> Result<(Vec<FigureSection>, Vec<String>), actpatch_report::ReportError> {
    let mut figures = Vec::new();
    let mut findings = Vec::new();
    for grid in grids {
        let stem = format!("concept_{}_{}_{}", grid.concept, grid.direction, grid.kind);
        if let Some(image) = save(&stem, &grid.heatmap())? {
            figures.push(FigureSection {
                heading: grid.title(),
                image,
                details: Vec::new(),
            });
        }
        findings.extend(grid.findings());
    }
    Ok((figures, findings))
}
