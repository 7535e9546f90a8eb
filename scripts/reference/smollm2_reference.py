"""Reference values for the SmolLM2-135M-Instruct tests, from Hugging Face transformers.

Loads models/SmolLM2-135M-Instruct.Q4_1.gguf (`just fetch-smollm2`) with transformers'
`gguf_file=` loading, which dequantizes every tensor to f32 (the same file and the same
dequantization actpatch does), and writes tests/fixtures/smollm2/reference.json:

- `model`: the dimensions read from the file;
- `pairs`: the five reference pairs of experiments/smollm2/*.toml (keyed by file stem):
  token ids with BOS `<|im_start|>` (id 1) prepended, answer ids, the clean and corrupted
  logit differences (logit[correct] - logit[incorrect] at the final position), and for
  both prompts the final position's first 32 logits, log-sum-exp and top-10 ids;
- `causal_tracing`: the country_capitals pair's `resid_pre` denoising grid `[layer, pos]`,
  in normalized logit-difference units (ld - ld_corrupted) / (ld_clean - ld_corrupted):
  the clean run's input to decoder layer L at position p written into the corrupted run;
- `f64_check`: the largest |f32 - f64| over the logit differences and the grid, from the
  same weights run in f64, i.e. the f32 rounding noise any f32 implementation has;
- `versions`: python, torch, transformers, tokenizers, gguf, accelerate, numpy, and the
  GGUF file's SHA-256.

Everything runs in f32 on the CPU with eager attention, one prompt per forward pass.
The tests `crates/model/tests/real_smollm2.rs` and `crates/runner/tests/real_smollm2.rs`
(`just test-real`) compare actpatch to this file; `crates/runner/tests/smollm2_expect.rs`
checks the experiment files' `expect` values against it. CI does not run this script.

Environment (about 6 GB, mostly torch's CUDA libraries, which PyPI's Linux wheel pulls in):

    python3 -m venv /tmp/smollm2-ref-env
    /tmp/smollm2-ref-env/bin/pip install -r scripts/reference/requirements.txt
    just fetch-smollm2
    /tmp/smollm2-ref-env/bin/python scripts/reference/smollm2_reference.py

requirements.txt pins torch 2.15.0, transformers 5.24.0, tokenizers 0.23.3, gguf 0.19.0,
accelerate 1.15.0 (transformers needs it for `gguf_file=`), numpy 2.4.6.
Options: --gguf PATH (default models/SmolLM2-135M-Instruct.Q4_1.gguf),
--out PATH (default tests/fixtures/smollm2/reference.json). Takes about 10 minutes on
two busy CPU cores, most of it the f64 rerun.
"""
import argparse
import hashlib
import json
import platform
from importlib.metadata import version
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

REPO = Path(__file__).resolve().parents[2]
BOS_ID = 1  # <|im_start|>, prepended as TransformerLens's prepend_bos=True does

# name (= experiments/smollm2/<name>.toml), clean, corrupted, correct, incorrect
PAIRS = [
    ("landmarks", "The Colosseum is in", "The Eiffel Tower is in", " Rome", " Paris"),
    ("country_capitals", "The capital of France is", "The capital of Italy is", " Paris", " Rome"),
    ("gender_bias", "The nurse said that", "The mechanic said that", " she", " he"),
    ("number_agreement", "The keys to the cabinet", "The key to the cabinet", " are", " is"),
    ("temporal_consistency", "Yesterday, I", "Tomorrow, I", " walked", " will"),
]
TRACED_PAIR = "country_capitals"


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def to_tokens(tok, text):
    return [BOS_ID] + tok(text, add_special_tokens=False)["input_ids"]


def single_token(tok, text):
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1, f"{text!r} is {len(ids)} tokens: {ids}"
    return ids[0]


@torch.no_grad()
def last_logits(model, tokens):
    """The final position's logits [d_vocab] of one prompt."""
    return model(torch.tensor([tokens])).logits[0, -1]


def logits_summary(logits):
    return {
        "last_logits_first32": logits[:32].tolist(),
        "last_logsumexp": torch.logsumexp(logits.double(), -1).item(),
        "last_logits_top10": torch.topk(logits, 10).indices.tolist(),
    }


def pair_values(model, tok, clean, corrupted, correct, incorrect):
    ct, xt = to_tokens(tok, clean), to_tokens(tok, corrupted)
    ci, ii = single_token(tok, correct), single_token(tok, incorrect)
    cl, xl = last_logits(model, ct), last_logits(model, xt)
    return {
        "clean": clean, "corrupted": corrupted, "correct": correct, "incorrect": incorrect,
        "clean_tokens": ct, "corrupted_tokens": xt, "correct_id": ci, "incorrect_id": ii,
        "clean_str_tokens": tok.convert_ids_to_tokens(ct),
        # the difference in the model's dtype, as actpatch takes it (f32 - f32)
        "clean_logit_diff": (cl[ci] - cl[ii]).item(),
        "corrupted_logit_diff": (xl[ci] - xl[ii]).item(),
        "clean_logits": logits_summary(cl),
        "corrupted_logits": logits_summary(xl),
    }


@torch.no_grad()
def resid_pre_grid(model, pair):
    """Denoising resid_pre grid [layer, pos] of one pair, normalized logit difference."""
    ct, xt = torch.tensor([pair["clean_tokens"]]), torch.tensor([pair["corrupted_tokens"]])
    assert ct.shape == xt.shape
    ci, ii = pair["correct_id"], pair["incorrect_id"]
    # hidden_states[L] is the input of decoder layer L (0: the embeddings)
    clean = model(ct, output_hidden_states=True)
    clean_resid_pre = clean.hidden_states
    cl, xl = clean.logits[0, -1], model(xt).logits[0, -1]
    ld_clean, ld_corrupted = (cl[ci] - cl[ii]).item(), (xl[ci] - xl[ii]).item()
    layers = model.model.layers
    grid = []
    for layer in range(len(layers)):
        row = []
        for pos in range(ct.shape[1]):
            def patch(module, args, kwargs, layer=layer, pos=pos):
                hidden = args[0].clone()  # [batch, pos, d_model]
                hidden[:, pos] = clean_resid_pre[layer][:, pos]
                return (hidden, *args[1:]), kwargs
            handle = layers[layer].register_forward_pre_hook(patch, with_kwargs=True)
            try:
                lg = model(xt).logits[0, -1]
            finally:
                handle.remove()
            row.append(((lg[ci] - lg[ii]).item() - ld_corrupted) / (ld_clean - ld_corrupted))
        grid.append(row)
    return grid


def load(gguf_path, dtype):
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=dtype, attn_implementation="eager")
    return model.eval()


def compute(model, tok):
    pairs = {name: pair_values(model, tok, *texts) for name, *texts in PAIRS}
    grid = resid_pre_grid(model, pairs[TRACED_PAIR])
    return pairs, grid


def max_deviation(pairs32, grid32, pairs64, grid64):
    ld = max(abs(pairs32[n][f"{s}_logit_diff"] - pairs64[n][f"{s}_logit_diff"])
             for n in pairs32 for s in ("clean", "corrupted"))
    logits = max(abs(a - b) for n in pairs32 for s in ("clean", "corrupted")
                 for a, b in zip(pairs32[n][f"{s}_logits"]["last_logits_first32"],
                                 pairs64[n][f"{s}_logits"]["last_logits_first32"]))
    cells = max(abs(a - b) for r32, r64 in zip(grid32, grid64) for a, b in zip(r32, r64))
    return {"logit_diff": ld, "last_logits_first32": logits, "normalized_grid": cells}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gguf", type=Path, default=REPO / "models/SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--out", type=Path, default=REPO / "tests/fixtures/smollm2/reference.json")
    args = parser.parse_args()

    tok = AutoTokenizer.from_pretrained(args.gguf.parent, gguf_file=args.gguf.name)
    model = load(args.gguf, torch.float32)
    assert next(model.parameters()).dtype == torch.float32
    pairs, grid = compute(model, tok)
    pairs64, grid64 = compute(model.to(torch.float64), tok)

    c = model.config
    reference = {
        "notes": __doc__.split("\n\nEnvironment")[0],
        "versions": {
            "python": platform.python_version(),
            **{p: version(p) for p in ("torch", "transformers", "tokenizers", "gguf", "accelerate", "numpy")},
            "gguf_file": args.gguf.name, "gguf_sha256": sha256(args.gguf),
            "dtype": "float32", "attn_implementation": "eager", "device": "cpu",
        },
        "model": {
            "n_layers": c.num_hidden_layers, "d_model": c.hidden_size,
            "n_heads": c.num_attention_heads, "n_kv_heads": c.num_key_value_heads,
            "d_head": c.hidden_size // c.num_attention_heads, "d_mlp": c.intermediate_size,
            "n_ctx": c.max_position_embeddings, "d_vocab": c.vocab_size, "bos_id": BOS_ID,
        },
        "pairs": pairs,
        "causal_tracing": {"pair": TRACED_PAIR, "kind": "resid_pre", "direction": "denoising",
                           "grid": grid},
        "f64_check": max_deviation(pairs, grid, pairs64, grid64),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(reference, indent=1) + "\n")
    for name, p in pairs.items():
        print(f"{name}: clean {p['clean_logit_diff']:.5f}, corrupted {p['corrupted_logit_diff']:.5f}")
    print("max |f32 - f64|:", reference["f64_check"])
    print("wrote", args.out)


if __name__ == "__main__":
    main()
