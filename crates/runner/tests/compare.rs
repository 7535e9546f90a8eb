//! `actpatch compare` and `actpatch runs` on the tiny GPT-2 fixture: a run against
//! itself, against copies with one changed cell, missing and extra cells, doubled
//! layers (by depth), and a table of another schema version; `--fail-above` exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use actpatch_report::tables::{cells_frame, read_parquet, write_cells};
use actpatch_report::{CellRow, ImageFormat, SCHEMA_VERSION, SCHEMA_VERSION_KEY};
use actpatch_runner::compare::{compare, CompareOptions, Comparison};
use actpatch_runner::runs::{render, scan, RunsFilter};
use actpatch_runner::{run, RunOptions};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("actpatch-compare-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One run of the fixture experiment (under `tmp("runs")/tiny`) and its cells.
fn fixture_run() -> &'static (PathBuf, Vec<CellRow>) {
    static RUN: OnceLock<(PathBuf, Vec<CellRow>)> = OnceLock::new();
    RUN.get_or_init(|| {
        let options = RunOptions {
            out_dir: Some(tmp("runs").join("tiny")),
            quiet: true,
            ..RunOptions::default()
        };
        let outcome = run(
            &repo().join("tests/fixtures/experiments/tiny.toml"),
            &options,
        )
        .unwrap();
        let cells =
            actpatch_report::tables::read_cells(&outcome.run_dir.join("cells.parquet")).unwrap();
        (outcome.run_dir, cells)
    })
}

/// Writes `cells` as `<tmp(name)>/cells.parquet` and returns the file.
fn variant(name: &str, cells: &[CellRow]) -> PathBuf {
    let path = tmp(name).join("cells.parquet");
    write_cells(&path, cells).unwrap();
    path
}

fn options(out: &str) -> CompareOptions {
    CompareOptions {
        out_dir: Some(tmp(out)),
        formats: Vec::new(),
        ..CompareOptions::default()
    }
}

fn is_target(c: &CellRow) -> bool {
    c.pair == "landmarks" && c.kind == "resid_pre" && c.layer == 1 && c.position == Some(3)
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_actpatch"))
}

fn compare_cli(a: &Path, b: &Path, args: &[&str], out: &str) -> Output {
    bin()
        .arg("compare")
        .arg(a)
        .arg(b)
        .args(args)
        .args(["--no-figures", "--out"])
        .arg(tmp(out))
        .output()
        .unwrap()
}

#[test]
fn a_run_against_itself_is_all_zero_with_correlation_one() {
    let (run_dir, cells) = fixture_run();
    let options = CompareOptions {
        formats: vec![ImageFormat::Png],
        ..options("self")
    };
    let c: Comparison = compare(run_dir, run_dir, &options).unwrap();
    let s = &c.summary;
    assert_eq!((s.matched, s.only_a, s.only_b), (cells.len(), 0, 0));
    assert_eq!((s.max_abs, s.mean_abs), (0.0, 0.0));
    assert!(s.changed.is_empty());
    assert_eq!(s.per_kind.len(), 8);
    for k in &s.per_kind {
        assert!(
            (k.pearson - 1.0).abs() < 1e-12 && (k.spearman - 1.0).abs() < 1e-12,
            "{k:?}"
        );
        assert_eq!(k.max_abs, 0.0);
    }
    assert!(c.markdown.contains("No matched cell changed."));
    let table = read_parquet(&c.out_dir.join("compare.parquet")).unwrap();
    assert_eq!(table.height(), cells.len());
    let image = image::open(
        c.out_dir
            .join("figures/diff_landmarks_denoising_resid_pre.png"),
    )
    .unwrap();
    assert!(image.width() > 200 && image.height() > 100);
    let md = std::fs::read_to_string(c.out_dir.join("compare.md")).unwrap();
    assert!(
        md.contains("figures/diff_capital_denoising_head_out_by_pos.png"),
        "{md}"
    );
}

#[test]
fn one_changed_cell_is_exactly_the_cell_reported() {
    let (run_dir, cells) = fixture_run();
    let mut changed = cells.clone();
    let target = changed.iter_mut().find(|c| is_target(c)).unwrap();
    let before = target.normalized_logit_diff;
    target.normalized_logit_diff += 0.25;
    let b = variant("one-changed", &changed);

    let c = compare(run_dir, &b, &options("one-changed-out")).unwrap();
    let s = &c.summary;
    assert_eq!(s.matched, cells.len());
    assert_eq!(s.changed.len(), 1, "{:?}", s.changed);
    let r = &s.changed[0];
    assert_eq!(
        (
            r.pair.as_str(),
            r.kind.as_str(),
            r.layer,
            r.head,
            r.position
        ),
        ("landmarks", "resid_pre", 1, None, Some(3))
    );
    assert_eq!(r.a, Some(before));
    assert!((r.diff.unwrap() - 0.25).abs() < 1e-12);
    assert!((s.max_abs - 0.25).abs() < 1e-12);
    assert!((s.mean_abs - 0.25 / cells.len() as f64).abs() < 1e-12);
    let resid_pre = s.per_kind.iter().find(|k| k.kind == "resid_pre").unwrap();
    assert!(resid_pre.pearson < 1.0 && resid_pre.pearson > 0.5);
    let attn = s.per_kind.iter().find(|k| k.kind == "attn_out").unwrap();
    assert_eq!(attn.max_abs, 0.0);
    assert!(
        c.markdown.contains("1 of 1 changed cells"),
        "{}",
        c.markdown
    );
}

#[test]
fn unmatched_cells_are_counted_on_each_side() {
    let (run_dir, cells) = fixture_run();
    // B lacks the capital pair's mlp_out cells and has one cell A does not.
    let mut b: Vec<CellRow> = cells
        .iter()
        .filter(|c| !(c.pair == "capital" && c.kind == "mlp_out"))
        .cloned()
        .collect();
    let missing = cells.len() - b.len();
    assert_eq!(missing, 2 * 6);
    let mut extra = cells[0].clone();
    extra.layer = 7;
    b.push(extra);
    let b = variant("unmatched", &b);

    let c = compare(run_dir, &b, &options("unmatched-out")).unwrap();
    let s = &c.summary;
    assert_eq!((s.matched, s.only_a, s.only_b), (cells.len() - 12, 12, 1));
    assert!(s.changed.is_empty());
    let mlp = s.per_kind.iter().find(|k| k.kind == "mlp_out").unwrap();
    assert_eq!((mlp.matched, mlp.only_a, mlp.only_b), (2 * 8, 12, 0));
    let statuses = c.rows.iter().filter(|r| r.status == "only_a").count();
    assert_eq!(statuses, 12);
}

#[test]
fn by_depth_averages_the_layers_of_a_bin() {
    let (run_dir, cells) = fixture_run();
    // A 4-layer "model": layer l of A becomes layers 2l and 2l+1, at v − 0.1 and v + 0.1.
    let deeper: Vec<CellRow> = cells
        .iter()
        .flat_map(|c| {
            [(0, -0.1), (1, 0.1)].map(|(offset, delta)| CellRow {
                layer: 2 * c.layer + offset,
                normalized_logit_diff: c.normalized_logit_diff + delta,
                ..c.clone()
            })
        })
        .collect();
    let b = variant("deeper", &deeper);

    let by_layer = compare(run_dir, &b, &options("deeper-layer")).unwrap();
    assert_eq!(
        by_layer.summary.only_b,
        cells.len() * 2 - by_layer.summary.matched
    );
    assert!(by_layer.markdown.contains("--by-depth"));

    let options = CompareOptions {
        by_depth: true,
        ..options("deeper-depth")
    };
    let c = compare(run_dir, &b, &options).unwrap();
    let s = &c.summary;
    assert_eq!((s.matched, s.only_a, s.only_b), (cells.len(), 0, 0));
    assert!(s.max_abs < 1e-12, "{}", s.max_abs);
    assert!(
        s.changed.is_empty(),
        "rounding is not a change: {:?}",
        s.changed
    );
    assert_eq!((c.a.n_layers, c.b.n_layers), (2, 4));
}

#[test]
fn fail_above_sets_the_exit_code() {
    let (run_dir, cells) = fixture_run();
    let mut changed = cells.clone();
    if let Some(c) = changed.iter_mut().find(|c| is_target(c)) {
        c.normalized_logit_diff -= 0.3;
    }
    let b = variant("fail-above", &changed);

    let out = compare_cli(run_dir, &b, &["--fail-above", "0.1"], "fa-1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("1 of") && stderr.contains("more than 0.1"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("| landmarks | landmarks | resid_pre | denoising | 1 | – | 3 |"),
        "{stdout}"
    );

    let out = compare_cli(run_dir, &b, &["--fail-above", "0.5"], "fa-2");
    assert_eq!(out.status.code(), Some(0));
    let out = compare_cli(run_dir, run_dir, &["--fail-above", "0"], "fa-3");
    assert_eq!(out.status.code(), Some(0));
    let out = compare_cli(run_dir, &b, &["--fail-above", "-1"], "fa-4");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn missing_runs_and_other_schema_versions_are_refused() {
    let (run_dir, cells) = fixture_run();
    let path = tmp("v999").join("cells.parquet");
    let mut frame = cells_frame(cells).unwrap();
    let file = std::fs::File::create(&path).unwrap();
    polars::prelude::ParquetWriter::new(file)
        .with_key_value_metadata(Some(polars::prelude::KeyValueMetadata::from_static(vec![
            (SCHEMA_VERSION_KEY.to_string(), "999".to_string()),
        ])))
        .finish(&mut frame)
        .unwrap();

    let out = compare_cli(run_dir, &path, &[], "v999-out");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("schema version 999")
            && stderr.contains(&format!("reads versions 1 to {SCHEMA_VERSION}")),
        "{stderr}"
    );
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");

    let missing = tmp("nothing").join("no-such-run");
    let out = compare_cli(&missing, run_dir, &[], "missing-out");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("A:") && stderr.contains("does not exist"),
        "{stderr}"
    );
    let out = compare_cli(&tmp("nothing"), run_dir, &[], "missing-out");
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no cells.parquet"));
}

#[test]
fn runs_lists_complete_and_incomplete_runs() {
    let (run_dir, cells) = fixture_run();
    let root = tmp("runs");
    let id = run_dir.file_name().unwrap().to_string_lossy().into_owned();
    // An interrupted run: a manifest still "running", no tables.
    let stale = root.join("other").join("20200101T000000Z-dead");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(
        stale.join("manifest.json"),
        r#"{"status": "running", "run_id": "20200101T000000Z-dead", "experiment": "other", "started": "2020-01-01T00:00:00+00:00"}"#,
    )
    .unwrap();

    let all = scan(&root, &RunsFilter::default()).unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[0].run_id, "20200101T000000Z-dead"); // oldest first
    assert!(!all[0].complete());
    assert_eq!(all[1].run_id, id);
    assert_eq!(all[1].cells, Some(cells.len()));
    assert_eq!((all[1].passed, all[1].failed), (Some(0), Some(2)));
    let table = render(&all);
    assert!(table.contains("incomplete (running)") && table.contains("2020-01-01 00:00"));
    assert!(
        table.contains(&format!("{}  tiny", id)) && table.contains("0/2"),
        "{table}"
    );

    let only = |concept: &str, model: &str| RunsFilter {
        concept: (!concept.is_empty()).then(|| concept.to_string()),
        model: (!model.is_empty()).then(|| model.to_string()),
    };
    assert_eq!(scan(&root, &only("capitals", "")).unwrap().len(), 1);
    assert_eq!(scan(&root, &only("", "TINY-GPT2")).unwrap().len(), 1);
    assert!(scan(&root, &only("rivers", "")).unwrap().is_empty());

    let out = bin().arg("runs").arg(&root).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id));
    let out = bin().arg("runs").arg(root.join("absent")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
