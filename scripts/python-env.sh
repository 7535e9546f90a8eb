#!/usr/bin/env bash
# The Python tools of `just wheel` and `just test-python`, offline after the first fetch:
# - .cache/python-wheels: every wheel pinned in scripts/python/requirements.txt, downloaded
#   from PyPI when the pins change (the only step that needs the network);
# - .cache/python-tools: a venv with maturin, installed from those wheels.
# Sourced: sets $WHEELHOUSE and $MATURIN.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

requirements=scripts/python/requirements.txt
WHEELHOUSE=$PWD/.cache/python-wheels
if ! cmp -s "$requirements" "$WHEELHOUSE/pins.txt" 2>/dev/null; then
    echo "python: downloading the pinned wheels into $WHEELHOUSE" >&2
    rm -rf "$WHEELHOUSE"
    mkdir -p "$WHEELHOUSE"
    python3 -m pip download --quiet --disable-pip-version-check --no-deps \
        -r "$requirements" -d "$WHEELHOUSE"
    cp "$requirements" "$WHEELHOUSE/pins.txt"
fi

tools=.cache/python-tools
maturin_pin=$(grep '^maturin==' "$requirements")
if ! grep -qx "$maturin_pin" "$tools/pins.txt" 2>/dev/null; then
    rm -rf "$tools"
    python3 -m venv "$tools"
    "$tools/bin/pip" install --quiet --disable-pip-version-check --no-index \
        --find-links "$WHEELHOUSE" "$maturin_pin"
    echo "$maturin_pin" > "$tools/pins.txt"
fi
MATURIN=$PWD/$tools/bin/maturin
export WHEELHOUSE MATURIN
