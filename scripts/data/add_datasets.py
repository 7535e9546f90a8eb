"""One-off edit of the shipped experiment files (issue 11): each gets a [[datasets]]
entry for its concept's pair file under experiments/data/, and each hand-written pair a
`subject` / `subject_corrupted` (the words where the two prompts differ), so that its
tokens get the same roles (`subject.first` … `subject.last`) as the data file's rows.

    python scripts/data/add_datasets.py    # idempotent: files already edited are skipped
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONCEPTS = ["country_capitals", "gender_bias", "landmarks", "nobel_prize",
            "number_agreement", "temporal_consistency"]


def differing_words(clean, corrupted):
    a, b = clean.split(" "), corrupted.split(" ")
    p = 0
    while p < min(len(a), len(b)) and a[p] == b[p]:
        p += 1
    s = 0
    while s < min(len(a), len(b)) - p and a[-1 - s] == b[-1 - s]:
        s += 1
    strip = lambda words: " ".join(words).strip(",.;:")
    return strip(a[p:len(a) - s]), strip(b[p:len(b) - s])


def edit(path, data_file):
    text = path.read_text()
    if "[[datasets]]" in text:
        return False
    blocks = re.split(r"(?m)^(?=\[\[pairs\]\])", text)
    out = [blocks[0]]
    for block in blocks[1:]:
        clean = re.search(r'(?m)^clean = "(.*)"$', block).group(1)
        corrupted = re.search(r'(?m)^corrupted = "(.*)"$', block).group(1)
        subject, subject_corrupted = differing_words(clean, corrupted)
        ok = subject and subject_corrupted and clean.count(subject) == 1 \
            and corrupted.count(subject_corrupted) == 1
        if ok and "reference = true" not in block:
            block = re.sub(r'(?m)^(incorrect = ".*")$',
                           lambda m: f'{m.group(1)}\nsubject = "{subject}"\nsubject_corrupted = "{subject_corrupted}"',
                           block, count=1)
        out.append(block)
    text = "".join(out)
    dataset = (
        "# 40 pairs of this concept from a data file (experiments/data/README.md says how they\n"
        "# were made and checked): with the pairs below, at least 24 per concept, so that the\n"
        "# concept table (concepts.parquet) has intervals worth reading.\n"
        f'[[datasets]]\npath = "{data_file}"\n\n'
    )
    first = text.index("[[pairs]]")
    # Put it before the comment block that precedes the first pair.
    start = text.rfind("\n\n", 0, first) + 2
    text = text[:start] + dataset + text[start:]
    path.write_text(text)
    return True


def main():
    for concept in CONCEPTS:
        for path, data in [
            (ROOT / "experiments" / f"{concept}.toml", f"data/{concept}.gpt2.csv"),
            (ROOT / "experiments" / "smollm2" / f"{concept}.toml", f"../data/{concept}.smollm2.csv"),
        ]:
            print(path.relative_to(ROOT), "edited" if edit(path, data) else "already has [[datasets]]")


if __name__ == "__main__":
    sys.exit(main())
