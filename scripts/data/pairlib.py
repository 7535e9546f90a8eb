"""Shared pieces of the pair-data scripts: tokenizers, SmolLM2, and actpatch's pair rules.

Not run on its own; imported by check_pairs.py, make_pairs.py, make_facts.py and
make_ioi.py (same folder). Environment: the project's Python venv (/work/pyenv here),
with torch, transformers (>= 4.49; 5.24 was used), tokenizers, gguf and accelerate
(`pip install accelerate`: transformers needs it to load a GGUF file).

Tokenization follows actpatch (crates/model/src/tokenizer.rs): the text is encoded
without the tokenizer's own special tokens and the model's BOS id is put first
(GPT-2 `<|endoftext|>` = 50256, SmolLM2 `<|im_start|>` = 1); an answer must encode to
exactly one token. The GPT-2 tokenizer is OpenAI's real BPE from
tests/fixtures/tiny-gpt2/tokenizer.json (the fixture model is tiny, its tokenizer is
not); SmolLM2's is the one in its GGUF file, converted by transformers as actpatch
converts it (crates/model/src/gguf/tokenizer.rs). The SmolLM2 logits come from
transformers on the same GGUF dequantized to f32, the way the `expect` values of
experiments/smollm2/*.toml were made.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "experiments" / "data"
GPT2_TOKENIZER = REPO / "tests" / "fixtures" / "tiny-gpt2" / "tokenizer.json"
SMOLLM2_DIR = REPO / "models"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GPT2_BOS = 50256
SMOLLM2_BOS = 1

# actpatch's validation defaults ([validate] min_gap, require_clean_positive).
MIN_GAP = 1.0
# actpatch warns when a prompt ends with one of these (crates/runner/src/validate.rs).
SENTENCE_END = ".!?;:\""

PAIR_COLUMNS = ["name", "concept", "template", "clean", "corrupted", "correct", "incorrect", "subject"]


class Tokenizer:
    """A `tokenizers.Tokenizer` plus the BOS id actpatch prepends."""

    def __init__(self, inner, bos_id: int, label: str):
        self.inner = inner
        self.bos_id = bos_id
        self.label = label

    def encode(self, text: str) -> list[int]:
        """Token ids with BOS first, as actpatch's `to_tokens(text, prepend_bos=true)`."""
        return [self.bos_id] + self.inner.encode(text, add_special_tokens=False).ids

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids (BOS first) and each token's character span in `text` (BOS: (0, 0))."""
        enc = self.inner.encode(text, add_special_tokens=False)
        return [self.bos_id] + enc.ids, [(0, 0)] + list(enc.offsets)

    def pieces(self, ids: list[int]) -> list[str]:
        return [self.inner.decode([i], skip_special_tokens=False) for i in ids]

    def answer_ids(self, answer: str) -> list[int]:
        return self.inner.encode(answer, add_special_tokens=False).ids


def gpt2_tokenizer() -> Tokenizer:
    from tokenizers import Tokenizer as HfTokenizer

    return Tokenizer(HfTokenizer.from_file(str(GPT2_TOKENIZER)), GPT2_BOS, "gpt2")


def smollm2_path() -> Path:
    path = SMOLLM2_DIR / SMOLLM2_FILE
    if not path.exists():
        raise SystemExit(f"{path} is missing: run `just fetch-smollm2` first")
    return path


def smollm2_tokenizer() -> Tokenizer:
    from transformers import AutoTokenizer

    smollm2_path()
    hf = AutoTokenizer.from_pretrained(str(SMOLLM2_DIR), gguf_file=SMOLLM2_FILE)
    return Tokenizer(hf.backend_tokenizer, SMOLLM2_BOS, "smollm2")


class SmolLM2:
    """SmolLM2-135M-Instruct from the GGUF, dequantized to f32, next-token logits cached per prompt."""

    def __init__(self):
        import torch
        from transformers import AutoModelForCausalLM

        smollm2_path()
        self.torch = torch
        self.tokenizer = smollm2_tokenizer()
        self.model = AutoModelForCausalLM.from_pretrained(
            str(SMOLLM2_DIR), gguf_file=SMOLLM2_FILE, dtype=torch.float32
        ).eval()
        self._cache: dict[str, object] = {}

    def prefetch(self, prompts, batch: int = 64) -> None:
        """Scores many prompts at once: those of one token length go through together
        (no padding, so each row is exactly its own unbatched run)."""
        by_length: dict[int, list[tuple[str, list[int]]]] = {}
        for prompt in dict.fromkeys(prompts):
            if prompt not in self._cache:
                ids = self.tokenizer.encode(prompt)
                by_length.setdefault(len(ids), []).append((prompt, ids))
        for group in by_length.values():
            for start in range(0, len(group), batch):
                chunk = group[start:start + batch]
                tokens = self.torch.tensor([ids for _, ids in chunk])  # [batch, pos]
                with self.torch.no_grad():
                    logits = self.model(tokens).logits[:, -1]  # [batch, d_vocab]
                for (prompt, _), row in zip(chunk, logits.double()):
                    self._cache[prompt] = row

    def next_logits(self, prompt: str):
        """Next-token logits after `prompt` (BOS first). // [d_vocab]"""
        if prompt not in self._cache:
            self.prefetch([prompt])
        return self._cache[prompt]

    def logit_diff(self, prompt: str, correct: str, incorrect: str) -> float:
        logits = self.next_logits(prompt)
        c = self.tokenizer.answer_ids(correct)[0]
        i = self.tokenizer.answer_ids(incorrect)[0]
        return float(logits[c] - logits[i])

    def answer_stats(self, prompt: str, answer: str) -> tuple[int, float, str]:
        """(rank of `answer`'s first token, 1 = top-1; its probability; the top-1 token's text)."""
        logits = self.next_logits(prompt)
        a = self.tokenizer.answer_ids(answer)[0]
        probs = self.torch.softmax(logits, dim=-1)
        rank = int((logits > logits[a]).sum()) + 1
        top = int(logits.argmax())
        return rank, float(probs[a]), self.tokenizer.pieces([top])[0]


    def noised_prob(self, prompt: str, subject: str, answer: str, samples: int = 10,
                    seed: int = 0, scale: float = 3.0) -> float:
        """Mean probability of `answer` when the subject's input embeddings get Gaussian
        noise N(0, ν²), ν = `scale` × the std of the token-embedding matrix's entries
        (ROME's causal-tracing corruption, Meng et al. 2022), over `samples` draws."""
        torch = self.torch
        ids, offsets = self.tokenizer.encode_with_offsets(prompt)
        start = prompt.index(subject)
        end = start + len(subject)
        span = [p for p, (a, b) in enumerate(offsets) if p > 0 and a < end and b > start]
        embed = self.model.get_input_embeddings()
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            nu = scale * float(embed.weight.std())
            clean = embed(torch.tensor([ids]))  # [1, pos, d_model]
            noised = clean.repeat(samples, 1, 1)  # [samples, pos, d_model]
            noise = torch.randn(samples, len(span), clean.shape[-1], generator=generator)
            noised[:, span] += nu * noise
            logits = self.model(inputs_embeds=noised).logits[:, -1]  # [samples, d_vocab]
        a = self.tokenizer.answer_ids(answer)[0]
        return float(torch.softmax(logits.double(), dim=-1)[:, a].mean())


def contains_word(text: str, word: str) -> bool:
    """actpatch's test: `word` is one of `text`'s alphanumeric runs."""
    return word in re.split(r"[^0-9A-Za-z\u00C0-\uFFFF]+", text)


def form_reasons(row: dict, tok: Tokenizer, answer_in_prompt_ok: bool = False) -> list[str]:
    """Why a pair is not well formed under `tok` (empty when it is).

    The rules: single-token answers with a leading space, different answers, equal token
    lengths with BOS, no trailing punctuation or whitespace, no answer inside a prompt
    (unless `answer_in_prompt_ok`, as in IOI), and, when `subject` is given, a substring
    of `clean` whose tokens cover every position where the two prompts differ.
    """
    reasons = []
    clean, corrupted = row["clean"], row["corrupted"]
    correct, incorrect = row["correct"], row["incorrect"]
    for side, answer in (("correct", correct), ("incorrect", incorrect)):
        if not answer.startswith(" ") or answer.startswith("  "):
            reasons.append(f"{side} answer {answer!r} should start with exactly one space")
        n = len(tok.answer_ids(answer))
        if n != 1:
            reasons.append(f"{side} answer {answer!r} is {n} tokens")
    if correct == incorrect or tok.answer_ids(correct) == tok.answer_ids(incorrect):
        reasons.append("correct and incorrect answers are the same token")
    if clean == corrupted:
        reasons.append("clean and corrupted prompts are identical")
    for side, prompt in (("clean", clean), ("corrupted", corrupted)):
        if prompt != prompt.strip():
            reasons.append(f"{side} prompt has leading or trailing whitespace")
        if prompt.rstrip() and prompt.rstrip()[-1] in SENTENCE_END:
            reasons.append(f"{side} prompt ends with punctuation {prompt.rstrip()[-1]!r}")
        if not answer_in_prompt_ok:
            for answer in (correct, incorrect):
                if contains_word(prompt, answer.strip()):
                    reasons.append(f"{side} prompt contains the answer {answer.strip()!r}")
    clean_ids, offsets = tok.encode_with_offsets(clean)
    corrupted_ids = tok.encode(corrupted)
    if len(clean_ids) != len(corrupted_ids):
        reasons.append(
            f"token lengths differ: clean {len(clean_ids)} {tok.pieces(clean_ids)}, "
            f"corrupted {len(corrupted_ids)} {tok.pieces(corrupted_ids)}"
        )
    elif row.get("subject"):
        reasons += subject_reasons(row["subject"], clean, clean_ids, offsets, corrupted_ids)
    return reasons


def subject_reasons(subject, clean, clean_ids, offsets, corrupted_ids) -> list[str]:
    start = clean.find(subject)
    if start < 0:
        return [f"subject {subject!r} is not in the clean prompt"]
    end = start + len(subject)
    span = {p for p, (a, b) in enumerate(offsets) if p > 0 and a < end and b > start}
    differing = {p for p, (a, b) in enumerate(zip(clean_ids, corrupted_ids)) if a != b}
    outside = sorted(differing - span)
    if outside:
        return [f"the prompts also differ outside the subject span, at token positions {outside}"]
    return []


@dataclass
class Verdict:
    """actpatch's baseline rules on one pair's logit differences."""

    clean_ld: float
    corrupted_ld: float
    reasons: list[str] = field(default_factory=list)

    @property
    def gap(self) -> float:
        return self.clean_ld - self.corrupted_ld


def baseline_verdict(clean_ld: float, corrupted_ld: float) -> Verdict:
    verdict = Verdict(clean_ld, corrupted_ld)
    if verdict.gap < MIN_GAP:
        verdict.reasons.append(f"clean − corrupted = {verdict.gap:.3f} < {MIN_GAP}")
    if clean_ld <= 0:
        verdict.reasons.append(f"clean logit diff {clean_ld:.3f} ≤ 0")
    return verdict


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in columns})
