#!/usr/bin/env python3
"""Writes the tiny Llama fixture as a GGUF file, as llama.cpp's converter writes it.

    tiny_llama_gguf.py FIXTURE_DIR OUT.gguf

The same file as `write_tiny_gguf` in crates/model/tests/gguf_llama.rs builds for its
test: f32 tensors under llama.cpp's names, the q/k projection rows permuted for
interleaved rotary (llama.cpp's `permute`), and the tokenizer in the metadata (BPE
"gpt2" model, "smollm" pre-tokenizer, BOS 1). Loaded by actpatch, it must reproduce the
fixture's golden values; scripts/gpu-check.sh runs it on the GPU.

Needs numpy, safetensors and gguf (scripts/gpu/bundle.sh installs them).
"""

import json
import sys
from pathlib import Path

import gguf
import numpy as np
from safetensors.numpy import load_file

RENAMED = [
    ("model.embed_tokens.", "token_embd."),
    ("model.norm.", "output_norm."),
    ("model.layers.", "blk."),
    ("input_layernorm", "attn_norm"),
    ("post_attention_layernorm", "ffn_norm"),
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"),
    ("self_attn.o_proj", "attn_output"),
    ("mlp.gate_proj", "ffn_gate"),
    ("mlp.up_proj", "ffn_up"),
    ("mlp.down_proj", "ffn_down"),
]


def permute(weight, heads):
    """llama.cpp's `permute`: within each head, rows [2, d_head / 2] -> [d_head / 2, 2]."""
    rows, cols = weight.shape
    return (
        weight.reshape(heads, 2, rows // heads // 2, cols)
        .swapaxes(1, 2)
        .reshape(rows, cols)
    )


def gguf_name(hf_name):
    for old, new in RENAMED:
        hf_name = hf_name.replace(old, new)
    return hf_name


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    fixture, out = Path(sys.argv[1]), Path(sys.argv[2])
    config = json.loads((fixture / "config.json").read_text())
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    d_head = config["hidden_size"] // heads

    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(float(config["rope_theta"]))
    writer.add_rope_dimension_count(d_head)
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))

    tokenizer = json.loads((fixture / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    tokens = [""] * len(vocab)
    for token, token_id in vocab.items():
        tokens[token_id] = token
    specials = {t["id"] for t in tokenizer["added_tokens"]}
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if i in specials else 1 for i in range(len(tokens))])
    writer.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in tokenizer["model"]["merges"]])
    writer.add_bos_token_id(1)
    writer.add_add_space_prefix(False)

    for name, weight in sorted(load_file(str(fixture / "model.safetensors")).items()):
        if "q_proj" in name:
            weight = permute(weight, heads)
        elif "k_proj" in name:
            weight = permute(weight, kv_heads)
        writer.add_tensor(gguf_name(name), np.ascontiguousarray(weight, dtype=np.float32))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
