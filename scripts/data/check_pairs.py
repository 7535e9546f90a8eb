"""Checks the pair datasets in experiments/data/ the way actpatch validates pairs.

Run from the repository root (SmolLM2 files need `just fetch-smollm2` first):

    /work/pyenv/bin/python scripts/data/check_pairs.py                 # every file
    /work/pyenv/bin/python scripts/data/check_pairs.py experiments/data/landmarks.smollm2.csv
    /work/pyenv/bin/python scripts/data/check_pairs.py --write         # also the per-row reports

Environment: see pairlib.py. The model is chosen by the file name: `*.gpt2.csv` is
checked with GPT-2's tokenizer only (tests/fixtures/tiny-gpt2/tokenizer.json, OpenAI's
BPE: single-token answers, equal lengths, form), because GPT-2's weights cannot be
loaded offline, so its logit differences are NOT checked. `*.smollm2.csv` is checked
with SmolLM2-135M-Instruct (transformers, GGUF dequantized to f32, `<|im_start|>`
first): form, then actpatch's baseline rules, clean − corrupted >= 1.0 and clean > 0.
A file without a `corrupted` column is a facts file (Gaussian-noise corruption): its
answer must be one token and the subject inside the prompt; on SmolLM2 the answer's
rank and probability are reported, and its mean probability with ROME's noise on the
subject (10 draws, seed 0); it passes when the answer is the top-1 token.

Prints each failing row with its reasons and a pass-rate table per file and concept
(markdown); with --write, the per-row results go to experiments/data/checks/<file>.csv.
Exits 1 when a SmolLM2 concept passes below --min-pass (default 0.8), except IOI,
which is reported, not required (--min-pass-ioi, default 0).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from pairlib import DATA, SmolLM2, baseline_verdict, form_reasons, gpt2_tokenizer, read_csv, write_csv

CHECKS = DATA / "checks"
IOI = "indirect object identification"
# The course notebook's pairs: the experiment files keep them verbatim as reference
# pairs, so the datasets must not repeat them.
NOTEBOOK_PAIRS = {
    ("The Colosseum is in", "The Champs Elysees is in"),
    ("The nurse said that she would assist the doctor.", "The nurse said that he would assist the doctor."),
    ("Marie Curie won the Nobel Prize in Physics.", "Marie Curie won the Nobel Prize in Biology."),
    ("The dogs are barking loudly.", "The dogs is barking loudly."),
    ("The capital of France is Paris.", "The capital of France is Berlin."),
    ("Yesterday, I walked to the store.", "Yesterday, I will walk to the store."),
}


def check_pair_rows(rows: list[dict], tok, model: SmolLM2 | None) -> list[dict]:
    if model is not None:
        model.prefetch(p for row in rows for p in (row["clean"], row["corrupted"]))
    results = []
    for row in rows:
        reasons = form_reasons(row, tok, answer_in_prompt_ok=bool(row.get("io")))
        if (row["clean"], row["corrupted"]) in NOTEBOOK_PAIRS:
            reasons.append("the course notebook's own pair (kept in the experiment files instead)")
        result = {"name": row["name"], "concept": row["concept"]}
        single = all(len(tok.answer_ids(row[k])) == 1 for k in ("correct", "incorrect"))
        if model is not None and single:
            verdict = baseline_verdict(
                model.logit_diff(row["clean"], row["correct"], row["incorrect"]),
                model.logit_diff(row["corrupted"], row["correct"], row["incorrect"]),
            )
            reasons += verdict.reasons
            result.update(clean_logit_diff=round(verdict.clean_ld, 3),
                          corrupted_logit_diff=round(verdict.corrupted_ld, 3),
                          gap=round(verdict.gap, 3))
        result.update(passed=not reasons, reasons="; ".join(reasons))
        results.append(result)
    return results


def check_fact_rows(rows: list[dict], model: SmolLM2) -> list[dict]:
    tok = model.tokenizer
    model.prefetch(row["clean"] for row in rows)
    results = []
    for row in rows:
        reasons = []
        if len(tok.answer_ids(row["correct"])) != 1 or not row["correct"].startswith(" "):
            reasons.append(f"answer {row['correct']!r} is not one token with a leading space")
        if row["subject"] not in row["clean"]:
            reasons.append(f"subject {row['subject']!r} is not in the prompt")
        result = {"name": row["name"], "concept": row["concept"]}
        if not reasons:
            rank, prob, top = model.answer_stats(row["clean"], row["correct"])
            noised = model.noised_prob(row["clean"], row["subject"], row["correct"])
            if rank != 1:
                reasons.append(f"answer rank {rank}, top-1 is {top!r}")
            result.update(rank=rank, prob=round(prob, 3), prob_subject_noised=round(noised, 3),
                          top1=top)
        result.update(passed=not reasons, reasons="; ".join(reasons))
        results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--write", action="store_true", help="write experiments/data/checks/*.csv")
    parser.add_argument("--min-pass", type=float, default=0.8)
    parser.add_argument("--min-pass-ioi", type=float, default=0.0)
    args = parser.parse_args()
    files = args.files or sorted(DATA.glob("*.csv"))
    gpt2, smollm2 = None, None
    table, failed = [], False
    for path in files:
        rows = read_csv(path)
        if path.name.endswith(".gpt2.csv"):
            gpt2 = gpt2 or gpt2_tokenizer()
            results = check_pair_rows(rows, gpt2, None)
        elif path.name.endswith(".smollm2.csv"):
            smollm2 = smollm2 or SmolLM2()
            results = (check_pair_rows(rows, smollm2.tokenizer, smollm2) if "corrupted" in rows[0]
                       else check_fact_rows(rows, smollm2))
        else:
            raise SystemExit(f"{path}: the name must end in .gpt2.csv or .smollm2.csv")
        for result in results:
            if not result["passed"]:
                print(f"FAIL {path.name} {result['name']}: {result['reasons']}")
        if args.write:
            columns = list(dict.fromkeys(k for r in results for k in r))
            write_csv(CHECKS / path.name, results, columns)
        by_concept = defaultdict(list)
        for result in results:
            by_concept[result["concept"]].append(result["passed"])
        for concept, passed in by_concept.items():
            rate = sum(passed) / len(passed)
            checked = "tokenizer only" if path.name.endswith(".gpt2.csv") else "SmolLM2"
            table.append((path.name, concept, checked, sum(passed), len(passed), rate))
            need = args.min_pass_ioi if concept == IOI else args.min_pass
            if path.name.endswith(".smollm2.csv") and rate < need:
                failed = True
    print("\n| file | concept | checked with | pass | rows | rate |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    for name, concept, checked, n_pass, n, rate in table:
        print(f"| {name} | {concept} | {checked} | {n_pass} | {n} | {rate:.0%} |")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
