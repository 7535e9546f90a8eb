"""Writes experiments/ioi.toml (GPT-2 small) and experiments/smollm2/ioi.toml (SmolLM2)
from experiments/data/ioi.{gpt2,smollm2}.csv: the header below, then every row of the
CSV as a [[pairs]] entry (name, concept, clean, corrupted, correct, incorrect).

The receiver heads of the q/k/v sets: GPT-2 small's name movers from Wang et al. 2022
(9.6, 9.9, 10.0); for SmolLM2 the three heads that the file's own logits path
patching ranks highest (largest mean |effect| over the passing pairs, noising), read
from a run of this file with only the logits set (see experiments/smollm2/ioi.toml).

Usage (from the repository root): python3 scripts/data/make_ioi_experiments.py
"""
import csv
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

COMMON = """
# Noising, as the paper's path patching: the ABC run's values patched into the clean run
# (a sender that matters pulls the normalized logit difference down from 1).
[sweep]
kinds = ["head_out", "path"]
direction = "noising"
metrics = "logit_diff"

[[sweep.paths]]
receivers = "logits"
{receivers}
[validate]
min_gap = 1.0
require_clean_positive = true
align = "strict"

[output]
formats = ["png", "svg"]
"""

RECEIVERS = """
[[sweep.paths]]
label = "{who} {input}"
receivers = "{input}"
heads = [{heads}]
positions = "end"
"""

FILES = {
    "gpt2": {
        "out": "experiments/ioi.toml",
        "header": """# Indirect object identification (Wang et al. 2022, "Interpretability in the Wild") on
# GPT-2 small: "When Mary and John went to the store, John gave a drink to" → " Mary".
# Corruption: ABC (all three names replaced by unrelated ones), so the corrupted run has
# no repeated name to inhibit. 48 pairs from experiments/data/ioi.gpt2.csv (written by
# scripts/data/make_ioi_experiments.py); templates differ in length, so receiver
# positions are "end" (the final position of each pair).
#
# Expected (the paper): name movers 9.6, 9.9, 10.0 writing to the logits; S-inhibition
# heads 7.3, 7.9, 8.6, 8.10 acting through the name movers' queries (the q set below),
# duplicate-token and induction heads (0.1, 3.0, 5.5, 6.9) further upstream.
# Needs the Hugging Face hub (model id "gpt2"); not run offline.

[experiment]
name = "ioi"
description = "Indirect object identification (IOI) on GPT-2 small, ABC corruption: activation patching of head outputs, and path patching to the logits and to the q, k and v inputs of the name mover heads 9.6, 9.9 and 10.0."

[model]
id = "gpt2"
prepend_bos = true
""",
        "who": "name movers",
        "heads": ["9.6", "9.9", "10.0"],
    },
    "smollm2": {
        "out": "experiments/smollm2/ioi.toml",
        "header": """# Indirect object identification (Wang et al. 2022) on SmolLM2-135M-Instruct, offline
# from its Q4_1 GGUF (`just fetch-smollm2`): "Then, Rachel and Nancy went to the
# station. Nancy gave a drink to" → " Rachel". ABC corruption (all three names replaced).
# 48 pairs from experiments/data/ioi.smollm2.csv (written by
# scripts/data/make_ioi_experiments.py); templates differ in length, so receiver
# positions are "end" (the final position of each pair).
#
# The q receivers are the three heads this file's own logits path patching ranks
# highest (largest mean |normalized effect| over the passing pairs, noising direction):
# {ranking}
# The k and v receivers are their key/value heads (9 query heads share 3 key/value
# heads in SmolLM2; query head h reads key/value head h // 3).
# What the run finds is in the guide (docs/src/findings.md, "Indirect object
# identification: path patching on SmolLM2").
# Run with `just run experiments/smollm2/ioi.toml`.

[experiment]
name = "smollm2_ioi"
description = "Indirect object identification (IOI) on SmolLM2-135M-Instruct, ABC corruption: activation patching of head outputs, and path patching to the logits and to the q, k and v inputs of the three heads that path patching to the logits ranks highest."

[model]
path = "../../models/SmolLM2-135M-Instruct.Q4_1.gguf"
prepend_bos = true
""",
        "who": "top logit heads",
        "heads": None,  # from scripts/data/ioi_smollm2_top_heads.json
        # 9 query heads share 3 key/value heads: k and v receivers are the key/value
        # heads of the top heads (query head h reads key/value head h // 3).
        "kv_group": 3,
    },
}


def toml_string(s):
    return json.dumps(s, ensure_ascii=False)


def main():
    for model, spec in FILES.items():
        rows = list(csv.DictReader(open(os.path.join(ROOT, f"experiments/data/ioi.{model}.csv"), encoding="utf-8")))
        heads = spec["heads"]
        header = spec["header"]
        if heads is None:
            top = json.load(open(os.path.join(ROOT, "scripts/data/ioi_smollm2_top_heads.json")))
            heads = [h["head"] for h in top["heads"]]
            ranking = "; ".join(f"{h['head']} (mean {h['mean']:+.3f})" for h in top["heads"])
            header = header.replace("{ranking}", f"{ranking}, from {top['run']}.")
        quoted = ", ".join(toml_string(h) for h in heads)
        group = spec.get("kv_group", 1)
        kv_heads = []
        for h in heads:
            layer, head = h.split(".")
            kv = f"{layer}.{int(head) // group}"
            if kv not in kv_heads:
                kv_heads.append(kv)
        kv_quoted = ", ".join(toml_string(h) for h in kv_heads)
        kv_who = spec["who"] if group == 1 else spec["who"] + " (key/value heads)"
        receivers = RECEIVERS.format(who=spec["who"], input="q", heads=quoted) + "".join(
            RECEIVERS.format(who=kv_who, input=i, heads=kv_quoted) for i in ("k", "v")
        )
        text = header + COMMON.format(receivers=receivers)
        for r in rows:
            text += "\n[[pairs]]\n"
            for key in ("name", "concept", "clean", "corrupted", "correct", "incorrect"):
                text += f"{key} = {toml_string(r[key])}\n"
        with open(os.path.join(ROOT, spec["out"]), "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {spec['out']}: {len(rows)} pairs, receivers {heads}")


if __name__ == "__main__":
    main()
