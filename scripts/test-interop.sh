#!/usr/bin/env bash
# `just test-interop`: every table of a fixture run (cells, baselines, concepts, and a
# circuit run's edges and circuits) opens in pandas, pyarrow, polars
# and duckdb (pinned in scripts/interop/requirements.txt), and cells.parquet written
# back by each of them after a filter is accepted by `actpatch compare`; a sharded
# run's cells/ folder (hive layout) reads as one table equal to its merged
# cells.parquet in polars and duckdb; deploy/k8s/indexed-job.yaml parses as the
# Indexed Job actpatch needs.
#
# The Python environment lives in .cache/interop-venv (git-ignored) and is reused
# while its pins match the requirements file; it is rebuilt when they change.
set -euo pipefail
cd "$(dirname "$0")/.."

requirements=scripts/interop/requirements.txt
venv=.cache/interop-venv
if ! cmp -s "$requirements" "$venv/pins.txt" 2>/dev/null; then
    echo "interop: creating $venv from $requirements"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$requirements"
    "$venv/bin/pip" check
    cp "$requirements" "$venv/pins.txt"
fi

cargo build --quiet --bin actpatch
actpatch="$PWD/target/debug/actpatch"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
run_dir=$("$actpatch" run tests/fixtures/experiments/tiny.toml --out "$work/runs" --quiet)
"$venv/bin/python" scripts/interop/check_tables.py "$actpatch" "$run_dir" "$work"

# Three shards of the same experiment, merged by the last one.
for shard in 0/3 1/3 2/3; do
    "$actpatch" run tests/fixtures/experiments/tiny.toml --out "$work/sharded" --run-id three \
        --shard "$shard" --quiet >/dev/null
done
"$venv/bin/python" scripts/interop/check_shards.py "$work/sharded/three" 3
"$venv/bin/python" scripts/interop/check_k8s.py deploy/k8s/indexed-job.yaml
# concepts.parquet (issue 11): a run of pairs from data files and templates.
concept_run=$("$actpatch" run tests/fixtures/experiments/concepts.toml --out "$work/concept-runs" --quiet)
test -f "$concept_run/concepts.parquet" || { echo "interop: no concepts.parquet in $concept_run" >&2; exit 1; }
"$venv/bin/python" scripts/interop/check_tables.py "$actpatch" "$concept_run" "$work"
# Gaussian-noise pairs: null logit differences in cells, the metric columns of baselines.
gaussian_run=$("$actpatch" run tests/fixtures/experiments/gaussian.toml --out "$work/gaussian-runs" --quiet)
"$venv/bin/python" scripts/interop/check_tables.py "$actpatch" "$gaussian_run" "$work"
# edges.parquet and circuits.parquet (circuits): a [circuit] run of the tiny fixture.
circuit_run=$("$actpatch" run tests/fixtures/experiments/tiny_circuit.toml --out "$work/circuit-runs" --quiet)
for table in edges circuits; do
    test -f "$circuit_run/$table.parquet" || { echo "interop: no $table.parquet in $circuit_run" >&2; exit 1; }
done
"$venv/bin/python" scripts/interop/check_tables.py "$actpatch" "$circuit_run" "$work"
