"""The torch side of resnet-edge: networks, training data, the train loop and ONNX export.

This is the only package (with ``resnet_edge.lab``) that may import torch.
"""
