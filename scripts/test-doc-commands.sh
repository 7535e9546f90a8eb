#!/usr/bin/env bash
# Run every plain ```sh block of README.md and the guide (docs/src/), in order: README.md
# first, then the chapters in SUMMARY.md's order (the list `scripts/check-docs.py
# --list-commands` prints). Plain blocks run offline on the fixtures; tagged blocks
# (```sh,model, ```sh,hub, …) need something else and are not run here.
#
# Each block runs in its own `bash -euo pipefail` from the repository root, with
# `actpatch` (built as `just run` builds it) on the PATH. Every block writes under
# results/doc-example/, which is removed first. A failing block stops the test with its
# file and line.
#
# Usage: scripts/test-doc-commands.sh [--dry-run]
#   --dry-run  print the blocks that would run (file:line and text), run nothing
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

dry_run=false
case "${1:-}" in
"") ;;
--dry-run) dry_run=true ;;
*)
    echo "usage: $0 [--dry-run]" >&2
    exit 2
    ;;
esac

blocks="$(mktemp -d "${TMPDIR:-/tmp}/actpatch-doc-commands.XXXXXX")"
trap 'rm -rf "$blocks"' EXIT

# One file per block (NNNN.sh) and an index of "NNNN<TAB>file:line".
python3 scripts/check-docs.py --list-commands --json | python3 -c '
import json, sys
out = sys.argv[1]
with open(f"{out}/index", "w") as index:
    for i, block in enumerate(json.load(sys.stdin), 1):
        name = f"{i:04d}"
        with open(f"{out}/{name}.sh", "w") as f:
            f.write(block["text"] + "\n")
        index.write("%s\t%s:%d\n" % (name, block["file"], block["line"]))
' "$blocks"

count=$(wc -l <"$blocks/index")
if $dry_run; then
    while IFS=$'\t' read -r name where; do
        echo "── $where"
        sed 's/^/    /' "$blocks/$name.sh"
    done <"$blocks/index"
    echo "$count blocks"
    exit 0
fi

# The binary the blocks call as `actpatch`, built as `just run` builds it (no second build).
cargo build --quiet --bin actpatch
export PATH="$root/target/debug:$PATH"
rm -rf results/doc-example

n=0
while IFS=$'\t' read -r name where; do
    n=$((n + 1))
    echo "[$n/$count] $where" >&2
    start=$SECONDS
    if ! (cd "$root" && bash -euo pipefail "$blocks/$name.sh") </dev/null; then
        echo "FAILED: the block at $where (shown below)" >&2
        sed 's/^/    /' "$blocks/$name.sh" >&2
        exit 1
    fi
    echo "    ok ($((SECONDS - start)) s)" >&2
done <"$blocks/index"
echo "all $count plain sh blocks of README.md and docs/src/ ran" >&2
