#!/usr/bin/env bash
# Set up (once) and run the whole test suite. torch is installed first and pinned, so pip takes the
# small CPU build (on this machine type it is on local disk) and never resolves a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "$TORCH_SPEC"
"$VENV/bin/python" -m pip install --quiet -e ".[cpu,train,gui,dev]"
export QT_QPA_PLATFORM=${QT_QPA_PLATFORM:-offscreen}
exec "$VENV/bin/python" -m pytest "$@"
