//! Concept-level runs on the tiny GPT-2 fixture (its tokenizer is GPT-2's own): pairs
//! from CSV, JSONL, parquet and templates; token roles; `concepts.parquet` recomputed
//! from `cells.parquet`; the report opening with the concepts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use actpatch_report::tables::{read_cells, read_concepts};
use actpatch_report::{CellRow, ConceptRow};
use actpatch_runner::experiment::Experiment;
use actpatch_runner::{run, RunOptions, RunOutcome};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/experiments")
}

fn fixture_run() -> &'static (RunOutcome, Vec<CellRow>, Vec<ConceptRow>) {
    static RUN: OnceLock<(RunOutcome, Vec<CellRow>, Vec<ConceptRow>)> = OnceLock::new();
    RUN.get_or_init(|| {
        let out = std::env::temp_dir().join(format!("actpatch-concepts-{}", std::process::id()));
        let options = RunOptions {
            out_dir: Some(out),
            quiet: true,
            ..RunOptions::default()
        };
        let outcome = run(&fixtures().join("concepts.toml"), &options).unwrap();
        let cells = read_cells(&outcome.run_dir.join("cells.parquet")).unwrap();
        let concepts = read_concepts(&outcome.run_dir.join("concepts.parquet")).unwrap();
        (outcome, cells, concepts)
    })
}

#[test]
fn datasets_and_templates_become_pairs() {
    let experiment = Experiment::load(&fixtures().join("concepts.toml")).unwrap();
    let names: Vec<String> = (0..experiment.pairs.len())
        .map(|i| experiment.pair_name(i))
        .collect();
    // 1 written pair, 3 CSV rows, 3 JSONL rows (a blank line skipped), 2 texts × 3 fills.
    assert_eq!(names.len(), 1 + 3 + 3 + 6, "{names:?}");
    assert!(
        names.contains(&"landmarks-t2-kremlin".to_string()),
        "{names:?}"
    );
    let pair = |name: &str| &experiment.pairs[names.iter().position(|n| n == name).unwrap()];
    // Answers keep their leading space; the dataset's concept fills rows without one.
    assert_eq!(pair("csv-acropolis").correct, " Athens");
    assert_eq!(pair("jsonl-italy").concept, "capitals");
    assert_eq!(pair("csv-taj").group.as_deref(), Some("{x} is located in"));
    let filled = pair("landmarks-t2-1");
    assert_eq!(filled.clean, "People visit the Colosseum in");
    assert_eq!(filled.corrupted, "People visit the Eiffel Tower in");
    assert_eq!(
        filled.group.as_deref(),
        Some("People visit the {subject} in")
    );
}

/// A parquet dataset reads like the CSV one.
#[test]
fn parquet_dataset() {
    use polars::prelude::*;
    let dir = std::env::temp_dir().join(format!("actpatch-parquet-ds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut frame = df!(
        "clean" => ["The Acropolis is in"],
        "corrupted" => ["The Louvre is in"],
        "correct" => [" Athens"],
        "incorrect" => [" Paris"],
        "concept" => ["landmarks"],
        "rank" => [1u32],
    )
    .unwrap();
    let file = std::fs::File::create(dir.join("pairs.parquet")).unwrap();
    ParquetWriter::new(file).finish(&mut frame).unwrap();
    let toml = "[experiment]\nname = \"p\"\n[model]\npath = \"m\"\n[[datasets]]\npath = \"pairs.parquet\"\n";
    let experiment = Experiment::parse(toml, &dir.join("e.toml")).unwrap();
    assert_eq!(experiment.pairs.len(), 1);
    assert_eq!(experiment.pairs[0].correct, " Athens");
    assert_eq!(experiment.pair_name(0), "pairs-1");
}

fn parse_error(toml: &str, files: &[(&str, &str)]) -> String {
    let dir = std::env::temp_dir().join(format!(
        "actpatch-ds-err-{}-{}",
        std::process::id(),
        files.len()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let head = "[experiment]\nname = \"e\"\n[model]\npath = \"m\"\n";
    Experiment::parse(&format!("{head}{toml}"), &dir.join("e.toml"))
        .unwrap_err()
        .to_string()
}

/// A bad row names the file, the row (and line) and the column.
#[test]
fn row_errors_name_file_row_and_column() {
    let csv =
        "clean,corrupted,correct,incorrect,concept\nThe A is,The B is, x, y,c\nThe A is,, x, y,c\n";
    let message = parse_error("[[datasets]]\npath = \"bad.csv\"\n", &[("bad.csv", csv)]);
    assert!(
        message.contains("bad.csv, row 2 (line 3): column `corrupted` is empty"),
        "{message}"
    );

    let message = parse_error(
        "[[datasets]]\npath = \"none.csv\"\n",
        &[("none.csv", "clean,corrupted\na,b\n")],
    );
    assert!(
        message.contains("none.csv, row 1 (line 2)") && message.contains("no `concept`"),
        "{message}"
    );

    let jsonl = "{\"clean\": \"a\", \"corrupted\": \"b\", \"correct\": \" x\", \"incorrect\": \" y\"}\nnot json\n";
    let message = parse_error(
        "[[datasets]]\npath = \"bad.jsonl\"\nconcept = \"c\"\n",
        &[("bad.jsonl", jsonl)],
    );
    assert!(
        message.contains("bad.jsonl: row 2 (line 2): not a JSON object"),
        "{message}"
    );

    let csv = "clean,corrupted,correct,incorrect,concept,subject\nThe A is,The B is, x, y,c,Z\n";
    let message = parse_error("[[datasets]]\npath = \"s.csv\"\n", &[("s.csv", csv)]);
    assert!(
        message.contains("column `subject` = \"Z\" is not part of `clean`"),
        "{message}"
    );

    let message = parse_error(
        "[[templates]]\nconcept = \"c\"\ntext = \"The {subject} is\"\nfills = [{ place = [\"a\", \"b\"], correct = \" x\", incorrect = \" y\" }]\n",
        &[],
    );
    assert!(message.contains("no value for slot `subject`"), "{message}");
}

/// Roles with GPT-2's tokenizer: a template slot of two tokens, a subject column, a
/// free pair of different lengths (diff span), BOS and end.
#[test]
fn cells_carry_roles() {
    let (_, cells, _) = fixture_run();
    let roles = |pair: &str, direction: &str| -> Vec<String> {
        let mut by_position: BTreeMap<u32, String> = BTreeMap::new();
        for c in cells
            .iter()
            .filter(|c| c.pair == pair && c.direction == direction && c.kind == "resid_pre")
        {
            by_position.insert(c.position.unwrap(), c.role.clone().unwrap());
        }
        by_position.into_values().collect()
    };
    // " Col" "os" "se" "um" and " E" "iff" "el" " Tower": a slot of four tokens.
    let four = [
        "BOS",
        "The",
        "subject.first",
        "subject.mid",
        "subject.mid",
        "subject.last",
        "is",
        "end",
    ];
    assert_eq!(roles("landmarks-t1-1", "denoising"), four);
    assert_eq!(roles("landmarks-t1-1", "noising"), four);
    // A one-token slot is `.last`; the template's own words keep their text.
    assert_eq!(
        roles("landmarks-t2-kremlin", "denoising"),
        ["BOS", "People", "visit", "the", "subject.last", "end"]
    );
    // From the CSV's subject column (" Ac" "ropolis").
    assert_eq!(
        roles("csv-acropolis", "noising"),
        ["BOS", "The", "subject.first", "subject.last", "is", "end"]
    );
    // A free pair: the differing tokens, between the shared prefix and suffix.
    assert_eq!(
        roles("free-colosseum", "denoising"),
        [
            "BOS",
            "The",
            "diff.first",
            "diff.mid",
            "diff.mid",
            "diff.last",
            "is",
            "end"
        ]
    );
    // Kinds that patch every position at once have no role.
    assert!(cells
        .iter()
        .filter(|c| c.kind == "head_out")
        .all(|c| c.role.is_none()));
}

/// Every concept row's n_pairs, mean and ratio of sums recomputed from the cells
/// (per pair the mean over the role's positions, then over pairs), and its interval
/// around the mean.
#[test]
fn concept_table_agrees_with_the_cells() {
    let (outcome, cells, concepts) = fixture_run();
    let baselines =
        actpatch_report::tables::read_baselines(&outcome.run_dir.join("baselines.parquet"))
            .unwrap();
    let gap: BTreeMap<&str, (f64, f64)> = (baselines.iter())
        .filter_map(|b| {
            Some((
                b.pair.as_str(),
                (b.clean_logit_diff?, b.corrupted_logit_diff?),
            ))
        })
        .collect();
    type Key = (String, String, String, u32, Option<u32>, Option<String>);
    /// Per pair, its (normalized, patched) values at the cell.
    type PerPair<'a> = BTreeMap<&'a str, Vec<(f64, f64)>>;
    let mut per_pair: BTreeMap<Key, PerPair> = BTreeMap::new();
    for c in cells {
        let key = (
            c.concept.clone(),
            c.direction.clone(),
            c.kind.clone(),
            c.layer,
            c.head,
            c.role.clone(),
        );
        per_pair
            .entry(key)
            .or_default()
            .entry(&c.pair)
            .or_default()
            .push((c.normalized_logit_diff, c.patched_logit_diff.unwrap()));
    }
    assert_eq!(concepts.len(), per_pair.len());
    for row in concepts {
        let key = (
            row.concept.clone(),
            row.direction.clone(),
            row.kind.clone(),
            row.layer,
            row.head,
            row.role.clone(),
        );
        let pairs = &per_pair[&key];
        assert_eq!(row.n_pairs as usize, pairs.len());
        let mean_of = |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| {
            v.iter().map(f).sum::<f64>() / v.len() as f64
        };
        let mean = pairs.values().map(|v| mean_of(v, |x| x.0)).sum::<f64>() / pairs.len() as f64;
        assert!(
            (row.mean - mean).abs() < 1e-9,
            "{key:?}: {} vs {mean}",
            row.mean
        );
        let (moved, total) = pairs.iter().fold((0.0, 0.0), |(m, t), (pair, v)| {
            let (clean, corrupted) = gap[pair];
            (m + mean_of(v, |x| x.1) - corrupted, t + clean - corrupted)
        });
        assert!((row.ratio_of_sums - moved / total).abs() < 1e-9, "{key:?}");
        assert!(
            row.ci_low <= row.mean + 1e-12 && row.mean <= row.ci_high + 1e-12,
            "{key:?}"
        );
    }
    let landmarks = concepts
        .iter()
        .filter(|r| r.concept == "landmarks")
        .map(|r| r.n_pairs)
        .max();
    // csv-taj is not swept (" Taj Mahal" and " Great Wall" differ in length under
    // align = "strict"), so its concept has 9 of its 10 pairs.
    assert_eq!(landmarks, Some(1 + 2 + 6));
}

#[test]
fn report_opens_with_concepts() {
    let (outcome, _, _) = fixture_run();
    let report = std::fs::read_to_string(outcome.run_dir.join("report.md")).unwrap();
    let at = |s: &str| {
        report
            .find(s)
            .unwrap_or_else(|| panic!("no {s:?} in report.md"))
    };
    assert!(at("## Concepts") < at("## Baselines"));
    assert!(at("### capitals") < at("## Baselines") && at("### landmarks") < at("## Baselines"));
    assert!(report.contains("<details>"));
    let figure = outcome
        .run_dir
        .join("figures/concept_landmarks_denoising_resid_pre.png");
    assert!(Path::new(&figure).is_file());
    let page = std::fs::read_to_string(outcome.run_dir.join("report.html")).unwrap();
    assert!(
        page.contains("landmarks: 9 pairs"),
        "the page's concept facet"
    );
}
