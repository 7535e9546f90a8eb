//! Every SmolLM2 concept file end to end (issue 11): at least 80 % of each concept's
//! pairs pass validation on SmolLM2-135M-Instruct, and the concept table exists with
//! intervals that make sense. Swept with `resid_pre` only (the files also sweep
//! `attn_out` and `mlp_out`) to keep `just test-real` within minutes; the last layer's
//! residual stream at the final position carries everything the answer reads, so its
//! concept cell must be near 1 with an interval that excludes 0.
//!
//! Needs the GGUF (`just fetch-smollm2`): `cargo test -p actpatch-runner --test
//! real_concepts -- --ignored`.

use std::path::PathBuf;

use actpatch_report::tables::{read_baselines, read_cells, read_concepts};
use actpatch_runner::{check, run, RunOptions};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn gguf_path() -> PathBuf {
    std::env::var_os("ACTPATCH_SMOLLM2_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("models/SmolLM2-135M-Instruct.Q4_1.gguf"))
}

/// The shipped file with `kinds = ["resid_pre"]`, its data path made absolute.
fn resid_pre_copy(concept: &str, dir: &std::path::Path) -> PathBuf {
    let text = std::fs::read_to_string(repo().join(format!("experiments/smollm2/{concept}.toml")))
        .unwrap();
    let data = std::fs::canonicalize(repo().join("experiments/data")).unwrap();
    let kinds = text.lines().find(|l| l.starts_with("kinds = ")).unwrap();
    let text = text.replace(kinds, "kinds = [\"resid_pre\"]").replace(
        "path = \"../data/",
        &format!("path = \"{}/", data.display()),
    );
    let path = dir.join(format!("{concept}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
#[ignore = "needs models/SmolLM2-135M-Instruct.Q4_1.gguf (just fetch-smollm2)"]
fn every_smollm2_concept_file_runs_with_intervals() {
    let concepts = [
        "landmarks",
        "country_capitals",
        "gender_bias",
        "nobel_prize",
        "number_agreement",
        "temporal_consistency",
    ];
    let dir = std::env::temp_dir().join(format!("actpatch-real-concepts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for concept in concepts {
        let started = std::time::Instant::now();
        let options = RunOptions {
            out_dir: Some(dir.join("runs")),
            model_path: Some(gguf_path()),
            quiet: true,
            ..RunOptions::default()
        };
        let outcome = run(&resid_pre_copy(concept, &dir), &options).unwrap();
        let baselines = read_baselines(&outcome.run_dir.join("baselines.parquet")).unwrap();
        let of_concept: Vec<_> = baselines.iter().filter(|b| !b.reference).collect();
        let passed = of_concept.iter().filter(|b| b.passed).count();
        assert!(
            of_concept.len() >= 24,
            "{concept}: {} pairs",
            of_concept.len()
        );
        assert!(
            5 * passed >= 4 * of_concept.len(),
            "{concept}: {passed} of {} pass",
            of_concept.len()
        );

        let rows = read_concepts(&outcome.run_dir.join("concepts.parquet")).unwrap();
        assert!(rows
            .iter()
            .all(|r| r.ci_low <= r.mean + 1e-12 && r.mean <= r.ci_high + 1e-12));
        let last_layer = rows.iter().map(|r| r.layer).max().unwrap();
        let end = rows
            .iter()
            .find(|r| r.layer == last_layer && r.role.as_deref() == Some("end"))
            .unwrap();
        assert_eq!(
            end.n_pairs as usize, passed,
            "{concept}: every passing pair has `end`"
        );
        assert!(end.mean > 0.5 && end.ci_low > 0.0, "{concept}: {end:?}");
        println!(
            "{concept}: {passed}/{} pass; last layer at `end` {:.3} [{:.3}, {:.3}]; {:.0} s",
            of_concept.len(),
            end.mean,
            end.ci_low,
            end.ci_high,
            started.elapsed().as_secs_f64()
        );
    }
}

/// `experiments/smollm2/facts.toml` (ROME's causal tracing): every fact of its data file
/// is SmolLM2's top-1 answer and depends on its subject (all pass validation); then a
/// trace of its first three facts, hidden states only (`resid_post`), 5 draws, to keep
/// `just test-real` short: the concept table exists with intervals, and the identities
/// hold on the real model (the last layer's output at the final position is the clean
/// run, 1; a position before the subject never sees the noise, 0).
#[test]
#[ignore = "needs models/SmolLM2-135M-Instruct.Q4_1.gguf (just fetch-smollm2)"]
fn the_smollm2_facts_file_traces_with_intervals() {
    let started = std::time::Instant::now();
    let dir = std::env::temp_dir().join(format!("actpatch-real-facts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let options = RunOptions {
        out_dir: Some(dir.join("runs")),
        model_path: Some(gguf_path()),
        quiet: true,
        ..RunOptions::default()
    };
    let shipped = repo().join("experiments/smollm2/facts.toml");
    let (passed, failed) = check(&shipped, &options).unwrap();
    assert_eq!((passed, failed), (42, 0));

    let text = std::fs::read_to_string(&shipped).unwrap();
    let data = std::fs::canonicalize(repo().join("experiments/data")).unwrap();
    let text = text
        .replace(
            "kinds = [\"resid_post\", \"mlp_out\", \"attn_out\"]",
            "kinds = [\"resid_post\"]",
        )
        .replace("samples = 10", "samples = 5")
        .replace(
            "path = \"../data/facts.smollm2.csv\"",
            &format!("path = \"{}/facts.smollm2.csv\"\nlimit = 3", data.display()),
        );
    assert!(
        text.contains("limit = 3") && text.contains("samples = 5"),
        "{text}"
    );
    let path = dir.join("facts.toml");
    std::fs::write(&path, text).unwrap();
    let outcome = run(&path, &options).unwrap();
    assert_eq!((outcome.passed, outcome.failed), (3, 0));

    let rows = read_concepts(&outcome.run_dir.join("concepts.parquet")).unwrap();
    assert!(rows
        .iter()
        .all(|r| r.n_pairs == 3 && r.ci_low <= r.mean + 1e-12 && r.mean <= r.ci_high + 1e-12));
    let cell = |layer: u32, role: &str| {
        rows.iter()
            .find(|r| r.layer == layer && r.role.as_deref() == Some(role))
            .unwrap_or_else(|| panic!("no {role} at layer {layer}"))
    };
    let end = cell(29, "end");
    assert!(
        (end.mean - 1.0).abs() < 1e-6 && (end.ci_low - 1.0).abs() < 1e-6,
        "{end:?}"
    );
    let bos = cell(0, "BOS");
    assert!(bos.mean.abs() < 1e-9, "{bos:?}");
    // The early site: somewhere on the subject in the first layers the hidden state
    // restores a clear part of the answer (ROME's first site).
    let early = (rows.iter())
        .filter(|r| r.layer < 10 && r.role.as_deref().is_some_and(|x| x.starts_with("subject.")))
        .map(|r| r.mean)
        .fold(f64::MIN, f64::max);
    assert!(
        early > 0.2,
        "subject cells of layers 0–9 reach only {early}"
    );

    let cells = read_cells(&outcome.run_dir.join("cells.parquet")).unwrap();
    assert!(cells
        .iter()
        .all(|c| c.patched_logit_diff.is_none() && c.prob_correct.is_some()));
    println!(
        "facts: 42/42 pass; trace of 3 facts: end {:.3}, best early subject cell {early:.3}; {:.0} s",
        end.mean,
        started.elapsed().as_secs_f64()
    );
}
