//! `report.html` in a real browser: headless Chromium driven over WebDriver. The page
//! of a fixture run loads without console errors, hovering a known cell shows its
//! token and value (as cells.parquet has them), the kind selector switches the
//! heatmap, and a screenshot is saved under the test's temp folder.
//!
//! Needs Debian's `chromium` and `chromium-driver`: `just test-browser` (which `.ci/run`
//! runs after installing them). `just screenshot RUN_DIR OUT.png` uses the same client
//! for the guide's picture (docs/src/images/report-smollm2.png).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use actpatch_report::tables::read_cells;
use common::webdriver::Browser;
use serde_json::{json, Value};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("actpatch-browser-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the tiny fixture experiment; returns its run folder.
fn fixture_run(out: &Path) -> PathBuf {
    let output = Command::new(env!("CARGO_BIN_EXE_actpatch"))
        .arg("run")
        .arg(repo().join("tests/fixtures/experiments/tiny.toml"))
        .arg("--out")
        .arg(out)
        .arg("--quiet")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

fn file_url(path: &Path) -> String {
    format!("file://{}", std::fs::canonicalize(path).unwrap().display())
}

/// The fills of the shown heatmap's cells and its title.
fn shown(browser: &Browser) -> (Vec<String>, String) {
    let value = browser.execute(
        "const box = document.querySelector('.heatmaps');\
         return [Array.from(box.querySelectorAll('rect.cell')).map(r => r.getAttribute('fill')),\
                 box.getAttribute('data-shown')];",
        json!([]),
    );
    let fills = value[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    (fills, value[1].as_str().unwrap_or_default().to_string())
}

fn tooltip(browser: &Browser) -> String {
    browser
        .execute(
            "const t = document.getElementById('tip'); return t.hidden ? '' : t.textContent;",
            json!([]),
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn assert_no_console_errors(browser: &Browser) {
    let errors: Vec<Value> = browser
        .console()
        .into_iter()
        .filter(|e| e["level"] == "SEVERE")
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");
}

#[test]
#[ignore = "needs chromium and chromium-driver: run with `just test-browser`"]
fn report_page_works_in_chromium() {
    let dir = scratch("report");
    let run_dir = fixture_run(&dir.join("runs"));
    let page = run_dir.join("report.html");
    assert!(page.is_file());
    let browser = Browser::start(&dir.join("profile"));
    browser.goto(&file_url(&page));

    assert_no_console_errors(&browser);

    // The first heatmap: pair `landmarks`, resid_pre, layers × positions. Its cell at
    // layer 1, position 2 is the table's.
    let (fills, title) = shown(&browser);
    assert_eq!(title, "landmarks (landmarks) · resid_pre · denoising");
    let cells = read_cells(&run_dir.join("cells.parquet")).unwrap();
    let cell = cells
        .iter()
        .find(|c| {
            c.pair == "landmarks" && c.kind == "resid_pre" && c.layer == 1 && c.position == Some(2)
        })
        .unwrap();
    let token = cell.token.clone().unwrap();
    let rect = browser.find(".heatmaps rect.cell[data-r=\"1\"][data-c=\"2\"]");
    browser.hover(&rect);
    let tip = tooltip(&browser);
    assert!(tip.contains(&format!("token: \"{token}\"")), "{tip}");
    assert!(
        tip.contains(&format!(
            "normalized logit diff: {:.3}",
            cell.normalized_logit_diff
        )),
        "{tip}"
    );
    assert!(
        tip.contains("layer: 1") && tip.contains("position: 2"),
        "{tip}"
    );
    browser.screenshot(&dir.join("report-hover.png"));

    // The kind selector switches to attn_out: another title, other colours.
    let option = browser.find("select[data-facet=\"kind\"] option[value=\"attn_out\"]");
    browser.click(&option);
    let (fills_after, title_after) = shown(&browser);
    assert_eq!(title_after, "landmarks (landmarks) · attn_out · denoising");
    assert_ne!(fills, fills_after);
    // And to a per-head kind: rows become layer/head pairs.
    let option = browser.find("select[data-facet=\"kind\"] option[value=\"head_out_by_pos\"]");
    browser.click(&option);
    let rows = browser.execute(
        "return document.querySelectorAll('.heatmaps rect.cell[data-c=\"0\"]').length;",
        json!([]),
    );
    let heads = cells
        .iter()
        .filter(|c| c.pair == "landmarks" && c.kind == "head_out_by_pos" && c.position == Some(0))
        .count();
    assert_eq!(rows.as_u64(), Some(heads as u64));

    let screenshot = dir.join("report.png");
    browser.screenshot(&screenshot);
    let png = std::fs::read(&screenshot).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    assert_no_console_errors(&browser);
    println!("screenshots: {}", dir.display());
}

/// The circuit sections of a `[circuit]` run's page: the strongest edges drawn (one
/// line per edge of the report's top, each with its score and exact effect as hover
/// text), the faithfulness curves (one point per size, method and ablation), no
/// console error.
#[test]
#[ignore = "needs chromium and chromium-driver: run with `just test-browser`"]
fn circuit_sections_work_in_chromium() {
    let dir = scratch("circuit");
    let output = Command::new(env!("CARGO_BIN_EXE_actpatch"))
        .arg("run")
        .arg(repo().join("tests/fixtures/experiments/tiny_circuit.toml"))
        .arg("--out")
        .arg(dir.join("runs"))
        .arg("--quiet")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let run_dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let browser = Browser::start(&dir.join("profile"));
    browser.goto(&file_url(&run_dir.join("report.html")));
    assert_no_console_errors(&browser);
    let edges = browser.execute(
        "return document.querySelectorAll('svg.circuit line.edge').length;",
        json!([]),
    );
    assert_eq!(edges.as_u64(), Some(10), "the tiny experiment's top = 10");
    let first = browser.execute(
        "return document.querySelector('svg.circuit line.edge title').textContent;",
        json!([]),
    );
    let first = first.as_str().unwrap_or_default().to_string();
    assert!(
        first.contains("score") && first.contains("exact"),
        "{first}"
    );
    let points = browser.execute(
        "return document.querySelectorAll('svg.curves circle.point').length;",
        json!([]),
    );
    assert_eq!(points.as_u64(), Some(4 * 10), "4 methods × MIB's 10 sizes");
    browser.execute(
        "document.querySelector('svg.circuit').scrollIntoView();",
        json!([]),
    );
    browser.screenshot(&dir.join("circuit.png"));
    assert_no_console_errors(&browser);
    println!("screenshot: {}", dir.join("circuit.png").display());
}

/// A screenshot of any run's page for the docs: `ACTPATCH_SCREENSHOT_RUN=RUN_DIR
/// ACTPATCH_SCREENSHOT_OUT=docs/src/images/report-smollm2.png`, hovering the last cell (last layer, final position).
#[test]
#[ignore = "makes the README's screenshot: `just screenshot RUN_DIR OUT.png`"]
fn screenshot_of_a_run() {
    let run_dir = PathBuf::from(
        std::env::var("ACTPATCH_SCREENSHOT_RUN").expect("ACTPATCH_SCREENSHOT_RUN=RUN_DIR"),
    );
    let out = PathBuf::from(
        std::env::var("ACTPATCH_SCREENSHOT_OUT").expect("ACTPATCH_SCREENSHOT_OUT=FILE.png"),
    );
    let dir = scratch("docs");
    let browser = Browser::start(&dir.join("profile"));
    browser.goto(&file_url(&run_dir.join("report.html")));
    browser.execute(
        "document.getElementById('heatmaps').scrollIntoView();",
        json!([]),
    );
    let n = browser.execute(
        "return document.querySelectorAll('.heatmaps rect.cell').length;",
        json!([]),
    );
    let cell = n.as_u64().unwrap_or(1).saturating_sub(1);
    let rects = browser.find(&format!(".heatmaps rect.cell:nth-of-type({})", cell.max(1)));
    browser.hover(&rects);
    browser.screenshot(&out);
    println!("{}", out.display());
}
