#!/usr/bin/env bash
# Rebuild the shipped default models from a finished training run (see models/README.md for the run):
#   bash scripts/build-default-models.sh RUN_DIR CIFAR_TRAIN_DIR [NAME]
# RUN_DIR holds last.pt and split.json from `resnet-edge train`; CIFAR_TRAIN_DIR is the unpacked training
# folder (calibration images come from it, minus the run's validation split). Writes models/NAME.onnx,
# models/NAME.int8.onnx (both with their calibrated "not sure" score) and models/NAME.verify.json.
set -euo pipefail
RUN=${1:?run folder}; DATA=${2:?training image folder}; NAME=${3:-cifar10-resnet20}
cd "$(dirname "$0")/.."
"${PYTHON:-python}" -m resnet_edge.cli export --checkpoint "$RUN/last.pt" --output "models/$NAME.onnx" --probes --force
"${PYTHON:-python}" -m resnet_edge.cli quantize "models/$NAME.onnx" --calib "$DATA" --calib-exclude "$RUN/split.json" --calib-size 512 \
    --method minmax --output "models/$NAME.int8.onnx" --force --no-progress
# the "not sure" score (docs/unsure.md): each file fitted on its own features, thresholded on the held-out split
for FILE in "models/$NAME.onnx" "models/$NAME.int8.onnx"; do
  "${PYTHON:-python}" -m resnet_edge.cli calibrate-unsure "$FILE" --data "$DATA" --split "$RUN/split.json" --output "$FILE" --force --no-progress
done
"${PYTHON:-python}" -m resnet_edge.cli verify --split "$RUN/split.json" --checkpoint "$RUN/last.pt" -m "models/$NAME.onnx" \
    -m "models/$NAME.int8.onnx" --json "models/$NAME.verify.json" --force --max-drop 0.3 --no-progress
