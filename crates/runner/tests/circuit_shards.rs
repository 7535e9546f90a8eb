//! `[circuit]` in a sharded run: each shard measures the exact effects of whole
//! receiver blocks, the merge scores the rest, and the merged run equals the single
//! run byte for byte; a shard's missing part stops the merge before it writes.

use std::path::Path;

use crate::shards::{
    edited_copy, failed, merge, no_temporary_files, ok, output, repo, run_cmd, scratch,
};

/// Every table, circuit file and figure of `merged` is `single`'s, byte for byte.
fn assert_same_files(merged: &Path, single: &Path) {
    let mut names: Vec<String> = [
        "cells.parquet",
        "baselines.parquet",
        "edges.parquet",
        "circuits.parquet",
    ]
    .map(String::from)
    .to_vec();
    for folder in ["circuits", "figures"] {
        for entry in std::fs::read_dir(single.join(folder)).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            names.push(format!("{folder}/{name}"));
        }
    }
    assert!(names.len() > 8, "{names:?}");
    for name in names {
        let (a, b) = (merged.join(&name), single.join(&name));
        assert!(
            std::fs::read(&a).ok() == std::fs::read(&b).ok(),
            "{} differs from {}",
            a.display(),
            b.display()
        );
    }
}

#[test]
fn exact_edges_split_by_receiver_block_and_merge_into_the_single_run() {
    let dir = scratch("circuit");
    // Every method of the tiny circuit file, exact on all 110 edges, and the curves.
    let fixture = repo().join("tests/fixtures/experiments/tiny_circuit.toml");
    let file = edited_copy(&fixture, &dir.join("circuit.toml"), |text| {
        text.replace("top = 10\n", "top = 10\nfaithfulness = true\n")
    });

    ok(output(run_cmd(&file, &dir.join("single"), &[], &[])));
    let out = dir.join("sharded");
    let run_dir = out.join("R");
    for index in 0..3 {
        let shard = format!("{index}/3");
        ok(output(run_cmd(
            &file,
            &out,
            &["--shard", &shard, "--no-merge"],
            &[],
        )));
    }

    // Each shard measured some receiver groups whole; together, every edge once.
    let mut measured = Vec::new();
    for index in 0..3 {
        let part = run_dir.join(format!("exact/shard={index}-of-3.json"));
        let part: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(part).unwrap()).unwrap();
        let edges: Vec<u64> = (part["edges"].as_array().unwrap().iter())
            .map(|e| e.as_u64().unwrap())
            .collect();
        assert!(!edges.is_empty(), "shard {index} measured nothing");
        assert_eq!(part["pairs"].as_array().unwrap().len(), 2);
        measured.extend(edges);
    }
    measured.sort_unstable();
    assert_eq!(measured, (0..110).collect::<Vec<u64>>());

    // A part gone: the merge names it and writes nothing.
    let part = run_dir.join("exact/shard=1-of-3.json");
    let aside = run_dir.join("exact/aside");
    std::fs::rename(&part, &aside).unwrap();
    let said = failed(merge(&run_dir), 2);
    assert!(
        said.contains("shard 1/3's exact edge effects") && said.contains("Run that shard again"),
        "{said}"
    );
    assert!(!run_dir.join("edges.parquet").exists());
    std::fs::rename(&aside, &part).unwrap();

    ok(merge(&run_dir));
    assert_same_files(&run_dir, &dir.join("single/R"));
    no_temporary_files(&run_dir);
    let _ = std::fs::remove_dir_all(&dir);
}
