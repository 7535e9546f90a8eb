//! The fixtures' golden pairs and their TransformerLens 2.15 grids
//! (`tests/fixtures/*/golden_extra.json`, made by `tests/fixtures/gen/make_golden_extra.py`).

#![allow(dead_code)] // each test file uses its own part

use std::path::PathBuf;

use actpatch_model::HookedTransformer;
use actpatch_patching::{Align, Baselines, CellIndex, Direction, Pair, PatchKind};
use serde_json::Value;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// A fixture model, its golden pairs (name, pair, baselines) and `golden_extra.json`.
pub struct Golden {
    pub name: &'static str,
    pub model: HookedTransformer,
    pub pairs: Vec<(String, Pair, Baselines)>,
    pub extra: Value,
}

fn read_json(path: PathBuf) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

impl Golden {
    pub fn load(name: &'static str) -> Golden {
        let dir = fixtures().join(name);
        let model = HookedTransformer::from_dir(&dir).unwrap();
        let golden = read_json(dir.join("golden.json"));
        let extra = read_json(dir.join("golden_extra.json"));
        let mut pairs = Vec::new();
        for (pair_name, p) in golden["pairs"].as_object().unwrap() {
            let text = |k: &str| p[k].as_str().unwrap().to_string();
            let pair = Pair::from_prompts(
                &model,
                &text("clean"),
                &text("corrupted"),
                [text("correct").as_str(), text("incorrect").as_str()],
                Align::Strict,
            )
            .unwrap();
            let baselines = pair.baselines(&model).unwrap();
            pairs.push((pair_name.clone(), pair, baselines));
        }
        Golden {
            name,
            model,
            pairs,
            extra,
        }
    }

    /// The golden value of `cell` of `kind` in grid family `family` (`exact_denoising`,
    /// `atp_noising`, …) for pair `pair`; `None` where the file has no such grid or the
    /// entry is null (a masked attention entry).
    pub fn value(
        &self,
        pair: &str,
        family: &str,
        kind: PatchKind,
        cell: &CellIndex,
    ) -> Option<f64> {
        let (grid, index) = golden_index(kind, cell);
        let grids = &self.extra["pairs"][pair]["grids"][family];
        let value = index.iter().fold(grids.get(grid)?, |v, i| &v[*i]);
        value.as_f64()
    }
}

/// The golden grid of a kind and a cell's index in it, as TransformerLens's `patching`
/// module lays it out.
pub fn golden_index(kind: PatchKind, cell: &CellIndex) -> (&'static str, Vec<usize>) {
    let layer = cell.layer;
    let pos = || cell.position.unwrap();
    let head = || cell.head.unwrap();
    match kind {
        PatchKind::ResidPre => ("resid_pre", vec![layer, pos()]),
        PatchKind::ResidMid => ("resid_mid", vec![layer, pos()]),
        PatchKind::ResidPost => ("resid_post", vec![layer, pos()]),
        PatchKind::AttnOut => ("attn_out", vec![layer, pos()]),
        PatchKind::MlpOut => ("mlp_out", vec![layer, pos()]),
        PatchKind::HeadOutByPos => ("head_z_by_pos", vec![layer, pos(), head()]),
        PatchKind::HeadOut => ("head_z_all_pos", vec![layer, head()]),
        PatchKind::HeadPattern => ("head_pattern_all_pos", vec![layer, head()]),
        PatchKind::HeadQ => ("head_q_all_pos", vec![layer, head()]),
        PatchKind::HeadK => ("head_k_all_pos", vec![layer, head()]),
        PatchKind::HeadV => ("head_v_all_pos", vec![layer, head()]),
        PatchKind::HeadQByPos => ("head_q_by_pos", vec![layer, pos(), head()]),
        PatchKind::HeadKByPos => ("head_k_by_pos", vec![layer, pos(), head()]),
        PatchKind::HeadVByPos => ("head_v_by_pos", vec![layer, pos(), head()]),
        PatchKind::HeadPatternByDestSrc => (
            "head_pattern_dest_src_pos",
            vec![layer, head(), pos(), cell.src.unwrap()],
        ),
        PatchKind::Path | PatchKind::PathByPos => {
            panic!("path kinds have their own goldens (golden_paths.json)")
        }
    }
}

pub fn family(method: &str, direction: Direction) -> String {
    format!("{method}_{}", direction.name())
}
