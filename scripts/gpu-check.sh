#!/usr/bin/env bash
# The GPU checks of actpatch's `cuda` build, on a machine with an NVIDIA GPU and driver
# but no Rust toolchain: run from a checkout's root with the bundle that
# `just gpu-bundle` makes here (dist/gpu-bundle/: actpatch.xz, sweeps.xz,
# tiny-llama.gguf; 28 MiB, which with the checkout fits the device tool's 64 MiB).
#
#  1. finds the CUDA libraries the binary links (cuBLAS, cuBLASLt, cuRAND, NVRTC, from
#     `readelf -d`) inside python3's site-packages (the GPU image's PyTorch ships them)
#     or the usual system folders, and puts their folders on LD_LIBRARY_PATH; the
#     driver's libcuda.so.1 replaces the link stub;
#  2. golden: both fixture experiments (every patch kind) through the runner on cuda:0,
#     fast path and --naive, each checked against golden.json (and golden_extra.json
#     where present) by scripts/gpu/compare_golden.py; the same runs on the CPU, and
#     `actpatch compare` of GPU against CPU and of fast against naive;
#  3. GGUF: the tiny Llama written as a GGUF file, loaded and swept on cuda:0, against
#     the same golden values;
#  4. bench: `sweeps` (gpt2-small shapes: the notebook's loop against the fast path) on
#     cuda:0, and on the CPU in the same call for the ratio (naive loop sampled there).
#
# Tolerance: 1e-4 on logit differences and normalized logit differences, as for the CPU
# golden tests. The GPU computes in f32 too (candle leaves cuBLAS's reduced-precision
# TF32 matmuls off); only the order of summation differs (cuBLAS's blocked dot
# products, candle's reduction kernels). With dot products of at most 128 terms and
# ε = 6e-8 that moves activations and logits by ~1e-5 relative, and the smallest
# clean-corrupted gap of the fixtures (0.17, tiny Llama "capital") magnifies the
# normalized value at most six-fold: within 1e-4.
#
# Every check runs even when an earlier one fails; the exit status is 1 if any failed.
# Output goes to $OUT (the device tool's folder that comes back), else gpu-check-out/:
# gpu-check.log (everything), summary.txt (one line per check), runs/ is left in a
# temporary folder.
#
# Usage: scripts/gpu-check.sh [BUNDLE_DIR]   (default dist/gpu-bundle)
# GPU_CHECK_DEVICE=cpu rehearses every step on the CPU (on a machine without a GPU,
# with the toolchain's libraries and the link stub on LD_LIBRARY_PATH: see docs/src/gpu.md).
set -uo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bundle="$(cd "${1:-$repo/dist/gpu-bundle}" && pwd)" || {
    echo "gpu-check: no bundle folder ${1:-$repo/dist/gpu-bundle}: run \`just gpu-bundle\` first" >&2
    exit 2
}
out="${OUT:-$repo/gpu-check-out}"
mkdir -p "$out"
work="$(mktemp -d)"
fixtures="$repo/tests/fixtures"
# Each command's limit, so that a hang leaves time for the rest (device time is short).
STEP_TIMEOUT="${STEP_TIMEOUT:-240}"
TOL=1e-4
device="${GPU_CHECK_DEVICE:-cuda:0}"

exec > >(tee "$out/gpu-check.log") 2>&1
: >"$out/summary.txt"
failures=0

# `check NAME CMD...`: runs CMD, records PASS/FAIL and its seconds.
check() {
    local name="$1" start status tenths secs
    shift
    echo
    echo "=== $name: $*"
    start=$(date +%s%N)
    "$@"
    status=$?
    tenths=$((($(date +%s%N) - start) / 100000000))
    secs="$((tenths / 10)).$((tenths % 10))"
    if ((status == 0)); then
        echo "PASS  $name  (${secs} s)" | tee -a "$out/summary.txt"
    else
        echo "FAIL  $name  (exit $status, ${secs} s)" | tee -a "$out/summary.txt"
        failures=$((failures + 1))
    fi
    return $status
}

unpack() {
    local name="$1"
    [[ -f "$bundle/$name.xz" ]] || return 1
    if command -v xz >/dev/null 2>&1; then
        xz -dc "$bundle/$name.xz" >"$work/$name"
    else
        python3 -c 'import lzma, shutil, sys
shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)' "$bundle/$name.xz" >"$work/$name"
    fi && chmod +x "$work/$name"
}

# Adds to LD_LIBRARY_PATH the folder of every library the binary needs and the loader
# does not find, searching python3's site-packages (nvidia/*/lib) and system folders.
find_cuda_libraries() {
    local binary="$1" lib dir
    local search=()
    local site
    site="$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null)" \
        && [[ -d "$site/nvidia" ]] && search+=("$site/nvidia")
    for dir in /usr/local/nvidia /usr/local/cuda /usr/lib/x86_64-linux-gnu /usr/lib64 /opt; do
        [[ -d "$dir" ]] && search+=("$dir")
    done
    echo "searching for missing libraries in: ${search[*]}"
    for lib in $(ldd "$binary" | awk '/not found/ {print $1}'); do
        dir="$(find -L "${search[@]}" -name "$lib" -print -quit 2>/dev/null)"
        if [[ -n "$dir" ]]; then
            export LD_LIBRARY_PATH="$(dirname "$dir")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
            echo "  $lib: $(dirname "$dir")"
        else
            echo "  $lib: NOT FOUND"
        fi
    done
    echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
    ldd "$binary" | grep -E 'cuda|cublas|curand|nvrtc|not found'
    ! ldd "$binary" | grep -q 'not found'
}

# The experiment file with `device = DEVICE` under [model], in the work folder.
on_device() {
    local experiment="$1" device="$2"
    local copy="$work/$(basename "$experiment" .toml).${device/:/}.toml"
    sed "/^\[model\]/a device = \"$device\"" "$experiment" >"$copy"
    echo "$copy"
}

# `sweep LABEL EXPERIMENT MODEL DEVICE [ARGS...]`: runs into $work/runs/LABEL.
sweep() {
    local label="$1" experiment="$2" model="$3" device="$4"
    shift 4
    rm -rf "$work/runs/$label"
    timeout "$STEP_TIMEOUT" "$work/actpatch" run "$(on_device "$experiment" "$device")" --model-path "$model" \
        --out "$work/runs/$label" --quiet "$@"
}

run_dir() {
    find "$work/runs/$1" -mindepth 1 -maxdepth 1 -type d | head -n 1
}

golden() {
    timeout "$STEP_TIMEOUT" python3 "$repo/scripts/gpu/compare_golden.py" "$(run_dir "$1")" "$fixtures/$2" --tol "$TOL"
}

compare_runs() {
    timeout "$STEP_TIMEOUT" "$work/actpatch" compare "$(run_dir "$1")" "$(run_dir "$2")" --fail-above "$TOL" \
        --no-figures --top 5 --out "$work/compare/$1-vs-$2"
}

echo "=== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
nproc
unpack actpatch || {
    echo "gpu-check: $bundle/actpatch.xz missing: run \`just gpu-bundle\` first" >&2
    exit 2
}
"$work/actpatch" --version
check "libraries: cuBLAS, cuRAND, NVRTC and the driver found" find_cuda_libraries "$work/actpatch"

for spec in "tiny-gpt2 tiny.toml" "tiny-llama tiny_llama.toml"; do
    read -r fixture file <<<"$spec"
    experiment="$fixtures/experiments/$file"
    model="$fixtures/$fixture"
    check "$fixture: run on cpu" sweep "$fixture-cpu" "$experiment" "$model" cpu
    check "$fixture: run on $device (fast path)" sweep "$fixture-gpu" "$experiment" "$model" "$device" \
        && check "$fixture: $device fast path = golden" golden "$fixture-gpu" "$fixture"
    check "$fixture: run on $device (--naive)" sweep "$fixture-gpu-naive" "$experiment" "$model" "$device" --naive \
        && check "$fixture: $device naive path = golden" golden "$fixture-gpu-naive" "$fixture"
    check "$fixture: $device = cpu (every cell)" compare_runs "$fixture-cpu" "$fixture-gpu"
    check "$fixture: $device fast = $device naive (every cell)" compare_runs "$fixture-gpu-naive" "$fixture-gpu"
done

if [[ -f "$bundle/tiny-llama.gguf" ]]; then
    check "tiny-llama GGUF: run on $device" sweep gguf-gpu "$fixtures/experiments/tiny_llama.toml" \
        "$bundle/tiny-llama.gguf" "$device" \
        && check "tiny-llama GGUF: $device = golden" golden gguf-gpu tiny-llama
else
    echo "FAIL  GGUF: $bundle/tiny-llama.gguf missing" | tee -a "$out/summary.txt"
    failures=$((failures + 1))
fi

if unpack sweeps; then
    # The bench reads the tokenizer from tests/fixtures/ under the current folder.
    cd "$repo" || exit 2
    # The naive loop in full on the GPU; sampled on a CPU (a rehearsal), as below.
    loop=(in full) quick=()
    [[ "$device" == cpu ]] && loop=(sampled) quick=(--quick)
    check "bench on $device (gpt2-small shapes, naive loop ${loop[*]})" \
        timeout "$STEP_TIMEOUT" "$work/sweeps" --device "$device" "${quick[@]}"
    check "bench on cpu (same shapes, naive loop sampled)" \
        timeout "$STEP_TIMEOUT" "$work/sweeps" --device cpu --quick
else
    echo "FAIL  bench: $bundle/sweeps.xz missing" | tee -a "$out/summary.txt"
    failures=$((failures + 1))
fi

echo
echo "=== summary ($failures failed)"
cat "$out/summary.txt"
((failures == 0))
