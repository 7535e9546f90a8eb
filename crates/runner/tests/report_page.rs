//! `report.html` and `compare.html` on the tiny GPT-2 fixture: written by every run
//! and comparison, re-rendered byte for byte from the folder by `actpatch report`,
//! one heatmap per pair and kind with the table's values, self-contained; concept
//! statistics and attribution tables appear when their files do.

use std::path::{Path, PathBuf};
use std::process::Command;

use actpatch_report::html::run_page::{run_page, RunFiles};
use actpatch_report::html::Block;
use actpatch_report::tables::read_cells;
use polars::prelude::*;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("actpatch-page-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn actpatch(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_actpatch"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn fixture_run(out: &Path) -> PathBuf {
    let tiny = repo().join("tests/fixtures/experiments/tiny.toml");
    PathBuf::from(actpatch(&[
        "run",
        tiny.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]))
}

/// The heatmap sets embedded in a page.
fn embedded_sets(html: &str) -> Vec<Value> {
    html.split("type=\"application/json\"")
        .skip(1)
        .map(|part| {
            let json = &part[part.find('>').unwrap() + 1..part.find("</script>").unwrap()];
            serde_json::from_str(json).unwrap()
        })
        .collect()
}

fn facet<'a>(grid: &'a Value, key: &str) -> Option<&'a str> {
    grid["facets"]
        .as_array()?
        .iter()
        .find(|f| f[0] == key)
        .and_then(|f| f[1].as_str())
}

#[test]
fn runs_write_the_page_and_report_re_renders_it_from_the_folder() {
    let dir = scratch("run");
    let run_dir = fixture_run(&dir);
    let page = std::fs::read_to_string(run_dir.join("report.html")).unwrap();
    for external in ["src=\"http", "href=\"http", "<link", "@import", "url(http"] {
        assert!(!page.contains(external), "{external}");
    }

    // One heatmap per (pair, kind) of cells.parquet, holding its values.
    let cells = read_cells(&run_dir.join("cells.parquet")).unwrap();
    let sets = embedded_sets(&page);
    assert_eq!(sets.len(), 1);
    let grids = sets[0]["grids"].as_array().unwrap();
    let mut pairs_kinds: Vec<(String, String)> = cells
        .iter()
        .map(|c| (c.pair.clone(), c.kind.clone()))
        .collect();
    pairs_kinds.dedup();
    assert_eq!(grids.len(), pairs_kinds.len());
    let grid = grids
        .iter()
        .find(|g| {
            facet(g, "kind") == Some("head_out")
                && facet(g, "pair / concept") == Some("capital (capitals)")
        })
        .unwrap();
    let n_cols = grid["cols"].as_array().unwrap().len();
    for c in cells
        .iter()
        .filter(|c| c.pair == "capital" && c.kind == "head_out")
    {
        let i = c.layer as usize * n_cols + c.head.unwrap() as usize;
        let shown = grid["values"][i].as_f64().unwrap();
        assert!(
            (shown - c.normalized_logit_diff).abs()
                <= 1e-4 * c.normalized_logit_diff.abs().max(1e-3)
        );
    }
    assert!(page.contains("0 of 2 pairs passed validation"));

    // The same page from the folder alone.
    std::fs::remove_file(run_dir.join("report.html")).unwrap();
    let path = actpatch(&["report", run_dir.to_str().unwrap()]);
    assert_eq!(PathBuf::from(&path), run_dir.join("report.html"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), page);

    // compare writes compare.html, and report re-renders it.
    let out = dir.join("cmp");
    actpatch(&[
        "compare",
        run_dir.to_str().unwrap(),
        run_dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--no-figures",
    ]);
    let compare = std::fs::read_to_string(out.join("compare.html")).unwrap();
    let sets = embedded_sets(&compare);
    let shows: Vec<&str> = sets[0]["grids"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| facet(g, "show"))
        .collect();
    assert!(shows.contains(&"B − A") && shows.contains(&"A") && shows.contains(&"B"));
    assert!(compare.contains("<h2>Per patch kind</h2>"));
    std::fs::remove_file(out.join("compare.html")).unwrap();
    actpatch(&["report", out.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(out.join("compare.html")).unwrap(),
        compare
    );

    let bad = Command::new(env!("CARGO_BIN_EXE_actpatch"))
        .args(["report", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no cells.parquet"));
}

#[test]
fn concept_statistics_and_attribution_tables_are_shown_where_they_exist() {
    let dir = scratch("concepts");
    let run_dir = fixture_run(&dir);
    let mut files = RunFiles::read(&run_dir, None).unwrap();
    // A concepts.parquet as issue 11 lays it out: roles as columns, intervals.
    files.concepts = Some(
        df!(
            "concept" => ["capitals", "capitals", "capitals", "capitals"],
            "direction" => ["denoising", "denoising", "noising", "noising"],
            "kind" => ["resid_pre"; 4],
            "layer" => [0u32, 1, 0, 1],
            "role" => ["subject.last", "end", "subject.last", "end"],
            "n_pairs" => [24u32; 4],
            "mean" => [0.8, 0.1, 0.7, 0.2],
            "ci_low" => [0.6, -0.1, 0.5, 0.1],
            "ci_high" => [0.9, 0.3, 0.8, 0.3],
        )
        .unwrap(),
    );
    files.attribution = Some(df!("method" => ["atp"], "pearson" => [0.93]).unwrap());
    let page = run_page(&files);
    let set = page
        .sections
        .iter()
        .flat_map(|s| &s.blocks)
        .find_map(|b| match b {
            Block::Heatmaps(set) => Some(set),
            _ => None,
        })
        .unwrap();
    let concept = &set.grids[0];
    assert_eq!(concept.facets[0].1, "capitals: 24 pairs");
    assert_eq!(concept.facets[1], ("direction".into(), "denoising".into()));
    // Layer 1, role `end` (row 1, column 1 of 2).
    assert_eq!(concept.intervals.as_ref().unwrap()[3], Some((-0.1, 0.3)));
    let roles: Vec<&str> = concept.cols.iter().map(|t| t.label.as_str()).collect();
    assert_eq!(roles, vec!["subject.last", "end"]);
    assert_eq!(concept.value_label, "mean normalized effect");
    let html = page.render();
    assert!(html.contains("<h2>Attribution accuracy</h2>") && html.contains("0.9300"));
    assert!(html.contains("interval contains 0 are drawn faded"));
}
