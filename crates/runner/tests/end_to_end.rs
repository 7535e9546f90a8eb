//! End to end on the tiny GPT-2 fixture: the tables read back with the documented
//! columns, the figures decode, the report names every pair, `check` reports each pair.
//! (Every grid against TransformerLens is in `golden_grids.rs`.)

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use actpatch_report::tables::{read_cells, read_parquet};
use actpatch_report::CellRow;
use actpatch_runner::{run, RunOptions, RunOutcome};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One run of the fixture experiment, shared by the tests of this file.
fn fixture_run() -> &'static (RunOutcome, Vec<CellRow>) {
    static RUN: OnceLock<(RunOutcome, Vec<CellRow>)> = OnceLock::new();
    RUN.get_or_init(|| {
        let out = std::env::temp_dir().join(format!("actpatch-e2e-{}", std::process::id()));
        let options = RunOptions {
            out_dir: Some(out),
            quiet: true,
            max_batch_mib: 1, // many small batches: exercises batching
            ..RunOptions::default()
        };
        let outcome = run(
            &repo().join("tests/fixtures/experiments/tiny.toml"),
            &options,
        )
        .unwrap();
        let cells = read_cells(&outcome.run_dir.join("cells.parquet")).unwrap();
        (outcome, cells)
    })
}

#[test]
fn resid_post_of_a_layer_is_resid_pre_of_the_next() {
    let (_, cells) = fixture_run();
    let find = |kind: &str, pair: &str, layer: u32, pos: u32| {
        cells
            .iter()
            .find(|c| {
                c.kind == kind && c.pair == pair && c.layer == layer && c.position == Some(pos)
            })
            .unwrap()
            .normalized_logit_diff
    };
    for pair in ["landmarks", "capital"] {
        for pos in 0..6 {
            let post = find("resid_post", pair, 0, pos);
            let pre = find("resid_pre", pair, 1, pos);
            assert!(
                (post - pre).abs() < 1e-5,
                "{pair} pos {pos}: {post} vs {pre}"
            );
        }
        // The last layer's resid_post at every position is the clean run at the last one.
        let n = if pair == "landmarks" { 8 } else { 6 };
        assert!((find("resid_post", pair, 1, n - 1) - 1.0).abs() < 1e-4);
    }
}

#[test]
fn tables_have_the_documented_columns_and_values() {
    let (outcome, cells) = fixture_run();
    // 2 layers: resid_* / attn_out / mlp_out 2×pos each, head_out_by_pos 2×4×pos,
    // head_out and head_pattern 2×4; pos = 8 and 6.
    let per_pair = |pos: usize| 5 * 2 * pos + 2 * 4 * pos + 2 * 8;
    assert_eq!(cells.len(), per_pair(8) + per_pair(6));
    assert_eq!(outcome.cells, cells.len());
    let c = cells
        .iter()
        .find(|c| c.kind == "resid_pre" && c.pair == "landmarks" && c.position == Some(2))
        .unwrap();
    assert_eq!(c.token.as_deref(), Some(" Col"));
    assert_eq!(c.concept, "landmarks");
    assert_eq!(c.direction, "denoising");
    assert_eq!(c.experiment, "tiny");
    assert!(c.head.is_none());
    let h = cells.iter().find(|c| c.kind == "head_out").unwrap();
    assert!(h.position.is_none() && h.head.is_some() && h.token.is_none());
    for c in cells {
        let (kl, p) = (c.kl_div.unwrap(), c.prob_correct.unwrap());
        assert!(c.normalized_logit_diff.is_finite() && kl >= 0.0 && (0.0..=1.0).contains(&p));
    }

    let baselines = read_parquet(&outcome.run_dir.join("baselines.parquet")).unwrap();
    assert_eq!(baselines.height(), 2);
    let names: Vec<&str> = baselines
        .get_column_names()
        .iter()
        .map(|n| n.as_str())
        .collect();
    for col in [
        "pair",
        "clean_tokens",
        "clean_logit_diff",
        "corrupted_logit_diff",
        "passed",
        "reasons",
    ] {
        assert!(names.contains(&col), "baselines has no {col}: {names:?}");
    }
    let clean_ld = baselines
        .column("clean_logit_diff")
        .unwrap()
        .f64()
        .unwrap()
        .get(0)
        .unwrap();
    assert!((clean_ld - -1.5641496).abs() < 1e-4, "{clean_ld}");

    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(outcome.run_dir.join("manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["status"], "complete");
    assert_eq!(manifest["cells"], cells.len());
    assert_eq!(manifest["prepend_bos"], true);
    assert_eq!(manifest["experiment_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(manifest["directions"], serde_json::json!(["denoising"]));
    // Built and run inside this repository: the tool's build commit and the experiment
    // file's repository commit are both recorded (both this checkout's HEAD here).
    let head = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(repo())
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    assert_eq!(manifest["experiment_repository"]["commit"], head.as_str());
    let tool_commit = manifest["tool"]["commit"].as_str().unwrap();
    assert_eq!(tool_commit.len(), 40, "{tool_commit}");
}

#[test]
fn figures_decode_and_the_report_names_every_pair() {
    let (outcome, _) = fixture_run();
    let figures = outcome.run_dir.join("figures");
    let png = figures.join("landmarks_denoising_resid_pre.png");
    let image = image::open(&png).unwrap();
    assert!(image.width() > 200 && image.height() > 100);
    let svg =
        std::fs::read_to_string(figures.join("capital_denoising_head_out_by_pos.svg")).unwrap();
    assert!(svg.trim_start().starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    let report = std::fs::read_to_string(outcome.run_dir.join("report.md")).unwrap();
    for needle in [
        "landmarks",
        "capital",
        "figures/landmarks_denoising_resid_pre.png",
        "Strongest 10 cells",
        "## Baselines",
    ] {
        assert!(report.contains(needle), "report.md lacks {needle}");
    }
    // Random weights: the landmarks clean LD is negative, so the pair fails validation
    // (recorded) but is swept anyway (`enabled = false`).
    assert!(report.contains("failed, swept anyway"), "{report}");
    assert!(report.contains("≤ 0"));
}

fn write_experiment(dir: &Path, name: &str, text: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_rejects_a_bad_file_with_its_line() {
    let dir = std::env::temp_dir().join(format!("actpatch-bad-{}", std::process::id()));
    let path = write_experiment(
        &dir,
        "bad.toml",
        "[experiment]\nname = \"x\"\n\n[model]\npath = \"m\"\n\n[[pairs]]\nconcept = \"c\"\nclean = \"a\"\ncorupted = \"b\"\ncorrect = \" x\"\nincorrect = \" y\"\n",
    );
    let bin = env!("CARGO_BIN_EXE_actpatch");
    let out = std::process::Command::new(bin)
        .args(["check"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml") && stderr.contains("line 10") && stderr.contains("corupted"),
        "{stderr}"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn check_passes_the_fixture_and_fails_when_no_pair_passes() {
    let bin = env!("CARGO_BIN_EXE_actpatch");
    let fixture = repo().join("tests/fixtures/experiments/tiny.toml");
    let out = std::process::Command::new(bin)
        .arg("check")
        .arg(&fixture)
        .output()
        .unwrap();
    // Random weights: landmarks fails (negative clean LD); capital too (clean −0.28).
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("FAIL landmarks") && stderr.contains("-1.564"),
        "{stderr}"
    );
}
