//! Llama 3.x, Qwen2.5, Qwen3, Gemma 2 and Pythia through the runner: each fixture's
//! experiment (`tests/fixtures/experiments/tiny_<family>.toml`, every patch kind the
//! family has, run with `direction = "both"`) gives transformers' denoising and
//! noising grids (resid_pre, attn_out, mlp_out, head_out_by_pos;
//! `tests/fixtures/tiny-<family>/golden.json`) within 1e-4 on the fast path, and the
//! fast path gives the naive path's numbers on every kind in both directions.

use std::collections::HashMap;
use std::path::PathBuf;

use actpatch_report::tables::read_cells;
use actpatch_report::CellRow;
use actpatch_runner::{run, RunOptions};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The fixture experiment with `direction = "both"` and an absolute model path, run
/// into a fresh folder.
fn cells(experiment: &str, naive: bool) -> Vec<CellRow> {
    let dir = std::env::temp_dir().join(format!(
        "actpatch-families-{experiment}-{naive}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let fixtures = std::fs::canonicalize(repo().join("tests/fixtures")).unwrap();
    let text = std::fs::read_to_string(fixtures.join(format!("experiments/{experiment}.toml")))
        .unwrap()
        .replace("[sweep]\n", "[sweep]\ndirection = \"both\"\n")
        .replace("path = \"../", &format!("path = \"{}/", fixtures.display()));
    let file = dir.join(format!("{experiment}.toml"));
    std::fs::write(&file, text).unwrap();
    let options = RunOptions {
        out_dir: Some(dir.join("out")),
        quiet: true,
        naive,
        max_batch_mib: 1, // many small batches
        ..RunOptions::default()
    };
    let outcome = run(&file, &options).unwrap();
    let cells = read_cells(&outcome.run_dir.join("cells.parquet")).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    cells
}

type CellKey = (String, String, String, u32, Option<u32>, Option<u32>);

fn key(c: &CellRow) -> CellKey {
    let (pair, direction, kind) = (c.pair.clone(), c.direction.clone(), c.kind.clone());
    (pair, direction, kind, c.layer, c.head, c.position)
}

/// How many numbers the golden grids of both directions hold.
fn golden_cells(golden: &Value) -> usize {
    fn count(v: &Value) -> usize {
        match v {
            Value::Array(items) => items.iter().map(count).sum(),
            Value::Object(map) => map.values().map(count).sum(),
            _ => 1,
        }
    }
    let pairs = golden["pairs"].as_object().unwrap().values();
    pairs
        .map(|p| count(&p["grids"]) + count(&p["grids_noising"]))
        .sum()
}

fn check(fixture: &str, experiment: &str, kinds: usize) {
    let text =
        std::fs::read_to_string(repo().join(format!("tests/fixtures/{fixture}/golden.json")))
            .unwrap();
    let golden: Value = serde_json::from_str(&text).unwrap();
    let fast = cells(experiment, false);
    let mut checked = 0;
    let mut worst = 0.0f64;
    for cell in &fast {
        let grids = match cell.direction.as_str() {
            "denoising" => "grids",
            _ => "grids_noising",
        };
        let grid = &golden["pairs"][&cell.pair][grids];
        let (layer, pos) = (cell.layer as usize, cell.position.map(|p| p as usize));
        let want = match (cell.kind.as_str(), pos, cell.head) {
            ("resid_pre" | "attn_out" | "mlp_out", Some(p), None) => {
                grid[&cell.kind][layer][p].as_f64()
            }
            ("head_out_by_pos", Some(p), Some(h)) => {
                grid["head_z_by_pos"][layer][p][h as usize].as_f64()
            }
            _ => None,
        };
        if let Some(want) = want {
            let dev = (cell.normalized_logit_diff - want).abs();
            assert!(
                dev < 1e-4,
                "{fixture} {cell:?}: {} vs golden {want}",
                cell.normalized_logit_diff
            );
            worst = worst.max(dev);
            checked += 1;
        }
    }
    assert_eq!(
        checked,
        golden_cells(&golden),
        "{fixture}: every golden cell checked"
    );
    let seen: std::collections::HashSet<(&str, &str)> = fast
        .iter()
        .map(|c| (c.direction.as_str(), c.kind.as_str()))
        .collect();
    assert_eq!(seen.len(), 2 * kinds, "{fixture}: {seen:?}");

    let naive: HashMap<_, f64> = cells(experiment, true)
        .iter()
        .map(|c| (key(c), c.normalized_logit_diff))
        .collect();
    assert_eq!(naive.len(), fast.len(), "{fixture}: cell counts");
    for cell in &fast {
        let want = naive[&key(cell)];
        assert!(
            (cell.normalized_logit_diff - want).abs() < 1e-4,
            "{fixture} fast {cell:?} vs naive {want}"
        );
    }
    println!(
        "{fixture}: {checked} golden cells, largest deviation {worst:.2e}; {} cells fast = naive",
        fast.len()
    );
}

#[test]
fn llama3_through_the_runner() {
    check("tiny-llama3", "tiny_llama3", 8);
}

#[test]
fn qwen2_through_the_runner() {
    check("tiny-qwen2", "tiny_qwen2", 8);
}

#[test]
fn qwen3_through_the_runner() {
    check("tiny-qwen3", "tiny_qwen3", 8);
}

#[test]
fn gemma2_through_the_runner() {
    check("tiny-gemma2", "tiny_gemma2", 8);
}

#[test]
fn pythia_through_the_runner() {
    check("tiny-pythia", "tiny_pythia", 7);
}

#[test]
fn resid_mid_on_parallel_pythia_is_refused_before_the_run() {
    let dir = std::env::temp_dir().join(format!("actpatch-families-mid-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(repo().join("tests/fixtures/experiments/tiny_pythia.toml"))
        .unwrap()
        .replace(
            "path = \"../tiny-pythia\"",
            &format!("path = {:?}", repo().join("tests/fixtures/tiny-pythia")),
        )
        .replace(
            "kinds = [\"resid_pre\"",
            "kinds = [\"resid_mid\", \"resid_pre\"",
        );
    let file = dir.join("mid.toml");
    std::fs::write(&file, text).unwrap();
    let out = dir.join("results");
    let options = RunOptions {
        out_dir: Some(out.clone()),
        quiet: true,
        ..RunOptions::default()
    };
    let Err(err) = run(&file, &options) else {
        panic!("resid_mid on parallel Pythia must be refused");
    };
    let msg = err.to_string();
    assert_eq!(err.exit_code(), 2, "{msg}");
    assert!(
        msg.contains("resid_mid") && msg.contains("gpt_neox") && msg.contains("resid_post"),
        "{msg}"
    );
    let written = out.exists() && std::fs::read_dir(&out).unwrap().next().is_some();
    assert!(!written, "no run folder may be created");
    std::fs::remove_dir_all(&dir).ok();
}
