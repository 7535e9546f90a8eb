//! What the fast-path tests share: fixtures with their pairs (two golden pairs and a
//! misaligned one under each alignment), and one sweep request run both ways.
#![allow(dead_code)]

use std::path::PathBuf;

use actpatch_model::HookedTransformer;
use actpatch_patching::{
    cells_of, fast, naive, Align, Baselines, CellIndex, CellResult, DirectedPair, Direction,
    MetricSet, Pair, PatchKind,
};

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

pub struct Setup {
    pub model: HookedTransformer,
    pub pairs: Vec<(String, Pair, Baselines)>,
}

pub fn pair(
    model: &HookedTransformer,
    clean: &str,
    corrupted: &str,
    answers: [&str; 2],
    align: Align,
) -> (Pair, Baselines) {
    let pair = Pair::from_prompts(model, clean, corrupted, answers, align).unwrap();
    let baselines = pair.baselines(model).unwrap();
    (pair, baselines)
}

/// The fixture's two golden pairs, plus a misaligned pair under each alignment.
pub fn setup(model_dir: &str, second_corrupted: &str, second_answers: [&str; 2]) -> Setup {
    let model = HookedTransformer::from_dir(fixtures().join(model_dir)).unwrap();
    let landmarks = ["The Colosseum is in", "The Eiffel Tower is in"];
    let mut pairs = Vec::new();
    for (name, clean, corrupted, answers, align) in [
        (
            "landmarks",
            landmarks[0],
            landmarks[1],
            [" Rome", " Paris"],
            Align::Strict,
        ),
        (
            "capital",
            "The capital of France is",
            second_corrupted,
            second_answers,
            Align::Strict,
        ),
        (
            "misaligned-start",
            landmarks[0],
            "The Champs Elysees is in",
            [" Rome", " Paris"],
            Align::Start,
        ),
        (
            "misaligned-end",
            landmarks[0],
            "The Champs Elysees is in",
            [" Rome", " Paris"],
            Align::End,
        ),
    ] {
        let (p, b) = pair(&model, clean, corrupted, answers, align);
        pairs.push((name.to_string(), p, b));
    }
    Setup { model, pairs }
}

/// One sweep request: a pair of a setup, a direction, a kind and its cells.
pub struct Case<'a> {
    pub setup: &'a Setup,
    pub pair: usize,
    pub direction: Direction,
    pub kind: PatchKind,
    pub metrics: MetricSet,
    pub fast_rows: usize,
    pub naive_rows: usize,
}

impl Case<'_> {
    pub fn new(setup: &Setup, pair: usize, direction: Direction, kind: PatchKind) -> Case<'_> {
        Case {
            setup,
            pair,
            direction,
            kind,
            metrics: MetricSet::All,
            fast_rows: 7,
            naive_rows: 5,
        }
    }

    pub fn directed(&self) -> DirectedPair<'_> {
        let (_, pair, baselines) = &self.setup.pairs[self.pair];
        let model = &self.setup.model;
        DirectedPair::new(
            model,
            pair,
            baselines,
            self.direction,
            &[self.kind],
            self.metrics,
        )
        .unwrap()
    }

    /// Every cell this pair, direction and kind has.
    pub fn all_cells(&self) -> Vec<CellIndex> {
        let directed = self.directed();
        cells_of(
            self.kind,
            self.setup.model.dims(),
            &directed.positions(None),
        )
    }

    /// (fast, naive) results on `cells`.
    pub fn both(&self, cells: &[CellIndex]) -> (Vec<CellResult>, Vec<CellResult>) {
        let model = &self.setup.model;
        let directed = self.directed();
        let target = fast::target_run(model, &directed, &[self.kind]).unwrap();
        let fast = fast::sweep(
            model,
            &directed,
            &target,
            self.kind,
            cells,
            self.fast_rows,
            &mut |_| {},
        )
        .unwrap();
        let naive = naive::sweep(
            model,
            &directed,
            self.kind,
            cells,
            self.naive_rows,
            &mut |_| {},
        )
        .unwrap();
        (fast, naive)
    }

    pub fn label(&self) -> String {
        format!(
            "{} {} {}",
            self.setup.pairs[self.pair].0, self.direction, self.kind
        )
    }

    pub fn applies(&self) -> bool {
        let (_, pair, _) = &self.setup.pairs[self.pair];
        !self.kind.needs_equal_lengths() || pair.alignment.is_identity()
    }
}

pub fn assert_agree(fast: &[CellResult], naive: &[CellResult], what: &str) {
    assert_eq!(fast.len(), naive.len());
    for (f, n) in fast.iter().zip(naive) {
        assert_eq!(
            (f.index, f.direction, f.kind),
            (n.index, n.direction, n.kind)
        );
        let (a, b) = (f.metrics, n.metrics);
        for (name, x, y) in [
            ("logit_diff", a.logit_diff, b.logit_diff),
            (
                "normalized",
                a.normalized_logit_diff,
                b.normalized_logit_diff,
            ),
            (
                "prob_correct",
                a.prob_correct.unwrap_or(0.0),
                b.prob_correct.unwrap_or(0.0),
            ),
            ("kl_div", a.kl_div.unwrap_or(0.0), b.kl_div.unwrap_or(0.0)),
        ] {
            assert!(
                (x - y).abs() < 1e-4,
                "{what} {:?} {name}: fast {x} vs naive {y}",
                f.index
            );
        }
    }
}

/// Fast and naive agree on every cell of `kind`, on every pair of `setup`, in both
/// directions (patterns only between prompts of equal lengths).
pub fn every_cell_agrees(setup: &Setup, kind: PatchKind) {
    for pair in 0..setup.pairs.len() {
        for direction in Direction::BOTH {
            let case = Case {
                naive_rows: 64,
                ..Case::new(setup, pair, direction, kind)
            };
            if case.applies() {
                let (fast, naive) = case.both(&case.all_cells());
                assert_agree(&fast, &naive, &case.label());
            }
        }
    }
}
