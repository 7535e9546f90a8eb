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

# Formatting and lints, as CI should see them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
