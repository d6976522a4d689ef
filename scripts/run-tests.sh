#!/usr/bin/env bash
# Set up (once) and run the whole test suite (arguments go to pytest: -m "not slow" is the quick tier).
# torch is installed first and pinned, so pip takes the small CPU build and never a multi-GB CUDA one.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
bash scripts/setup-venv.sh "cpu,train,gui,dev" "${TORCH_SPEC:-torch==2.13.0}"
export QT_QPA_PLATFORM=${QT_QPA_PLATFORM:-offscreen}
exec "$VENV/bin/python" -m pytest "$@"
