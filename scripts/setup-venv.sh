#!/usr/bin/env bash
# Make (once) the virtualenv $VENV and install the project into it, editable, with the extras in $1
# (e.g. "cpu,gui"). Skipped when nothing changed since the last install: pyproject.toml, the extras and the
# torch pin are what an install depends on (the code itself is editable), so a second launch costs no pip.
# Sourced by run-app.sh and run-tests.sh.
set -euo pipefail
EXTRAS=$1
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${2:-}
stamp="$VENV/.resnet-edge-install-${EXTRAS//,/-}"  # one per extras set: run-app and run-tests share a venv
want="$(cat pyproject.toml; echo "extras=$EXTRAS torch=$TORCH_SPEC")"
want=$(printf '%s' "$want" | sha256sum | cut -d' ' -f1)
if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && grep -qx "$want" "$stamp"; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# torch first and pinned, so that pip takes the small CPU build and never resolves a multi-GB CUDA one
[ -z "$TORCH_SPEC" ] || "$VENV/bin/python" -m pip install --quiet "$TORCH_SPEC"
"$VENV/bin/python" -m pip install --quiet -e ".[$EXTRAS]"
echo "$want" > "$stamp"
