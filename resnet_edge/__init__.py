"""resnet-edge: residual networks from PyTorch training to ONNX Runtime at the edge.

Only ``resnet_edge.training`` (and ``resnet_edge.lab``) import torch; everything else here,
the runtime, preprocessing, the CLI's classify/info/bench paths and the GUI, runs without it.
"""

import os

# ONNX Runtime 1.32 on Linux appends a telemetry event to ~/.cache/Microsoft/DeveloperTools/.onnxruntime/
# onnxruntime.db each time the library loads, before any API call could stop it; its own switch is this variable,
# read at load. Off unless the user set it (docs/robustness.md). The runtime also calls
# onnxruntime.disable_telemetry_events() (the API's switch, for the events after load, on every platform).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
# OpenCV's own pixel cap for decoders (read when cv2 loads; its default is 2^30): the same 50 MP as images.MAX_PIXELS,
# behind our header checks
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", "50000000")

__version__ = "0.1.0"
