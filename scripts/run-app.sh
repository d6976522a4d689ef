#!/usr/bin/env bash
# Set up (once) and run the main job: the desktop app on the embedded default model, with the camera if
# one opens, else the demo source. With no display it says so and classifies the demo source on the
# command line instead. Installs the runtime only: no torch. A second launch skips the install.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
bash scripts/setup-venv.sh "${EXTRAS:-cpu,gui}"
exec "$VENV/bin/resnet-edge" gui "$@"
