//! What a comparison shows: `compare.md` (also printed) and one difference heatmap
//! per pair and patch kind, on the same axes as the run's figures.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use actpatch_report::accuracy::render_section;
use actpatch_report::markdown::cell;
use actpatch_report::{AccuracyRow, CompareRow, FigureSection, ImageFormat};

use super::input::RunTable;
use super::join::LayerAxis;
use super::stats::{Summary, UNCHANGED_BELOW};
use crate::manifest::RunStatus;
use crate::outputs::heatmap;
use crate::RunnerError;
use actpatch_patching::{CellIndex, PatchKind};

/// Heading of the figures section, which the command does not print.
pub const FIGURES_HEADING: &str = "\n## Difference heatmaps (B − A)\n\n";

/// A value for a table: 4 decimals (scientific when it would round to zero), `–` when
/// undefined.
fn num(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else if v != 0.0 && v.abs() < 1e-3 {
        format!("{v:.2e}")
    } else {
        format!("{v:.4}")
    }
}

/// A signed difference; scientific notation when it would round to zero.
fn signed(v: f64) -> String {
    if v != 0.0 && v.abs() < 1e-3 {
        format!("{v:+.2e}")
    } else {
        format!("{v:+.4}")
    }
}

fn opt(v: Option<u32>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "–".into())
}

fn describe(side: &str, t: &RunTable) -> String {
    let notes: String = t
        .notes
        .iter()
        .map(|n| format!("  - note: {}\n", n.replace('\n', " ")))
        .collect();
    format!(
        "- **{side}**: `{}` — `{}`, {} layers ({}), {} cells{} — `{}`\n{notes}",
        t.id,
        t.model,
        t.n_layers,
        t.n_layers_source,
        t.cells.len(),
        match t.status {
            Some(RunStatus::Complete) | None => String::new(),
            Some(s) => format!(", **incomplete** (status \"{}\")", s.name()),
        },
        t.cells_path.display()
    )
}

/// Everything the comparison found, as markdown.
pub fn markdown(
    (a, b): (&RunTable, &RunTable),
    axis: LayerAxis,
    (summary, accuracy): (&Summary, &[AccuracyRow]),
    (fail_above, top): (Option<f64>, usize),
    (figures, scatters): (&[(String, String)], &[FigureSection]),
) -> String {
    let mut md = format!("# Comparison: `{}` (B) − `{}` (A)\n\n", b.id, a.id);
    md.push_str(&describe("A", a));
    md.push_str(&describe("B", b));
    md.push_str("- cells joined on (concept, pair, patch kind, direction, layer, head, position); value: normalized logit difference; difference: B − A\n");
    md.push_str(&layers_line(a, b, axis));
    differences(&mut md, summary, fail_above);
    per_kind(&mut md, summary);
    if !accuracy.is_empty() {
        md.push('\n');
        md.push_str(&render_section(accuracy, &[]));
    }
    changed(&mut md, summary, top);
    if !figures.is_empty() || !scatters.is_empty() {
        md.push_str(FIGURES_HEADING);
        for (heading, image) in figures {
            let _ = writeln!(md, "### {heading}\n\n![{}]({image})\n", cell(heading));
        }
    }
    if !scatters.is_empty() {
        md.push_str("## Attribution accuracy: estimate against exact\n\n");
        for figure in scatters {
            let _ = writeln!(md, "![{}]({})\n", cell(&figure.heading), figure.image);
        }
    }
    md
}

/// How the layers were matched.
fn layers_line(a: &RunTable, b: &RunTable, axis: LayerAxis) -> String {
    match axis {
        LayerAxis::Layer if a.n_layers != b.n_layers => format!(
            "- layers: matched by index, but A has {} layers and B {}: compare on relative depth with `--by-depth`\n",
            a.n_layers, b.n_layers
        ),
        LayerAxis::Layer => "- layers: matched by index\n".into(),
        LayerAxis::Depth { bins } => format!(
            "- layers: by relative depth — layer / n_layers binned into {bins} bins (bin = floor(layer / n_layers × {bins})); cells in one bin averaged; `layer` is the bin\n"
        ),
    }
}

/// The cell counts and the overall differences.
fn differences(md: &mut String, summary: &Summary, fail_above: Option<f64>) {
    let _ = writeln!(
        md,
        "\n## Cells\n\n| matched | only in A | only in B |\n|---|---|---|\n| {} | {} | {} |\n",
        summary.matched, summary.only_a, summary.only_b
    );
    let _ = writeln!(
        md,
        "## Differences\n\nOver the matched cells: max |B − A| = {}, mean |B − A| = {}; changed cells (|B − A| > {UNCHANGED_BELOW:e}): {}.",
        num(summary.max_abs),
        num(summary.mean_abs),
        summary.changed.len()
    );
    if summary.finite_mismatch > 0 {
        let _ = writeln!(
            md,
            "{} matched cells are finite in one run and not in the other (counted as changed).",
            summary.finite_mismatch
        );
    }
    if let (Some(x), Some(n)) = (fail_above, summary.exceeding) {
        let verdict = if n == 0 { "passed" } else { "**failed**" };
        let _ = writeln!(
            md,
            "\n`--fail-above {x}`: {verdict} — {n} matched cells differ by more than {x}."
        );
    }
}

/// The statistics of each patch kind.
fn per_kind(md: &mut String, summary: &Summary) {
    md.push_str("\n## Per patch kind\n\n| kind | matched | only A | only B | max abs | mean abs | Pearson | Spearman |\n|---|---|---|---|---|---|---|---|\n");
    for k in &summary.per_kind {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&k.kind),
            k.matched,
            k.only_a,
            k.only_b,
            num(k.max_abs),
            num(k.mean_abs),
            num(k.pearson),
            num(k.spearman)
        );
    }
    md.push_str("\nCorrelations are over matched cells with finite values; – where undefined (under two cells, or one side constant).\n");
}

/// The `top` cells that changed most.
fn changed(md: &mut String, summary: &Summary, top: usize) {
    if summary.changed.is_empty() {
        md.push_str("\n## Cells that changed most\n\nNo matched cell changed.\n");
        return;
    }
    let shown = summary.changed.len().min(top);
    let _ = writeln!(
        md,
        "\n## Cells that changed most\n\n{shown} of {} changed cells, largest |B − A| first.\n\n| concept | pair | kind | direction | layer | head | position | token | A | B | B − A |\n|---|---|---|---|---|---|---|---|---|---|---|",
        summary.changed.len()
    );
    for r in summary.changed.iter().take(top) {
        let (va, vb) = (r.a.unwrap_or(f64::NAN), r.b.unwrap_or(f64::NAN));
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&r.concept),
            cell(&r.pair),
            cell(&r.kind),
            cell(&r.direction),
            r.layer,
            opt(r.head),
            opt(r.position),
            cell(&format!("`{}`", r.token.as_deref().unwrap_or("–"))),
            num(va),
            num(vb),
            signed(vb - va)
        );
    }
}

fn file_stem(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            c if c.is_ascii_alphanumeric() || c == '-' || c == '_' => c,
            _ => '-',
        })
        .collect()
}

/// The B − A heatmap of one (concept, pair, direction, kind) group of rows, on the
/// run figures' axes; unmatched cells are grey.
fn difference_heatmap(
    kind: PatchKind,
    group: &[&CompareRow],
    heading: String,
    axis: LayerAxis,
) -> actpatch_report::Heatmap {
    let n_pos = group
        .iter()
        .filter_map(|r| r.position)
        .max()
        .map_or(0, |p| p as usize + 1);
    let mut labels: Vec<String> = (0..n_pos).map(|p| format!("pos_{p}")).collect();
    for r in group {
        if let (Some(p), Some(t)) = (r.position, &r.token) {
            labels[p as usize] = format!("{t}_{p}");
        }
    }
    let cells: Vec<(CellIndex, f64)> = group
        .iter()
        .map(|r| {
            let index = CellIndex {
                layer: r.layer as usize,
                head: r.head.map(|h| h as usize),
                position: r.position.map(|p| p as usize),
                src: None,
            };
            (index, r.diff.unwrap_or(f64::NAN))
        })
        .collect();
    let mut map = heatmap(kind, &cells, &labels, heading);
    map.colorbar_label = "B − A normalized LD".into();
    if let LayerAxis::Depth { bins } = axis {
        let rest = map.y_label.strip_prefix("layer").unwrap_or("").to_string();
        map.y_label = format!("relative depth bin (of {bins}){rest}");
    }
    map
}

/// Draws B − A for every (pair, patch kind) into `<out_dir>/figures/`; returns each
/// figure's heading and path relative to `out_dir`. Unmatched cells are grey.
pub fn figures(
    rows: &[CompareRow],
    out_dir: &Path,
    axis: LayerAxis,
    formats: &[ImageFormat],
) -> Result<Vec<(String, String)>, RunnerError> {
    if formats.is_empty() {
        return Ok(Vec::new());
    }
    let written = |source| RunnerError::Write {
        source: Box::new(source),
        resume: None,
    };
    let dir = out_dir.join("figures");
    std::fs::create_dir_all(&dir).map_err(|source| {
        written(actpatch_report::ReportError::Write {
            path: dir.clone(),
            source,
        })
    })?;
    type Group<'a> = (&'a str, &'a str, &'a str, &'a str);
    let mut groups: BTreeMap<Group, Vec<&CompareRow>> = BTreeMap::new();
    for r in rows {
        let key = (
            r.concept.as_str(),
            r.pair.as_str(),
            r.direction.as_str(),
            r.kind.as_str(),
        );
        groups.entry(key).or_default().push(r);
    }
    let mut made = Vec::new();
    for ((concept, pair, direction, kind_name), group) in groups {
        let base = kind_name.split(" → ").next().unwrap_or(kind_name); // path → <receivers>
        let Some(kind) = PatchKind::from_name(base) else {
            continue; // a kind this version does not know: no axes to draw it on
        };
        let heading = format!("{concept} · {pair} · {direction} · {kind} · B − A");
        let map = difference_heatmap(kind, &group, heading.clone(), axis);
        let stem = file_stem(&format!("diff_{pair}_{direction}_{kind}"));
        let mut first = None;
        for format in formats {
            let name = format!("figures/{stem}.{}", format.extension());
            map.save(&out_dir.join(&name), *format).map_err(written)?;
            first.get_or_insert(name);
        }
        if let Some(image) = first {
            made.push((heading, image));
        }
    }
    Ok(made)
}
