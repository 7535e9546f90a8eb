#!/usr/bin/env bash
# Builds the `actpatch` binary with candle's CUDA backend (`--features cuda`) on a
# machine without a GPU and without a system CUDA toolkit:
#
#  1. a Python venv (default .cuda-venv/, git-ignored; reused while its pins match)
#     gets the CUDA 13.0 toolchain from PyPI: nvcc, ptxas, cicc and the headers
#     (nvidia-cuda-nvcc, -runtime, -crt, -cccl, nvidia-nvvm) and the libraries that
#     candle's `cudarc` links against (nvidia-cublas, -curand, -cuda-nvrtc), all under
#     site-packages/nvidia/cu13/. Every package is pinned to CUDA 13.0: the GPU machines
#     run driver 580 (CUDA 13.0), which cannot load PTX from a newer toolkit, and an
#     unpinned nvidia-nvvm comes in newer than ptxas ("Unsupported .version 9.5").
#  2. the wheels ship versioned libraries only (libcublas.so.13): the unversioned
#     names the linker looks for (libcublas.so) are made beside them.
#  3. the driver's libcuda is in no wheel: a link stub with soname libcuda.so.1 is
#     generated in cu13/lib64/stubs/ (where a CUDA toolkit keeps its own stub). Its
#     symbols are those the linker reports undefined: the build starts from an empty
#     stub, and every failed link adds the `cu*` symbols it names, until it links
#     (the list is kept, so a later build links at once). At run time the real
#     libcuda.so.1 of the GPU machine's driver is loaded instead; were the stub ever
#     loaded, each function returns CUDA_ERROR_STUB_LIBRARY (34).
#  4. cargo build --release -p actpatch-runner --features cuda, with the toolkit's bin
#     on PATH, CUDA_ROOT/CUDA_PATH set and CUDA_COMPUTE_CAP=90 (H100/H200; there is no
#     GPU here to detect it from), into target-cuda/ so target/ is left alone.
#  5. strips the binary to dist/cuda/actpatch (to copy to a GPU machine), gzips it to
#     dist/cuda/actpatch.gz and compresses it with xz to dist/gpu-bundle/actpatch.xz:
#     the stripped binary (~82 MiB) is over the device tool's 64 MiB carry limit, and
#     with the checkout (~22 MiB) and the rest of the bundle even the gzipped one
#     (~22 MiB) is too much; xz makes it ~12 MiB.
#
# Usage: scripts/build-cuda.sh [--bundle] [--tests]
#   --bundle  also what scripts/gpu-check.sh needs in dist/gpu-bundle/: the `sweeps`
#             bench built with CUDA (sweeps.xz) and the tiny Llama as a GGUF file
#             (tiny-llama.gguf, written by scripts/gpu/tiny_llama_gguf.py with the
#             gguf package, installed into the same venv).
#   --tests   also build every test executable with `cargo test --release --no-run
#             --features cuda` (for a GPU machine that has no cargo) and list them.
# Environment (all optional):
#   ACTPATCH_CUDA_VENV     the venv folder (default <repo>/.cuda-venv)
#   CARGO_TARGET_DIR       the cargo target folder (default <repo>/target-cuda)
#   CUDA_COMPUTE_CAP       the GPU's compute capability (default 90)
#   PIP_* (e.g. PIP_FIND_LINKS, PIP_CACHE_DIR) are passed to pip as usual.
set -euo pipefail
export LC_ALL=C # one collation for sort and comm

# The CUDA 13.0 toolchain, and 13.0-era libraries for linking.
PINS=(
    nvidia-cuda-nvcc==13.0.88
    nvidia-cuda-runtime==13.0.96
    nvidia-cuda-crt==13.0.88
    nvidia-cuda-cccl==13.0.85
    nvidia-nvvm==13.0.88
    nvidia-cublas==13.0.2.14
    nvidia-curand==10.4.0.35
    nvidia-cuda-nvrtc==13.0.88
)
# What scripts/gpu/tiny_llama_gguf.py needs (--bundle).
BUNDLE_PINS=(gguf==0.19.0 safetensors==0.8.0 numpy==2.4.6)
# How many failed links may each add driver symbols to the stub (the linker may stop
# after 20 errors, and ~30 symbols are needed).
MAX_LINK_TRIES=8

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${ACTPATCH_CUDA_VENV:-$repo/.cuda-venv}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target-cuda}"
dist="$repo/dist/cuda"
bundle="$repo/dist/gpu-bundle"
with_tests=false
with_bundle=false

for arg in "$@"; do
    case "$arg" in
        --tests) with_tests=true ;;
        --bundle) with_bundle=true ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "build-cuda: unknown argument '$arg' (expected --bundle, --tests or --help)" >&2
            exit 2
            ;;
    esac
done

die() {
    echo "build-cuda: $*" >&2
    exit 1
}

log() {
    echo "build-cuda: $*" >&2
}

seconds_since() {
    echo $(($(date +%s) - $1))
}

# Creates the venv with the pinned toolchain, or reuses it when its pins match.
ensure_venv() {
    local pins_file="$venv/actpatch-cuda-pins.txt"
    local wanted
    wanted="$(printf '%s\n' "${PINS[@]}")"
    if [[ -f "$pins_file" && "$(cat "$pins_file")" == "$wanted" ]]; then
        log "reusing the CUDA toolchain in $venv (pins match)"
        return
    fi
    command -v python3 >/dev/null 2>&1 \
        || die "python3 is not installed; it is needed for the CUDA toolchain from PyPI (e.g. apt-get install python3 python3-venv)."
    [[ -d "$venv" ]] && log "the pins in $venv differ from this script's: creating it anew"
    rm -rf "$venv"
    log "installing the CUDA 13.0 toolchain from PyPI into $venv (about 700 MB of wheels)"
    python3 -m venv "$venv" \
        || die "could not create a venv at $venv (on Debian/Ubuntu: apt-get install python3-venv)."
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${PINS[@]}" \
        || die "pip could not install the CUDA toolchain (is PyPI reachable?)."
    # Written last: a venv whose install was interrupted is never taken as complete.
    printf '%s\n' "$wanted" >"$pins_file"
}

# The toolkit folder the wheels install into: site-packages/nvidia/cu13.
cuda_root_of_venv() {
    local root
    root="$("$venv/bin/python" -c 'import pathlib, sysconfig
print(pathlib.Path(sysconfig.get_paths()["purelib"]) / "nvidia" / "cu13")')"
    [[ -x "$root/bin/nvcc" && -f "$root/include/cuda.h" ]] \
        || die "$root has no bin/nvcc or include/cuda.h; delete $venv and run again."
    echo "$root"
}

# libcublas.so -> libcublas.so.13 and so on: the linker looks for the unversioned name.
link_unversioned_names() {
    local lib="$1/lib" versioned base
    for versioned in "$lib"/lib*.so.*; do
        base="${versioned%%.so.*}.so"
        [[ -e "$base" ]] || ln -s "$(basename "$versioned")" "$base"
    done
}

# Writes the libcuda.so.1 link stub defining every symbol listed in $stub_dir/symbols.txt.
build_libcuda_stub() {
    local stub_dir="$1" symbol
    {
        echo "/* Generated by scripts/build-cuda.sh: a link-time stand-in for the NVIDIA"
        echo "   driver's libcuda.so.1, with the symbols the linker asked for. Never loaded"
        echo "   on a machine with a driver; if it were, every call fails with"
        echo "   CUDA_ERROR_STUB_LIBRARY. */"
        echo "#define CUDA_ERROR_STUB_LIBRARY 34"
        while read -r symbol; do
            echo "int $symbol(void) { return CUDA_ERROR_STUB_LIBRARY; }"
        done <"$stub_dir/symbols.txt"
    } >"$stub_dir/libcuda_stub.c"
    cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stub_dir/libcuda.so" "$stub_dir/libcuda_stub.c" \
        || die "could not compile the libcuda link stub (is a C compiler, cc, installed?)."
}

# Runs a cargo command; while it fails only on undefined `cu*` symbols, adds them to the
# libcuda stub and runs it again.
cargo_with_stub() {
    local stub_dir="$1" try new status
    shift
    local out="$CARGO_TARGET_DIR/build-cuda-cargo.log"
    mkdir -p "$CARGO_TARGET_DIR"
    for ((try = 1; try <= MAX_LINK_TRIES; try++)); do
        set +e
        # The log keeps everything; the terminal gets all but --message-format=json lines.
        cargo "$@" 2>&1 | tee "$out" | grep --line-buffered -v '^{' >&2
        status=${PIPESTATUS[0]}
        set -e
        ((status == 0)) && return 0
        new="$(grep -oE "undefined (symbol: |reference to .)cu[A-Za-z0-9_]+" "$out" \
            | grep -oE "cu[A-Za-z0-9_]+$" | sort -u | comm -23 - "$stub_dir/symbols.txt")" || true
        [[ -n "$new" ]] || die "cargo $* failed (not on a missing driver symbol): see the errors above ($out)."
        log "the link needs $(wc -l <<<"$new") more driver symbols; adding them to the libcuda stub and linking again (the undefined-symbol errors above are expected)"
        sort -u -o "$stub_dir/symbols.txt" "$stub_dir/symbols.txt" - <<<"$new"
        build_libcuda_stub "$stub_dir"
    done
    die "the link still fails after $MAX_LINK_TRIES tries at completing the libcuda stub: see $out."
}

# Prints the test or bench executables a `cargo --message-format=json` log names.
test_executables() {
    python3 -c 'import json, sys
for line in open(sys.argv[1]):
    if not line.startswith("{"):
        continue
    msg = json.loads(line)
    if msg.get("reason") == "compiler-artifact" and msg.get("profile", {}).get("test") and msg.get("executable"):
        print(msg["executable"])' "$1"
}

# `compress SRC DEST.xz`: strips SRC and writes it compressed with xz to DEST.xz.
compress() {
    local stripped="$CARGO_TARGET_DIR/$(basename "$2").stripped"
    strip -o "$stripped" "$1"
    xz -T0 -6 -c "$stripped" >"$2.partial"
    rm "$stripped"
    mv "$2.partial" "$2"
}

mib() {
    echo "$(($(stat -c %s "$1") / 1048576)) MiB"
}

# The bench built with CUDA and the tiny Llama GGUF, for scripts/gpu-check.sh.
write_bundle() {
    local stub_dir="$1" sweeps
    cargo_with_stub "$stub_dir" bench -p actpatch-runner --bench sweeps --features cuda --no-run \
        --message-format=json-render-diagnostics
    sweeps="$(test_executables "$CARGO_TARGET_DIR/build-cuda-cargo.log" | head -n 1)"
    [[ -x "$sweeps" ]] || die "cargo bench --no-run named no bench executable (see $CARGO_TARGET_DIR/build-cuda-cargo.log)."
    compress "$sweeps" "$bundle/sweeps.xz"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${BUNDLE_PINS[@]}" \
        || die "pip could not install ${BUNDLE_PINS[*]} (is PyPI reachable?)."
    "$venv/bin/python" "$repo/scripts/gpu/tiny_llama_gguf.py" "$repo/tests/fixtures/tiny-llama" \
        "$bundle/tiny-llama.gguf" >&2
    log "bundle: sweeps.xz ($(mib "$bundle/sweeps.xz")), tiny-llama.gguf ($(mib "$bundle/tiny-llama.gguf"))"
}

main() {
    local start t
    start=$(date +%s)
    command -v cargo >/dev/null 2>&1 || die "cargo is not installed (https://rustup.rs)."

    t=$(date +%s)
    ensure_venv
    local cuda_root
    cuda_root="$(cuda_root_of_venv)"
    link_unversioned_names "$cuda_root"
    # lib64/stubs is where cudarc's build script looks for a toolkit's libcuda stub.
    local stub_dir="$cuda_root/lib64/stubs"
    mkdir -p "$stub_dir"
    [[ -f "$stub_dir/symbols.txt" ]] || : >"$stub_dir/symbols.txt"
    build_libcuda_stub "$stub_dir"
    log "toolchain ready in $(seconds_since "$t") s: $cuda_root"

    export PATH="$cuda_root/bin:$PATH"
    # cudarc's build script links from every one of these that is set: this toolkit only.
    export CUDA_ROOT="$cuda_root" CUDA_PATH="$cuda_root"
    unset CUDA_HOME CUDA_TOOLKIT_ROOT_DIR CUDNN_LIB
    export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
    log "$(nvcc --version | tail -n 2 | head -n 1); compute capability $CUDA_COMPUTE_CAP; target dir $CARGO_TARGET_DIR"

    t=$(date +%s)
    cargo_with_stub "$stub_dir" build --release -p actpatch-runner --features cuda --bin actpatch
    log "release build with CUDA done in $(seconds_since "$t") s"

    mkdir -p "$dist" "$bundle"
    strip -o "$dist/actpatch" "$CARGO_TARGET_DIR/release/actpatch"
    gzip -c "$dist/actpatch" >"$dist/actpatch.gz.partial"
    mv "$dist/actpatch.gz.partial" "$dist/actpatch.gz"
    compress "$CARGO_TARGET_DIR/release/actpatch" "$bundle/actpatch.xz"
    log "binary: $CARGO_TARGET_DIR/release/actpatch ($(mib "$CARGO_TARGET_DIR/release/actpatch")); stripped: $dist/actpatch ($(mib "$dist/actpatch")); gzipped: $dist/actpatch.gz ($(mib "$dist/actpatch.gz")); xz: $bundle/actpatch.xz ($(mib "$bundle/actpatch.xz"))"

    if $with_bundle; then
        t=$(date +%s)
        write_bundle "$stub_dir"
        log "bundle for scripts/gpu-check.sh written in $(seconds_since "$t") s: $bundle ($(du -sm "$bundle" | cut -f1) MiB)"
    fi

    if $with_tests; then
        t=$(date +%s)
        cargo_with_stub "$stub_dir" test --release --workspace --features cuda --no-run \
            --message-format=json-render-diagnostics
        log "test executables with CUDA built in $(seconds_since "$t") s:"
        test_executables "$CARGO_TARGET_DIR/build-cuda-cargo.log" | sed 's/^/    /' >&2
    fi
    log "done in $(seconds_since "$start") s"
}

main
