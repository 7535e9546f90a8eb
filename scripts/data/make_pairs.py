"""Writes the six concepts' pair datasets, experiments/data/<concept>.{gpt2,smollm2}.csv.

Run from the repository root, after `just fetch-smollm2`:

    /work/pyenv/bin/python scripts/data/make_pairs.py [--per-file 40] [--stats FILE]

Environment: see pairlib.py (torch, transformers, tokenizers, gguf, accelerate).
Deterministic: the same lists and tokenizers give the same files.

How a file is made, per concept (scripts/data/concepts.py holds templates and items):
1. Candidates: every ordered pair of items (a, b) with different labels (only within a
   group for number agreement and temporal consistency) in every template; clean is the
   template filled with a, corrupted with b, correct is a's answer, incorrect b's.
2. Well-formed under the file's tokenizer (pairlib.form_reasons): single-token answers,
   equal token lengths with BOS, the prompts differ only inside the slot, and so on.
3. Scored on SmolLM2-135M (transformers, GGUF dequantized to f32, BOS first): the clean
   and corrupted logit differences and actpatch's rules (gap >= 1.0, clean > 0). Each
   prompt is scored alone, so a GPT-2 pair is scored too even where SmolLM2 splits it
   into different lengths: for GPT-2 this is a proxy (GPT-2's own gaps cannot be
   computed offline), for SmolLM2 it is the real check.
4. Selection among the candidates that are well formed and pass (on SmolLM2; the proxy
   for GPT-2): round robin over the templates, in a fixed pseudo-random order (a hash
   of the pair's name, not its score), each item in at most a few pairs, one direction
   of an item pair per template, so the file varies wording and items.
The candidates' pass rates (before selection) are printed and, with --stats, written
as JSON, so the selection is visible; check_pairs.py then re-checks the written files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import unicodedata
from collections import Counter, defaultdict
from pathlib import Path

from concepts import CONCEPTS, Concept
from pairlib import DATA, SmolLM2, Tokenizer, baseline_verdict, form_reasons, gpt2_tokenizer, write_csv

COLUMNS = ["name", "concept", "template", "clean", "corrupted", "correct", "incorrect",
           "subject", "subject_corrupted"]


def slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")


def candidates(concept: Concept) -> list[dict]:
    rows = []
    for t_index, template in enumerate(concept.templates, start=1):
        for a in concept.items:
            for b in concept.items:
                if a.label == b.label or (concept.within_group and a.group != b.group):
                    continue
                correct, incorrect = template.answer(a.label), template.answer(b.label)
                if correct is None or incorrect is None or correct == incorrect:
                    continue
                clean, subject = template.fill(a.text)
                corrupted, subject_corrupted = template.fill(b.text)
                rows.append({
                    "name": f"t{t_index}-{slug(a.text)}-{slug(b.text)}",
                    "concept": concept.label, "template": template.text.replace("{X}", "{x}"),
                    "clean": clean, "corrupted": corrupted, "correct": correct,
                    "incorrect": incorrect, "subject": subject,
                    "subject_corrupted": subject_corrupted,
                    "_t": t_index, "_a": a.text, "_b": b.text,
                })
    return rows


def score(rows: list[dict], model: SmolLM2) -> None:
    """Adds SmolLM2's verdict (`_pass`, `_clean_ld`, `_corrupted_ld`) where the answers are single tokens."""
    tok = model.tokenizer
    model.prefetch(p for row in rows for p in (row["clean"], row["corrupted"]))
    for row in rows:
        if any(len(tok.answer_ids(row[k])) != 1 for k in ("correct", "incorrect")):
            row["_pass"] = False
            continue
        verdict = baseline_verdict(
            model.logit_diff(row["clean"], row["correct"], row["incorrect"]),
            model.logit_diff(row["corrupted"], row["correct"], row["incorrect"]),
        )
        row.update(_pass=not verdict.reasons, _clean_ld=verdict.clean_ld,
                   _corrupted_ld=verdict.corrupted_ld)


def order_key(row: dict) -> str:
    return hashlib.sha256(row["name"].encode()).hexdigest()


def select(rows: list[dict], n: int, pair_cap: int, item_cap: int = 3) -> list[dict]:
    """Round robin over templates; each item in at most `item_cap` pairs (raised if
    needed), each unordered item pair at most `pair_cap` times in the file and once per
    template."""
    queues = defaultdict(list)
    for row in sorted(rows, key=order_key):
        queues[row["_t"]].append(row)
    chosen, items, pairs, per_template = [], Counter(), Counter(), set()
    while len(chosen) < n and any(queues.values()):
        progressed = False
        for t in sorted(queues):
            for row in queues[t]:
                pair = frozenset((row["_a"], row["_b"]))
                if (items[row["_a"]] < item_cap and items[row["_b"]] < item_cap
                        and pairs[pair] < pair_cap and (t, pair) not in per_template):
                    queues[t].remove(row)
                    chosen.append(row)
                    items.update((row["_a"], row["_b"]))
                    pairs[pair] += 1
                    per_template.add((t, pair))
                    progressed = True
                    break
            if len(chosen) == n:
                break
        if not progressed:
            item_cap += 1
            if item_cap > 50:
                break
    return chosen


def build(concept: Concept, model: SmolLM2, tokenizers: dict[str, Tokenizer], n: int,
          dump: str | None) -> dict:
    rows = candidates(concept)
    score(rows, model)
    if dump:
        for label, tok in tokenizers.items():
            for row in rows:
                row[f"_{label}_form"] = "; ".join(form_reasons(row, tok))
        keys = COLUMNS + [k for k in rows[0] if k.startswith("_")]
        write_csv(Path(dump) / f"{concept.stem}.candidates.csv", rows, keys)
    stats = {"candidates": len(rows)}
    for label, tok in tokenizers.items():
        formed = [r for r in rows if not form_reasons(r, tok)]
        passing = [r for r in formed if r["_pass"]]
        # Minimal pairs (within a group) repeat their items by design: once per template.
        pair_cap = len(concept.templates) if concept.within_group else 2
        chosen = select(passing, n, pair_cap)
        write_csv(DATA / f"{concept.stem}.{label}.csv", chosen, COLUMNS)
        stats[label] = {
            "well_formed": len(formed), "passing_smollm2": len(passing),
            "candidate_pass_rate": round(len(passing) / max(len(formed), 1), 3),
            "written": len(chosen),
            "templates": dict(sorted(Counter(r["_t"] for r in chosen).items())),
        }
        print(f"{concept.stem}.{label}: {len(rows)} candidates, {len(formed)} well formed, "
              f"{len(passing)} pass on SmolLM2 ({stats[label]['candidate_pass_rate']:.0%}), "
              f"{len(chosen)} written, per template {stats[label]['templates']}")
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-file", type=int, default=40, help="pairs per file (default 40)")
    parser.add_argument("--stats", help="write the candidate statistics as JSON here")
    parser.add_argument("--only", help="only this concept (its file stem)")
    parser.add_argument("--dump", help="write every candidate with its scores to DIR/<concept>.candidates.csv")
    args = parser.parse_args()
    model = SmolLM2()
    tokenizers = {"gpt2": gpt2_tokenizer(), "smollm2": model.tokenizer}
    stats = {c.stem: build(c, model, tokenizers, args.per_file, args.dump)
             for c in CONCEPTS if args.only in (None, c.stem)}
    if args.stats:
        with open(args.stats, "w") as f:
            json.dump(stats, f, indent=1)


if __name__ == "__main__":
    main()
