//! Every bad input gets a message saying what, where and how to fix it, exit code 2,
//! and nothing written.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture_model() -> PathBuf {
    std::fs::canonicalize(repo().join("tests/fixtures/tiny-gpt2")).unwrap()
}

/// A fresh scratch folder for one test.
fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("actpatch-bad-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A valid experiment on the fixture model (or `model_line` instead of its path).
fn experiment(model_line: &str) -> String {
    format!(
        r#"[experiment]
name = "bad"

[model]
{model_line}

[sweep]
kinds = ["resid_pre"]
positions = "all"

[validate]
enabled = false
align = "strict"

[[pairs]]
name = "capital"
concept = "capitals"
clean = "The capital of France is"
corrupted = "The capital of Poland is"
correct = " Paris"
incorrect = " Warsaw"
"#
    )
}

fn valid() -> String {
    experiment(&format!(
        "path = {:?}",
        fixture_model().display().to_string()
    ))
}

struct Outcome {
    code: Option<i32>,
    stderr: String,
    out_dir: PathBuf,
}

fn run_with(tag: &str, toml: &str, env: &[(&str, &str)], extra: &[&str]) -> Outcome {
    let dir = scratch(tag);
    let file = dir.join("experiment.toml");
    std::fs::write(&file, toml).unwrap();
    let out_dir = dir.join("out");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_actpatch"));
    cmd.arg("run").arg(&file).args(extra);
    if !extra.contains(&"--out") {
        cmd.arg("--out").arg(&out_dir);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    Outcome {
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        out_dir,
    }
}

/// Exit 2, every keyword in the message, and no output folder.
fn assert_bad(outcome: &Outcome, keywords: &[&str]) {
    assert_eq!(
        outcome.code,
        Some(2),
        "exit code; stderr:\n{}",
        outcome.stderr
    );
    for k in keywords {
        assert!(
            outcome.stderr.contains(k),
            "message lacks {k:?}:\n{}",
            outcome.stderr
        );
    }
    // Nothing left behind: not even the output folder.
    assert!(
        !outcome.out_dir.exists(),
        "{} was created",
        outcome.out_dir.display()
    );
}

fn bad(tag: &str, toml: &str, keywords: &[&str]) {
    assert_bad(&run_with(tag, toml, &[], &[]), keywords);
}

#[test]
fn the_valid_base_experiment_runs() {
    let outcome = run_with("valid", &valid(), &[], &[]);
    assert_eq!(outcome.code, Some(0), "{}", outcome.stderr);
}

#[test]
fn malformed_toml() {
    bad(
        "malformed",
        &valid().replace("[experiment]", "[experiment"),
        &["experiment.toml", "line 1"],
    );
}

#[test]
fn unknown_key_suggests_the_closest() {
    bad(
        "unknown-key",
        &valid().replace("corrupted =", "corupted ="),
        &[
            "line 19",
            "unknown field `corupted`",
            "did you mean `corrupted`",
        ],
    );
}

#[test]
fn missing_key() {
    bad(
        "missing-key",
        &valid().replace("incorrect = \" Warsaw\"\n", ""),
        &["pair `capital`", "`incorrect` is missing or empty"],
    );
}

#[test]
fn wrong_type() {
    bad(
        "wrong-type",
        &valid().replace("enabled = false", "enabled = \"no\""),
        &["line 12", "invalid type", "expected a boolean"],
    );
}

#[test]
fn empty_prompt() {
    bad(
        "empty-prompt",
        &valid().replace("\"The capital of France is\"", "\"\""),
        &["pair `capital`", "`clean` is empty"],
    );
}

#[test]
fn prompt_longer_than_the_context() {
    let long = format!("\"{}\"", "word ".repeat(80));
    bad(
        "long-prompt",
        &valid().replace("\"The capital of France is\"", &long),
        &["pair `capital`", "context of 64 tokens"],
    );
}

#[test]
fn empty_answer() {
    bad(
        "empty-answer",
        &valid().replace("correct = \" Paris\"", "correct = \"\""),
        &["`correct` is missing or empty"],
    );
}

#[test]
fn unknown_patch_kind_lists_the_valid_ones() {
    bad(
        "kind",
        &valid().replace("[\"resid_pre\"]", "[\"resid_pr\"]"),
        &[
            "unknown variant `resid_pr`",
            "head_out_by_pos",
            "did you mean `resid_pre`",
        ],
    );
}

#[test]
fn positions_out_of_range() {
    bad(
        "positions",
        &valid().replace("positions = \"all\"", "positions = [0, 40]"),
        &["positions lists 40", "6 tokens"],
    );
}

#[test]
fn duplicate_pair_names() {
    let toml = valid();
    let pair = &toml[toml.find("[[pairs]]").unwrap()..];
    bad(
        "duplicate",
        &format!("{toml}\n{pair}"),
        &["two pairs are named `capital`"],
    );
}

#[test]
fn unknown_align_value() {
    bad(
        "align",
        &valid().replace("align = \"strict\"", "align = \"middle\""),
        &["unknown variant `middle`", "start", "end"],
    );
}

#[test]
fn non_finite_expected_values_and_tolerances() {
    let with_expect = |expect: &str| {
        valid().replace(
            "incorrect = \" Warsaw\"\n",
            &format!("incorrect = \" Warsaw\"\nexpect = {{ {expect} }}\n"),
        )
    };
    bad(
        "expect-nan",
        &with_expect("clean_logit_diff = nan"),
        &["expect.clean_logit_diff", "not a finite number", "capital"],
    );
    bad(
        "expect-inf",
        &with_expect("corrupted_logit_diff = -inf"),
        &["expect.corrupted_logit_diff", "not a finite number"],
    );
    bad(
        "tolerance-inf",
        &with_expect("clean_logit_diff = 1.0, tolerance = inf"),
        &["expect.tolerance", "finite number"],
    );
}

#[test]
fn positions_with_kinds_that_patch_every_position() {
    let toml = valid().replace(
        "kinds = [\"resid_pre\"]\npositions = \"all\"",
        "kinds = [\"resid_pre\", \"head_out\", \"head_pattern\"]\npositions = [1, 2]",
    );
    bad(
        "positions-heads",
        &toml,
        &[
            "[sweep] positions",
            "head_out and head_pattern",
            "every position",
            "head_out_by_pos",
        ],
    );
}

#[test]
fn positions_out_of_range_in_the_noising_direction() {
    // The clean prompt is patched when noising: its length bounds the positions.
    let toml = valid().replace(
        "positions = \"all\"",
        "positions = [6]\ndirection = \"noising\"",
    );
    bad(
        "positions-noising",
        &toml,
        &["positions lists 6", "noising", "0..=5"],
    );
}

#[test]
fn output_folder_not_writable() {
    let dir = scratch("unwritable");
    let blocker = dir.join("a-file");
    std::fs::write(&blocker, "not a folder").unwrap();
    let outcome = run_with(
        "unwritable-run",
        &valid(),
        &[],
        &["--out", blocker.join("sub").to_str().unwrap()],
    );
    assert_eq!(outcome.code, Some(2), "{}", outcome.stderr);
    assert!(
        outcome.stderr.contains("not writable") && outcome.stderr.contains("--out"),
        "{}",
        outcome.stderr
    );
}

/// A copy of the fixture model with `edit` applied to its folder.
fn model_copy(tag: &str, edit: impl FnOnce(&Path)) -> PathBuf {
    let dir = scratch(&format!("model-{tag}"));
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixture_model().join(file), dir.join(file)).unwrap();
    }
    edit(&dir);
    dir
}

fn with_model(dir: &Path) -> String {
    experiment(&format!("path = {:?}", dir.display().to_string()))
}

fn edit_weights(dir: &Path, edit: impl FnOnce(&mut HashMap<String, Tensor>)) {
    let file = dir.join("model.safetensors");
    let mut weights = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    edit(&mut weights);
    candle_core::safetensors::save(&weights, &file).unwrap();
}

#[test]
fn model_folder_without_config() {
    let dir = model_copy("no-config", |d| {
        std::fs::remove_file(d.join("config.json")).unwrap()
    });
    bad("no-config", &with_model(&dir), &["has no config.json"]);
}

#[test]
fn missing_gguf_file_says_how_to_get_it() {
    let dir = scratch("missing-gguf-files");
    let smollm2 = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let keywords = [
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "no such GGUF file",
        "just fetch-smollm2",
    ];
    bad("missing-smollm2", &with_model(&smollm2), &keywords);
    let other = dir.join("other.gguf");
    let keywords = [
        "other.gguf",
        "no such GGUF file",
        "relative to the experiment file",
    ];
    bad("missing-gguf", &with_model(&other), &keywords);
}

#[test]
fn model_folder_without_weights() {
    let dir = model_copy("no-weights", |d| {
        std::fs::remove_file(d.join("model.safetensors")).unwrap()
    });
    bad(
        "no-weights",
        &with_model(&dir),
        &["has no model.safetensors", "safetensors"],
    );
}

#[test]
fn truncated_safetensors() {
    let dir = model_copy("truncated", |d| {
        let file = d.join("model.safetensors");
        let bytes = std::fs::read(&file).unwrap();
        std::fs::write(&file, &bytes[..bytes.len() / 3]).unwrap();
    });
    bad(
        "truncated",
        &with_model(&dir),
        &["model.safetensors", "truncated"],
    );
}

#[test]
fn wrong_shape_tensor() {
    let dir = model_copy("shape", |d| {
        edit_weights(d, |w| {
            let bad = Tensor::zeros((64, 31), candle_core::DType::F32, &Device::Cpu).unwrap();
            w.insert("transformer.wpe.weight".into(), bad);
        })
    });
    bad(
        "shape",
        &with_model(&dir),
        &["transformer.wpe.weight", "[64, 31]", "[64, 32]"],
    );
}

#[test]
fn unsupported_architecture() {
    let dir = model_copy("arch", |d| {
        std::fs::write(d.join("config.json"), r#"{"model_type": "mamba"}"#).unwrap();
    });
    bad("arch", &with_model(&dir), &["`mamba`", "gpt2"]);
}

#[test]
fn hub_unreachable_with_and_without_offline_mode() {
    let home = scratch("hf-home");
    let home = home.to_str().unwrap();
    let toml = experiment("id = \"gpt2\"");
    let online = run_with(
        "hub",
        &toml,
        &[("HF_HOME", home), ("HF_ENDPOINT", "http://127.0.0.1:9")],
        &[],
    );
    assert_bad(&online, &["`gpt2`", "unreachable", "path ="]);
    let offline = run_with(
        "hub-offline",
        &toml,
        &[("HF_HOME", home), ("HF_HUB_OFFLINE", "1")],
        &[],
    );
    assert_bad(&offline, &["HF_HUB_OFFLINE", "`gpt2`", "path ="]);
}

#[test]
fn nan_logits_fail_validation_and_are_never_written() {
    let dir = model_copy("nan", |d| {
        edit_weights(d, |w| {
            let nan = Tensor::full(f32::NAN, 32, &Device::Cpu).unwrap();
            w.insert("transformer.ln_f.weight".into(), nan);
        })
    });
    let outcome = run_with("nan", &with_model(&dir), &[], &["--no-validate"]);
    assert_eq!(outcome.code, Some(1), "{}", outcome.stderr);
    assert!(outcome.stderr.contains("not finite"), "{}", outcome.stderr);
    // The baselines are recorded, no cell is.
    let run_dir = std::fs::read_dir(&outcome.out_dir)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    assert!(
        !run_dir.join("cells.parquet").exists() || {
            let cells =
                actpatch_report::tables::read_cells(&run_dir.join("cells.parquet")).unwrap();
            cells.is_empty()
        }
    );
    let report = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    assert!(report.contains("not finite"));
}

/// The valid experiment sweeping `path` with the `[[sweep.paths]]` entries `paths`.
fn with_paths(paths: &str) -> String {
    valid().replace("[\"resid_pre\"]", "[\"path\"]").replace(
        "positions = \"all\"\n",
        &format!("positions = \"all\"\n{paths}"),
    )
}

#[test]
fn path_kind_without_receivers() {
    bad(
        "path-no-receivers",
        &with_paths(""),
        &["no [[sweep.paths]] entry", "receivers = \"logits\""],
    );
}

#[test]
fn path_kind_with_only_approximate_methods() {
    bad(
        "path-atp-only",
        &with_paths("\n[[sweep.paths]]\nreceivers = \"logits\"\n")
            .replace("[sweep]\n", "[sweep]\nmethods = [\"atp\"]\n"),
        &[
            "only the \"exact\" method sweeps",
            "add \"exact\" to [sweep] methods",
        ],
    );
}

#[test]
fn receivers_without_a_path_kind() {
    bad(
        "receivers-no-path",
        &valid().replace(
            "positions = \"all\"\n",
            "positions = \"all\"\n\n[[sweep.paths]]\nreceivers = \"logits\"\n",
        ),
        &[
            "neither \"path\" nor \"path_by_pos\"",
            "add \"path\" to kinds",
        ],
    );
}

#[test]
fn receiver_head_the_model_lacks() {
    bad(
        "receiver-head",
        &with_paths("\n[[sweep.paths]]\nreceivers = \"q\"\nheads = [\"1.7\"]\n"),
        &[
            "receiver head 1.7 does not exist",
            "layers 0..=1 with 4 heads",
        ],
    );
}

#[test]
fn receiver_head_not_written_layer_dot_head() {
    bad(
        "receiver-head-form",
        &with_paths("\n[[sweep.paths]]\nreceivers = \"q\"\nheads = [\"L1H2\"]\n"),
        &["\"L1H2\" is not a head written \"layer.head\""],
    );
}

#[test]
fn receiver_position_outside_a_pair() {
    bad(
        "receiver-position",
        &with_paths("\n[[sweep.paths]]\nreceivers = \"v\"\nlayer = 1\npositions = [9]\n"),
        &[
            "receiver position 9",
            "pair `capital` has 6 tokens",
            "positions = \"end\"",
        ],
    );
}

#[test]
fn logits_receivers_take_no_heads() {
    bad(
        "logits-heads",
        &with_paths("\n[[sweep.paths]]\nreceivers = \"logits\"\nlayer = 1\n"),
        &["receivers = \"logits\" takes no `layer`"],
    );
}
