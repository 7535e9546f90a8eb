//! `compare.html` of a comparison, from its folder's files alone: the text and tables
//! of `compare.md` (headings, lists, pipe tables), and interactive B − A, A and B
//! heatmaps from `compare.parquet` in place of the PNG difference heatmaps.

use std::path::{Path, PathBuf};

use super::grid::{facet_title as title, grids, ColumnKey, LongCell};
use super::SUBJECT;
use super::{Block, GridSet, Page, Section, TableBlock};
use crate::compare_table::{read_compare, CompareRow};
use crate::{ReportError, Result};

/// The `##` heading of `compare.md` whose images the heatmaps replace.
pub const DIFFERENCE_HEADING: &str = "Difference heatmaps (B − A)";

fn split_row(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    let mut cells = vec![String::new()];
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                if let Some(cell) = cells.last_mut() {
                    cell.push('|');
                }
                chars.next();
            }
            '|' => cells.push(String::new()),
            c => {
                if let Some(cell) = cells.last_mut() {
                    cell.push(c);
                }
            }
        }
    }
    cells.into_iter().map(|c| c.trim().to_string()).collect()
}

fn is_separator(line: &str) -> bool {
    line.trim().starts_with('|') && line.chars().all(|c| matches!(c, '|' | '-' | ':' | ' '))
}

/// The markdown that actpatch writes (`#`/`##`/`###` headings, `- ` lists, pipe
/// tables, paragraphs; images dropped) as a page title and sections.
pub fn markdown_sections(markdown: &str) -> (String, Vec<Section>) {
    let mut title = String::new();
    let mut sections: Vec<Section> = vec![Section {
        heading: "Overview".into(),
        blocks: Vec::new(),
    }];
    let mut lines = markdown.lines().peekable();
    while let Some(line) = lines.next() {
        let blocks = &mut sections.last_mut().map(|s| &mut s.blocks);
        let Some(blocks) = blocks else { break };
        if let Some(t) = line.strip_prefix("# ") {
            title = t.replace('`', "");
        } else if let Some(h) = line.strip_prefix("## ") {
            sections.push(Section {
                heading: h.trim().to_string(),
                blocks: Vec::new(),
            });
        } else if let Some(h) = line.strip_prefix("### ") {
            blocks.push(Block::Text(format!("**{}**", h.trim())));
        } else if let Some(item) = line.strip_prefix("- ") {
            let mut items = vec![item.to_string()];
            while let Some(next) = lines.peek().and_then(|l| l.strip_prefix("- ")) {
                items.push(next.to_string());
                lines.next();
            }
            blocks.push(Block::Bullets(items));
        } else if line.trim_start().starts_with('|') {
            let mut table = TableBlock {
                columns: split_row(line),
                rows: Vec::new(),
            };
            while let Some(next) = lines.peek().filter(|l| l.trim_start().starts_with('|')) {
                if !is_separator(next) {
                    table.rows.push(split_row(next));
                }
                lines.next();
            }
            blocks.push(Block::Table(table));
        } else if !line.trim().is_empty() && !line.starts_with("![") {
            blocks.push(Block::Text(line.to_string()));
        }
    }
    sections.retain(|s| !s.blocks.is_empty() || s.heading == DIFFERENCE_HEADING);
    (title, sections)
}

fn side_cells(rows: &[CompareRow]) -> Vec<LongCell> {
    let mut cells = Vec::new();
    for (shown, value) in [
        (
            "B − A",
            (|r: &CompareRow| r.diff) as fn(&CompareRow) -> Option<f64>,
        ),
        ("A", |r| r.a),
        ("B", |r| r.b),
    ] {
        for r in rows {
            let column = r.position.map(|p| {
                let token = r.token.as_deref();
                let mut hover = vec![("position".into(), p.to_string())];
                if let Some(t) = token {
                    hover.push(("token".into(), format!("\"{t}\"")));
                }
                hover.push(("status".into(), r.status.clone()));
                ColumnKey {
                    order: p,
                    label: format!("{}_{p}", token.unwrap_or("·")),
                    hover,
                }
            });
            cells.push(LongCell {
                facets: vec![
                    (SUBJECT.into(), format!("{} ({})", r.pair, r.concept)),
                    ("kind".into(), r.kind.clone()),
                    ("direction".into(), r.direction.clone()),
                    ("show".into(), shown.into()),
                ],
                layer: r.layer,
                head: r.head,
                column,
                value: value(r).unwrap_or(f64::NAN),
                interval: None,
            });
        }
    }
    cells
}

/// The comparison page from `compare.md`'s text and the joined rows.
pub fn compare_page(markdown: &str, rows: &[CompareRow]) -> Page {
    let (title_text, mut sections) = markdown_sections(markdown);
    let set = GridSet {
        facets: [SUBJECT, "kind", "show"].map(String::from).to_vec(),
        grids: grids(
            &side_cells(rows),
            "position (clean token)",
            "normalized logit diff",
            &title,
        ),
        note: "B − A of the normalized logit difference per cell (choose A or B to see either run); grey: the cell is missing from a run.".into(),
    };
    let heatmaps = Section {
        heading: DIFFERENCE_HEADING.into(),
        blocks: vec![Block::Heatmaps(set)],
    };
    match sections
        .iter()
        .position(|s| s.heading == DIFFERENCE_HEADING)
    {
        Some(i) => sections[i] = heatmaps,
        None => sections.push(heatmaps),
    }
    Page {
        title: if title_text.is_empty() {
            "Comparison".into()
        } else {
            title_text
        },
        facts: Vec::new(),
        sections,
    }
}

/// Renders `<dir>/compare.html` from `compare.md` and `compare.parquet` in `dir`.
pub fn write_compare_page(dir: &Path) -> Result<PathBuf> {
    let md_path = dir.join("compare.md");
    let markdown = std::fs::read_to_string(&md_path).map_err(|e| ReportError::Read {
        path: md_path,
        reason: e.to_string(),
    })?;
    let rows = read_compare(&dir.join("compare.parquet"))?;
    let path = dir.join("compare.html");
    crate::atomic::write_bytes_atomic(&path, compare_page(&markdown, &rows).render().as_bytes())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_markdown_becomes_sections() {
        let md = "# Comparison: `b` (B) − `a` (A)\n\n- **A**: x\n- **B**: y\n\n## Cells\n\n| matched | only A |\n|---|---|\n| 3 | a \\| b |\n\n## Difference heatmaps (B − A)\n\n### p · k\n\n![p](figures/x.png)\n";
        let (title, sections) = markdown_sections(md);
        assert_eq!(title, "Comparison: b (B) − a (A)");
        assert_eq!(
            sections[0].blocks,
            vec![Block::Bullets(vec!["**A**: x".into(), "**B**: y".into()])]
        );
        assert_eq!(
            sections[1].blocks,
            vec![Block::Table(TableBlock {
                columns: vec!["matched".into(), "only A".into()],
                rows: vec![vec!["3".into(), "a | b".into()]],
            })]
        );
        let page = compare_page(md, &[]);
        assert_eq!(page.sections.last().unwrap().heading, DIFFERENCE_HEADING);
        assert!(matches!(
            page.sections.last().unwrap().blocks[0],
            Block::Heatmaps(_)
        ));
    }
}
