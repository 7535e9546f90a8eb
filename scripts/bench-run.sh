#!/usr/bin/env bash
# `just bench`'s last part: the README's run command (`just run`, the dev profile that
# `just test` shares) against the release binary, on the bench's experiment: the
# random-weight gpt2-small of benches/sweeps.rs, its 8- and 11-token pairs, `resid_pre`
# and `head_out_by_pos`, every metric, figures and report included. Each is run
# `ROUNDS` times (default 3), alternating, after one untimed run of each (builds,
# page cache); prints the median wall time of each and their ratio.
#
# Usage: scripts/bench-run.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
work="$(mktemp -d "${TMPDIR:-/tmp}/actpatch-bench-run.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "building the release binary and the dev profile's (as \`just run\`) …"
cargo build --quiet --release -p actpatch-runner --bin actpatch
cargo build --quiet --bin actpatch
cargo bench --quiet -p actpatch-runner --bench sweeps -- --write-model "$work/model" >/dev/null

cat >"$work/experiment.toml" <<'EOF'
# The bench's experiment: random weights, so the baselines are not validated.
[experiment]
name = "bench"

[model]
path = "model"

[sweep]
kinds = ["resid_pre", "head_out_by_pos"]

[validate]
enabled = false

[output]
formats = ["png", "svg"]

[[pairs]]
name = "colosseum-eiffel-tower"
concept = "bench"
clean = "The Colosseum is in"
corrupted = "The Eiffel Tower is in"
correct = " Rome"
incorrect = " Paris"

[[pairs]]
name = "colosseum-eiffel-tower-city"
concept = "bench"
clean = "The Colosseum is in the city of"
corrupted = "The Eiffel Tower is in the city of"
correct = " Rome"
incorrect = " Paris"
EOF

# Seconds of wall time of one run of "$@".
seconds() {
    local start end
    start=$(date +%s.%N)
    "$@" >/dev/null 2>&1
    end=$(date +%s.%N)
    awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f\n", b - a }'
}
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

run_just=(just run "$work/experiment.toml" --quiet --out "$work/just")
run_release=(target/release/actpatch run "$work/experiment.toml" --quiet --out "$work/release")
"${run_just[@]}" >/dev/null 2>&1
"${run_release[@]}" >/dev/null 2>&1
just_times=()
release_times=()
for _ in $(seq "$rounds"); do
    just_times+=("$(seconds "${run_just[@]}")")
    release_times+=("$(seconds "${run_release[@]}")")
done
just_s=$(printf '%s\n' "${just_times[@]}" | median)
release_s=$(printf '%s\n' "${release_times[@]}" | median)
printf '\nthe bench experiment end to end (median of %s runs; load %s):\n' "$rounds" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '  just run (dev profile):   %6.2f s  (%s)\n' "$just_s" "${just_times[*]}"
printf '  release binary:           %6.2f s  (%s)\n' "$release_s" "${release_times[*]}"
printf '  just run / release:       %6.3f\n' "$(awk -v a="$just_s" -v b="$release_s" 'BEGIN { print a / b }')"
