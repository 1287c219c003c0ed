#!/usr/bin/env bash
# Differential check of vendor/jpeg-decoder against crates.io's jpeg-decoder 0.3.2 (PATCHED.md):
# Pillow writes JPEGs of every kind (make_images.py), then both copies decode them, and those of
# tests/fixtures/variants and bench/.images (where `bash bench/setup.sh` / `bench/run.sh` made
# them), whole, cut short and damaged, at every scale. Needs the bench venv for Pillow.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
root=../../..
py=$root/bench/.venv/bin/python
[ -x "$py" ] || bash "$root/bench/setup.sh"
images=$(mktemp -d)
trap 'rm -rf "$images"' EXIT
"$py" make_images.py "$images"
cargo run --release --quiet -- "$images"/*.jpg "$root"/tests/fixtures/variants/*.jpg \
  $(find "$root/bench/.images" -name '*.jpg' 2>/dev/null | sort)
