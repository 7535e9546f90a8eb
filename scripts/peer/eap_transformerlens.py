"""The Python peer of `just bench-circuits`: EAP and EAP-IG-inputs on TransformerLens,
following the EAP-IG library's algorithm (hannamw/EAP-IG 2.0, `eap/attribute.py` and
`eap/utils.py`, the code MIB's circuit track runs): forward hooks add the corrupted and
subtract the clean sender outputs into one [batch, pos, n_forward, d_model] matrix, and
backward hooks on every receiver input add einsum(difference, gradient) into the
[n_forward, n_backward] score matrix. EAP-IG-inputs replaces the token embeddings by
corrupted + k/m (clean - corrupted), k = 0 .. m-1, as the library does.

It runs on the random gpt2-small-shaped model the bench writes (`--write-model DIR`) and
the bench's 16 IOI-style pairs of 15 tokens, and prints each method's time. `--check
FIXTURE` first checks its scores against the fixture's golden_edges.json (made with the
library itself), so the timed code computes the library's numbers.

Usage (scripts/bench-circuits-peer.sh sets it all up):
    python eap_transformerlens.py MODEL_DIR [--steps 5] [--batch 16] [--threads 2]
                                  [--check tests/fixtures/tiny-gpt2]
"""
import argparse
import json
import sys
import time
from importlib.metadata import version
from pathlib import Path

import torch
from einops import einsum
from tokenizers import Tokenizer
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import GPT2LMHeadModel
from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights

BOS = 50256  # GPT-2's <|endoftext|>, which TransformerLens prepends
NAMES = [" Mary", " John", " Tom", " James", " Anna", " Paul", " Sarah", " David"]


def load(folder: Path) -> HookedTransformer:
    """A GPT-2 folder (config.json, model.safetensors) as a HookedTransformer with no
    weight processing, with the hooks the library's graph needs."""
    hf = GPT2LMHeadModel.from_pretrained(folder).float()
    config = hf.config
    cfg = HookedTransformerConfig(
        n_layers=config.n_layer, d_model=config.n_embd, n_heads=config.n_head,
        d_head=config.n_embd // config.n_head, d_mlp=4 * config.n_embd, n_ctx=config.n_positions,
        d_vocab=config.vocab_size, act_fn="gelu_new", normalization_type="LN",
        eps=config.layer_norm_epsilon, default_prepend_bos=True,
        original_architecture="GPT2LMHeadModel")
    model = HookedTransformer(cfg)
    model.load_and_process_state_dict(
        convert_gpt2_weights(hf.eval(), cfg), fold_ln=False, center_writing_weights=False,
        center_unembed=False, fold_value_biases=False)
    model.set_use_attn_result(True)
    model.set_use_split_qkv_input(True)
    model.set_use_hook_mlp_in(True)
    return model.eval()


class Layout:
    """The library's score matrix: forward (sender) rows input, then per layer its heads
    and its MLP; backward (receiver) columns per layer q, k, v of every head and the MLP,
    then the logits."""

    def __init__(self, n_layers: int, n_heads: int):
        self.n_layers, self.n_heads = n_layers, n_heads
        self.n_forward = 1 + n_layers * (n_heads + 1)
        self.n_backward = n_layers * (3 * n_heads + 1) + 1

    def head(self, layer: int) -> int:
        return 1 + layer * (self.n_heads + 1)

    def mlp(self, layer: int) -> int:
        return self.head(layer) + self.n_heads

    def receiver(self, layer: int, which: str) -> int:
        base = layer * (3 * self.n_heads + 1)
        return base + {"q": 0, "k": self.n_heads, "v": 2 * self.n_heads, "mlp": 3 * self.n_heads}[which]

    def sender_index(self, name: str) -> int:
        if name == "input":
            return 0
        if name.startswith("m"):
            return self.mlp(int(name[1:]))
        layer, head = name[1:].split(".h")
        return self.head(int(layer)) + int(head)

    def receiver_index(self, name: str) -> int:
        if name == "logits":
            return self.n_layers * (3 * self.n_heads + 1)
        if name.startswith("m"):
            return self.receiver(int(name[1:]), "mlp")
        node, qkv = name[:-3], name[-2]
        layer, head = node[1:].split(".h")
        return self.receiver(int(layer), qkv) + int(head)


def hooks(model: HookedTransformer, lay: Layout, difference: torch.Tensor, scores: torch.Tensor):
    """(corrupted forward hooks, clean forward hooks, backward hooks), as the library's
    make_hooks_and_matrices builds them."""
    def add(index, sign):
        def hook(acts, hook):
            acts = acts.detach()
            if acts.ndim == 4:  # [batch, pos, head, d_model]
                difference[:, :, index:index + acts.shape[2]] += sign * acts
            else:  # [batch, pos, d_model]
                difference[:, :, index] += sign * acts
        return hook

    def grad(prev, column, width):
        def hook(gradients, hook):
            g = gradients.detach()
            if g.ndim == 3:
                g = g.unsqueeze(2)  # [batch, pos, 1, d_model]
            s = einsum(difference[:, :, :prev], g, "b p f d, b p k d -> f k")
            scores[:prev, column:column + width] += s
        return hook

    senders = [("hook_embed", 0)]
    receivers = []
    for layer in range(lay.n_layers):
        senders += [(f"blocks.{layer}.attn.hook_result", lay.head(layer)),
                    (f"blocks.{layer}.hook_mlp_out", lay.mlp(layer))]
        for qkv in "qkv":
            receivers.append((f"blocks.{layer}.hook_{qkv}_input",
                              grad(lay.head(layer), lay.receiver(layer, qkv), lay.n_heads)))
        receivers.append((f"blocks.{layer}.hook_mlp_in", grad(lay.mlp(layer), lay.receiver(layer, "mlp"), 1)))
    receivers.append((f"blocks.{lay.n_layers - 1}.hook_resid_post",
                      grad(lay.n_forward, lay.receiver_index("logits"), 1)))
    corrupted = [(name, add(i, 1.0)) for name, i in senders]
    clean = [(name, add(i, -1.0)) for name, i in senders]
    return corrupted, clean, receivers


def logit_diff(logits, answers):
    """Summed over the batch: logit(correct) - logit(incorrect) at the last position."""
    last = logits[:, -1]  # [batch, d_vocab]
    return (last.gather(1, answers[:, :1]) - last.gather(1, answers[:, 1:])).sum()


def scores_of(model, lay, batches, method, steps):
    """The library's get_scores_eap (patching) or get_scores_eap_ig over `batches` of
    (clean, corrupted, answers) token tensors: [n_forward, n_backward], mean per item."""
    scores = torch.zeros(lay.n_forward, lay.n_backward)
    items = 0
    for clean, corrupted, answers in batches:
        items += len(clean)
        difference = torch.zeros(len(clean), clean.shape[1], lay.n_forward, model.cfg.d_model)
        fwd_corrupted, fwd_clean, bwd = hooks(model, lay, difference, scores)
        with torch.inference_mode():
            with model.hooks(fwd_hooks=fwd_corrupted):
                model(corrupted)
            input_corrupted = difference[:, :, 0].clone()
            with model.hooks(fwd_hooks=fwd_clean):
                model(clean)
            input_clean = input_corrupted - difference[:, :, 0]
        if method == "eap":
            with model.hooks(bwd_hooks=bwd):
                logit_diff(model(clean), answers).backward()
            continue
        for k in range(steps):
            def interpolate(acts, hook, k=k):
                value = input_corrupted + (k / steps) * (input_clean - input_corrupted)
                value.requires_grad = True
                return value
            with model.hooks(fwd_hooks=[("hook_embed", interpolate)], bwd_hooks=bwd):
                logit_diff(model(clean), answers).backward()
    scores /= items
    if method != "eap":
        scores /= steps
    return scores


def ioi_batches(tokenizer: Tokenizer, batch: int):
    """The bench's 16 pairs (crates/runner/benches/circuits.rs, `ioi_pairs`)."""
    def ids(text):
        return [BOS] + tokenizer.encode(text, add_special_tokens=False).ids
    rows = []
    for i in range(16):
        a, b, c = NAMES[i % 8], NAMES[(i + 1 + i // 8) % 8], NAMES[(i + 3) % 8]
        clean = ids(f"When{a} and{b} went to the store,{b} gave a drink to")
        corrupted = ids(f"When{a} and{b} went to the store,{c} gave a drink to")
        assert len(clean) == len(corrupted) == 15, (clean, corrupted)
        answer = [ids(a)[1], ids(b)[1]]
        rows.append((clean, corrupted, answer))
    return [tuple(torch.tensor([r[j] for r in rows[s:s + batch]]) for j in range(3))
            for s in range(0, len(rows), batch)]


def check(fixture: Path, steps: int) -> None:
    """EAP and EAP-IG-inputs of this script against the library's golden scores."""
    golden = json.loads((fixture / "golden_edges.json").read_text())
    model = load(fixture)
    tokenizer = Tokenizer.from_file(str(fixture / "tokenizer.json"))
    lay = Layout(model.cfg.n_layers, model.cfg.n_heads)
    worst = 0.0
    for name, pair in golden["pairs"].items():
        def ids(text):
            return torch.tensor([[BOS] + tokenizer.encode(text, add_special_tokens=False).ids])
        batch = [(ids(pair["clean"]), ids(pair["corrupted"]), torch.tensor([[pair["correct_id"], pair["incorrect_id"]]]))]
        for method, key in [("eap", "EAP"), ("eap-ig", f"EAP-IG-inputs({steps})")]:
            scores = scores_of(model, lay, batch, method, steps)
            for edge, want in pair["scores"][key].items():
                sender, receiver = edge.split("->")
                got = scores[lay.sender_index(sender), lay.receiver_index(receiver)].item()
                worst = max(worst, abs(got - want))
                if abs(got - want) > 1e-4:
                    sys.exit(f"check: {name} {key} {edge}: {got} here, {want} in the golden file")
    print(f"check: EAP and EAP-IG-inputs({steps}) equal the library's golden scores on "
          f"{fixture.name} (largest difference {worst:.1e})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16, help="pairs per batch (the library's dataloader batch)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--check", type=Path, help="a tiny fixture folder with golden_edges.json")
    parser.add_argument("--json", type=Path, help="write the timings here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.check:
        check(args.check, args.steps)
    model = load(args.model_dir)
    lay = Layout(model.cfg.n_layers, model.cfg.n_heads)
    batches = ioi_batches(Tokenizer.from_file(str(args.model_dir / "tokenizer.json")), args.batch)
    times = {}
    for method, label in [("eap", "eap"), ("eap-ig", f"eap-ig-inputs({args.steps})")]:
        clock = time.perf_counter()
        scores = scores_of(model, lay, batches, method, args.steps)
        times[label] = time.perf_counter() - clock
        print(f"peer (TransformerLens {version('transformer-lens')}, torch {torch.__version__}, "
              f"{args.threads} threads, batch {args.batch}): "
              f"{label} over 16 pairs: {times[label]:.2f} s (|score| max {scores.abs().max().item():.3g})")
    if args.json:
        args.json.write_text(json.dumps(times))


if __name__ == "__main__":
    main()
