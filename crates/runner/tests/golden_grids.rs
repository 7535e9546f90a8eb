//! Every patch kind's grid in both directions, through the runner (`direction =
//! "both"`, the default fast path and `--naive`), against TransformerLens 2.15:
//! `exact_denoising` and `exact_noising` of `golden_extra.json`, within 1e-4 — on the
//! tiny GPT-2, the tiny Llama, and the tiny Llama loaded from a GGUF file.

use crate::tiny_gguf;

use std::path::PathBuf;

use actpatch_report::tables::read_cells;
use actpatch_report::CellRow;
use actpatch_runner::{run, RunOptions};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// The fixture experiment `file` with `direction = "both"` and an absolute model path,
/// run into a fresh folder (with `options` as given).
fn run_both(file: &str, tag: &str, options: RunOptions) -> Vec<CellRow> {
    let dir = std::env::temp_dir().join(format!("actpatch-golden-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let experiments = fixtures().join("experiments");
    let text = std::fs::read_to_string(experiments.join(file)).unwrap();
    let models = std::fs::canonicalize(fixtures()).unwrap();
    let text = text
        .replace("[sweep]\n", "[sweep]\ndirection = \"both\"\n")
        .replace("path = \"../", &format!("path = \"{}/", models.display()));
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    let options = RunOptions {
        out_dir: Some(dir.join("out")),
        quiet: true,
        ..options
    };
    let outcome = run(&path, &options).unwrap();
    read_cells(&outcome.run_dir.join("cells.parquet")).unwrap()
}

fn golden(model: &str) -> Value {
    let path = fixtures().join(model).join("golden_extra.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The golden grid and index of a cell, as TransformerLens's `patching` returns them.
fn golden_index(cell: &CellRow) -> (&'static str, Vec<usize>) {
    let layer = cell.layer as usize;
    let pos = || cell.position.unwrap() as usize;
    let head = || cell.head.unwrap() as usize;
    match cell.kind.as_str() {
        "resid_pre" => ("resid_pre", vec![layer, pos()]),
        "resid_mid" => ("resid_mid", vec![layer, pos()]),
        "resid_post" => ("resid_post", vec![layer, pos()]),
        "attn_out" => ("attn_out", vec![layer, pos()]),
        "mlp_out" => ("mlp_out", vec![layer, pos()]),
        "head_out_by_pos" => ("head_z_by_pos", vec![layer, pos(), head()]),
        "head_out" => ("head_z_all_pos", vec![layer, head()]),
        "head_pattern" => ("head_pattern_all_pos", vec![layer, head()]),
        other => panic!("no golden grid for kind {other}"),
    }
}

/// Every cell equals its golden value; returns how many cells were checked per
/// (direction, kind).
fn assert_golden(
    cells: &[CellRow],
    model: &str,
) -> std::collections::BTreeMap<(String, String), usize> {
    let golden = golden(model);
    let mut checked = std::collections::BTreeMap::new();
    for cell in cells {
        let (grid, index) = golden_index(cell);
        let family = format!("exact_{}", cell.direction);
        let value = index.iter().fold(
            &golden["pairs"][&cell.pair]["grids"][&family][grid],
            |v, i| &v[*i],
        );
        let want = value.as_f64().unwrap_or_else(|| {
            panic!("{model} {family} {grid} {index:?} is not in golden_extra.json")
        });
        let got = cell.normalized_logit_diff;
        assert!(
            (got - want).abs() < 1e-4,
            "{model} {} {} {} {index:?}: {got} vs golden {want}",
            cell.pair,
            cell.direction,
            cell.kind
        );
        *checked
            .entry((cell.direction.clone(), cell.kind.clone()))
            .or_insert(0) += 1;
    }
    checked
}

/// Cells per pair of `n_pos` tokens in a 2-layer, 4-head model: 5 layer × position
/// kinds, head × position, and 2 head kinds.
fn cells_per_pair(n_pos: usize) -> usize {
    5 * 2 * n_pos + 2 * 4 * n_pos + 2 * 2 * 4
}

fn assert_every_kind(checked: &std::collections::BTreeMap<(String, String), usize>, total: usize) {
    assert_eq!(
        checked.len(),
        2 * 8,
        "every direction and kind: {checked:?}"
    );
    assert_eq!(checked.values().sum::<usize>(), total);
}

#[test]
fn gpt2_grids_match_golden_in_both_directions() {
    let cells = run_both("tiny.toml", "gpt2", RunOptions::default());
    let checked = assert_golden(&cells, "tiny-gpt2");
    assert_every_kind(&checked, 2 * (cells_per_pair(8) + cells_per_pair(6)));
}

#[test]
fn gpt2_grids_match_golden_on_the_naive_path() {
    let options = RunOptions {
        naive: true,
        ..RunOptions::default()
    };
    let cells = run_both("tiny.toml", "gpt2-naive", options);
    assert_every_kind(
        &assert_golden(&cells, "tiny-gpt2"),
        2 * (cells_per_pair(8) + cells_per_pair(6)),
    );
}

#[test]
fn llama_grids_match_golden_in_both_directions() {
    let cells = run_both("tiny_llama.toml", "llama", RunOptions::default());
    let checked = assert_golden(&cells, "tiny-llama");
    assert_every_kind(&checked, 2 * (cells_per_pair(7) + cells_per_pair(6)));
}

#[test]
fn gguf_llama_grids_match_golden_in_both_directions() {
    let gguf = tiny_gguf::write_fixture_gguf(&tiny_gguf::TINY_LLAMA, "runner-golden", |_| {});
    let options = RunOptions {
        model_path: Some(gguf.clone()),
        ..RunOptions::default()
    };
    let cells = run_both("tiny_llama.toml", "gguf", options);
    let checked = assert_golden(&cells, "tiny-llama");
    assert_every_kind(&checked, 2 * (cells_per_pair(7) + cells_per_pair(6)));
    if let Some(dir) = gguf.parent() {
        std::fs::remove_dir_all(dir).ok();
    }
}
