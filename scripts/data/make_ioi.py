"""Writes experiments/data/ioi.{gpt2,smollm2}.csv: indirect object identification pairs
with an ABC corruption (Wang et al. 2022, "Interpretability in the Wild").

Run from the repository root:

    /work/pyenv/bin/python scripts/data/make_ioi.py [--pairs 48] [--seed 0]

Environment: see pairlib.py (needs only the tokenizers: the GPT-2 one from the fixture
and SmolLM2's from `models/`, so `just fetch-smollm2` first). Deterministic for a seed.

Each pair fills one of Wang et al.'s templates (their BABA/ABBA sentence frames, cut
right before the indirect object) with two single-token names: IO (the indirect object,
the answer) and S (the subject, named twice). The order alternates: ABB (IO first,
"When Mary and John went to the store, John gave a drink to" -> " Mary") and BAB (S
first, "When John and Mary ... , John gave a drink to"). The corrupted prompt is the
ABC version: the three name slots get three other names, all different, so that
neither IO nor S is in it and the IO-over-S signal is gone; the logit difference is
still read as IO − S (correct = " IO", incorrect = " S"). Every name is one token with
a leading space under both tokenizers, so a clean prompt and its corruption have the
same length and differ only at the three name positions (checked). The pairs are the
same in both files; the model is not consulted, so nothing is selected by outcome
(check_pairs.py reports how many pass on SmolLM2).

The columns keep what a template-based experiment needs: `template` with slots
{name1} {name2} {name3} {place} {object}; `order`, `io`, `s`; the clean name fills
`name1..3` and the ABC fills `abc1..3`; `place`, `object`.
"""

from __future__ import annotations

import argparse
import random

from pairlib import DATA, gpt2_tokenizer, smollm2_tokenizer, write_csv

CONCEPT = "indirect object identification"
COLUMNS = ["name", "concept", "template", "clean", "corrupted", "correct", "incorrect",
           "order", "io", "s", "name1", "name2", "name3", "abc1", "abc2", "abc3", "place",
           "object"]

# Wang et al.'s templates (ioi_dataset.py, BABA_TEMPLATES), cut before the final IO.
TEMPLATES = [
    "Then, {name1} and {name2} went to the {place}. {name3} gave a {object} to",
    "Then, {name1} and {name2} had a lot of fun at the {place}. {name3} gave a {object} to",
    "Then, {name1} and {name2} were working at the {place}. {name3} decided to give a {object} to",
    "Then, {name1} and {name2} were thinking about going to the {place}. {name3} wanted to give a {object} to",
    "Then, {name1} and {name2} had a long argument, and afterwards {name3} said to",
    "After {name1} and {name2} went to the {place}, {name3} gave a {object} to",
    "When {name1} and {name2} got a {object} at the {place}, {name3} decided to give it to",
    "When {name1} and {name2} got a {object} at the {place}, {name3} decided to give the {object} to",
    "While {name1} and {name2} were working at the {place}, {name3} gave a {object} to",
    "While {name1} and {name2} were commuting to the {place}, {name3} gave a {object} to",
    "After the lunch, {name1} and {name2} went to the {place}. {name3} gave a {object} to",
    "Afterwards, {name1} and {name2} went to the {place}. {name3} gave a {object} to",
    "The {place} {name1} and {name2} went to had a {object}. {name3} gave it to",
    "Friends {name1} and {name2} found a {object} at the {place}. {name3} decided to give it to",
]
PLACES = ["store", "garden", "restaurant", "school", "hospital", "office", "house", "station"]
OBJECTS = ["ring", "kiss", "bone", "basketball", "computer", "necklace", "drink", "snack"]
NAMES = ["Mary", "John", "Tom", "James", "Paul", "Mark", "David", "Sarah", "Anna", "Kate",
         "Lisa", "Michael", "Robert", "Daniel", "Peter", "Emma", "Alice", "Jack", "Susan",
         "Laura", "Steve", "Alex", "Ben", "Sam", "Rachel", "Emily", "Amy", "Helen", "George",
         "Frank", "Henry", "Eric", "Kevin", "Brian", "Jason", "Adam", "Ryan", "Andrew",
         "Thomas", "William", "Richard", "Charles", "Lucy", "Grace", "Rose", "Claire",
         "Sophie", "Julia", "Nancy", "Karen", "Jessica", "Jennifer", "Victoria", "Kelly"]


def fill(template: str, names: tuple[str, str, str], place: str, obj: str) -> str:
    return template.format(name1=names[0], name2=names[1], name3=names[2], place=place,
                           object=obj)


def make_pairs(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for index in range(n):
        template = TEMPLATES[index % len(TEMPLATES)]
        order = "ABB" if (index // len(TEMPLATES) + index) % 2 == 0 else "BAB"
        io, s, *abc = rng.sample(NAMES, 5)
        place, obj = rng.choice(PLACES), rng.choice(OBJECTS)
        names = (io, s, s) if order == "ABB" else (s, io, s)
        rows.append({
            "name": f"ioi-{index:02d}-{order.lower()}-{io.lower()}-{s.lower()}",
            "concept": CONCEPT, "template": template,
            "clean": fill(template, names, place, obj),
            "corrupted": fill(template, tuple(abc), place, obj),
            "correct": " " + io, "incorrect": " " + s, "order": order, "io": io, "s": s,
            "name1": names[0], "name2": names[1], "name3": names[2],
            "abc1": abc[0], "abc2": abc[1], "abc3": abc[2], "place": place, "object": obj,
        })
    return rows


def name_reasons(row: dict, tok) -> list[str]:
    """Single-token names, and the prompts differ exactly at the three name slots."""
    reasons = [f"{name!r} is not one token" for name in
               (row[k] for k in ("io", "s", "abc1", "abc2", "abc3"))
               if len(tok.answer_ids(" " + name)) != 1]
    clean, corrupted = tok.encode(row["clean"]), tok.encode(row["corrupted"])
    if len(clean) != len(corrupted):
        reasons.append(f"lengths differ: {len(clean)} vs {len(corrupted)}")
    elif sum(a != b for a, b in zip(clean, corrupted)) != 3:
        reasons.append("the prompts do not differ at exactly the three name positions")
    return reasons


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = make_pairs(args.pairs, args.seed)
    for label, tok in (("gpt2", gpt2_tokenizer()), ("smollm2", smollm2_tokenizer())):
        bad = [(r["name"], why) for r in rows for why in name_reasons(r, tok)]
        if bad:
            raise SystemExit(f"{label}: {bad}")
        write_csv(DATA / f"ioi.{label}.csv", rows, COLUMNS)
        print(f"ioi.{label}.csv: {len(rows)} pairs, all names single tokens, ABC differs at 3 positions")


if __name__ == "__main__":
    main()
