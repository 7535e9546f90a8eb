//! Gaussian-noise corruption through experiment files (`tests/fixtures/experiments/
//! gaussian.toml`, the tiny GPT-2 fixture): the tables (what Gaussian pairs hold, the
//! normalization against their own baselines), the manifest's noise (ν = 3 × the
//! standard deviation of the embedding matrix, computed here from the safetensors
//! file), seeded reproducibility, the fast trace against `--naive`, figures, the
//! concept table, `--resume`, and the refusals (exit 2, nothing written).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use actpatch_report::tables::{read_baselines, read_cells, read_concepts};
use actpatch_report::{BaselineRow, CellRow};
use actpatch_runner::experiment::Experiment;
use actpatch_runner::{run, RunOptions, RunOutcome};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture() -> PathBuf {
    repo().join("tests/fixtures/experiments/gaussian.toml")
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("actpatch-gaussian-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run_into(file: &Path, out: &Path, naive: bool) -> RunOutcome {
    let options = RunOptions {
        out_dir: Some(out.to_path_buf()),
        quiet: true,
        naive,
        ..RunOptions::default()
    };
    run(file, &options).unwrap()
}

struct Tables {
    run_dir: PathBuf,
    cells: Vec<CellRow>,
    baselines: Vec<BaselineRow>,
}

fn tables(outcome: &RunOutcome) -> Tables {
    let dir = &outcome.run_dir;
    Tables {
        run_dir: dir.clone(),
        cells: read_cells(&dir.join("cells.parquet")).unwrap(),
        baselines: read_baselines(&dir.join("baselines.parquet")).unwrap(),
    }
}

fn fixture_run() -> &'static Tables {
    static RUN: OnceLock<Tables> = OnceLock::new();
    RUN.get_or_init(|| tables(&run_into(&fixture(), &scratch("main"), false)))
}

/// One fact of the fixture (`eiffel`), traced with `seed`.
fn with_seed(seed: u64, dir: &Path) -> PathBuf {
    let model = std::fs::canonicalize(repo().join("tests/fixtures/tiny-gpt2")).unwrap();
    let text = format!(
        r#"[experiment]
name = "seed{seed}"
[model]
path = {model:?}
[sweep]
kinds = ["resid_pre", "mlp_out"]
[validate]
require_clean_positive = false
[corruption]
kind = "gaussian"
samples = 4
seed = {seed}
window = 2
[[pairs]]
name = "eiffel"
concept = "facts"
clean = "The Eiffel Tower is located in the city of"
correct = " Paris"
subject = "The Eiffel Tower"
"#,
        model = model.display().to_string()
    );
    let file = dir.join(format!("seed{seed}.toml"));
    std::fs::write(&file, text).unwrap();
    file
}

/// The population standard deviation of `transformer.wte.weight`, from the file.
fn wte_std() -> f64 {
    let tensors = candle_core::safetensors::load(
        repo().join("tests/fixtures/tiny-gpt2/model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let values: Vec<f32> = tensors["transformer.wte.weight"]
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let n = values.len() as f64;
    let mean = values.iter().map(|v| *v as f64).sum::<f64>() / n;
    (values
        .iter()
        .map(|v| (*v as f64 - mean).powi(2))
        .sum::<f64>()
        / n)
        .sqrt()
}

#[test]
fn gaussian_pairs_fill_the_tables_as_documented() {
    let run = fixture_run();
    let baseline = |pair: &str| run.baselines.iter().find(|b| b.pair == pair).unwrap();
    // Gaussian pairs: one answer, no corrupted prompt, no logit differences; the
    // metric's baselines instead; the corrupted run has the clean tokens.
    let eiffel = baseline("eiffel");
    assert_eq!(eiffel.corruption.as_deref(), Some("gaussian"));
    assert_eq!(eiffel.metric.as_deref(), Some("prob"));
    assert_eq!(
        (eiffel.corrupted.as_str(), eiffel.incorrect.as_str()),
        ("", "")
    );
    assert_eq!(eiffel.subject.as_deref(), Some("The Eiffel Tower"));
    assert_eq!(eiffel.clean_tokens, eiffel.corrupted_tokens);
    assert_eq!(
        (eiffel.clean_logit_diff, eiffel.corrupted_logit_diff),
        (None, None)
    );
    let (clean, corrupted) = (
        eiffel.clean_metric.unwrap(),
        eiffel.corrupted_metric.unwrap(),
    );
    assert!(clean > corrupted && eiffel.passed, "{eiffel:?}");
    // A failing Gaussian pair says why.
    let france = baseline("france");
    assert!(
        !france.passed && france.reasons[0].contains("does not lower"),
        "{france:?}"
    );
    // The prompt pair next to them: its metric is the logit difference.
    let prompt = baseline("landmarks");
    assert_eq!(prompt.corruption.as_deref(), Some("prompt"));
    assert_eq!(prompt.metric.as_deref(), Some("logit_diff"));
    assert_eq!(prompt.clean_metric, prompt.clean_logit_diff);

    // Gaussian cells: logit columns null; normalized = (p − p_noised) / (p_clean − p_noised).
    let mut n_gaussian = 0;
    for cell in &run.cells {
        let b = baseline(&cell.pair);
        if b.corruption.as_deref() != Some("gaussian") {
            assert!(cell.patched_logit_diff.is_some() && cell.logprob_diff.is_some());
            continue;
        }
        n_gaussian += 1;
        assert_eq!((cell.patched_logit_diff, cell.logprob_diff), (None, None));
        let (clean, corrupted) = (b.clean_metric.unwrap(), b.corrupted_metric.unwrap());
        let p = cell.prob_correct.unwrap();
        let want = (p - corrupted) / (clean - corrupted);
        assert!(
            (cell.normalized_logit_diff - want).abs() < 1e-9 * want.abs().max(1.0),
            "{cell:?}"
        );
        assert!(cell.kl_div.unwrap() >= 0.0);
    }
    // 3 passing Gaussian pairs (7 + 12 + 12 tokens), 3 kinds, 2 layers, 2 directions.
    assert_eq!(n_gaussian, (7 + 12 + 12) * 3 * 2 * 2);
}

#[test]
fn the_manifest_records_the_noise() {
    let run = fixture_run();
    let text = std::fs::read_to_string(run.run_dir.join("manifest.json")).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
    let corruption = &manifest["corruption"];
    let std = wte_std();
    let recorded = corruption["embedding_std"].as_f64().unwrap();
    assert!((recorded - std).abs() < 1e-9, "{recorded} vs {std}");
    let noise = corruption["noise"].as_f64().unwrap();
    assert!((noise - 3.0 * std).abs() < 1e-9, "ν {noise} vs 3 × {std}");
    assert_eq!(corruption["samples"], 4);
    assert_eq!(corruption["seed"], 7);
    assert_eq!(corruption["window"], 2);
    assert_eq!(corruption["noise_multiplier"], 3.0);
    assert_eq!(corruption["metric"], "prob");
}

#[test]
fn concepts_figures_and_report_cover_the_traces() {
    let run = fixture_run();
    let concepts = read_concepts(&run.run_dir.join("concepts.parquet")).unwrap();
    let facts: Vec<_> = concepts.iter().filter(|c| c.concept == "facts").collect();
    for (direction, kind) in [("denoising", "mlp_out"), ("noising", "attn_out")] {
        let roles: Vec<&str> = (facts.iter())
            .filter(|c| c.direction == direction && c.kind == kind)
            .filter_map(|c| c.role.as_deref())
            .collect();
        for role in ["subject.first", "subject.last", "after.first", "end"] {
            assert!(roles.contains(&role), "{direction} {kind}: {roles:?}");
        }
    }
    assert!(facts
        .iter()
        .all(|c| c.n_pairs <= 3 && c.ci_low <= c.mean + 1e-12 && c.mean <= c.ci_high + 1e-12));
    // Noising a position before the subject changes nothing: the clean run, 1 exactly.
    let bos = (facts.iter())
        .find(|c| c.direction == "noising" && c.role.as_deref() == Some("BOS"))
        .unwrap();
    assert!((bos.mean - 1.0).abs() < 1e-9, "{bos:?}");
    for figure in [
        "concept_facts_denoising_mlp_out.png",
        "eiffel_denoising_attn_out.png",
        "mozart_noising_resid_pre.png",
    ] {
        assert!(
            run.run_dir.join("figures").join(figure).is_file(),
            "{figure}"
        );
    }
    let report = std::fs::read_to_string(run.run_dir.join("report.md")).unwrap();
    assert!(
        report.contains("`The Eiffel Tower` noised"),
        "baselines table"
    );
    assert!(
        report.contains("subject noised, p(answer), window 2"),
        "figure titles"
    );
}

/// The same seed gives the same tables; another seed other draws.
#[test]
fn runs_are_reproducible_for_a_seed() {
    let dir = scratch("seeds");
    let values = |seed: u64, tag: &str| -> Vec<(String, f64, Option<f64>)> {
        let outcome = run_into(&with_seed(seed, &dir), &dir.join(tag), false);
        let mut cells = tables(&outcome).cells;
        cells.retain(|c| c.pair == "eiffel");
        (cells.into_iter())
            .map(|c| {
                (
                    format!("{} {} {} {:?}", c.direction, c.kind, c.layer, c.position),
                    c.normalized_logit_diff,
                    c.prob_correct,
                )
            })
            .collect()
    };
    let (a, b, other) = (values(7, "a"), values(7, "b"), values(8, "c"));
    assert!(!a.is_empty());
    assert_eq!(a, b);
    assert_eq!(a.len(), other.len());
    assert_ne!(a, other);
}

/// The fast trace's tables equal `--naive`'s (one full pass per cell and draw).
#[test]
fn fast_trace_equals_naive_through_the_runner() {
    let naive = tables(&run_into(&fixture(), &scratch("naive"), true));
    let fast = fixture_run();
    assert_eq!(naive.cells.len(), fast.cells.len());
    for (n, f) in naive.cells.iter().zip(&fast.cells) {
        assert_eq!(
            (&n.pair, &n.kind, &n.direction, n.layer, n.position),
            (&f.pair, &f.kind, &f.direction, f.layer, f.position)
        );
        let (pn, pf) = (n.prob_correct.unwrap(), f.prob_correct.unwrap());
        assert!(
            (pn - pf).abs() <= 1e-5 * pn.abs().max(1e-9) + 1e-12,
            "{n:?} vs {f:?}"
        );
    }
}

fn actpatch() -> Command {
    Command::new(env!("CARGO_BIN_EXE_actpatch"))
}

/// A run that fails after its first pair resumes to the uninterrupted run's tables.
#[test]
fn an_interrupted_trace_resumes_to_the_same_tables() {
    let dir = scratch("resume");
    let out = dir.join("failed");
    let failed = actpatch()
        .arg("run")
        .arg(fixture())
        .arg("--out")
        .arg(&out)
        .env("ACTPATCH_FAIL_AFTER_PAIR", "2")
        .output()
        .unwrap();
    assert_eq!(
        failed.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&failed.stderr)
    );
    let run_dir = std::fs::read_dir(&out)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let resumed = actpatch()
        .arg("run")
        .arg("--resume")
        .arg(&run_dir)
        .output()
        .unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let resumed = read_cells(&run_dir.join("cells.parquet")).unwrap();
    let whole = &fixture_run().cells;
    assert_eq!(resumed.len(), whole.len());
    for (r, w) in resumed.iter().zip(whole) {
        assert_eq!(
            (
                &r.pair,
                r.layer,
                r.position,
                r.normalized_logit_diff,
                r.prob_correct
            ),
            (
                &w.pair,
                w.layer,
                w.position,
                w.normalized_logit_diff,
                w.prob_correct
            )
        );
    }
    let a = read_concepts(&run_dir.join("concepts.parquet")).unwrap();
    let b = read_concepts(&fixture_run().run_dir.join("concepts.parquet")).unwrap();
    let strip = |rows: Vec<actpatch_report::ConceptRow>| {
        rows.into_iter()
            .map(|mut r| {
                r.run_id.clear();
                r
            })
            .collect::<Vec<_>>()
    };
    let (a, b) = (strip(a), strip(b));
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((x.mean, x.ci_low, x.ci_high), (y.mean, y.ci_low, y.ci_high));
        assert!((x.ratio_of_sums - y.ratio_of_sums).abs() < 1e-9 * y.ratio_of_sums.abs().max(1.0));
    }
}

/// `--shard` refuses a file with Gaussian pairs before anything is written.
#[test]
fn sharding_is_refused() {
    let dir = scratch("shard");
    let out = dir.join("out");
    let said = actpatch()
        .arg("run")
        .arg(fixture())
        .args(["--out"])
        .arg(&out)
        .args(["--shard", "1/2", "--run-id", "R"])
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("JOB_COMPLETION_INDEX")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&said.stderr);
    assert_eq!(said.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("Gaussian noise") && stderr.contains("without --shard"),
        "{stderr}"
    );
    assert!(!out.join("R").exists());
}

/// A Gaussian experiment file's mistakes, each refused at load with what, where and
/// how to fix it.
#[test]
fn bad_gaussian_files_are_refused() {
    let base = r#"[experiment]
name = "g"
[model]
path = "m"
[sweep]
kinds = ["resid_pre", "mlp_out"]
[corruption]
kind = "gaussian"
[[pairs]]
name = "fact"
concept = "facts"
clean = "The Eiffel Tower is in"
correct = " Paris"
subject = "Eiffel Tower"
"#;
    let parse = |text: &str| Experiment::parse(text, Path::new("/x/e.toml"));
    let experiment = parse(base).unwrap();
    assert!(experiment.has_gaussian());
    // The string shorthand at the top level.
    let short = base
        .replace("[corruption]\nkind = \"gaussian\"\n", "")
        .replace("[experiment]", "corruption = \"gaussian\"\n[experiment]");
    assert!(parse(&short).unwrap().has_gaussian());
    let refused = |text: String, words: &[&str]| {
        let message = parse(&text).unwrap_err().to_string();
        for w in words {
            assert!(message.contains(w), "{w:?} not in: {message}");
        }
    };
    refused(
        base.replace("subject = \"Eiffel Tower\"\n", ""),
        &["pair `fact`", "needs `subject`"],
    );
    refused(
        base.replace("\"Eiffel Tower\"\n", "\"Colosseum\"\n"),
        &["`subject` = \"Colosseum\" is not part of `clean`"],
    );
    refused(
        format!("{base}corrupted = \"The Colosseum is in\"\n"),
        &["`corrupted` is given", "corruption = \"prompt\""],
    );
    refused(
        base.replace("\"mlp_out\"]", "\"head_out\"]"),
        &[
            "head_out",
            "resid_pre, resid_mid, resid_post, attn_out, mlp_out",
        ],
    );
    refused(
        base.replace("kinds = [", "methods = [\"exact\", \"atp\"]\nkinds = ["),
        &["methods", "traced exactly"],
    );
    refused(
        base.replace("kind = \"gaussian\"", "kind = \"gaussian\"\nsamples = 0"),
        &["samples = 0", "between 1 and 10000"],
    );
    refused(
        base.replace("kind = \"gaussian\"", "kind = \"gaussian\"\nwindow = 0"),
        &["window = 0"],
    );
    refused(
        base.replace(
            "kind = \"gaussian\"",
            "kind = \"gaussian\"\nnoise = 0.1\nnoise_multiplier = 3.0",
        ),
        &["both `noise`", "keep one"],
    );
    refused(
        base.replace("kind = \"gaussian\"", "kind = \"gaussian\"\nnoise = -1.0"),
        &["noise = -1", "≥ 0"],
    );
    refused(
        base.replace(
            "kind = \"gaussian\"",
            "kind = \"gaussian\"\nmetric = \"logits\"",
        ),
        &["metric", "prob", "logit"],
    );
    refused(
        base.replace("kind = \"gaussian\"", "kind = \"prompt\"\nwindow = 10"),
        &["apply to Gaussian-noise corruption", "no pair uses it"],
    );
    refused(
        base.replace("kind = \"gaussian\"", "kind = \"gaussian\"\nwindw = 10"),
        &["unknown field `windw`"],
    );
    refused(
        format!("{base}[[pairs]]\nname = \"p\"\nconcept = \"facts\"\ncorruption = \"prompt\"\nclean = \"A\"\ncorrupted = \"B\"\ncorrect = \" a\"\nincorrect = \" b\"\n"),
        &["concept `facts` has pairs corrupted by prompt and by Gaussian noise"],
    );
    refused(
        format!("{base}[[templates]]\nconcept = \"t\"\ntext = \"The {{x}} is\"\nfills = [{{ x = [\"a\", \"b\"], correct = \" c\", incorrect = \" d\" }}]\n"),
        &["[[templates]] with [corruption] kind = \"gaussian\""],
    );
}
