#!/usr/bin/env bash
# `just bench-python`: `Model.patch` of one SmolLM2 pair's resid_pre grid from Python
# against the command line's sweep of the same pair (scripts/python/bench_patch.py), both
# from this checkout's dev-profile build. Needs `just fetch-smollm2`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/python-env.sh
wheel=$(scripts/wheel.sh)
cargo build --quiet --bin actpatch
venv=.cache/python-bench
if [[ ! -x $venv/bin/python ]]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-index --find-links "$WHEELHOUSE" \
    --force-reinstall "$wheel" >/dev/null
"$venv/bin/python" scripts/python/bench_patch.py "$PWD/target/debug/actpatch" "${1:-10}"
