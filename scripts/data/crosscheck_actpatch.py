"""Cross-checks the pair datasets with actpatch itself: `actpatch check` on every pair.

Run from the repository root (after `just fetch-smollm2` and check_pairs.py --write):

    /work/pyenv/bin/python scripts/data/crosscheck_actpatch.py [--actpatch PATH]

Environment: plain Python 3 (no third-party packages). Without --actpatch the binary is
`cargo run --quiet -p actpatch-runner --` (built on first use).

Until the runner reads `[[datasets]]`, each CSV is written as the `[[pairs]]` of a
temporary experiment file and `actpatch check` validates it, so the pairs go through
actpatch's own tokenizers and forward pass:
- `*.smollm2.csv` on models/SmolLM2-135M-Instruct.Q4_1.gguf: actpatch's verdict must
  equal check_pairs.py's for every pair, and its clean and corrupted logit differences
  must match transformers' (experiments/data/checks/<file>.csv) within --tolerance.
- `*.gpt2.csv` on tests/fixtures/tiny-gpt2 (OpenAI's real tokenizer, a tiny random
  model): no pair may fail for a tokenization reason (multi-token answer, unequal
  lengths); the fixture's logit differences mean nothing and are ignored.
Facts files (no `corrupted` column) are skipped. Exits 1 on any disagreement.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "experiments" / "data"
MODELS = {
    "smollm2": 'path = "{}"'.format(REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "gpt2": 'path = "{}"'.format(REPO / "tests" / "fixtures" / "tiny-gpt2"),
}
HEADER = re.compile(r"^(PASS|FAIL) (\S+) \[")
LOGITS = re.compile(r"clean (-?[\d.]+|–), corrupted (-?[\d.]+|–)")
TOKENIZATION = ("token lengths differ", "tokens:", "same token")


def experiment_toml(rows: list[dict], model_line: str) -> str:
    text = ('[experiment]\nname = "crosscheck"\n\n[model]\n' + model_line
            + "\nprepend_bos = true\n\n[sweep]\nkinds = [\"resid_pre\"]\n\n"
            "[validate]\nmin_gap = 1.0\nrequire_clean_positive = true\nalign = \"strict\"\n")
    for row in rows:
        text += "\n[[pairs]]\n" + "".join(
            f"{key} = {json.dumps(row[key], ensure_ascii=False)}\n"
            for key in ("name", "concept", "clean", "corrupted", "correct", "incorrect"))
    return text


def parse_check(output: str) -> dict[str, dict]:
    """Per pair: passed, the clean/corrupted logit differences and the ✗ reasons."""
    pairs, current = {}, None
    for line in output.splitlines():
        if match := HEADER.match(line):
            current = pairs.setdefault(match[2], {"passed": match[1] == "PASS", "reasons": []})
        elif current is not None and "logit diff" in line and (match := LOGITS.search(line)):
            current["clean"], current["corrupted"] = match[1], match[2]
        elif current is not None and line.strip().startswith("✗"):
            current["reasons"].append(line.strip())
    return pairs


def run_check(actpatch: list[str], toml_text: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "crosscheck.toml"
        path.write_text(toml_text, encoding="utf-8")
        done = subprocess.run(actpatch + ["check", str(path)], capture_output=True, text=True,
                              cwd=REPO)
    return done.stdout + done.stderr


def compare(path: Path, pairs: dict, tolerance: float) -> list[str]:
    problems = []
    label = path.name.split(".")[-2]
    reference = {}
    if label == "smollm2":
        with open(DATA / "checks" / path.name, newline="", encoding="utf-8") as f:
            reference = {r["name"]: r for r in csv.DictReader(f)}
    with open(path, newline="", encoding="utf-8") as f:
        names = [r["name"] for r in csv.DictReader(f)]
    for name in names:
        got = pairs.get(name)
        if got is None:
            problems.append(f"{path.name} {name}: not in actpatch's output")
            continue
        if label == "gpt2":
            problems += [f"{path.name} {name}: {r}" for r in got["reasons"]
                         if any(t in r for t in TOKENIZATION)]
            continue
        ref = reference[name]
        if got["passed"] != (ref["passed"] == "True"):
            problems.append(f"{path.name} {name}: actpatch {'passes' if got['passed'] else 'fails'} it, check_pairs.py does not")
        for side in ("clean", "corrupted"):
            a, b = got.get(side), ref.get(f"{side}_logit_diff")
            if a in (None, "–") or not b or abs(float(a) - float(b)) > tolerance:
                problems.append(f"{path.name} {name}: {side} logit diff actpatch {a}, transformers {b}")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--actpatch", help="the actpatch binary (default: cargo run)")
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("files", nargs="*", type=Path)
    args = parser.parse_args()
    actpatch = ([args.actpatch] if args.actpatch
                else ["cargo", "run", "--quiet", "-p", "actpatch-runner", "--"])
    problems = []
    for path in args.files or sorted(DATA.glob("*.csv")):
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if "corrupted" not in rows[0]:
            continue
        label = path.name.split(".")[-2]
        pairs = parse_check(run_check(actpatch, experiment_toml(rows, MODELS[label])))
        found = compare(path, pairs, args.tolerance)
        problems += found
        print(f"{path.name}: {len(rows)} pairs, {sum(p['passed'] for p in pairs.values())} pass in actpatch, "
              f"{len(found)} disagreements")
    for problem in problems:
        print("DISAGREE", problem)
    raise SystemExit(1 if problems else 0)


if __name__ == "__main__":
    main()
