#!/usr/bin/env bash
# `just test-slurm`: a real Slurm array job. Starts the single-node test cluster
# (deploy/slurm/test-cluster, via up.sh), submits a 4-task array sweep of the tiny
# fixture experiment with deploy/slurm/actpatch-array.sbatch, waits for it (at most
# 5 minutes), and checks that the run the last task merged equals a single-process
# run of the same file byte for byte: cells.parquet, baselines.parquet, every figure.
# The cluster is stopped (only the daemons up.sh started) however the test ends.
#
# Needs root and the Debian packages slurm-wlm and munge (.ci/run installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
clock=$(date +%s)

cargo build --quiet --bin actpatch
actpatch=$repo/target/debug/actpatch
experiment=$repo/tests/fixtures/experiments/tiny.toml

work=$(mktemp -d "${TMPDIR:-/tmp}/actpatch-slurm-test.XXXXXX")
chmod 755 "$work" # munged wants every folder above its socket searchable
export ACTPATCH_SLURM_DIR=$work/cluster
# Ports of its own, so a cluster from `just slurm-up` (16817-16818) may run alongside.
export ACTPATCH_SLURM_PORT=${ACTPATCH_SLURM_PORT:-16827}
finish() {
    status=$?
    if [ "$status" != 0 ]; then
        echo "test-slurm: FAILED; task logs and daemon logs:" >&2
        tail -n 30 "$work"/task-*.out "$ACTPATCH_SLURM_DIR"/log/*.log 2>/dev/null >&2 || true
    fi
    deploy/slurm/test-cluster/down.sh || true
    rm -rf "$work"
    exit "$status"
}
trap finish EXIT

deploy/slurm/test-cluster/up.sh
# shellcheck disable=SC1091
source "$ACTPATCH_SLURM_DIR/env"

# One CPU per task: on a 2-core machine two tasks run at once into the shared folder.
submitted=$(date +%s)
job=$(timeout 300 sbatch --parsable --wait --array=0-3 --cpus-per-task=1 \
    --output="$work/task-%A_%a.out" --export="ALL,ACTPATCH=$actpatch" \
    --time=10 deploy/slurm/actpatch-array.sbatch "$experiment" \
    --out "$work/sharded" --max-batch-memory 1)
job=${job%%;*}
array_seconds=$(($(date +%s) - submitted))
run_dir=$work/sharded/slurm-$job
echo "test-slurm: array job $job finished in ${array_seconds} s → $run_dir"

fail() { echo "test-slurm: $*" >&2; exit 1; }
[ -f "$run_dir/cells.parquet" ] || fail "no merged cells.parquet in $run_dir"
grep -q '"status": "complete"' "$run_dir/manifest.json" || fail "the merged run is not complete"
grep -q '"shards": 4' "$run_dir/manifest.json" || fail "the merged run does not record 4 shards"
for index in 0 1 2 3; do
    shard=$run_dir/shards/$index-of-4.json
    grep -q '"from": "SLURM_ARRAY_TASK_ID"' "$shard" || fail "$shard: not from the array task id"
    [ -f "$run_dir/cells/shard=$index-of-4/part-0.parquet" ] || fail "shard $index wrote no part"
done

# The same experiment in one process, under the same run id.
"$actpatch" run "$experiment" --out "$work/single" --run-id "slurm-$job" \
    --max-batch-memory 1 --no-shard --quiet >/dev/null
single=$work/single/slurm-$job
for table in cells.parquet baselines.parquet; do
    cmp "$run_dir/$table" "$single/$table" || fail "$table differs from the single-process run's"
done
diff <(cd "$run_dir/figures" && sha256sum -- *) <(cd "$single/figures" && sha256sum -- *) ||
    fail "the figures differ from the single-process run's"
rows=$(find "$run_dir/cells" -name 'part-0.parquet' | wc -l)
echo "test-slurm: merged run of $rows shards equals the single-process run (cells, baselines, figures); $(($(date +%s) - clock)) s in all"
