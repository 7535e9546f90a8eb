#!/usr/bin/env python3
"""Check README.md and the guide (docs/src/, an mdBook) for broken links and untagged
shell blocks; list the shell blocks the doc test runs.

    python3 scripts/check-docs.py                 # check (after `mdbook build docs`)
    python3 scripts/check-docs.py --list-commands # the plain `sh` blocks: file:line, text
    python3 scripts/check-docs.py --list-commands --json

Checks, each failure reported as `file:line: message` (exit 1 if any):

- every relative link and image in README.md and docs/src/**/*.md points at a file
  that exists (relative to the Markdown file);
- every `#anchor` (in the same page or another) names a heading of that page: for a
  guide page, an `id` of the HTML page mdBook built into target/book/ (computed from
  the Markdown headings as mdBook does when the book has not been built); for
  README.md, its headings;
- every page under docs/src/ is listed in SUMMARY.md;
- every shell block is ```sh, optionally with one tag from TAGS (```sh,model); other
  shell info strings (bash, shell, console, sh with an unknown tag) are refused.

Plain ```sh blocks (no tag) must run offline, on the fixtures, from the repository
root: scripts/test-doc-commands.sh runs them in the order listed here (README.md first,
then the guide in SUMMARY.md's order). Python 3 standard library only.
"""

import argparse
import html
import json
import re
import sys
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "docs" / "src"
BOOK = ROOT / "target" / "book"

# What a tagged block needs; none of them is run by the doc test.
TAGS = {
    "slow": "a test suite, a benchmark or a long build (offline)",
    "model": "a fetched real model (SmolLM2, Qwen2.5)",
    "net": "a package registry (PyPI)",
    "hub": "the Hugging Face hub",
    "cluster": "Slurm or Kubernetes",
    "gpu": "CUDA: a CUDA build or a GPU",
    "root": "root: system packages",
}
SHELL_LANGS = {"sh", "bash", "shell", "console", "zsh", "shell-session"}

FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})(.*)$")
LINK = re.compile(r"(!?)\[([^\]]*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
HTML_ID = re.compile(r"<h[1-6][^>]*\bid=\"([^\"]+)\"")


def rel(path):
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def summary_pages():
    """The guide's pages in SUMMARY.md's order (paths relative to docs/src)."""
    pages = []
    summary = SRC / "SUMMARY.md"
    for line in summary.read_text(encoding="utf-8").splitlines():
        for m in LINK.finditer(strip_inline_code(line)):
            target = m.group(3)
            if target.endswith(".md") and target not in pages:
                pages.append(target)
    return pages


def markdown_files():
    """README.md, SUMMARY.md, then the pages in SUMMARY.md's order, then any others."""
    files = [ROOT / "README.md", SRC / "SUMMARY.md"]
    files += [SRC / p for p in summary_pages() if (SRC / p).exists()]
    others = sorted(p for p in SRC.rglob("*.md") if p not in files)
    return files + others


def strip_inline_code(line):
    """The line with inline code spans replaced by a placeholder without brackets."""
    return INLINE_CODE.sub(lambda m: "CODE", line)


def lines_outside_code(text):
    """(line number, line) of the lines outside fenced code blocks."""
    fence = None
    for number, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if m:
            marker = m.group(2)
            if fence is None:
                fence = marker
                continue
            if marker[0] == fence[0] and len(marker) >= len(fence) and not m.group(3).strip():
                fence = None
                continue
        if fence is None:
            yield number, line


def code_blocks(text):
    """(line of the opening fence, info string, body) of every fenced block."""
    blocks = []
    fence = None
    for number, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if fence is None:
            if m:
                fence, start, info, body = m.group(2), number, m.group(3).strip(), []
            continue
        if m and m.group(2)[0] == fence[0] and len(m.group(2)) >= len(fence) and not m.group(3).strip():
            blocks.append((start, info, "\n".join(body)))
            fence = None
        else:
            body.append(line)
    if fence is not None:
        blocks.append((start, info, None))  # unclosed
    return blocks


def normalize_id(text):
    """A heading's id as mdBook makes it: lowercase, spaces to '-', only alphanumerics,
    '_' and '-' kept (after Markdown's inline markup is dropped)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "").replace("*", "")
    text = html.unescape(text)
    out = []
    for ch in text.strip():
        if ch.isalnum() or ch in "_-":
            out.append(ch.lower())
        elif ch.isspace():
            out.append("-")
    return "".join(out)


def heading_ids(text):
    """The ids mdBook gives a page's headings (duplicates get -1, -2, …)."""
    ids, seen = set(), {}
    for _, line in lines_outside_code(text):
        m = HEADING.match(line)
        if not m:
            continue
        base = normalize_id(m.group(2))
        n = seen.get(base, 0)
        ids.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return ids


_anchor_cache = {}


def anchors_of(md_path):
    """The anchors a link may name in md_path: from the built HTML page when there is
    one, else from its headings."""
    if md_path in _anchor_cache:
        return _anchor_cache[md_path]
    ids = None
    try:
        page = md_path.relative_to(SRC)
    except ValueError:
        page = None
    if page is not None:
        built = BOOK / page.with_suffix(".html")
        if page.name == "README.md":
            built = BOOK / page.parent / "index.html"
        if built.exists():
            ids = set(HTML_ID.findall(built.read_text(encoding="utf-8")))
    if ids is None:
        ids = heading_ids(md_path.read_text(encoding="utf-8"))
    _anchor_cache[md_path] = ids
    return ids


def check_links(path, text, problems):
    for number, line in lines_outside_code(text):
        for m in LINK.finditer(strip_inline_code(line)):
            image, target = m.group(1), m.group(3)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            dest = path if not file_part else (path.parent / file_part).resolve()
            what = "image" if image else "link"
            if not dest.exists():
                problems.append(f"{rel(path)}:{number}: {what} to {target}: {rel(dest)} does not exist")
                continue
            if anchor:
                if dest.suffix != ".md":
                    problems.append(f"{rel(path)}:{number}: {what} to {target}: an anchor in a file that is not Markdown")
                elif anchor not in anchors_of(dest):
                    problems.append(f"{rel(path)}:{number}: link to {target}: {rel(dest)} has no heading with id `{anchor}`")


def shell_tag(info):
    """(language, tag) of a fence's info string: `sh,model` -> ("sh", "model")."""
    parts = [p.strip() for p in re.split(r"[,\s]+", info) if p.strip()]
    if not parts:
        return "", None
    return parts[0], (parts[1:] or [None])


def check_blocks(path, text, problems):
    for start, info, body in code_blocks(text):
        if body is None:
            problems.append(f"{rel(path)}:{start}: code block is not closed")
            continue
        lang, tags = shell_tag(info)
        if lang.lower() not in SHELL_LANGS:
            continue
        if lang != "sh":
            problems.append(f"{rel(path)}:{start}: shell block ```{info}: write ```sh (plain: runs offline on the fixtures) or ```sh,TAG with TAG one of {', '.join(TAGS)}")
            continue
        if tags == [None]:
            continue
        if len(tags) != 1 or tags[0] not in TAGS:
            problems.append(f"{rel(path)}:{start}: ```{info}: a shell block takes no tag or one of {', '.join(TAGS)}")


def check_summary(problems):
    listed = {(SRC / p).resolve() for p in summary_pages()}
    for page in sorted(SRC.rglob("*.md")):
        if page.name != "SUMMARY.md" and page.resolve() not in listed:
            problems.append(f"{rel(page)}:1: not listed in docs/src/SUMMARY.md (mdBook does not build it)")


def plain_commands():
    """(file, line of the first command line, text) of every plain ```sh block."""
    commands = []
    for path in markdown_files():
        text = path.read_text(encoding="utf-8")
        for start, info, body in code_blocks(text):
            if body is not None and info == "sh":
                commands.append({"file": rel(path), "line": start + 1, "text": body})
    return commands


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list-commands", action="store_true", help="print the plain sh blocks instead of checking")
    parser.add_argument("--json", action="store_true", help="with --list-commands: as a JSON array of {file, line, text}")
    args = parser.parse_args()

    if args.list_commands:
        commands = plain_commands()
        if args.json:
            json.dump(commands, sys.stdout, indent=1, ensure_ascii=False)
            print()
        else:
            for c in commands:
                print(f"{c['file']}:{c['line']}")
                for line in c["text"].splitlines():
                    print(f"    {line}")
                print()
        return 0

    problems = []
    if not BOOK.exists():
        print(f"note: {rel(BOOK)} not built; anchors are checked against the Markdown headings", file=sys.stderr)
    for path in markdown_files():
        text = path.read_text(encoding="utf-8")
        check_links(path, text, problems)
        check_blocks(path, text, problems)
    check_summary(problems)
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) in the docs", file=sys.stderr)
        return 1
    n = len(markdown_files())
    print(f"docs: {n} Markdown files, links, images, anchors and shell-block tags OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
