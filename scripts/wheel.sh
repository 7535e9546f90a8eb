#!/usr/bin/env bash
# `just wheel`: the abi3 wheel of the Python package (CPython ≥ 3.10) into target/wheels/.
# maturin builds crates/python in the workspace's dev profile and target folder, so after
# `just test` only pyo3 and the bindings crate compile. Prints the wheel's path.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/python-env.sh
rm -f target/wheels/actpatch-*.whl
"$MATURIN" build --quiet --manifest-path crates/python/Cargo.toml --interpreter python3 \
    --out target/wheels --compatibility linux >&2
ls target/wheels/actpatch-*.whl
