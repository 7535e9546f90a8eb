#!/usr/bin/env bash
# Install the pinned mdbook into .cache/mdbook/ (git-ignored), for `just docs`.
# Skipped when .cache/mdbook/bin/mdbook already is the pinned version, so it runs
# offline once the first install is done. Built without default features: `build`
# and the HTML renderer, no `serve`/`watch` (no tokio, axum or notify) and no search.
set -euo pipefail
cd "$(dirname "$0")/.."

MDBOOK_VERSION=0.4.52
root=.cache/mdbook
bin="$root/bin/mdbook"

if [[ -x "$bin" ]] && [[ "$("$bin" --version 2>/dev/null)" == "mdbook v$MDBOOK_VERSION" ]]; then
    exit 0
fi
echo "installing mdbook $MDBOOK_VERSION into $root/ (one compile, about a minute on two cores)" >&2
cargo install mdbook --version "$MDBOOK_VERSION" --locked --no-default-features \
    --root "$root"
"$bin" --version
