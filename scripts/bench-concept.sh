#!/usr/bin/env bash
# One concept end to end on SmolLM2-135M (issue 11's speed target): builds actpatch as
# `just run` does, runs crates/runner/benches/concept_smollm2.toml into a scratch
# folder, and prints the wall time, the load average and the manifest's timings.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-missing-model.sh crates/runner/benches/concept_smollm2.toml
cargo build --quiet --bin actpatch
out="$(mktemp -d "${TMPDIR:-/tmp}/actpatch-bench-concept.XXXXXX")"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
start=$(date +%s.%N)
target/debug/actpatch run crates/runner/benches/concept_smollm2.toml --out "$out" --quiet "$@"
end=$(date +%s.%N)
echo "load after:  $(cut -d' ' -f1-3 /proc/loadavg)"
manifest="$(ls -d "$out"/*/)manifest.json"
python3 - "$manifest" "$start" "$end" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
t = m["timings"]
print(f"end to end: {float(sys.argv[3]) - float(sys.argv[2]):.1f} s wall "
      f"({m['pairs']['swept']} pairs, {m['cells']} cells)")
for key in ["load", "validate", "sweep", "write", "tables", "statistics", "figures", "report"]:
    value = t.get(f"{key}_seconds")
    if value is not None:
        print(f"  {key:<10} {value:7.2f} s")
PY
rm -rf "$out"
