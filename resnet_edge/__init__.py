"""resnet-edge: residual networks from PyTorch training to ONNX Runtime at the edge.

Only ``resnet_edge.training`` (and ``resnet_edge.lab``) import torch; everything else here,
the runtime, preprocessing, the CLI's classify/info/bench paths and the GUI, runs without it.
"""

__version__ = "0.1.0"
