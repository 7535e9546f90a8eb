//! The `expect` values of `experiments/smollm2/*.toml` are Hugging Face transformers'
//! logit differences on the same GGUF (`tests/fixtures/smollm2/reference.json`, written
//! by `scripts/reference/smollm2_reference.py`), rounded to 3 decimals. Runs offline:
//! only the files are read.

use std::path::PathBuf;

use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn reference() -> Value {
    let path = repo().join("tests/fixtures/smollm2/reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The `[[pairs]]` of one experiment file that have an `expect`.
fn pairs_with_expect(path: &PathBuf) -> Vec<toml::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    let file: toml::Value = toml::from_str(&text).unwrap();
    let pairs = file.get("pairs").and_then(|p| p.as_array()).cloned();
    pairs
        .unwrap_or_default()
        .into_iter()
        .filter(|pair| pair.get("expect").is_some())
        .collect()
}

#[test]
fn every_smollm2_expect_is_the_transformers_reference_rounded() {
    let reference = reference();
    let reference_pairs = reference["pairs"].as_object().unwrap();
    let dir = repo().join("experiments/smollm2");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");

    let mut checked = Vec::new();
    for path in &files {
        let stem = path.file_stem().unwrap().to_str().unwrap();
        for pair in pairs_with_expect(path) {
            // Each expect belongs to the reference pair named after its file.
            let want = reference_pairs
                .get(stem)
                .unwrap_or_else(|| panic!("{stem}: an expect without a reference pair"));
            for key in ["clean", "corrupted", "correct", "incorrect"] {
                let got = pair[key].as_str();
                assert_eq!(got, want[key].as_str(), "{stem}: {key}");
            }
            let expect = &pair["expect"];
            for side in ["clean_logit_diff", "corrupted_logit_diff"] {
                let got = expect[side].as_float().unwrap();
                let want = want[side].as_f64().unwrap();
                assert!(
                    (got - want).abs() <= 0.0005 + 1e-12,
                    "{stem}: {side} = {got}, transformers {want}: write {want:.3}"
                );
            }
            checked.push(stem.to_string());
        }
    }
    let mut want: Vec<&String> = reference_pairs.keys().collect();
    want.sort();
    assert_eq!(checked.iter().collect::<Vec<_>>(), want);
}
