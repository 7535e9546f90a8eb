"""`load_model`, `to_tokens`, `run_with_cache` and `patch` against the fixtures'
TransformerLens 2.15 goldens (golden.json, golden_extra.json), within 1e-4."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import golden

FIXTURES = ["tiny-gpt2", "tiny-llama"]
TOLERANCE = 1e-4

# golden_extra.json's grid names → actpatch's kinds. TransformerLens's `*_by_pos` grids
# are [layer, pos, head], as Model.patch returns them.
KINDS = {
    "resid_pre": "resid_pre",
    "resid_mid": "resid_mid",
    "resid_post": "resid_post",
    "attn_out": "attn_out",
    "mlp_out": "mlp_out",
    "head_z_by_pos": "head_out_by_pos",
    "head_z_all_pos": "head_out",
    "head_pattern_all_pos": "head_pattern",
    "head_q_all_pos": "head_q",
    "head_q_by_pos": "head_q_by_pos",
    "head_k_all_pos": "head_k",
    "head_k_by_pos": "head_k_by_pos",
    "head_v_all_pos": "head_v",
    "head_v_by_pos": "head_v_by_pos",
    "head_pattern_dest_src_pos": "head_pattern_by_dest_src",
}


def as_array(values) -> np.ndarray:
    """A golden list (None for masked entries) as a float array (NaN for None)."""
    return np.array(
        values if not _has_none(values) else _none_to_nan(values), dtype=np.float64
    )


def _has_none(values) -> bool:
    if isinstance(values, list):
        return any(_has_none(v) for v in values)
    return values is None


def _none_to_nan(values):
    if isinstance(values, list):
        return [_none_to_nan(v) for v in values]
    return float("nan") if values is None else values


@pytest.mark.parametrize("fixture", FIXTURES)
def test_tokens_match_transformerlens(models, fixture):
    for pair in golden(fixture)["pairs"].values():
        tokens = models[fixture].to_tokens(pair["clean"])
        assert tokens.dtype == np.int64
        assert tokens.tolist() == [pair["clean_tokens"]]
        assert models[fixture].to_single_token(pair["correct"]) == pair["correct_id"]


@pytest.mark.parametrize("fixture", FIXTURES)
def test_run_with_cache_matches_transformerlens(models, fixture):
    model = models[fixture]
    checked = 0
    for pair in golden(fixture)["pairs"].values():
        logits, cache = model.run_with_cache(pair["clean"])
        assert logits.shape == (1, len(pair["clean_tokens"]), model.cfg["d_vocab"])
        last = logits[0, -1].astype(np.float64)
        np.testing.assert_allclose(
            last[:32], pair["clean_last_logits_first32"], atol=TOLERANCE
        )
        logsumexp = np.log(np.exp(last - last.max()).sum()) + last.max()
        assert abs(logsumexp - pair["clean_last_logsumexp"]) < TOLERANCE
        for name, want in pair.get("activations_clean", {}).items():
            assert name in cache, f"{fixture}: no {name} in the cache"
            got = cache[name][0].astype(np.float64)
            want = as_array(want)
            assert got.shape == want.shape, f"{fixture} {name}: {got.shape} vs {want.shape}"
            masked = np.isnan(want)
            np.testing.assert_allclose(
                got[~masked], want[~masked], atol=TOLERANCE, err_msg=f"{fixture} {name}"
            )
            checked += 1
    assert checked > 20


def test_run_with_cache_names_restrict_the_cache(gpt2):
    names = ["blocks.0.hook_resid_pre", "blocks.1.attn.hook_pattern"]
    _, cache = gpt2.run_with_cache("The Colosseum is in", names=names)
    assert list(cache) == names
    assert cache["blocks.1.attn.hook_pattern"].shape == (1, 4, 8, 8)
    assert cache["blocks.0.hook_resid_pre"].flags.writeable


@pytest.mark.parametrize("fixture", FIXTURES)
@pytest.mark.parametrize("direction", ["denoising", "noising"])
def test_patch_grids_match_transformerlens(models, fixture, direction):
    model = models[fixture]
    pairs = golden(fixture)["pairs"]
    extra = golden(fixture, "golden_extra.json")["pairs"]
    checked = 0
    for name, grids in extra.items():
        pair = pairs[name]
        answers = (pair["correct"], pair["incorrect"])
        for grid_name, want in grids["grids"][f"exact_{direction}"].items():
            grid = model.patch(
                pair["clean"],
                pair["corrupted"],
                answers,
                kind=KINDS[grid_name],
                metric="normalized_logit_diff",
                direction=direction,
            )
            want = as_array(want)
            assert grid.shape == want.shape, f"{fixture} {name} {grid_name}"
            masked = np.isnan(want)
            np.testing.assert_allclose(
                grid[~masked],
                want[~masked],
                atol=TOLERANCE,
                err_msg=f"{fixture} {name} {direction} {grid_name}",
            )
            checked += 1
    assert checked >= 20


def test_patch_metrics_agree_with_the_baselines(gpt2):
    """logit_diff = ld_corrupted + normalized × (ld_clean − ld_corrupted), cell by cell."""
    clean, corrupted, answers = "The Colosseum is in", "The Eiffel Tower is in", (" Rome", " Paris")
    base = gpt2.baselines(clean, corrupted, answers)
    raw = gpt2.patch(clean, corrupted, answers, kind="resid_pre", metric="logit_diff")
    normalized = gpt2.patch(
        clean, corrupted, answers, kind="resid_pre", metric="normalized_logit_diff"
    )
    gap = base["clean_logit_diff"] - base["corrupted_logit_diff"]
    np.testing.assert_allclose(
        raw, base["corrupted_logit_diff"] + normalized * gap, atol=1e-4
    )
    # The last layer's output at the final position is all the logits read.
    post = gpt2.patch(clean, corrupted, answers, kind="resid_post", metric="logit_diff")
    assert abs(post[-1, -1] - base["clean_logit_diff"]) < 1e-4
    prob = gpt2.patch(clean, corrupted, answers, kind="resid_pre", metric="prob_correct")
    assert np.all((prob >= 0) & (prob <= 1))
