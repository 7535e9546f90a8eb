//! `report.html` and `compare.html`: one self-contained page per run or comparison
//! (no network, no CDN; opens from `file://`). A [`Page`] is text, tables and sets of
//! heatmaps; the heatmaps travel as JSON and a small inline script
//! (`assets/report.js`) draws them as SVG, with selectors for their facets (pair or
//! concept, direction, kind, method, …) and a tooltip per cell. The page is a pure
//! function of its inputs: [`run_page`] builds it from a run folder's files alone.

pub mod circuits;
mod columns;
pub mod compare_page;
mod concept_cells;
mod findings;
pub mod grid;
pub mod run_page;
mod run_tables;

use std::fmt::Write;

use serde::Serialize;

pub use grid::{ColumnKey, Grid, LongCell, Tick};

/// The heatmaps' facet that picks a pair or a concept.
pub const SUBJECT: &str = "pair / concept";

const SCRIPT: &str = include_str!("../../assets/report.js");
const STYLE: &str = include_str!("../../assets/report.css");

/// A whole page.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub title: String,
    /// Facts shown under the title (model, run id, …).
    pub facts: Vec<(String, String)>,
    pub sections: Vec<Section>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    pub heading: String,
    pub blocks: Vec<Block>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// A paragraph; `**bold**` and `` `code` `` are rendered.
    Text(String),
    /// A bulleted list, each item like [`Block::Text`].
    Bullets(Vec<String>),
    /// A bulleted list folded under a one-line title (`<details>`), open on a click.
    Folded {
        title: String,
        items: Vec<String>,
    },
    Table(TableBlock),
    Heatmaps(GridSet),
    /// An inline SVG figure made by actpatch (its `<title>`s are the hover text).
    Svg(String),
}

/// A table of text cells.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TableBlock {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// Heatmaps shown one at a time, chosen with a selector per facet that has more than
/// one value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GridSet {
    /// Facet names in the order their selectors appear.
    pub facets: Vec<String>,
    pub grids: Vec<Grid>,
    /// Shown under the heatmap.
    pub note: String,
}

/// Escapes text for HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\u{22}' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escaped text with the report's inline markdown: `**bold**` and `` `code` ``.
pub fn inline(text: &str) -> String {
    let mut out = String::new();
    let (mut bold, mut code) = (false, false);
    let mut rest = text;
    while !rest.is_empty() {
        if !code && rest.starts_with("**") {
            out.push_str(if bold { "</strong>" } else { "<strong>" });
            bold = !bold;
            rest = &rest[2..];
        } else if rest.starts_with('`') {
            out.push_str(if code { "</code>" } else { "<code>" });
            code = !code;
            rest = &rest[1..];
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push_str(&escape(&c.to_string()));
            rest = &rest[c.len_utf8()..];
        }
    }
    if code {
        out.push_str("</code>");
    }
    if bold {
        out.push_str("</strong>");
    }
    out
}

/// JSON safe inside a `<script>` element.
fn script_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value)
        .unwrap_or_else(|_| "null".into())
        .replace('<', "\\u003c")
}

fn anchor(heading: &str) -> String {
    heading
        .chars()
        .map(|c| {
            if c.is_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

impl Page {
    /// The page as one HTML document.
    pub fn render(&self) -> String {
        let mut html = String::new();
        let _ = write!(
            html,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n<header>\n<h1>{}</h1>\n<dl class=\"facts\">",
            escape(&self.title),
            escape(&self.title)
        );
        for (key, value) in &self.facts {
            let _ = write!(
                html,
                "<div><dt>{}</dt><dd>{}</dd></div>",
                escape(key),
                inline(value)
            );
        }
        html.push_str("</dl>\n<nav>");
        for section in &self.sections {
            let _ = write!(
                html,
                "<a href=\"#{}\">{}</a>",
                anchor(&section.heading),
                escape(&section.heading)
            );
        }
        html.push_str("</nav>\n</header>\n<main>\n");
        let mut sets = 0;
        for section in &self.sections {
            let _ = writeln!(
                html,
                "<section id=\"{}\">\n<h2>{}</h2>",
                anchor(&section.heading),
                escape(&section.heading)
            );
            for block in &section.blocks {
                render_block(&mut html, block, &mut sets);
            }
            html.push_str("</section>\n");
        }
        let _ = write!(html, "</main>\n<div id=\"tip\" role=\"tooltip\" hidden></div>\n<script>\n{SCRIPT}</script>\n</body>\n</html>\n");
        html
    }
}

fn render_block(html: &mut String, block: &Block, sets: &mut usize) {
    match block {
        Block::Text(text) => {
            let _ = writeln!(html, "<p>{}</p>", inline(text).replace('\n', "<br>"));
        }
        Block::Bullets(items) => {
            html.push_str("<ul>\n");
            for item in items {
                let _ = writeln!(html, "<li>{}</li>", inline(item));
            }
            html.push_str("</ul>\n");
        }
        Block::Folded { title, items } => {
            let _ = writeln!(html, "<details>\n<summary>{}</summary>", inline(title));
            render_block(html, &Block::Bullets(items.clone()), sets);
            html.push_str("</details>\n");
        }
        Block::Table(table) => {
            html.push_str("<div class=\"table\"><table>\n<thead><tr>");
            for c in &table.columns {
                let _ = write!(html, "<th>{}</th>", escape(c));
            }
            html.push_str("</tr></thead>\n<tbody>\n");
            for row in &table.rows {
                html.push_str("<tr>");
                for c in row {
                    let _ = write!(html, "<td>{}</td>", inline(c));
                }
                html.push_str("</tr>\n");
            }
            html.push_str("</tbody></table></div>\n");
        }
        Block::Svg(svg) => {
            let _ = writeln!(html, "<div class=\"figure\">{svg}</div>");
        }
        Block::Heatmaps(set) => {
            let id = format!("heatmaps-{sets}");
            *sets += 1;
            let _ = writeln!(
                html,
                "<div class=\"heatmaps\" id=\"{id}\" data-source=\"{id}-data\"><noscript>The heatmaps need JavaScript; the same figures are PNG/SVG files in figures/.</noscript></div>\n<script type=\"application/json\" id=\"{id}-data\">{}</script>",
                script_json(set)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_markdown_is_escaped_and_rendered() {
        assert_eq!(
            inline("**a<b** (`x&y`)"),
            "<strong>a&lt;b</strong> (<code>x&amp;y</code>)"
        );
        assert_eq!(inline("2 ** 3"), "2 <strong> 3</strong>");
    }

    #[test]
    fn the_page_is_self_contained() {
        let page = Page {
            title: "t</script>".into(),
            facts: vec![("model".into(), "m".into())],
            sections: vec![Section {
                heading: "Heatmaps".into(),
                blocks: vec![Block::Heatmaps(GridSet {
                    facets: vec!["kind".into()],
                    grids: Vec::new(),
                    note: "</script><script>alert(1)</script>".into(),
                })],
            }],
        };
        let html = page.render();
        assert!(
            !html.contains("</script><script>alert"),
            "JSON must not close its element"
        );
        for external in ["src=\"http", "href=\"http", "<link", "@import", "url(http"] {
            assert!(!html.contains(external), "{external}");
        }
        assert!(html.contains("<title>t&lt;/script&gt;</title>"));
    }
}
