//! Path patching through the runner (`kinds = ["path", "path_by_pos"]`, five
//! `[[sweep.paths]]` receiver sets, both directions), the fast path and `--naive`:
//! - `path` cells to the logits and to the last layer's q, k and v equal
//!   TransformerLens 2.15 (`golden_paths.json`) within 1e-4, on the tiny GPT-2 and Llama;
//! - every path cell (both kinds, every receiver set) agrees between fast and naive;
//! - a sender at one position before the final one cannot reach the logits (every
//!   head after it is frozen): its cell is the unpatched target run (0 denoising, 1
//!   noising).

use std::path::PathBuf;

use actpatch_report::tables::read_cells;
use actpatch_report::CellRow;
use actpatch_runner::{run, RunOptions};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// Runs the fixture experiment `file` (absolute model path) into a fresh folder.
fn run_file(file: &str, tag: &str, naive: bool) -> Vec<CellRow> {
    run_with(file, tag, naive, |text| text)
}

/// [`run_file`] (fast path) with the experiment text changed by `edit`.
fn run_file_edited(file: &str, tag: &str, edit: impl Fn(String) -> String) -> Vec<CellRow> {
    run_with(file, tag, false, edit)
}

fn run_with(file: &str, tag: &str, naive: bool, edit: impl Fn(String) -> String) -> Vec<CellRow> {
    let dir = std::env::temp_dir().join(format!("actpatch-paths-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(fixtures().join("experiments").join(file)).unwrap();
    let models = std::fs::canonicalize(fixtures()).unwrap();
    let text = edit(text.replace("path = \"../", &format!("path = \"{}/", models.display())));
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    let options = RunOptions {
        out_dir: Some(dir.join("out")),
        quiet: true,
        naive,
        ..RunOptions::default()
    };
    let outcome = run(&path, &options).unwrap();
    let figures = std::fs::read_dir(outcome.run_dir.join("figures")).unwrap();
    let names: Vec<String> = figures
        .map(|f| f.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for label in ["logits", "layer1_q", "q-of-1-0-1-2-at-end"] {
        assert!(
            names.iter().any(|n| n.contains(&format!("path---{label}"))),
            "{file}: a figure of receivers {label} among {names:?}"
        );
    }
    read_cells(&outcome.run_dir.join("cells.parquet")).unwrap()
}

fn check(file: &str, model: &str) {
    let fast = run_file(file, &format!("{model}-fast"), false);
    let naive = run_file(file, &format!("{model}-naive"), true);
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join(model).join("golden_paths.json")).unwrap(),
    )
    .unwrap();
    // Every path cell agrees between the fast and the naive path.
    assert_eq!(fast.len(), naive.len());
    for (f, n) in fast.iter().zip(&naive) {
        let key = |c: &CellRow| {
            (
                c.pair.clone(),
                c.kind.clone(),
                c.receivers.clone(),
                c.direction.clone(),
                c.layer,
                c.head,
                c.position,
            )
        };
        assert_eq!(key(f), key(n));
        assert!(
            (f.normalized_logit_diff - n.normalized_logit_diff).abs() < 1e-4,
            "{file} {:?}: fast {} naive {}",
            key(f),
            f.normalized_logit_diff,
            n.normalized_logit_diff
        );
    }
    // `path` cells against TransformerLens.
    let mut checked = 0;
    for cell in fast.iter().filter(|c| c.kind == "path") {
        let receivers = cell.receivers.as_deref().unwrap();
        let grid = &golden["pairs"][&cell.pair]["grids"][&cell.direction][receivers];
        if grid.is_null() {
            continue; // the `end` receiver set has no golden grid
        }
        let want = grid[cell.layer as usize][cell.head.unwrap() as usize]
            .as_f64()
            .unwrap_or_else(|| panic!("{file}: a cell golden_paths.json leaves null: {cell:?}"));
        assert!(
            (cell.normalized_logit_diff - want).abs() < 1e-4,
            "{file} {} {} {receivers} {}.{}: {} vs golden {want}",
            cell.pair,
            cell.direction,
            cell.layer,
            cell.head.unwrap(),
            cell.normalized_logit_diff
        );
        checked += 1;
    }
    // 2 pairs × 2 directions × (logits: 2 layers × 4 heads + q, k, v: 1 layer × 4 heads).
    assert_eq!(
        checked,
        2 * 2 * (8 + 3 * 4),
        "{file}: every golden value checked"
    );
    // Senders at one position before the final one cannot reach the logits.
    let early: Vec<&CellRow> = (fast.iter())
        .filter(|c| c.kind == "path_by_pos" && c.receivers.as_deref() == Some("logits"))
        .filter(|c| {
            let last = fast
                .iter()
                .filter(|d| d.pair == c.pair && d.direction == c.direction)
                .filter_map(|d| d.position)
                .max();
            c.position < last
        })
        .collect();
    assert!(!early.is_empty());
    for cell in early {
        let unpatched = if cell.direction == "denoising" {
            0.0
        } else {
            1.0
        };
        assert!(
            (cell.normalized_logit_diff - unpatched).abs() < 1e-9,
            "{cell:?}"
        );
    }
}

#[test]
fn path_patching_through_the_runner_equals_transformer_lens_on_gpt2() {
    check("tiny_paths.toml", "tiny-gpt2");
}

#[test]
fn path_patching_through_the_runner_equals_transformer_lens_on_llama() {
    check("tiny_llama_paths.toml", "tiny-llama");
}

/// Path kinds next to node kinds and approximate methods in one run: the path cells
/// are `exact` and equal those of the paths-only run, the node kinds get every method.
#[test]
fn path_kinds_beside_attribution_methods() {
    let alone = run_file("tiny_paths.toml", "mixed-alone", false);
    let mixed = run_file_edited("tiny_paths.toml", "mixed", |text| {
        text.replace(
            "kinds = [\"path\", \"path_by_pos\"]",
            "kinds = [\"path\", \"path_by_pos\", \"head_out\"]\nmethods = [\"exact\", \"atp\"]",
        )
    });
    let paths: Vec<&CellRow> = mixed.iter().filter(|c| c.receivers.is_some()).collect();
    assert_eq!(paths.len(), alone.len());
    for (m, a) in paths.iter().zip(&alone) {
        assert_eq!(m.method, "exact");
        assert_eq!(
            (&m.kind, &m.receivers, m.layer, m.head),
            (&a.kind, &a.receivers, a.layer, a.head)
        );
        assert_eq!(m.patched_logit_diff, a.patched_logit_diff);
    }
    for method in ["exact", "atp"] {
        let head_out = (mixed.iter())
            .filter(|c| c.kind == "head_out" && c.method == method)
            .count();
        // 2 pairs × 2 directions × 2 layers × 4 heads
        assert_eq!(head_out, 32, "{method} head_out cells");
    }
}
