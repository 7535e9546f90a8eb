//! `[sweep] methods` through the runner: exact, atp, atp* and ig in one experiment,
//! both directions, every kind including the q/k/v inputs and single pattern entries.
//! The exact cells and the atp cells equal TransformerLens's grids
//! (`golden_extra.json`) within 1e-4; `attribution.parquet` and the report's
//! "Attribution accuracy" section compare every approximation with exact.

use std::path::PathBuf;

use actpatch_report::accuracy::ACCURACY;
use actpatch_report::tables::{read_cells, read_rows};
use actpatch_report::{AccuracyRow, CellRow};
use actpatch_runner::compare::{compare, CompareOptions};
use actpatch_runner::shard::{ShardChoice, ShardSpec};
use actpatch_runner::{run, RunOptions};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// TransformerLens's grid name and the cell's index in it.
fn golden_index(cell: &CellRow) -> (&'static str, Vec<usize>) {
    let layer = cell.layer as usize;
    let pos = || cell.position.unwrap() as usize;
    let head = || cell.head.unwrap() as usize;
    match cell.kind.as_str() {
        "resid_pre" => ("resid_pre", vec![layer, pos()]),
        "resid_post" => ("resid_post", vec![layer, pos()]),
        "head_out" => ("head_z_all_pos", vec![layer, head()]),
        "head_pattern" => ("head_pattern_all_pos", vec![layer, head()]),
        "head_q" => ("head_q_all_pos", vec![layer, head()]),
        "head_k_by_pos" => ("head_k_by_pos", vec![layer, pos(), head()]),
        "head_v_by_pos" => ("head_v_by_pos", vec![layer, pos(), head()]),
        "head_pattern_by_dest_src" => (
            "head_pattern_dest_src_pos",
            vec![layer, head(), pos(), cell.src_position.unwrap() as usize],
        ),
        other => panic!("no golden grid for {other}"),
    }
}

const KINDS: &str = r#"["resid_pre", "resid_post", "head_out", "head_pattern", "head_q", "head_k_by_pos", "head_v_by_pos", "head_pattern_by_dest_src"]"#;

/// Every method.
const ALL_METHODS: &str = r#"["exact", "atp", "atp*", "ig"]"#;

/// The tiny fixture's experiment with `methods` (a TOML list), both directions and
/// `KINDS`, written into a fresh folder named after `test`: (folder, experiment file).
fn methods_experiment(test: &str, methods: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("actpatch-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(fixtures().join("experiments/tiny.toml")).unwrap();
    let models = std::fs::canonicalize(fixtures()).unwrap();
    let text = text
        .replace(
            "[sweep]\n",
            &format!("[sweep]\ndirection = \"both\"\nmethods = {methods}\nig_steps = 4\n"),
        )
        .replace("path = \"../", &format!("path = \"{}/", models.display()));
    let text = text
        .lines()
        .map(|l| match l.starts_with("kinds = ") {
            true => format!("kinds = {KINDS}"),
            false => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let path = dir.join("methods.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn every_method_runs_and_exact_and_atp_match_golden() {
    let (dir, path) = methods_experiment("methods", ALL_METHODS);
    let options = RunOptions {
        out_dir: Some(dir.join("out")),
        quiet: true,
        ..RunOptions::default()
    };
    let outcome = run(&path, &options).unwrap();
    let cells = read_cells(&outcome.run_dir.join("cells.parquet")).unwrap();
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("tiny-gpt2/golden_extra.json")).unwrap(),
    )
    .unwrap();
    let mut checked = std::collections::BTreeSet::new();
    for cell in &cells {
        let family = match cell.method.as_str() {
            "exact" => format!("exact_{}", cell.direction),
            "atp" => format!("atp_{}", cell.direction),
            _ => continue,
        };
        let (grid, index) = golden_index(cell);
        let grids = &golden["pairs"][&cell.pair]["grids"][&family];
        let Some(value) = grids.get(grid) else {
            // Pattern entries have exact denoising values only.
            assert_eq!(cell.kind, "head_pattern_by_dest_src");
            continue;
        };
        let want = index.iter().fold(value, |v, i| &v[*i]).as_f64().unwrap();
        let got = cell.normalized_logit_diff;
        assert!(
            (got - want).abs() < 1e-4,
            "{} {} {} {} {index:?}: {got} vs {want}",
            cell.pair,
            cell.direction,
            cell.method,
            cell.kind
        );
        checked.insert((
            cell.method.clone(),
            cell.kind.clone(),
            cell.direction.clone(),
        ));
    }
    // exact: 8 kinds × 2 directions, less dest_src noising; atp: 7 kinds × 2.
    assert_eq!(checked.len(), 15 + 14, "{checked:?}");
    for method in ["exact", "atp", "atp*", "ig"] {
        let n = cells.iter().filter(|c| c.method == method).count();
        assert_eq!(n * 4, cells.len(), "{method}: one cell per method and cell");
    }

    let accuracy = read_rows(&outcome.run_dir.join("attribution.parquet"), &ACCURACY)
        .unwrap()
        .data;
    // 2 pairs × 2 directions × 8 kinds × 3 approximations.
    assert_eq!(accuracy.len(), 2 * 2 * 8 * 3);
    for row in &accuracy {
        assert!(row.agreement.cells > 0);
        assert!(row.seconds.is_some() && row.exact_seconds.is_some());
        assert!(row.agreement.max_abs_error >= row.agreement.median_abs_error);
    }
    let report = std::fs::read_to_string(outcome.run_dir.join("report.md")).unwrap();
    assert!(report.contains("## Attribution accuracy"), "{report}");
    // One scatter plot per kind (every approximation, every pair and direction), in
    // each format of the experiment, linked from the report's section.
    for kind in ["resid_pre", "head_q", "head_pattern_by_dest_src"] {
        let image = format!("figures/accuracy_{kind}.png");
        let link = format!("![{kind}: estimate against exact]({image})");
        assert!(report.contains(&link), "{link} not in {report}");
        for ext in ["png", "svg"] {
            let file = outcome
                .run_dir
                .join(format!("figures/accuracy_{kind}.{ext}"));
            assert!(file.is_file(), "{}", file.display());
        }
    }
    let svg =
        std::fs::read_to_string(outcome.run_dir.join("figures/accuracy_resid_pre.svg")).unwrap();
    // (2 layers × 8 positions + 2 × 6) × 2 directions = 56 cells per method.
    for method in ["atp", "atp*", "ig"] {
        assert!(svg.contains(&format!("{method} (56 cells)")), "{method}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_sharded_run_with_approximate_methods_is_refused_before_writing() {
    let (dir, path) = methods_experiment("methods-shard", ALL_METHODS);
    let options = RunOptions {
        out_dir: Some(dir.join("out")),
        quiet: true,
        run_id: Some("sharded".into()),
        shard: Some(ShardChoice {
            shard: ShardSpec::new(0, 2).unwrap(),
            from: "--shard",
        }),
        ..RunOptions::default()
    };
    let Err(error) = run(&path, &options) else {
        panic!("a sharded run with atp, atp* and ig ran");
    };
    assert_eq!(error.exit_code(), 2, "{error}");
    let message = error.to_string();
    assert!(message.contains("atp, atp*, ig"), "{message}");
    assert!(message.contains("methods = [\"exact\"]"), "{message}");
    assert!(
        !dir.join("out").exists(),
        "the refused run wrote {:?}",
        dir.join("out")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs the methods experiment with `methods` in a folder named after `test`; returns
/// (the folder, the run folder).
fn run_methods(test: &str, methods: &str) -> (PathBuf, PathBuf) {
    let (dir, path) = methods_experiment(test, methods);
    let options = RunOptions {
        out_dir: Some(dir.join("out")),
        quiet: true,
        ..RunOptions::default()
    };
    let outcome = run(&path, &options).unwrap();
    (dir, outcome.run_dir)
}

/// The statistics columns of an "Attribution accuracy" table line (pair … median
/// error), without the costs, which differ from run to run.
fn statistics_of(line: &str) -> String {
    line.split('|').take(14).collect::<Vec<_>>().join("|")
}

#[test]
fn compare_of_an_exact_run_and_an_atp_run_gives_the_statistics_of_one_run_of_both() {
    let (both_dir, both) = run_methods("methods-both", r#"["exact", "atp"]"#);
    let (exact_dir, exact) = run_methods("methods-exact", r#"["exact"]"#);
    let (atp_dir, atp) = run_methods("methods-atp", r#"["atp"]"#);
    let want = read_rows(&both.join("attribution.parquet"), &ACCURACY)
        .unwrap()
        .data;
    assert!(
        !atp.join("attribution.parquet").exists(),
        "atp alone has no exact cells"
    );

    let out = atp_dir.join("compare");
    let options = CompareOptions {
        out_dir: Some(out.clone()),
        ..CompareOptions::default() // PNG figures
    };
    let got = compare(&exact, &atp, &options).unwrap().accuracy;
    let md = std::fs::read_to_string(out.join("compare.md")).unwrap();
    assert!(md.contains("![head_q: estimate against exact](figures/accuracy_head_q.png)"));
    assert!(out.join("figures/accuracy_head_q.png").is_file());
    assert_eq!(got.len(), want.len());
    assert_eq!(got.len(), 2 * 2 * 8, "2 pairs × 2 directions × 8 kinds");
    for (g, w) in got.iter().zip(&want) {
        let key = |r: &AccuracyRow| {
            (
                r.pair.clone(),
                r.direction.clone(),
                r.kind.clone(),
                r.method.clone(),
            )
        };
        assert_eq!(key(g), key(w));
        let (a, b) = (&g.agreement, &w.agreement);
        assert_eq!(
            (a.cells, a.large_cells, a.false_negatives),
            (b.cells, b.large_cells, b.false_negatives),
            "{:?}",
            key(g)
        );
        let close = |x: f64, y: f64| (x - y).abs() < 1e-9 || (x.is_nan() && y.is_nan());
        let opt = |x: Option<f64>, y: Option<f64>| match (x, y) {
            (Some(x), Some(y)) => close(x, y),
            (x, y) => x == y,
        };
        assert!(
            opt(a.pearson, b.pearson) && opt(a.spearman, b.spearman),
            "{:?}",
            key(g)
        );
        assert!(close(a.recall_top10, b.recall_top10) && close(a.recall_top1pct, b.recall_top1pct));
        assert!(opt(a.sign_agreement, b.sign_agreement));
        assert!(
            close(a.max_abs_error, b.max_abs_error)
                && close(a.median_abs_error, b.median_abs_error)
        );
        // Costs from each run's manifest: atp's from the atp run, exact's from the exact run.
        assert!(g.seconds.is_some() && g.passes == w.passes, "{:?}", key(g));
        assert!(g.exact_seconds.is_some() && g.exact_passes == w.exact_passes);
    }
    assert!(out.join("attribution.parquet").is_file());

    // The command prints the run report's table (the same statistics per line).
    let printed = std::process::Command::new(env!("CARGO_BIN_EXE_actpatch"))
        .arg("compare")
        .args([&exact, &atp])
        .args(["--no-figures", "--out"])
        .arg(atp_dir.join("compare-cli"))
        .output()
        .unwrap();
    assert!(printed.status.success());
    let printed = String::from_utf8(printed.stdout).unwrap();
    let report = std::fs::read_to_string(both.join("report.md")).unwrap();
    let rows_of = |text: &str| -> Vec<String> {
        let section = text.split("## Attribution accuracy").nth(1).unwrap_or("");
        (section.lines())
            .skip_while(|l| !l.starts_with("| pair"))
            .skip(2) // header and alignment
            .take_while(|l| l.starts_with('|'))
            .map(statistics_of)
            .collect()
    };
    assert_eq!(rows_of(&printed).len(), 2 * 2 * 8, "{printed}");
    assert_eq!(rows_of(&printed), rows_of(&report));
    for dir in [both_dir, exact_dir, atp_dir] {
        let _ = std::fs::remove_dir_all(dir);
    }
}
