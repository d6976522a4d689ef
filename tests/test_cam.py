"""resnet_edge/cam.py: class activation maps against a numpy reference computed from the model's own weights."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import needs_torch, run_cli
from resnet_edge.cam import (CamUnavailable, class_activation_map, last_stage_features, overlay_cam, read_head,
                             visible_region)
from resnet_edge.preprocess import PreprocessSpec
from resnet_edge.runtime import Classifier


def reference_weights(path):
    """The fc layer's weight and bias, read with the onnx package (an independent reader from ours)."""
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    tensors = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    return tensors["net.fc.weight"], tensors["net.fc.bias"]


@pytest.mark.torch
@needs_torch
def test_cam_matches_numpy_reference_and_sums_to_the_logits(r20_probed):
    classifier = Classifier.load(r20_probed, provider="cpu", threads=1, quiet=True)
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)
    prediction, blocks = classifier.probe(frame)

    weight, bias = reference_weights(r20_probed)
    last = blocks[-1]
    features = np.maximum(last.x + last.residual, 0)  # a post-activation block's output: relu(x + F(x))
    reference = np.einsum("kc,chw->khw", weight, features)  # Zhou et al. 2016, eq. 2

    head = read_head(r20_probed.read_bytes(), classifier.output_name)
    np.testing.assert_allclose(head.weight, weight, rtol=0, atol=0)
    ours = np.stack([class_activation_map(last_stage_features(blocks, classifier.contract), head, k)
                     for k in range(len(classifier.labels))])
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5)
    # exact for global-average-pool + linear: each map's mean plus the bias is that class's logit
    np.testing.assert_allclose(ours.mean(axis=(1, 2)) + bias, prediction.logits, rtol=1e-4, atol=1e-4)


def tiny_head_model(kind: str) -> tuple[bytes, np.ndarray, np.ndarray]:
    """A (1, 4) -> (1, 3) linear model as Gemm (transB), MatMul + Add, or an int8 DequantizeLinear weight."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    weight = rng.normal(size=(3, 4)).astype(np.float32)  # (classes, channels)
    bias = rng.normal(size=3).astype(np.float32)
    inputs = [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 4])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])]
    b = numpy_helper.from_array(bias, "b")
    if kind == "gemm":
        nodes = [helper.make_node("Gemm", ["features", "w", "b"], ["logits"], transB=1, alpha=2.0)]
        inits = [numpy_helper.from_array(weight, "w"), b]
        weight = weight * 2.0
    elif kind == "matmul":
        nodes = [helper.make_node("MatMul", ["features", "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["logits"])]
        inits = [numpy_helper.from_array(weight.T.copy(), "w"), b]
    else:  # int8 weights, per output channel scale, as a quantizer writes them
        scale = np.abs(weight).max(axis=1) / 127
        q = np.round(weight / scale[:, None]).astype(np.int8)
        weight = q.astype(np.float32) * scale[:, None]
        nodes = [helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], axis=0),
                 helper.make_node("Gemm", ["features", "w", "b"], ["logits"], transB=1)]
        inits = [numpy_helper.from_array(q, "wq"), numpy_helper.from_array(scale.astype(np.float32), "ws"),
                 numpy_helper.from_array(np.zeros(3, np.int8), "wz"), b]
    graph = helper.make_graph(nodes, "head", inputs, outputs, inits)
    return helper.make_model(graph).SerializeToString(), weight, bias


@pytest.mark.parametrize("kind", ["gemm", "matmul", "int8"])
def test_read_head_finds_the_linear_layer(kind):
    data, weight, bias = tiny_head_model(kind)
    head = read_head(data, "logits")
    np.testing.assert_allclose(head.weight, weight, rtol=1e-6)
    np.testing.assert_allclose(head.bias, bias, rtol=1e-6)


def test_preactivation_and_projection_nets_have_no_exact_map():
    class Block:
        def __init__(self, x, residual):
            self.x, self.residual = x, residual

    class Contract:
        arch, extra = "resnet20", {"form": "preact"}

    with pytest.raises(CamUnavailable, match="pre-activation"):
        last_stage_features([Block(np.ones((2, 2, 2)), np.ones((2, 2, 2)))], Contract())
    Contract.extra = {}
    with pytest.raises(CamUnavailable, match="differ in shape"):
        last_stage_features([Block(np.ones((2, 4, 4)), np.ones((4, 2, 2)))], Contract())
    x, residual = np.array([[[1.0, -3.0]]]), np.array([[[1.0, 1.0]]])
    np.testing.assert_array_equal(last_stage_features([Block(x, residual)], Contract()), [[[2.0, 0.0]]])


def test_overlay_lands_in_the_region_the_model_sees():
    spec = PreprocessSpec((32, 32), resize_policy="center_crop")
    frame = np.zeros((90, 160, 3), np.uint8)
    # resized to 32 high, the frame is int(32 * 160 / 90) = 56 wide; the crop starts at 12: x = 12 * 160 / 56 = 34.3,
    # w = 32 * 160 / 56 = 91.4 (torchvision's geometry, resnet_edge.preprocess.visible_region)
    assert visible_region(spec, 90, 160) == (34, 0, 91, 90)
    assert visible_region(PreprocessSpec((32, 32), resize_policy="stretch"), 90, 160) == (0, 0, 160, 90)
    cam = np.zeros((8, 8), np.float32)
    cam[0, 0] = 5.0  # all the evidence in the top-left cell of the model's input
    out = overlay_cam(frame, cam, spec, opacity=1.0, box=False)
    changed = np.argwhere(out.sum(axis=2) > 0)
    assert changed[:, 1].min() >= 34 and changed[:, 1].max() < 34 + 91  # only inside the crop
    assert out[2, 37].sum() > out[80, 120].sum()  # strongest at the crop's top-left


@pytest.mark.torch
@needs_torch
def test_classify_cam_writes_overlays(r20_probed, tmp_path):
    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 256, (60, 100, 3), dtype=np.uint8))
    out = tmp_path / "cams"
    result = run_cli("classify", "--model", str(r20_probed), "--source", str(image), "--cam", str(out), "--threads", "1")
    assert result.returncode == 0, result.stderr
    written = out / "photo.cam.png"
    overlay = cv2.imread(str(written))
    assert overlay.shape == (60, 100, 3)
    again = run_cli("classify", "--model", str(r20_probed), "--source", str(image), "--cam", str(out), "--threads", "1")
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr
