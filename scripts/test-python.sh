#!/usr/bin/env bash
# `just test-python`: builds the wheel (`just wheel`), installs it into a fresh venv from
# the pinned wheels only (offline: the same install a user makes), runs the pytest suite
# (crates/python/tests) against the fixtures and the command line's binary, then
# executes examples/walkthrough.ipynb with nbclient (needs `just fetch-smollm2`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/python-env.sh
wheel=$(scripts/wheel.sh)
cargo build --quiet --bin actpatch

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
python=$work/venv/bin/python
"$python" -m pip install --quiet --disable-pip-version-check --no-index \
    --find-links "$WHEELHOUSE" "$wheel" -r scripts/python/requirements.txt
"$python" -m pip check

export ACTPATCH_CLI=$PWD/target/debug/actpatch
# From a folder outside the checkout: the installed package, not crates/python/python.
(cd "$work" && "$python" -m pytest -q -p no:cacheprovider "$OLDPWD/crates/python/tests")

if [[ "${ACTPATCH_SKIP_NOTEBOOK:-}" != 1 ]]; then
    "$python" scripts/python/run_notebook.py examples/walkthrough.ipynb
fi
