//! A pass of several spans gives each part the numbers of its own partial pass, on
//! every family (rotary, grouped-query attention, sliding windows, soft-capping,
//! parallel blocks): the block, the last block, and patches addressed in the pass's
//! flattened rows.

use crate::common;

use actpatch_hooks::{BlockSite, CacheFilter, Cell, HookPoint, Hooks, Patch, PatchValue};
use actpatch_model::{BaseRun, HookedTransformer, Span};
use candle_core::Tensor;
use common::{fixture, max_abs_diff, FIXTURES};

/// (start, rows) of the parts: the whole prompt, a middle span, the last position.
fn layout(n: usize) -> [(usize, usize); 3] {
    [(0, 2), (n / 2, 3), (n - 1, 1)]
}

/// Rows `[rows, n − start, d_model]` of `layer`'s block input, each row nudged
/// differently so the rows of a part differ.
fn rows(base: &BaseRun, layer: usize, start: usize, rows: usize) -> Tensor {
    let n = base.n_pos();
    let plain = base.resid_pre(layer, start, n - start, rows).unwrap();
    let nudge: Vec<f32> = (0..plain.elem_count())
        .map(|i| ((i * 7919) % 101) as f32 / 1000.0)
        .collect();
    let nudge = Tensor::from_vec(nudge, plain.shape(), plain.device()).unwrap();
    (plain + nudge).unwrap()
}

fn parts<'s>(
    base: &BaseRun,
    spans: &'s [Span<'s>],
    layer: usize,
    layout: &[(usize, usize)],
) -> Vec<(Tensor, &'s Span<'s>)> {
    (layout.iter().zip(spans))
        .map(|((start, n_rows), span)| (rows(base, layer, *start, *n_rows), span))
        .collect()
}

/// The spans of `layout`'s parts: from each start to the end of the prompt.
fn spans_of<'b>(
    model: &HookedTransformer,
    base: &'b BaseRun,
    layout: &[(usize, usize)],
) -> Vec<Span<'b>> {
    (layout.iter())
        .map(|(start, _)| model.span(base, *start, base.n_pos() - start).unwrap())
        .collect()
}

fn setup(name: &str) -> (HookedTransformer, Vec<u32>) {
    let model = HookedTransformer::from_dir(fixture(name)).unwrap();
    let tokens = model
        .to_tokens("The Eiffel Tower is in Paris", true)
        .unwrap();
    (model, tokens)
}

#[test]
fn every_part_of_a_pass_of_spans_gets_its_own_pass_numbers() {
    for name in FIXTURES {
        let (model, tokens) = setup(name);
        let base = model.base_run(&tokens, []).unwrap();
        let n = tokens.len();
        let layout = layout(n);
        let spans = spans_of(&model, &base, &layout);
        let last = model.dims().n_layers - 1;
        for layer in [0, last] {
            let together = model
                .run_block_spans(
                    layer,
                    parts(&base, &spans, layer, &layout),
                    &mut Hooks::none(),
                )
                .unwrap();
            let finals = model
                .run_block_final_spans(layer, parts(&base, &spans, layer, &layout))
                .unwrap();
            for ((rows, span), (out, out_final)) in parts(&base, &spans, layer, &layout)
                .into_iter()
                .zip(together.iter().zip(&finals))
            {
                let alone = model
                    .run_block(layer, rows.clone(), span, &mut Hooks::none())
                    .unwrap();
                let alone_final = model
                    .run_block_final(layer, rows, span, &mut Hooks::none())
                    .unwrap();
                assert_eq!(out.dims(), alone.dims(), "{name}");
                assert_eq!(out_final.dims(), alone_final.dims(), "{name}");
                let gap = max_abs_diff(out, &alone).max(max_abs_diff(out_final, &alone_final));
                assert!(
                    gap < 1e-5,
                    "{name} layer {layer} start {}: {gap}",
                    span.start()
                );
            }
        }
    }
}

#[test]
fn patches_in_a_pass_of_spans_address_its_flattened_rows() {
    for name in FIXTURES {
        let (model, tokens) = setup(name);
        // The same prompt with two tokens swapped: a source of the same length.
        let mut other = tokens.clone();
        other.swap(1, 2);
        let point = HookPoint::block(0, BlockSite::Z);
        let (_, cache) = model
            .run_with_cache(&[other], CacheFilter::only([point]))
            .unwrap();
        let source = cache.get(point).unwrap(); // [1, pos, head, d_head]
        let base = model.base_run(&tokens, []).unwrap();
        let n = tokens.len();
        // Two single positions, 2 rows each; row r of each patches head r.
        let positions = [n - 3, n - 1];
        let spans: Vec<Span> = (positions.iter())
            .map(|p| model.span(&base, *p, 1).unwrap())
            .collect();
        let mut flat_sources = Vec::new();
        let mut cells = Vec::new();
        let mut expected = Vec::new();
        for (i, (position, span)) in positions.iter().zip(&spans).enumerate() {
            let at = source.narrow(1, *position, 1).unwrap(); // [1, 1, head, d_head]
            flat_sources.push(
                at.broadcast_as((1, 2, at.dim(2).unwrap(), at.dim(3).unwrap()))
                    .unwrap(),
            );
            let own_cells: Vec<Cell> = (0..2)
                .map(|row| Cell {
                    row,
                    position: Some(0),
                    head: Some(row),
                    key: None,
                })
                .collect();
            cells.extend(own_cells.iter().map(|c| Cell {
                row: 0,
                position: Some(2 * i + c.row),
                ..*c
            }));
            let patch = [Patch::at_cells(point, PatchValue::Replace(at), own_cells)];
            let rows = base.resid_pre(0, *position, 1, 2).unwrap();
            expected.push(
                model
                    .run_block(0, rows, span, &mut Hooks::patching(&patch))
                    .unwrap(),
            );
        }
        let patch = [Patch::at_cells(
            point,
            PatchValue::Replace(Tensor::cat(&flat_sources, 1).unwrap()),
            cells,
        )];
        let parts = (positions.iter().zip(&spans))
            .map(|(p, span)| (base.resid_pre(0, *p, 1, 2).unwrap(), span))
            .collect();
        let together = model
            .run_block_spans(0, parts, &mut Hooks::patching(&patch))
            .unwrap();
        for (got, want) in together.iter().zip(&expected) {
            assert!(max_abs_diff(got, want) < 1e-5, "{name}");
        }
        assert!(
            max_abs_diff(
                &expected[0],
                &base.resid_pre(1, positions[0], 1, 2).unwrap()
            ) > 1e-6,
            "{name}: the patch must change something"
        );
    }
}

#[test]
fn a_pass_of_spans_cannot_hook_attention_patterns() {
    let (model, tokens) = setup("tiny-gpt2");
    let base = model.base_run(&tokens, []).unwrap();
    let n = tokens.len();
    let spans: Vec<Span> = [1, 3]
        .iter()
        .map(|s| model.span(&base, *s, n - s).unwrap())
        .collect();
    let parts = (spans.iter())
        .map(|span| {
            (
                base.resid_pre(0, span.start(), span.len(), 1).unwrap(),
                span,
            )
        })
        .collect();
    let mut hooks = Hooks::caching(CacheFilter::only([HookPoint::block(0, BlockSite::Pattern)]));
    let err = model.run_block_spans(0, parts, &mut hooks).unwrap_err();
    assert!(err.to_string().contains("patterns"), "{err}");
}

#[test]
fn a_pass_of_spans_that_gradients_go_through_runs_span_by_span_with_the_same_numbers() {
    // Rows a gradient is tracked through take the plain ops (no fused kernels), and
    // attention then runs span by span (as on a GPU).
    for name in ["tiny-gpt2", "tiny-gemma2"] {
        let (model, tokens) = setup(name);
        let base = model.base_run(&tokens, []).unwrap();
        let n = tokens.len();
        let layout = layout(n);
        let spans = spans_of(&model, &base, &layout);
        let plain = parts(&base, &spans, 0, &layout);
        let tracked = (plain.iter())
            .map(|(rows, span)| {
                let var = candle_core::Var::from_tensor(rows).unwrap();
                (var.as_tensor().clone(), *span)
            })
            .collect();
        let fused = model.run_block_spans(0, plain, &mut Hooks::none()).unwrap();
        let by_span = model
            .run_block_spans(0, tracked, &mut Hooks::none())
            .unwrap();
        for (a, b) in fused.iter().zip(&by_span) {
            assert!(
                b.track_op(),
                "{name}: the tracked pass must stay differentiable"
            );
            assert!(max_abs_diff(a, b) < 1e-5, "{name}");
        }
    }
}
