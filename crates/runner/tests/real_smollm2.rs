//! The whole runner on a real model: SmolLM2-135M-Instruct from its Q4_1 GGUF, through
//! `actpatch_runner::run`, the tables read back and compared with Hugging Face
//! transformers on the same file: `tests/fixtures/smollm2/reference.json`, written by
//! `scripts/reference/smollm2_reference.py`.
//!
//! Needs the file (`just fetch-smollm2`); run with `just test-real`, or
//! `cargo test -p actpatch-runner --test real_smollm2 -- --ignored`. The path is
//! `ACTPATCH_SMOLLM2_GGUF`, by default `<repo>/models/SmolLM2-135M-Instruct.Q4_1.gguf`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use actpatch_report::tables::{read_cells, read_parquet};
use actpatch_report::CellRow;
use actpatch_runner::{check, run, RunOptions};
use serde_json::Value;

/// The runner's logit differences and normalized cells against transformers' (same
/// dequantized f32 weights, f32 sums in another order). The model's logit differences
/// are within 2.3e-5 of transformers' (measured, `actpatch-model`'s real_smollm2 test);
/// a normalized cell is a difference of two of them over the pair's gap (12.8 for
/// country_capitals), so it deviates less. The tolerance of the model test, 2e-4; the
/// tests print the largest deviations they saw.
const TOL: f64 = 2e-4;

fn reference() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/smollm2/reference.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap()
}

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

/// One `[[pairs]]` table for reference pair `name`, its `expect` at `TOL`.
fn pair_toml(name: &str, pair: &Value) -> String {
    let text = |key: &str| toml::Value::String(pair[key].as_str().unwrap().to_string());
    let number = |key: &str| pair[key].as_f64().unwrap();
    format!(
        "[[pairs]]\nname = \"{name}\"\nconcept = \"{name}\"\nclean = {}\ncorrupted = {}\ncorrect = {}\nincorrect = {}\nexpect = {{ clean_logit_diff = {:?}, corrupted_logit_diff = {:?}, tolerance = {TOL:?} }}\n\n",
        text("clean"),
        text("corrupted"),
        text("correct"),
        text("incorrect"),
        number("clean_logit_diff"),
        number("corrupted_logit_diff"),
    )
}

/// The `resid_pre` cells by (layer, position), each present once; the largest deviation
/// from the reference grid `[layer, pos]` and the cells beyond `TOL`.
fn compare_grid<'a>(
    cells: &'a [CellRow],
    want_grid: &[&Vec<Value>],
) -> (HashMap<(u32, u32), &'a CellRow>, f64, Vec<String>) {
    let mut grid = HashMap::new();
    let mut worst = 0.0f64;
    let mut failures = Vec::new();
    for c in cells {
        let position = c.position.expect("resid_pre cells have a position");
        assert!(grid.insert((c.layer, position), c).is_none());
        let want = want_grid[c.layer as usize][position as usize]
            .as_f64()
            .unwrap();
        let diff = (c.normalized_logit_diff - want).abs();
        worst = worst.max(diff);
        if diff.is_nan() || diff > TOL {
            failures.push(format!(
                "layer {} position {position}: {} vs transformers {want}",
                c.layer, c.normalized_logit_diff
            ));
        }
    }
    (grid, worst, failures)
}

#[test]
#[ignore = "needs models/SmolLM2-135M-Instruct.Q4_1.gguf (just fetch-smollm2, or ACTPATCH_SMOLLM2_GGUF)"]
fn capital_pair_causal_tracing_on_resid_pre() {
    let reference = reference();
    let tracing = &reference["causal_tracing"];
    let pair_name = tracing["pair"].as_str().unwrap();
    let pair = &reference["pairs"][pair_name];
    let want_grid: Vec<&Vec<Value>> = tracing["grid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row.as_array().unwrap())
        .collect(); // [layer, pos]
    let n_layers = want_grid.len() as u32;
    let n_positions = want_grid[0].len() as u32;

    let dir = temp_dir("capitals");
    let pairs = pair_toml(pair_name, pair);
    let experiment = write_experiment(&dir, "capitals", "[\"resid_pre\"]", &pairs);
    let outcome = run(&experiment, &options(&dir.join("out"))).unwrap();
    assert_eq!((outcome.passed, outcome.failed), (1, 0));
    assert!(outcome.run_dir.starts_with(dir.join("out")));

    let cells = read_cells(&outcome.run_dir.join("cells.parquet")).unwrap();
    assert_eq!(cells.len(), (n_layers * n_positions) as usize);
    assert!(cells
        .iter()
        .all(|c| c.kind == "resid_pre" && c.pair == pair_name && c.pair_valid));

    let (grid, worst, failures) = compare_grid(&cells, &want_grid);
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
    println!("max |actpatch - transformers| over the grid: {worst:e}");
    assert!(failures.is_empty(), "{failures:#?}");

    // What the grid shows: at layer 0 only the subject (" France") carries the answer,
    // at the last layer only the final position (" is").
    let best = |layer: u32| -> &CellRow {
        (0..n_positions)
            .map(|p| grid[&(layer, p)])
            .max_by(|a, b| a.normalized_logit_diff.total_cmp(&b.normalized_logit_diff))
            .unwrap()
    };
    let first = best(0);
    assert_eq!(
        (first.position, first.token.as_deref()),
        (Some(4), Some(" France"))
    );
    let last = best(n_layers - 1);
    assert_eq!(
        (last.position, last.token.as_deref()),
        (Some(n_positions - 1), Some(" is"))
    );

    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "needs models/SmolLM2-135M-Instruct.Q4_1.gguf (just fetch-smollm2, or ACTPATCH_SMOLLM2_GGUF)"]
fn five_reference_baselines_in_baselines_parquet() {
    let reference = reference();
    let pairs = reference["pairs"].as_object().unwrap();
    let dir = temp_dir("baselines");
    let text: String = pairs
        .iter()
        .map(|(name, pair)| pair_toml(name, pair))
        .collect();
    let experiment = write_experiment(&dir, "baselines", "[\"resid_pre\"]", &text);

    // Validation with the defaults (min_gap 1.0, clean logit difference > 0), from the
    // reference values.
    let ld = |pair: &Value, side: &str| pair[format!("{side}_logit_diff")].as_f64().unwrap();
    let too_small = |pair: &Value| ld(pair, "clean") - ld(pair, "corrupted") < 1.0;
    let not_positive = |pair: &Value| ld(pair, "clean") <= 0.0;
    let passes = |pair: &Value| !too_small(pair) && !not_positive(pair);
    let n_pass = pairs.values().filter(|p| passes(p)).count();
    let want_counts = (n_pass, pairs.len() - n_pass);
    assert_eq!(want_counts, (3, 2), "the reference pairs: 3 pass, 2 fail");

    // `actpatch check`: validation only, the same outcome per pair.
    let (passed, failed) = check(&experiment, &options(&dir.join("out"))).unwrap();
    assert_eq!((passed, failed), want_counts);

    let outcome = run(&experiment, &options(&dir.join("out"))).unwrap();
    assert_eq!((outcome.passed, outcome.failed), want_counts);
    let frame = read_parquet(&outcome.run_dir.join("baselines.parquet")).unwrap();
    assert_eq!(frame.height(), pairs.len());
    let column = |name: &str| frame.column(name).unwrap();
    let pair_column = column("pair").str().unwrap().clone();
    let clean = column("clean_logit_diff").f64().unwrap().clone();
    let corrupted = column("corrupted_logit_diff").f64().unwrap().clone();
    let passed = column("passed").bool().unwrap().clone();
    let swept = column("swept").bool().unwrap().clone();
    let reasons = column("reasons").list().unwrap().clone();
    let reasons_of = |row: usize| -> Vec<String> {
        let series = reasons.get_as_series(row).unwrap();
        series
            .str()
            .unwrap()
            .iter()
            .map(|s| s.unwrap_or_default().to_string())
            .collect()
    };

    let mut worst = 0.0f64;
    let mut failures = Vec::new();
    for (row, (name, pair)) in pairs.iter().enumerate() {
        assert_eq!(pair_column.get(row), Some(name.as_str()));
        let got = [clean.get(row).unwrap(), corrupted.get(row).unwrap()];
        let want = [ld(pair, "clean"), ld(pair, "corrupted")];
        println!(
            "{name}: {got:?} (transformers {want:?}), passed {:?}",
            passed.get(row)
        );
        for (got, want) in got.iter().zip(want) {
            worst = worst.max((got - want).abs());
            if (got - want).abs() > TOL {
                failures.push(format!("{name}: {got} vs transformers {want}"));
            }
        }
        assert_eq!(passed.get(row), Some(passes(pair)), "{name} passed");
        assert_eq!(swept.get(row), Some(passes(pair)), "{name} swept");
        // A failing pair fails for its one documented reason only (its `expect` holds).
        let reasons = reasons_of(row);
        if not_positive(pair) {
            assert!(
                reasons.len() == 1 && reasons[0].contains("≤ 0"),
                "{name}: {reasons:?}"
            );
        } else if too_small(pair) {
            let one = reasons.len() == 1 && reasons[0].contains("below min_gap");
            assert!(one, "{name}: {reasons:?}");
        }
    }
    println!("max |actpatch - transformers| over the logit differences: {worst:e}");
    assert!(failures.is_empty(), "{failures:#?}");

    let _ = std::fs::remove_dir_all(&dir);
}
