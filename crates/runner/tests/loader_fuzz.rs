//! The experiment loader never panics: 10,000 generated documents, each `Ok` or a
//! typed error. Documents are mutations of a valid file (lines dropped, duplicated,
//! values replaced, bytes inserted) plus arbitrary text.

use std::path::Path;

use actpatch_runner::experiment::Experiment;
use proptest::prelude::*;

const VALID: &str = r#"[experiment]
name = "fuzz"
description = "d"

[model]
id = "gpt2"
revision = "main"
prepend_bos = true

[sweep]
kinds = ["resid_pre", "head_out_by_pos"]
positions = [0, 2]

[validate]
enabled = true
min_gap = 1.0
require_clean_positive = true
align = "strict"

[output]
dir = "results/x"
formats = ["png", "svg"]

[[pairs]]
name = "p"
concept = "c"
clean = "The capital of France is"
corrupted = "The capital of Italy is"
correct = " Paris"
incorrect = " Rome"
align = "start"
expect = { clean_logit_diff = 1.0, corrupted_logit_diff = -1.0, tolerance = 0.1 }
"#;

const VALUES: [&str; 12] = [
    "\"\"",
    "-1",
    "1e309",
    "nan",
    "[]",
    "{}",
    "true",
    "\"all\"",
    "[1, -2]",
    "\"résumé ✓\"",
    "[[1]]",
    "0x10",
];

#[derive(Debug, Clone)]
enum Edit {
    Drop(usize),
    Duplicate(usize),
    ReplaceValue(usize, usize),
    Insert(usize, String),
}

fn apply(edits: &[Edit]) -> String {
    let mut lines: Vec<String> = VALID.lines().map(String::from).collect();
    for edit in edits {
        let n = lines.len().max(1);
        match edit {
            Edit::Drop(i) if !lines.is_empty() => {
                lines.remove(i % n);
            }
            Edit::Duplicate(i) if !lines.is_empty() => {
                let line = lines[i % n].clone();
                lines.insert(i % n, line);
            }
            Edit::ReplaceValue(i, v) if !lines.is_empty() => {
                let line = &mut lines[i % n];
                if let Some((key, _)) = line.split_once('=') {
                    *line = format!("{key}= {}", VALUES[v % VALUES.len()]);
                }
            }
            Edit::Insert(i, text) => lines.insert(i % (lines.len() + 1), text.clone()),
            _ => {}
        }
    }
    lines.join("\n")
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<usize>().prop_map(Edit::Drop),
        any::<usize>().prop_map(Edit::Duplicate),
        (any::<usize>(), any::<usize>()).prop_map(|(i, v)| Edit::ReplaceValue(i, v)),
        (any::<usize>(), "\\PC{0,20}").prop_map(|(i, s)| Edit::Insert(i, s)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8_000, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn mutated_documents_load_or_fail_cleanly(edits in proptest::collection::vec(edit(), 0..6)) {
        let text = apply(&edits);
        let _ = Experiment::parse(&text, Path::new("fuzz.toml"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn arbitrary_text_loads_or_fails_cleanly(text in "\\PC{0,400}") {
        let _ = Experiment::parse(&text, Path::new("fuzz.toml"));
    }
}

#[test]
fn the_unmutated_document_loads() {
    let experiment = Experiment::parse(VALID, Path::new("fuzz.toml")).unwrap();
    assert_eq!(experiment.pairs.len(), 1);
}
