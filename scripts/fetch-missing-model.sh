#!/usr/bin/env bash
# Called by `just run` and `just check` before the actpatch binary: when the experiment's
# `[model] path` names the SmolLM2 GGUF (SmolLM2-135M-Instruct.Q4_1.gguf) and that file
# is missing, downloads it there with scripts/fetch-smollm2.sh (the checked download of
# `just fetch-smollm2`). Any other model, a file already there, or `--model-path` on the
# command line: nothing to do. The binary itself never downloads a model file.
#
# Usage: scripts/fetch-missing-model.sh EXPERIMENT.toml [actpatch run arguments...]
set -euo pipefail

SMOLLM2_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"

experiment="${1:-}"
[[ -n "$experiment" && -f "$experiment" ]] || exit 0 # the binary reports a missing file
shift
for arg in "$@"; do
    case "$arg" in
    --model-path | --model-path=*) exit 0 ;; # the command line overrides the file's model
    esac
done

# The `path` key of the `[model]` table, a TOML basic or literal string on one line.
model_path="$(awk '
    /^[[:space:]]*\[/ {
        header = $0
        sub(/#.*/, "", header)
        gsub(/[[:space:]]/, "", header)
        in_model = (header == "[model]")
        next
    }
    in_model && /^[[:space:]]*path[[:space:]]*=/ {
        value = $0
        sub(/^[[:space:]]*path[[:space:]]*=[[:space:]]*/, "", value)
        quote = substr(value, 1, 1)
        if (quote != "\"" && quote != "\047") exit
        value = substr(value, 2)
        end = index(value, quote)
        if (end == 0) exit
        print substr(value, 1, end - 1)
        exit
    }
' "$experiment")"

[[ -n "$model_path" && "$(basename "$model_path")" == "$SMOLLM2_FILE" ]] || exit 0
# Relative paths are relative to the experiment file's folder, as the binary reads them.
if [[ "$model_path" != /* ]]; then
    model_path="$(dirname "$experiment")/$model_path"
fi
[[ -f "$model_path" ]] && exit 0

echo "$experiment uses $model_path, which is missing: fetching it (as \`just fetch-smollm2\`)." >&2
exec "$(dirname "${BASH_SOURCE[0]}")/fetch-smollm2.sh" "$(dirname "$model_path")"
