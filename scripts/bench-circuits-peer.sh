#!/usr/bin/env bash
# `just bench-circuits-peer`: EAP and EAP-IG-inputs (5 steps) on the random gpt2-small of
# `just bench-circuits` and its 16 IOI-style pairs, by actpatch and by a TransformerLens
# script that follows the EAP-IG library's algorithm (scripts/peer/eap_transformerlens.py,
# first checked against the library's golden scores on tests/fixtures/tiny-gpt2), in
# one run, with the ratios. Both use 2 threads.
#
# The peer's environment (torch, TransformerLens; ~6 GB) is made once in
# .cache/peer-env from scripts/peer/requirements.txt (PyPI). Not run by CI.
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${ACTPATCH_PEER_THREADS:-2}"
env=.cache/peer-env
if [ ! -x "$env/bin/python" ]; then
    echo "bench-circuits-peer: making $env (torch and TransformerLens from PyPI, ~6 GB, once)" >&2
    python3 -m venv "$env"
    "$env/bin/pip" install --quiet -r scripts/peer/requirements.txt
fi
work="$(mktemp -d "${TMPDIR:-/tmp}/actpatch-peer.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "== the random gpt2-small (the bench's own, seed 6)" >&2
cargo bench --profile dev --workspace --bench circuits -- --write-model "$work/model" >/dev/null

echo "== peer: TransformerLens, the library's algorithm" >&2
OMP_NUM_THREADS="$threads" "$env/bin/python" scripts/peer/eap_transformerlens.py "$work/model" \
    --check tests/fixtures/tiny-gpt2 --threads "$threads" --json "$work/peer.json" | tee "$work/peer.txt"

echo "== actpatch" >&2
for part in a b; do
    RAYON_NUM_THREADS="$threads" cargo bench --profile dev --workspace --bench circuits -- --only "$part" \
        | tee -a "$work/actpatch.txt"
done

python3 - "$work" <<'PY'
import json, re, sys
from pathlib import Path
work = Path(sys.argv[1])
peer = json.loads((work / "peer.json").read_text())
text = (work / "actpatch.txt").read_text()
ours = {
    "eap": float(re.search(r"\(a\) eap, every edge: ([0-9.]+) s", text).group(1)),
    "eap-ig-inputs(5)": float(re.search(r"\(b\) eap-ig-inputs\(5\), every edge: ([0-9.]+) s", text).group(1)),
}
print()
print("| method, 32,491 edges, 16 pairs | actpatch | TransformerLens peer | ratio |")
print("|---|---|---|---|")
for method, seconds in ours.items():
    print(f"| {method} | {seconds:.2f} s | {peer[method]:.2f} s | {peer[method] / seconds:.1f}× |")
PY
