//! The run page's tables: its key facts, the baselines with every pair's warnings,
//! and any other table of the run folder as text.

use polars::prelude::*;
use serde_json::Value;

use super::{Block, Section, TableBlock};
use crate::BaselineRow;

/// The baselines table, with every pair's warnings.
pub(super) fn baselines_section(baselines: &[BaselineRow]) -> Section {
    let passed = baselines.iter().filter(|b| b.passed).count();
    let mut blocks = vec![
        Block::Text(format!(
            "{passed} of {} pairs passed validation.",
            baselines.len()
        )),
        Block::Table(baselines_table(baselines)),
    ];
    let warnings: Vec<String> = baselines
        .iter()
        .flat_map(|b| {
            b.warnings
                .iter()
                .map(move |w| format!("**{}**: {w}", b.pair))
        })
        .collect();
    if !warnings.is_empty() {
        blocks.push(Block::Text("**Warnings**".into()));
        blocks.push(Block::Bullets(warnings));
    }
    Section {
        heading: "Baselines".into(),
        blocks,
    }
}

fn baselines_table(rows: &[BaselineRow]) -> TableBlock {
    let columns = [
        "pair",
        "concept",
        "clean → corrupted",
        "answers",
        "tokens",
        "clean LD",
        "corrupted LD",
        "outcome",
    ];
    TableBlock {
        columns: columns.map(String::from).to_vec(),
        rows: rows
            .iter()
            .map(|b| {
                let outcome = match (b.passed, b.swept) {
                    (true, _) => "passed".to_string(),
                    (false, true) => format!("**failed, swept anyway**: {}", b.reasons.join("; ")),
                    (false, false) => format!("**failed, skipped**: {}", b.reasons.join("; ")),
                };
                let [clean, corrupted] = b.baseline_labels();
                vec![
                    b.pair.clone(),
                    b.concept.clone(),
                    b.prompts_label(),
                    b.answers_label(),
                    format!("{} / {}", b.clean_tokens.len(), b.corrupted_tokens.len()),
                    clean,
                    corrupted,
                    outcome,
                ]
            })
            .collect(),
    }
}

/// Any table, every value as text (numbers to 4 significant digits).
pub fn frame_table(frame: &DataFrame) -> TableBlock {
    let columns: Vec<String> = frame
        .get_column_names()
        .iter()
        .map(|n| n.to_string())
        .collect();
    let rows = (0..frame.height())
        .map(|i| {
            frame
                .columns()
                .iter()
                .map(|c| match c.get(i) {
                    Ok(AnyValue::Null) | Err(_) => "–".to_string(),
                    Ok(AnyValue::Float64(v)) => format!("{v:.4}"),
                    Ok(AnyValue::Float32(v)) => format!("{v:.4}"),
                    Ok(AnyValue::String(s)) => s.to_string(),
                    Ok(AnyValue::StringOwned(s)) => s.to_string(),
                    Ok(v) => v.to_string(),
                })
                .collect()
        })
        .collect();
    TableBlock { columns, rows }
}

/// The page's key facts from the run's manifest `m` and its cell count.
pub(super) fn facts(m: &Value, cells: usize) -> Vec<(String, String)> {
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    };
    let mut facts = Vec::new();
    let mut add = |key: &str, value: Option<String>| {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            facts.push((key.to_string(), v));
        }
    };
    add(
        "model",
        text(&m["model"]["source"]).map(|s| format!("`{s}`")),
    );
    add("run", text(&m["run_id"]).map(|s| format!("`{s}`")));
    add("status", text(&m["status"]));
    add("started", text(&m["started"]));
    add(
        "wall time",
        m["wall_seconds"].as_f64().map(|s| format!("{s:.1} s")),
    );
    add(
        "pairs",
        m["pairs"]["total"].as_u64().map(|t| {
            format!(
                "{} of {t} passed validation",
                m["pairs"]["passed"].as_u64().unwrap_or(0)
            )
        }),
    );
    add("cells", Some(cells.to_string()));
    let list = |v: &Value| {
        v.as_array().map(|k| {
            k.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
    };
    add("directions", list(&m["directions"]));
    add("patch kinds", list(&m["kinds"]));
    // `tool.commit`: the build commit; `git_commit` in manifests before it.
    let commit = (m["tool"]["commit"].as_str()).or(m["git_commit"].as_str());
    add(
        "actpatch",
        text(&m["tool"]["version"]).map(|v| match commit {
            Some(c) => format!("{v} (`{}`)", &c[..c.len().min(10)]),
            None => v,
        }),
    );
    facts
}
