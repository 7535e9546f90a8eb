//! The error table's scatter plots: per kind, every approximate method's estimated
//! effect against the exact one, one point per cell of every pair and direction.

use std::path::Path;

use actpatch_report::{FigureSection, ImageFormat, ReportError, Scatter, ScatterSeries};

use crate::outputs::accuracy::Paired;

/// Draws one scatter plot per kind of `paired` into `<dir>/figures/accuracy_<kind>.*`;
/// returns each figure's heading and path relative to `dir` (none without formats).
pub(crate) fn accuracy_figures(
    paired: &[Paired],
    dir: &Path,
    formats: &[ImageFormat],
) -> Result<Vec<FigureSection>, ReportError> {
    let mut kinds: Vec<(&str, Vec<ScatterSeries>)> = Vec::new();
    for p in paired {
        let at = match kinds.iter().position(|(k, _)| *k == p.kind) {
            Some(at) => at,
            None => {
                kinds.push((p.kind, Vec::new()));
                kinds.len() - 1
            }
        };
        let series = &mut kinds[at].1;
        match series.iter_mut().find(|s| s.name == p.method) {
            Some(s) => s.points.extend(&p.points),
            None => series.push(ScatterSeries {
                name: p.method.to_string(),
                points: p.points.clone(),
            }),
        }
    }
    let mut figures = Vec::new();
    for (kind, series) in kinds {
        let scatter = Scatter {
            title: format!("{kind}: estimated against exact effect, every pair and direction"),
            x_label: "exact effect (normalized logit difference − target run's)".into(),
            y_label: "estimated effect".into(),
            series,
        };
        let stem = format!(
            "accuracy_{}",
            kind.replace(|c: char| !c.is_ascii_alphanumeric() && c != '_', "-")
        );
        let mut first = None;
        for format in formats {
            let name = format!("figures/{stem}.{}", format.extension());
            scatter.save(&dir.join(&name), *format)?;
            first.get_or_insert(name);
        }
        if let Some(image) = first {
            figures.push(FigureSection {
                heading: format!("{kind}: estimate against exact"),
                image,
                details: Vec::new(),
            });
        }
    }
    Ok(figures)
}
