#!/usr/bin/env bash
# Puts the real tokenizers of Llama 3, Qwen2/2.5/3, GPT-NeoX (Pythia) and Gemma 3/4 in
# models/vocab/, without the Hugging Face hub: llama.cpp's vocabulary-only GGUF files
# (`ggml-vocab-<name>.gguf`, no weights) and its test files (`.inp` strings, `.out`
# token ids from each model's own Hugging Face tokenizer) ship inside the sdist of
# llama-cpp-python==0.3.36 on PyPI, which `pip download` fetches (nothing is built)
# and Python's tarfile unpacks. Every file's SHA-256 is checked; files already there
# with the right hash are kept and nothing is downloaded.
#
# Used by the fixtures' generator scripts (tests/fixtures/gen/) and by the real-vocab
# tokenizer tests of `just test-real`.
#
# Usage: scripts/fetch-vocabs.sh [DEST_DIR]   (default: <repo>/models/vocab)
set -euo pipefail

SDIST_SPEC="llama-cpp-python==0.3.36"
SDIST_SHA256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
PREFIX="llama_cpp_python-0.3.36/vendor/llama.cpp/models"
FILES=(
    "ggml-vocab-llama-bpe.gguf 97272e430d53bc7688f52d5e0ad8ea8f163ede9f1bbd1694feaa504797d5d96e"
    "ggml-vocab-llama-bpe.gguf.inp be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0"
    "ggml-vocab-llama-bpe.gguf.out 118abf2034a197fc5c9dec5204dfdeee7004c7c70952ae577f66b99e212fab9b"
    "ggml-vocab-qwen2.gguf 44c2f46b715f585c6ab513970e8a006bfa5badd6108560054921cf598d154d8c"
    "ggml-vocab-qwen2.gguf.inp be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0"
    "ggml-vocab-qwen2.gguf.out de785bb305cc6fa9d43908ed5da337f853c0b79e971348fcfb9f0915a39c5363"
    "ggml-vocab-gpt-neox.gguf ae593a7f9b8bb174ed4f5019e41530463e4dac7aa06e42dee8aa650d2bdac53d"
    "ggml-vocab-gemma-4.gguf 58b1ba0b57f3b4d7c468ba4ffd91ad85190346a3d7ad7e71d1cabaae8a14bb65"
    "ggml-vocab-gemma-4.gguf.inp 0528aa007b06965f980181d252b5dff7bb170a77af6157bd48bba56885374448"
    "ggml-vocab-gemma-4.gguf.out ba8c596bcd05e97e62566fa994b42eeaeffd6a4e4b4a4abe7b5b689aa6b43bf3"
)

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-$repo/models/vocab}"
source "$repo/scripts/lib/fetch.sh"
NAME="fetch-vocabs"

missing=()
for entry in "${FILES[@]}"; do
    read -r file sha <<<"$entry"
    if [[ ! -f "$dest/$file" || "$(sha256_of "$dest/$file")" != "$sha" ]]; then
        missing+=("$entry")
    fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "$NAME: every file is already in $dest (SHA-256 ok); nothing to download."
    exit 0
fi

need_pip
mkdir -p "$dest"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "$NAME: downloading the sdist $SDIST_SPEC (about 75 MB; nothing is built) …"
python3 -m pip download --no-deps --no-binary llama-cpp-python --disable-pip-version-check \
    --quiet --dest "$tmp" "$SDIST_SPEC" \
    || die "pip download $SDIST_SPEC failed (no network or no access to PyPI?)."
sdist="$tmp/llama_cpp_python-0.3.36.tar.gz"
[[ -f "$sdist" ]] || die "pip did not leave $sdist."
[[ "$(sha256_of "$sdist")" == "$SDIST_SHA256" ]] || die "SHA-256 mismatch for $sdist."

for entry in "${missing[@]}"; do
    read -r file sha <<<"$entry"
    python3 - "$sdist" "$PREFIX/$file" "$dest/$file.partial" <<'PY' || die "could not unpack $file."
import shutil, sys, tarfile
sdist, member, out = sys.argv[1:]
with tarfile.open(sdist, "r:gz") as tar, tar.extractfile(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
    if [[ "$(sha256_of "$dest/$file.partial")" != "$sha" ]]; then
        rm -f "$dest/$file.partial"
        die "SHA-256 mismatch for $file; the file was deleted."
    fi
    mv -f "$dest/$file.partial" "$dest/$file"
done
echo "$NAME: wrote ${#missing[@]} file(s) to $dest (SHA-256 ok)."
