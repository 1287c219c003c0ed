#!/usr/bin/env bash
# Creates bench/.venv with the pinned wheels of bench/requirements.txt (no torch, wheels only).
# Idempotent: the venv is rebuilt only when requirements.txt or the interpreter changes (a stamp
# file, bench/.venv/.stamp, records both). Environment: PYTHON (default python3).
# Then: bench/.venv/bin/python bench/ort_bench.py --model lite0   (see bench/README.md)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

HERE=bench
VENV=$HERE/.venv
PYTHON=${PYTHON:-python3}

want_stamp="$(sha256sum "$HERE/requirements.txt" | cut -d' ' -f1) $("$PYTHON" -c 'import sys; print(sys.version.split()[0], sys.executable)')"
if [[ ! -x $VENV/bin/python || "$(cat "$VENV/.stamp" 2>/dev/null)" != "$want_stamp" ]]; then
  echo "bench/setup.sh: creating $VENV"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV" || { echo "bench/setup.sh: cannot create a venv with $PYTHON (on Debian: apt-get install python3-venv)" >&2; exit 1; }
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install --no-input --quiet \
    --only-binary=:all: -r "$HERE/requirements.txt"
  echo "$want_stamp" > "$VENV/.stamp"
else
  echo "bench/setup.sh: $VENV is up to date"
fi
"$VENV/bin/python" -c 'import onnx, onnxruntime as ort, numpy, safetensors, PIL; print("   onnx", onnx.__version__, "onnxruntime", ort.__version__, "numpy", numpy.__version__, "safetensors", safetensors.__version__, "pillow", PIL.__version__)'
