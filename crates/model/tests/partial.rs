//! Partial forward passes reproduce full ones: from every layer and every start
//! position, with and without a patch, on GPT-2 and on Llama (rotary, grouped-query
//! attention), and the last-position-only last block equals the full block's last row.

use crate::common;

use actpatch_hooks::{BlockSite, Cell, HookPoint, Hooks, Patch, PatchValue};
use actpatch_model::{HookedTransformer, ModelError, Readout};
use candle_core::Tensor;
use common::{fixture, max_abs_diff};

fn models() -> Vec<(HookedTransformer, Vec<u32>)> {
    ["tiny-gpt2", "tiny-llama"]
        .into_iter()
        .map(|name| {
            let model = HookedTransformer::from_dir(fixture(name)).unwrap();
            let tokens = model.to_tokens("The Eiffel Tower is in", true).unwrap();
            (model, tokens)
        })
        .collect()
}

#[test]
fn a_partial_run_from_any_layer_and_start_gives_the_full_logits() {
    for (model, tokens) in models() {
        let base = model.base_run(&tokens, []).unwrap();
        let n = tokens.len();
        for layer in 0..model.dims().n_layers {
            for start in 0..n {
                let span = model.span(&base, start, n - start).unwrap();
                let rows = base.resid_pre(layer, start, n - start, 3).unwrap(); // [3, len, d_model]
                let logits = model
                    .run_from(
                        layer,
                        rows,
                        &span,
                        &mut Hooks::none(),
                        Readout::LastPosition,
                    )
                    .unwrap(); // [3, d_vocab]
                for row in 0..3 {
                    let diff =
                        max_abs_diff(&logits.get(row).unwrap(), &base.logits().get(0).unwrap());
                    assert!(diff < 1e-4, "layer {layer} start {start}: {diff}");
                }
            }
        }
    }
}

#[test]
fn the_last_position_only_block_equals_the_full_blocks_last_row() {
    for (model, tokens) in models() {
        let base = model.base_run(&tokens, []).unwrap();
        let n = tokens.len();
        let last = model.dims().n_layers - 1;
        for start in 0..n {
            let span = model.span(&base, start, n - start).unwrap();
            let rows = base.resid_pre(last, start, n - start, 2).unwrap();
            let full = model
                .run_block(last, rows.clone(), &span, &mut Hooks::none())
                .unwrap()
                .narrow(1, n - start - 1, 1)
                .unwrap();
            let final_only = model
                .run_block_final(last, rows, &span, &mut Hooks::none())
                .unwrap(); // [2, 1, d_model]
            assert_eq!(final_only.dims(), full.dims());
            assert!(max_abs_diff(&full, &final_only) < 1e-5, "start {start}");
        }
    }
}

#[test]
fn a_patched_partial_run_equals_the_patched_full_run() {
    // Patch one head's z at one position of layer 0 with another prompt's value.
    for (model, tokens) in models() {
        let other = model.to_tokens("The Colosseum is in", true).unwrap();
        assert_eq!(other.len(), tokens.len());
        let (layer, position, head) = (0, tokens.len() - 3, 1);
        let point = HookPoint::block(layer, BlockSite::Z);
        let (_, cache) = model
            .run_with_cache(&[other], actpatch_hooks::CacheFilter::only([point]))
            .unwrap();
        let source = cache.get(point).unwrap().clone(); // [1, pos, head, d_head]
        let full_patch = Patch::at_cells(
            point,
            PatchValue::Replace(source.clone()),
            vec![Cell {
                row: 0,
                position: Some(position),
                head: Some(head),
                key: None,
            }],
        );
        let full = model
            .run_with_patches(
                std::slice::from_ref(&tokens),
                &[full_patch],
                Readout::LastPosition,
            )
            .unwrap();

        let base = model.base_run(&tokens, []).unwrap();
        let n = tokens.len();
        let span = model.span(&base, position, n - position).unwrap();
        let span_source = source.narrow(1, position, n - position).unwrap();
        let partial_patch = Patch::at_cells(
            point,
            PatchValue::Replace(span_source),
            vec![Cell {
                row: 0,
                position: Some(0),
                head: Some(head),
                key: None,
            }],
        );
        let rows = base.resid_pre(layer, position, n - position, 1).unwrap();
        let patches = [partial_patch];
        let partial = model
            .run_from(
                layer,
                rows,
                &span,
                &mut Hooks::patching(&patches),
                Readout::LastPosition,
            )
            .unwrap();
        assert!(max_abs_diff(&full, &partial) < 1e-4);
        assert!(
            max_abs_diff(&full, base.logits()) > 1e-6,
            "the patch must change something"
        );
    }
}

#[test]
fn the_architecture_says_which_sites_feed_keys_and_values() {
    for (model, _) in models() {
        for site in [
            BlockSite::ResidPre,
            BlockSite::Ln1Normalized,
            BlockSite::K,
            BlockSite::V,
        ] {
            assert!(model.site_feeds_keys_values(site), "{site:?}");
        }
        for site in [
            BlockSite::Z,
            BlockSite::AttnOut,
            BlockSite::ResidMid,
            BlockSite::MlpOut,
            BlockSite::Pattern,
        ] {
            assert!(!model.site_feeds_keys_values(site), "{site:?}");
        }
    }
}

#[test]
fn spans_and_rows_that_do_not_fit_are_errors() {
    let (model, tokens) = models().remove(0);
    let base = model.base_run(&tokens, []).unwrap();
    let n = tokens.len();
    assert!(matches!(
        model.span(&base, n, 1),
        Err(ModelError::Span { .. })
    ));
    assert!(matches!(
        model.span(&base, 0, 0),
        Err(ModelError::Span { .. })
    ));
    let span = model.span(&base, 2, n - 2).unwrap();
    let wrong = Tensor::zeros(
        (1, n - 3, model.dims().d_model),
        candle_core::DType::F32,
        model.device(),
    )
    .unwrap();
    let err = model
        .run_block(0, wrong, &span, &mut Hooks::none())
        .unwrap_err();
    assert!(matches!(err, ModelError::SpanRows { .. }), "{err}");
}
