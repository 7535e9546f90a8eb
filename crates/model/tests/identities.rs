//! Hand-derived identities of patching: they hold for any weights.

use crate::common;

use actpatch_hooks::{BlockSite, CacheFilter, HookPoint, Patch};
use actpatch_model::{HookedTransformer, Readout};
use candle_core::{Device, Tensor};
use common::{fixture, golden, ids, max_abs_diff};

fn setup() -> (HookedTransformer, Vec<u32>, Vec<u32>) {
    let model = HookedTransformer::from_dir(fixture("tiny-gpt2")).unwrap();
    let golden = golden("tiny-gpt2");
    let pair = &golden["pairs"]["landmarks"];
    (
        model,
        ids(&pair["clean_tokens"]),
        ids(&pair["corrupted_tokens"]),
    )
}

#[test]
fn patching_a_run_with_its_own_cache_everywhere_changes_nothing() {
    let (model, clean, _) = setup();
    let (logits, cache) = model
        .run_with_cache(std::slice::from_ref(&clean), CacheFilter::All)
        .unwrap();
    let patches: Vec<Patch> = model
        .hook_space()
        .all()
        .into_iter()
        .map(|p| Patch::replace(p, cache.get(p).unwrap().clone()))
        .collect();
    assert_eq!(patches.len(), 38);
    let patched = model
        .run_with_patches(&[clean], &patches, Readout::AllPositions)
        .unwrap();
    assert!(max_abs_diff(&logits, &patched) < 1e-5);
}

#[test]
fn replacing_all_of_resid_pre_0_gives_the_clean_logits() {
    let (model, clean, corrupted) = setup();
    let (clean_logits, cache) = model
        .run_with_cache(&[clean], CacheFilter::only([HookPoint::resid_pre(0)]))
        .unwrap();
    let patch = Patch::replace(
        HookPoint::resid_pre(0),
        cache.get(HookPoint::resid_pre(0)).unwrap().clone(),
    );
    let patched = model
        .run_with_patches(
            std::slice::from_ref(&corrupted),
            &[patch],
            Readout::AllPositions,
        )
        .unwrap();
    assert!(max_abs_diff(&clean_logits, &patched) < 1e-5);
    // and the corrupted run alone is different
    let corrupted_logits = model.logits(&[corrupted]).unwrap();
    assert!(max_abs_diff(&clean_logits, &corrupted_logits) > 1e-2);
}

#[test]
fn zeroing_every_head_of_a_layer_leaves_only_the_output_bias() {
    let (model, clean, _) = setup();
    let weights = candle_core::safetensors::load(
        fixture("tiny-gpt2").join("model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    for layer in 0..2 {
        let b_o = &weights[&format!("transformer.h.{layer}.attn.c_proj.bias")]; // [d_model]
        let zeroed = Patch::zero(HookPoint::block(layer, BlockSite::Z));
        let bias_only = Tensor::zeros((1, clean.len(), 32), candle_core::DType::F32, &Device::Cpu)
            .unwrap()
            .broadcast_add(b_o)
            .unwrap();
        let as_bias = Patch::replace(HookPoint::block(layer, BlockSite::AttnOut), bias_only);
        let a = model
            .run_with_patches(
                std::slice::from_ref(&clean),
                &[zeroed],
                Readout::AllPositions,
            )
            .unwrap();
        let b = model
            .run_with_patches(
                std::slice::from_ref(&clean),
                &[as_bias],
                Readout::AllPositions,
            )
            .unwrap();
        assert!(max_abs_diff(&a, &b) < 1e-5, "layer {layer}");
    }
}

#[test]
fn a_patch_of_one_row_leaves_the_other_rows_alone() {
    let (model, clean, corrupted) = setup();
    let (_, cache) = model.run_with_cache(&[clean], CacheFilter::All).unwrap();
    let point = HookPoint::resid_pre(1);
    let patch = Patch::replace(point, cache.get(point).unwrap().clone())
        .rows([1])
        .positions([3]);
    let batch = vec![corrupted.clone(), corrupted.clone()];
    let patched = model
        .run_with_patches(&batch, std::slice::from_ref(&patch), Readout::LastPosition)
        .unwrap();
    let plain = model
        .forward(
            &model
                .tokens_tensor(std::slice::from_ref(&corrupted))
                .unwrap(),
            &mut actpatch_hooks::Hooks::none(),
            Readout::LastPosition,
        )
        .unwrap();
    assert!(max_abs_diff(&patched.get(0).unwrap(), &plain.get(0).unwrap()) < 1e-6);
    let single = model
        .run_with_patches(&[corrupted], &[patch.rows([0])], Readout::LastPosition)
        .unwrap();
    assert!(max_abs_diff(&patched.get(1).unwrap(), &single.get(0).unwrap()) < 1e-5);
    assert!(max_abs_diff(&patched.get(1).unwrap(), &plain.get(0).unwrap()) > 1e-4);
}

#[test]
fn adding_a_zero_vector_and_mean_patching_behave() {
    let (model, clean, _) = setup();
    let point = HookPoint::block(0, BlockSite::ResidMid);
    let plain = model.logits(std::slice::from_ref(&clean)).unwrap();
    let zero_vec = Tensor::zeros(32, candle_core::DType::F32, &Device::Cpu).unwrap();
    let added = model
        .run_with_patches(
            std::slice::from_ref(&clean),
            &[Patch::add(point, zero_vec)],
            Readout::AllPositions,
        )
        .unwrap();
    assert!(max_abs_diff(&plain, &added) < 1e-6);
    // Mean over positions at every position makes every position's resid equal.
    let mut hooks = actpatch_hooks::Hooks::new(&[], CacheFilter::only([point]));
    let patches = [Patch::mean(point)];
    let mut patched_hooks = actpatch_hooks::Hooks::new(&patches, CacheFilter::only([point]));
    let tokens = model.tokens_tensor(&[clean]).unwrap();
    model
        .forward(&tokens, &mut hooks, Readout::LastPosition)
        .unwrap();
    model
        .forward(&tokens, &mut patched_hooks, Readout::LastPosition)
        .unwrap();
    let mean = hooks.cache().get(point).unwrap().mean_keepdim(1).unwrap(); // [1, 1, d]
    let patched = patched_hooks.cache().get(point).unwrap();
    assert!(
        max_abs_diff(
            &patched.broadcast_sub(&mean).unwrap(),
            &patched.zeros_like().unwrap()
        ) < 1e-5
    );
}
