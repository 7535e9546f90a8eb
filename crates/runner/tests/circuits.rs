//! `[circuit]` through `actpatch run`: edges.parquet and the circuit files against the
//! EAP-IG library's own numbers (`golden_edges.json`), and the bad inputs of the
//! section (exit 2, nothing written).

use std::path::{Path, PathBuf};
use std::process::Command;

use actpatch_report::curves::{CircuitRow, CIRCUITS};
use actpatch_report::edges::{EdgeRow, EDGES};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("actpatch-circuit-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Runs `actpatch run FILE --out OUT --quiet`: (exit code, stderr, the run folder).
fn run(file: &Path, out: &Path) -> (Option<i32>, String, Option<PathBuf>) {
    let output = Command::new(env!("CARGO_BIN_EXE_actpatch"))
        .arg("run")
        .arg(file)
        .arg("--out")
        .arg(out)
        .arg("--quiet")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let run_dir = (!stdout.is_empty()).then(|| PathBuf::from(stdout.lines().last().unwrap_or("")));
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        run_dir,
    )
}

const LABELS: [(&str, u32, &str); 4] = [
    ("eap", 0, "EAP"),
    ("eap-ig-inputs", 5, "EAP-IG-inputs(5)"),
    ("clean-corrupted", 0, "clean-corrupted"),
    ("exact", 0, "exact"),
];

#[test]
fn tiny_circuit_run_equals_the_librarys_scores() {
    let out = scratch("golden");
    let file = repo().join("tests/fixtures/experiments/tiny_circuit.toml");
    let (code, stderr, run_dir) = run(&file, &out);
    assert_eq!(code, Some(0), "stderr:\n{stderr}");
    let run_dir = run_dir.expect("the run folder on stdout");
    let golden = read_json(&repo().join("tests/fixtures/tiny-gpt2/golden_edges.json"));
    let rows: Vec<EdgeRow> =
        actpatch_report::tables::read_rows(&run_dir.join("edges.parquet"), &EDGES)
            .unwrap()
            .data;
    let n_edges = golden["n_edges"].as_u64().unwrap() as usize;
    for (method, steps, label) in LABELS {
        let of = |scope: &str, pair: Option<&str>| -> Vec<&EdgeRow> {
            rows.iter()
                .filter(|r| {
                    r.method == method
                        && r.steps == steps
                        && r.scope == scope
                        && r.pair.as_deref() == pair
                })
                .collect()
        };
        for pair in ["landmarks", "capital"] {
            let got = of("pair", Some(pair));
            assert_eq!(got.len(), n_edges, "{method} {pair}: one row per edge");
            for row in got {
                let want = golden["pairs"][pair]["scores"][label][row.edge.as_str()]
                    .as_f64()
                    .unwrap();
                assert!(
                    (row.score - want).abs() < 1e-4,
                    "{method} {pair} {}: {} vs {want}",
                    row.edge,
                    row.score
                );
            }
        }
        // Over both pairs: the library's mean over items.
        for row in of("all", None) {
            let want: f64 = ["landmarks", "capital"]
                .iter()
                .map(|p| {
                    golden["pairs"][*p]["scores"][label][row.edge.as_str()]
                        .as_f64()
                        .unwrap()
                })
                .sum::<f64>()
                / 2.0;
            assert!(
                (row.score - want).abs() < 1e-4,
                "{method} all {}: {} vs {want}",
                row.edge,
                row.score
            );
            assert_eq!(row.n_pairs, 2);
            if method != "exact" {
                let exact = row.exact.expect("exact ran on every edge");
                assert!((row.error.unwrap() - (row.score - exact)).abs() < 1e-12);
            }
        }
    }
    // The library's graph JSON: its keys, every node and edge by name, in its order.
    let circuit = read_json(&run_dir.join("circuits/eap-ig-inputs-5.patching.json"));
    assert_eq!(circuit["cfg"]["n_layers"], 2);
    assert_eq!(circuit["cfg"]["n_heads"], 4);
    assert_eq!(circuit["cfg"]["parallel_attn_mlp"], false);
    let edges = circuit["edges"].as_object().unwrap();
    assert_eq!(edges.len(), n_edges);
    for name in golden["edges"].as_array().unwrap() {
        let edge = &edges[name.as_str().unwrap()];
        assert_eq!(edge["in_graph"], true);
        assert!(edge["score"].is_f64());
    }
    let nodes = circuit["nodes"].as_object().unwrap();
    assert_eq!(
        nodes.len(),
        1 + 2 * 5 + 1,
        "input, 2 × (4 heads + mlp), logits"
    );
    let text =
        std::fs::read_to_string(run_dir.join("circuits/eap-ig-inputs-5.patching.json")).unwrap();
    let first_edges: Vec<usize> = ["\"input->a0.h0<q>\"", "\"a0.h0->m0\"", "\"m1->logits\""]
        .iter()
        .map(|name| text.find(name).unwrap())
        .collect();
    assert!(
        first_edges.windows(2).all(|w| w[0] < w[1]),
        "edges in the library's order"
    );
    // Bootstrap intervals on each method's 10 (`top`) strongest edges of the mean: two
    // pairs resample to means between the two pairs' own scores.
    for (method, steps, _) in LABELS {
        let with_interval: Vec<&EdgeRow> = rows
            .iter()
            .filter(|r| {
                r.method == method && r.steps == steps && r.scope == "all" && r.ci_low.is_some()
            })
            .collect();
        assert_eq!(with_interval.len(), 10, "{method}");
        for row in with_interval {
            let own: Vec<f64> = rows
                .iter()
                .filter(|r| {
                    r.method == method
                        && r.steps == steps
                        && r.scope == "pair"
                        && r.edge == row.edge
                })
                .map(|r| r.score)
                .collect();
            let (lo, hi) = (
                own.iter().cloned().fold(f64::INFINITY, f64::min),
                own.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
            );
            let (low, high) = (row.ci_low.unwrap(), row.ci_high.unwrap());
            assert!(
                lo - 1e-6 <= low && low <= high && high <= hi + 1e-6,
                "{method} {}: [{low}, {high}] vs pairs {own:?}",
                row.edge
            );
        }
    }
    let report = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    assert!(report.contains("## Circuits"), "{report}");
    assert!(report.contains("## Circuit faithfulness"), "{report}");
    assert!(run_dir.join("figures/faithfulness.png").is_file());
    assert!(run_dir.join("figures/faithfulness_log.png").is_file());
    // Every method's curve: f = 1 with every edge, CPR and CMD in the manifest.
    let curves: Vec<CircuitRow> =
        actpatch_report::tables::read_rows(&run_dir.join("circuits.parquet"), &CIRCUITS)
            .unwrap()
            .data;
    let manifest = read_json(&run_dir.join("manifest.json"));
    let areas = manifest["circuit_areas"].as_array().unwrap();
    assert_eq!(areas.len(), 4, "one curve per method: {areas:?}");
    for area in areas {
        let interval = area["cpr_interval"]
            .as_array()
            .expect("a CPR interval over two pairs");
        assert!(interval[0].as_f64().unwrap() <= interval[1].as_f64().unwrap());
    }
    for row in curves
        .iter()
        .filter(|r| r.scope == "all" && r.fraction == 1.0)
    {
        assert!((row.faithfulness - 1.0).abs() < 1e-5, "{row:?}");
        assert_eq!(row.edges_after_pruning as usize, n_edges);
    }
    assert!(report.contains("Against `exact` on 110 edges"), "{report}");
    let _ = std::fs::remove_dir_all(&out);
}

/// A `[circuit]` section replaced into the tiny experiment.
fn with_circuit(tag: &str, circuit: &str, model: &str) -> (Option<i32>, String, PathBuf) {
    let dir = scratch(tag);
    let text = std::fs::read_to_string(repo().join("tests/fixtures/experiments/tiny_circuit.toml"))
        .unwrap();
    let start = text.find("[circuit]").unwrap();
    let end = text.find("[[pairs]]").unwrap();
    let fixtures = repo().join("tests/fixtures");
    let model_dir = std::fs::canonicalize(fixtures.join(model)).unwrap();
    let text = format!("{}{circuit}\n\n{}", &text[..start], &text[end..]).replace(
        "path = \"../tiny-gpt2\"",
        &format!("path = {:?}", model_dir.display().to_string()),
    );
    let file = dir.join("experiment.toml");
    std::fs::write(&file, text).unwrap();
    let out = dir.join("out");
    let (code, stderr, _) = run(&file, &out);
    (code, stderr, out)
}

fn bad(tag: &str, circuit: &str, model: &str, keywords: &[&str]) {
    let (code, stderr, out) = with_circuit(tag, circuit, model);
    assert_eq!(code, Some(2), "exit code; stderr:\n{stderr}");
    for k in keywords {
        assert!(stderr.contains(k), "message lacks {k:?}:\n{stderr}");
    }
    assert!(!out.exists(), "{} was created", out.display());
}

#[test]
fn bad_circuit_sections_exit_2_and_write_nothing() {
    bad(
        "method",
        "[circuit]\nmethods = [\"eap-gi\"]",
        "tiny-gpt2",
        &["[circuit] methods", "eap-gi", "eap-ig-inputs"],
    );
    bad(
        "ablation",
        "[circuit]\nablation = \"resample\"",
        "tiny-gpt2",
        &["[circuit] ablation", "resample", "\"mean\""],
    );
    bad(
        "steps",
        "[circuit]\nsteps = 0",
        "tiny-gpt2",
        &["[circuit] steps", "at least one step"],
    );
    bad(
        "exact-top",
        "[circuit]\nmethods = [\"eap\"]\nexact_top = 0",
        "tiny-gpt2",
        &["exact_top = 0"],
    );
    bad(
        "ig-mean",
        "[circuit]\nmethods = [\"eap-ig-inputs\"]\nablation = \"zero\"",
        "tiny-gpt2",
        &["[circuit] ablation", "eap-ig-inputs", "patching"],
    );
    bad(
        "unknown-key",
        "[circuit]\nmethod = [\"eap\"]",
        "tiny-gpt2",
        &["unknown field `method`"],
    );
}

/// One pair, the library's own curves: the run's circuits (from its EAP-IG-inputs(5)
/// scores, equal to the library's) give MIB's faithfulness, CPR and CMD under patching
/// and zero ablation (`golden_edges.json`).
#[test]
fn one_pair_curves_equal_mibs() {
    let dir = scratch("mib");
    let text = std::fs::read_to_string(repo().join("tests/fixtures/experiments/tiny_circuit.toml"))
        .unwrap();
    let model_dir = std::fs::canonicalize(repo().join("tests/fixtures/tiny-gpt2")).unwrap();
    let cut = text.find("[[pairs]]\nname = \"capital\"").unwrap();
    let text = text[..cut]
        .replace(
            "path = \"../tiny-gpt2\"",
            &format!("path = {:?}", model_dir.display().to_string()),
        )
        .replace(
            "methods = [\"eap\", \"eap-ig-inputs\", \"clean-corrupted\", \"exact\"]",
            "methods = [\"eap-ig-inputs\"]\ncurve_ablations = [\"patching\", \"zero\"]\nexport = [0.2]",
        );
    let file = dir.join("experiment.toml");
    std::fs::write(&file, text).unwrap();
    let (code, stderr, run_dir) = run(&file, &dir.join("out"));
    assert_eq!(code, Some(0), "stderr:\n{stderr}");
    let run_dir = run_dir.unwrap();
    let golden = read_json(&repo().join("tests/fixtures/tiny-gpt2/golden_edges.json"));
    let want = &golden["pairs"]["landmarks"]["faithfulness"];
    let rows: Vec<CircuitRow> =
        actpatch_report::tables::read_rows(&run_dir.join("circuits.parquet"), &CIRCUITS)
            .unwrap()
            .data;
    let manifest = read_json(&run_dir.join("manifest.json"));
    for ablation in ["patching", "zero"] {
        let curve: Vec<&CircuitRow> = rows
            .iter()
            .filter(|r| r.scope == "all" && r.ablation == ablation)
            .collect();
        assert_eq!(curve.len(), 10);
        for (i, row) in curve.iter().enumerate() {
            let f = want[ablation]["faithfulness"][i].as_f64().unwrap();
            assert!(
                (row.faithfulness - f).abs() < 1e-4,
                "{ablation} at {}: {} vs {f}",
                row.fraction,
                row.faithfulness
            );
            assert_eq!(
                f64::from(row.edges_after_pruning),
                want[ablation]["edges_after_prune"][i].as_f64().unwrap()
            );
        }
        let area = manifest["circuit_areas"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["ablation"] == ablation)
            .unwrap();
        for key in ["cpr", "cmd"] {
            let (got, expected) = (
                area[key].as_f64().unwrap(),
                want[ablation][key].as_f64().unwrap(),
            );
            assert!(
                (got - expected).abs() < 1e-4,
                "{ablation} {key}: {got} vs {expected}"
            );
        }
    }
    // The exported circuit at 20 %, scored again as a file: MIB's f at that size.
    let exported = run_dir.join("circuits/eap-ig-inputs-5.0.2.json");
    assert!(exported.is_file());
    let again = std::fs::read_to_string(&file).unwrap().replace(
        "export = [0.2]",
        &format!(
            "faithfulness = false\nevaluate = [{:?}]",
            exported.display().to_string()
        ),
    );
    let file_again = dir.join("again.toml");
    std::fs::write(&file_again, again).unwrap();
    let (code, stderr, run_again) = run(&file_again, &dir.join("out-again"));
    assert_eq!(code, Some(0), "stderr:\n{stderr}");
    let rows: Vec<CircuitRow> =
        actpatch_report::tables::read_rows(&run_again.unwrap().join("circuits.parquet"), &CIRCUITS)
            .unwrap()
            .data;
    let scored = rows
        .iter()
        .find(|r| {
            r.scope == "all"
                && r.ablation == "patching"
                && r.circuit_file.as_deref() == Some("eap-ig-inputs-5.0.2.json")
        })
        .expect("the file's row");
    let f = want["patching"]["faithfulness"][7].as_f64().unwrap();
    assert!(
        (scored.faithfulness - f).abs() < 1e-4,
        "{} vs {f}",
        scored.faithfulness
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Pythia's parallel blocks through `actpatch run`: the library's parallel graph (its
/// edge count, `parallel_attn_mlp` in the circuit file, no edge from a layer's heads to
/// its MLP), and curves that reach f = 1 with every edge.
#[test]
fn pythia_runs_on_the_parallel_graph() {
    let dir = scratch("pythia");
    let text = std::fs::read_to_string(repo().join("tests/fixtures/experiments/tiny_circuit.toml"))
        .unwrap();
    let model_dir = std::fs::canonicalize(repo().join("tests/fixtures/tiny-pythia")).unwrap();
    let start = text.find("[[pairs]]\nname = \"landmarks\"").unwrap();
    let end = text.find("[[pairs]]\nname = \"capital\"").unwrap();
    let text = format!("{}{}", &text[..start], &text[end..])
        .replace(
            "path = \"../tiny-gpt2\"",
            &format!("path = {:?}", model_dir.display().to_string()),
        )
        .replace("The capital of Poland is", "The capital of Italy is")
        .replace("incorrect = \" Warsaw\"", "incorrect = \" Rome\"");
    let file = dir.join("experiment.toml");
    std::fs::write(&file, text).unwrap();
    let (code, stderr, run_dir) = run(&file, &dir.join("out"));
    assert_eq!(code, Some(0), "stderr:\n{stderr}");
    let run_dir = run_dir.unwrap();
    let circuit = read_json(&run_dir.join("circuits/eap.patching.json"));
    assert_eq!(circuit["cfg"]["parallel_attn_mlp"], true);
    // (1 + l·(H+1))·(3H+1) edges into layer l, 1 + L·(H+1) into the logits.
    let (layers, heads) = (
        circuit["cfg"]["n_layers"].as_u64().unwrap(),
        circuit["cfg"]["n_heads"].as_u64().unwrap(),
    );
    let expected: u64 = (0..layers)
        .map(|l| (1 + l * (heads + 1)) * (3 * heads + 1))
        .sum::<u64>()
        + 1
        + layers * (heads + 1);
    assert_eq!(circuit["edges"].as_object().unwrap().len() as u64, expected);
    assert!(
        circuit["edges"].get("a1.h0->m1").is_none(),
        "no edge from a layer's heads to its MLP"
    );
    let curves: Vec<CircuitRow> =
        actpatch_report::tables::read_rows(&run_dir.join("circuits.parquet"), &CIRCUITS)
            .unwrap()
            .data;
    assert!(curves
        .iter()
        .any(|r| r.scope == "all" && r.fraction == 1.0 && (r.faithfulness - 1.0).abs() < 1e-5));
    let _ = std::fs::remove_dir_all(&dir);
}
