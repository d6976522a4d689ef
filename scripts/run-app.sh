#!/usr/bin/env bash
# Set up (once) and run the main job: the desktop app on the embedded default model, with the camera if
# one opens, else the demo source. With no display it says so and classifies the demo source on the
# command line instead. Installs the runtime only: no torch.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e ".[cpu,gui]"
exec "$VENV/bin/resnet-edge" gui "$@"
