//! The whole runner on a real model: SmolLM2-135M-Instruct from its Q4_1 GGUF, through
//! `actpatch_runner::run`, the tables read back.
//!
//! Needs the file (`just fetch-smollm2`); run with `just test-real`, or
//! `cargo test -p actpatch-runner --test real_smollm2 -- --ignored`. The path is
//! `ACTPATCH_SMOLLM2_GGUF`, by default `<repo>/models/SmolLM2-135M-Instruct.Q4_1.gguf`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use actpatch_report::tables::{read_cells, read_parquet};
use actpatch_report::CellRow;
use actpatch_runner::{check, run, RunOptions};

fn gguf_path() -> PathBuf {
    std::env::var_os("ACTPATCH_SMOLLM2_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf")
        })
}

/// A fresh temporary folder for one test.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "actpatch-real-smollm2-{tag}-{}-{:08x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes an experiment file in `dir` pointing at the GGUF, with these `[[pairs]]`.
fn write_experiment(dir: &Path, name: &str, kinds: &str, pairs: &str) -> PathBuf {
    let gguf = gguf_path();
    assert!(
        gguf.is_file(),
        "{} does not exist: run `just fetch-smollm2` or set ACTPATCH_SMOLLM2_GGUF",
        gguf.display()
    );
    // A TOML literal string: no escapes, so any path without `'` works as is.
    let text = format!(
        "[experiment]\nname = \"{name}\"\n\n[model]\npath = '{}'\n\n[sweep]\nkinds = {kinds}\n\n[output]\nformats = [\"png\"]\n\n{pairs}",
        gguf.display()
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn options(out: &Path) -> RunOptions {
    RunOptions {
        out_dir: Some(out.to_path_buf()),
        quiet: true,
        ..RunOptions::default()
    }
}

const CAPITALS: &str = r#"
[[pairs]]
name = "france-italy"
concept = "country capitals"
clean = "The capital of France is"
corrupted = "The capital of Italy is"
correct = " Paris"
incorrect = " Rome"
expect = { clean_logit_diff = 6.213, corrupted_logit_diff = -6.601, tolerance = 0.01 }
"#;

#[test]
#[ignore = "needs models/SmolLM2-135M-Instruct.Q4_1.gguf (just fetch-smollm2, or ACTPATCH_SMOLLM2_GGUF)"]
fn capital_pair_causal_tracing_on_resid_pre() {
    let dir = temp_dir("capitals");
    let experiment = write_experiment(&dir, "capitals", "[\"resid_pre\"]", CAPITALS);
    let outcome = run(&experiment, &options(&dir.join("out"))).unwrap();
    assert_eq!((outcome.passed, outcome.failed), (1, 0));
    assert!(outcome.run_dir.starts_with(dir.join("out")));

    let cells = read_cells(&outcome.run_dir.join("cells.parquet")).unwrap();
    let n_layers = 30u32;
    let n_positions = 6u32; // <|im_start|> The capital of France is
    assert_eq!(cells.len(), (n_layers * n_positions) as usize);
    assert!(cells
        .iter()
        .all(|c| c.kind == "resid_pre" && c.pair == "france-italy" && c.pair_valid));

    // The (layer, position) grid; every cell present once.
    let mut grid: HashMap<(u32, u32), &CellRow> = HashMap::new();
    for c in &cells {
        let position = c.position.expect("resid_pre cells have a position");
        assert!(grid.insert((c.layer, position), c).is_none());
        assert!(c.normalized_logit_diff.is_finite());
    }
    let best = |layer: u32| -> &CellRow {
        (0..n_positions)
            .map(|p| grid[&(layer, p)])
            .max_by(|a, b| a.normalized_logit_diff.total_cmp(&b.normalized_logit_diff))
            .unwrap()
    };
    let describe = |layer: u32| -> String {
        (0..n_positions)
            .map(|p| {
                let c = grid[&(layer, p)];
                format!(
                    "{:?}={:.3}",
                    c.token.as_deref().unwrap_or("?"),
                    c.normalized_logit_diff
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    for layer in 0..n_layers {
        println!("layer {layer:2}: {}", describe(layer));
    }

    // Layer 0: only the subject differs, so patching its embedding restores the clean run.
    let first = best(0);
    assert_eq!(
        (first.position, first.token.as_deref()),
        (Some(4), Some(" France")),
        "layer 0: {}",
        describe(0)
    );
    assert!(
        (first.normalized_logit_diff - 1.0).abs() < 1e-3,
        "layer 0: {}",
        describe(0)
    );
    for p in [0, 1, 2, 3, 5] {
        let v = grid[&(0, p)].normalized_logit_diff;
        assert!(
            v.abs() < 1e-3,
            "layer 0, position {p} (same token in both runs): {v}"
        );
    }

    // Last layer: the answer has moved to the final position.
    let last_layer = n_layers - 1;
    let last = best(last_layer);
    assert_eq!(
        (last.position, last.token.as_deref()),
        (Some(n_positions - 1), Some(" is")),
        "layer {last_layer}: {}",
        describe(last_layer)
    );
    assert!(
        (last.normalized_logit_diff - 1.0).abs() < 0.1,
        "layer {last_layer}: {}",
        describe(last_layer)
    );
    assert!(
        grid[&(last_layer, 4)].normalized_logit_diff.abs() < 0.1,
        "layer {last_layer}: {}",
        describe(last_layer)
    );

    let _ = std::fs::remove_dir_all(&dir);
}

/// A reference pair: Hugging Face transformers on the same GGUF dequantized to f32,
/// `<|im_start|>` first (the values of `experiments/smollm2/*.toml`).
struct Reference {
    name: &'static str,
    clean: &'static str,
    corrupted: &'static str,
    correct: &'static str,
    incorrect: &'static str,
    clean_ld: f64,
    corrupted_ld: f64,
    /// Whether it passes validation (min_gap 1.0, clean logit difference > 0).
    passes: bool,
}

const BASELINES: [Reference; 5] = [
    Reference {
        name: "landmarks",
        clean: "The Colosseum is in",
        corrupted: "The Eiffel Tower is in",
        correct: " Rome",
        incorrect: " Paris",
        clean_ld: 3.648,
        corrupted_ld: -2.418,
        passes: true,
    },
    Reference {
        name: "country_capitals",
        clean: "The capital of France is",
        corrupted: "The capital of Italy is",
        correct: " Paris",
        incorrect: " Rome",
        clean_ld: 6.213,
        corrupted_ld: -6.601,
        passes: true,
    },
    // Gap 0.856 < min_gap 1.0.
    Reference {
        name: "gender_bias",
        clean: "The nurse said that",
        corrupted: "The mechanic said that",
        correct: " she",
        incorrect: " he",
        clean_ld: 1.505,
        corrupted_ld: 0.648,
        passes: false,
    },
    Reference {
        name: "number_agreement",
        clean: "The keys to the cabinet",
        corrupted: "The key to the cabinet",
        correct: " are",
        incorrect: " is",
        clean_ld: 1.190,
        corrupted_ld: -3.736,
        passes: true,
    },
    // The clean logit difference is negative.
    Reference {
        name: "temporal_consistency",
        clean: "Yesterday, I",
        corrupted: "Tomorrow, I",
        correct: " walked",
        incorrect: " will",
        clean_ld: -0.319,
        corrupted_ld: -3.924,
        passes: false,
    },
];

const TOL: f64 = 0.01;

#[test]
#[ignore = "needs models/SmolLM2-135M-Instruct.Q4_1.gguf (just fetch-smollm2, or ACTPATCH_SMOLLM2_GGUF)"]
fn five_reference_baselines_in_baselines_parquet() {
    let dir = temp_dir("baselines");
    let pairs: String = BASELINES
        .iter()
        .map(|r| {
            format!(
                "[[pairs]]\nname = \"{name}\"\nconcept = \"{name}\"\nclean = \"{clean}\"\ncorrupted = \"{corrupted}\"\ncorrect = \"{correct}\"\nincorrect = \"{incorrect}\"\nexpect = {{ clean_logit_diff = {want_clean}, corrupted_logit_diff = {want_corrupted}, tolerance = {TOL} }}\n\n",
                name = r.name,
                clean = r.clean,
                corrupted = r.corrupted,
                correct = r.correct,
                incorrect = r.incorrect,
                want_clean = r.clean_ld,
                want_corrupted = r.corrupted_ld,
            )
        })
        .collect();
    let experiment = write_experiment(&dir, "baselines", "[\"resid_pre\"]", &pairs);

    // `actpatch check`: validation only, the same outcome per pair.
    let (passed, failed) = check(&experiment, &options(&dir.join("out"))).unwrap();
    assert_eq!((passed, failed), (3, 2));

    let outcome = run(&experiment, &options(&dir.join("out"))).unwrap();
    assert_eq!((outcome.passed, outcome.failed), (3, 2));
    let frame = read_parquet(&outcome.run_dir.join("baselines.parquet")).unwrap();
    assert_eq!(frame.height(), BASELINES.len());
    let pair = frame.column("pair").unwrap().str().unwrap().clone();
    let clean = frame
        .column("clean_logit_diff")
        .unwrap()
        .f64()
        .unwrap()
        .clone();
    let corrupted = frame
        .column("corrupted_logit_diff")
        .unwrap()
        .f64()
        .unwrap()
        .clone();
    let passed = frame.column("passed").unwrap().bool().unwrap().clone();
    let swept = frame.column("swept").unwrap().bool().unwrap().clone();

    let mut failures = Vec::new();
    for (row, r) in BASELINES.iter().enumerate() {
        let name = r.name;
        assert_eq!(pair.get(row), Some(name));
        let (got_clean, got_corrupted) = (clean.get(row).unwrap(), corrupted.get(row).unwrap());
        println!(
            "{name}: clean {got_clean:.3}, corrupted {got_corrupted:.3} (want {} / {}), passed {:?}",
            r.clean_ld,
            r.corrupted_ld,
            passed.get(row)
        );
        if (got_clean - r.clean_ld).abs() > TOL || (got_corrupted - r.corrupted_ld).abs() > TOL {
            failures.push(format!(
                "{name}: {got_clean:.4} / {got_corrupted:.4}, want {} / {}",
                r.clean_ld, r.corrupted_ld
            ));
        }
        assert_eq!(passed.get(row), Some(r.passes), "{name} passed");
        assert_eq!(swept.get(row), Some(r.passes), "{name} swept");
    }
    assert!(failures.is_empty(), "{failures:#?}");

    // The failing pairs fail for the documented reason only (their `expect` values hold).
    let reasons = frame.column("reasons").unwrap().list().unwrap().clone();
    let reasons_of = |row: usize| -> Vec<String> {
        let series = reasons.get_as_series(row).unwrap();
        series
            .str()
            .unwrap()
            .iter()
            .map(|s| s.unwrap_or_default().to_string())
            .collect()
    };
    let gender = reasons_of(2);
    assert!(
        gender.len() == 1 && gender[0].contains("below min_gap"),
        "{gender:?}"
    );
    let temporal = reasons_of(4);
    assert!(
        temporal.len() == 1 && temporal[0].contains("≤ 0"),
        "{temporal:?}"
    );

    let _ = std::fs::remove_dir_all(&dir);
}
