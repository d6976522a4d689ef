"""Class activation maps (Zhou et al. 2016, "Learning Deep Features for Discriminative Localization"), torch-free.

A ResNet ends in global average pooling and one linear layer, so for class k

    logit_k = b_k + mean_hw( sum_c W_kc f_c(h, w) )      and      CAM_k(h, w) = sum_c W_kc f_c(h, w)

is exact: the map's mean plus the bias is the logit. f is the last stage's output, read from the block probes
the app already runs for its panel (the last block's output relu(x_l + F(x_l)) for post-activation nets), and
W, b are the final Gemm/MatMul's initializers in the ONNX file. No extra model run is needed.

    head = read_head(model_bytes, contract.output_name)
    features = last_stage_features(blocks, contract)      # (C, H, W)
    cam = class_activation_map(features, head, class_index)
    overlay = overlay_cam(frame_bgr, cam, contract.preprocess)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .errors import UserError
from .preprocess import PreprocessSpec, crop_box

PREACT_FORMS = ("preact", "pre-activation", "pre_activation", "preactivation")  # metadata `form` values


class CamUnavailable(UserError):
    """This model's structure does not give an exact class activation map (says why)."""


@dataclass
class ClassifierHead:
    weight: np.ndarray  # (classes, channels) float32: logits = features_pooled @ weight.T + bias
    bias: np.ndarray  # (classes,) float32


# --- reading the head from the ONNX file -----------------------------------------------------------


_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 5: np.int16, 6: np.int32, 7: np.int64, 10: np.float16,
           11: np.float64}


@dataclass
class _Node:
    op_type: str
    input: list[str]
    output: list[str]
    attrs: dict  # name -> int, float or a tensor (np.ndarray)


def _varints(value) -> list[int]:
    from .onnxfile import _varint

    if isinstance(value, int):
        return [value]
    out, pos = [], 0
    while pos < len(value):
        number, pos = _varint(value, pos)
        out.append(number)
    return out


def _tensor(buf: memoryview) -> tuple[str, np.ndarray | None]:
    """A TensorProto -> (name, array); None for types or layouts the CAM never needs."""
    from .onnxfile import _fields, _text

    name, dims, dtype, raw, floats, ints = "", [], None, None, [], []
    for number, wire, value in _fields(buf):
        if number == 1:
            dims += _varints(value)
        elif number == 2:
            dtype = _DTYPES.get(int(value))
        elif number == 4:  # float_data, packed or one by one
            floats.append(np.frombuffer(bytes(value), dtype="<f4"))
        elif number in (5, 7):  # int32_data / int64_data (int8 and uint8 values live in int32_data)
            ints += [v - (1 << 64) if v >= 1 << 63 else v for v in _varints(value)]
        elif number == 8:
            name = _text(value)
        elif number == 9:
            raw = bytes(value)
    if dtype is None:
        return name, None
    count = int(np.prod(dims)) if dims else 1
    if raw is not None:
        array = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
    elif floats:
        array = np.concatenate(floats)
    else:
        array = np.asarray(ints, dtype=dtype)
    if array.size != count:
        return name, None
    return name, array.reshape(dims).astype(dtype)


def _read_graph(data: bytes) -> tuple[list[_Node], dict[str, np.ndarray], list[str]]:
    """Nodes, initializers and output names of an ONNX file, read with the project's own protobuf walker
    (resnet_edge.onnxfile), so the app needs no `onnx` package."""
    from .onnxfile import _fields, _text

    nodes, initializers, outputs = [], {}, []
    model = memoryview(data)
    for number, _, graph in _fields(model):
        if number != 7:
            continue
        for g_num, _, value in _fields(graph):
            if g_num == 1:
                op, inputs, outs, attrs = "", [], [], {}
                for n_num, _, n_val in _fields(value):
                    if n_num == 1:
                        inputs.append(_text(n_val))
                    elif n_num == 2:
                        outs.append(_text(n_val))
                    elif n_num == 4:
                        op = _text(n_val)
                    elif n_num == 5:
                        a_name, a_value = "", None
                        for a_num, a_wire, a_val in _fields(n_val):
                            if a_num == 1:
                                a_name = _text(a_val)
                            elif a_num == 2 and a_wire == 5:
                                a_value = float(np.frombuffer(bytes(a_val), dtype="<f4")[0])
                            elif a_num == 3 and a_wire == 0:
                                a_value = a_val - (1 << 64) if a_val >= 1 << 63 else a_val
                            elif a_num == 5:
                                a_value = _tensor(a_val)[1]
                        attrs[a_name] = a_value
                nodes.append(_Node(op, inputs, outs, attrs))
            elif g_num == 5:
                name, array = _tensor(value)
                if array is not None:
                    initializers[name] = array
            elif g_num == 12:
                for o_num, _, o_val in _fields(value):
                    if o_num == 1:
                        outputs.append(_text(o_val))
    return nodes, initializers, outputs


def read_head(model: bytes, output_name: str | None = None) -> ClassifierHead:
    """The final linear layer's weights: the Gemm (or MatMul [+ Add]) that produces ``output_name``.

    Weights stored as int8 behind a DequantizeLinear (an int8 model) are dequantized."""
    nodes, initializers, outputs = _read_graph(bytes(model))
    producers = {output: node for node in nodes for output in node.output}
    name = output_name or (outputs[0] if outputs else "")

    def constant(tensor: str) -> np.ndarray | None:
        if tensor in initializers:
            return initializers[tensor].astype(np.float32)
        node = producers.get(tensor)
        if node is None:
            return None
        if node.op_type == "Constant":
            value = node.attrs.get("value")
            return None if value is None else np.asarray(value, np.float32)
        if node.op_type == "Identity":
            return constant(node.input[0])
        if node.op_type == "DequantizeLinear":
            values = initializers.get(node.input[0])
            scale = constant(node.input[1])
            zero = constant(node.input[2]) if len(node.input) > 2 and node.input[2] else np.float32(0)
            if values is None or scale is None:
                return None
            axis = node.attrs.get("axis", 1)
            if scale.ndim == 1 and scale.size > 1:  # per-channel: broadcast along the axis
                shape = [1] * values.ndim
                shape[axis] = scale.size
                scale, zero = scale.reshape(shape), np.asarray(zero).reshape(shape)
            return ((values.astype(np.float32) - zero) * scale).astype(np.float32)
        return None

    def skip_passthrough(node):  # Identity, Cast, and an int8 model's QuantizeLinear -> DequantizeLinear pair
        while node is not None:
            if node.op_type in ("Identity", "Cast"):
                node = producers.get(node.input[0])
            elif node.op_type == "DequantizeLinear" and getattr(producers.get(node.input[0]), "op_type", "") == "QuantizeLinear":
                node = producers.get(producers[node.input[0]].input[0])
            else:
                return node
        return None

    node = skip_passthrough(producers.get(name))
    bias: np.ndarray | None = None
    if node is not None and node.op_type == "Add":
        constants = [constant(i) for i in node.input]
        if constants[1] is not None:
            bias, node = constants[1], skip_passthrough(producers.get(node.input[0]))
        elif constants[0] is not None:
            bias, node = constants[0], skip_passthrough(producers.get(node.input[1]))
    if node is None:
        raise CamUnavailable(f"no node produces the output {name!r}")
    if node.op_type == "Gemm":
        attrs = node.attrs
        if attrs.get("transA", 0):
            raise CamUnavailable("the final Gemm transposes its input")
        weight = constant(node.input[1])
        if weight is None:
            raise CamUnavailable("the final Gemm's weights are not constants in the file")
        weight = weight if attrs.get("transB", 0) else weight.T
        weight = weight * attrs.get("alpha", 1.0)
        if len(node.input) > 2 and node.input[2]:
            gemm_bias = constant(node.input[2])
            if gemm_bias is None:
                raise CamUnavailable("the final Gemm's bias is not a constant in the file")
            bias = gemm_bias * attrs.get("beta", 1.0) + (bias if bias is not None else 0.0)
    elif node.op_type == "MatMul":
        weight = constant(node.input[1])
        if weight is None:
            raise CamUnavailable("the final MatMul's weights are not constants in the file")
        weight = weight.T
    else:
        raise CamUnavailable(f"the output {name!r} comes from a {node.op_type} node, not a linear layer")
    weight = np.ascontiguousarray(weight, dtype=np.float32)
    bias = np.zeros(weight.shape[0], np.float32) if bias is None else np.broadcast_to(bias, (weight.shape[0],))
    return ClassifierHead(weight, np.asarray(bias, dtype=np.float32))


# --- the feature map -------------------------------------------------------------------------------


def last_stage_features(blocks: Sequence, contract: object) -> np.ndarray:
    """The last block's output (C, H, W) from its probes: relu(x_l + F(x_l)), or relu(F(x_l)) for a plain net.

    ``blocks``: BlockActivation-like objects (``.x``, ``.residual``) in forward order; ``contract``: the
    model's ModelContract (its ``arch`` and a metadata ``form`` decide the merge)."""
    if not blocks:
        raise CamUnavailable("the model has no block probes (export it with --probes)")
    extra = getattr(contract, "extra", {}) or {}
    form = str(extra.get("form", "")).lower()
    if form in PREACT_FORMS:
        # the pre-activation output x + F(x) still goes through a final BN and ReLU that no probe holds
        raise CamUnavailable("a pre-activation net's last features (after its final BN + ReLU) are not probed")
    last = blocks[-1]
    x, residual = np.asarray(last.x, np.float32), np.asarray(last.residual, np.float32)
    if str(getattr(contract, "arch", "")).startswith("plain"):
        return np.maximum(residual, 0.0)
    if x.shape != residual.shape:  # a projection shortcut on the last block: its output is not in the probes
        raise CamUnavailable(f"the last block's input {x.shape} and residual {residual.shape} differ in shape")
    return np.maximum(x + residual, 0.0)


def class_activation_map(features: np.ndarray, head: ClassifierHead, class_index: int) -> np.ndarray:
    """CAM (H, W) float32 of one class: sum_c W[k, c] * f[c]; its mean + bias[k] is the class's logit."""
    channels = features.shape[0]
    if head.weight.shape[1] != channels:
        raise CamUnavailable(f"the classifier takes {head.weight.shape[1]} features but the last block has {channels}")
    return np.tensordot(head.weight[class_index], features, axes=1).astype(np.float32)


# --- back onto the frame ---------------------------------------------------------------------------


def visible_region(spec: PreprocessSpec, frame_h: int, frame_w: int) -> tuple[int, int, int, int]:
    """(x, y, w, h) in whole frame pixels of what the model sees: preprocess.visible_region, rounded."""
    top, left, height, width = crop_box((frame_h, frame_w), spec)
    return left, top, width, height


def content_fraction(spec: PreprocessSpec, frame_h: int, frame_w: int) -> tuple[float, float, float, float]:
    """(x, y, w, h) as fractions of the model input that hold the visible region (not padding)."""
    if spec.resize_policy != "letterbox":
        return 0.0, 0.0, 1.0, 1.0
    in_h, in_w = spec.input_size
    scale = min(in_w / frame_w, in_h / frame_h)
    width, height = frame_w * scale / in_w, frame_h * scale / in_h
    return (1 - width) / 2, (1 - height) / 2, width, height


def normalized_cam(cam: np.ndarray) -> np.ndarray:
    """0..1: the positive evidence, scaled by its peak (where the class's evidence is; negative is 0)."""
    positive = np.maximum(np.nan_to_num(cam.astype(np.float32)), 0.0)
    peak = float(positive.max()) if positive.size else 0.0
    return positive / peak if peak > 0 else positive


def cam_on_region(cam: np.ndarray, spec: PreprocessSpec, frame_h: int, frame_w: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The normalised CAM resized to the visible region's pixels, and that region (x, y, w, h)."""
    x, y, w, h = visible_region(spec, frame_h, frame_w)
    values = normalized_cam(cam)
    fx, fy, fw, fh = content_fraction(spec, frame_h, frame_w)
    if (fx, fy, fw, fh) != (0.0, 0.0, 1.0, 1.0):  # letterbox: cut the padding's part of the map off
        big = cv2.resize(values, (1000, 1000), interpolation=cv2.INTER_LINEAR)
        values = big[int(fy * 1000): int((fy + fh) * 1000), int(fx * 1000): int((fx + fw) * 1000)]
    return cv2.resize(values, (max(1, w), max(1, h)), interpolation=cv2.INTER_CUBIC).clip(0, 1), (x, y, w, h)


def overlay_cam(frame: np.ndarray, cam: np.ndarray, spec: PreprocessSpec, opacity: float = 0.5,
                box: bool = True) -> np.ndarray:
    """The BGR frame with the CAM blended over the region the model sees (jet colours), and that region boxed."""
    image = np.ascontiguousarray(frame[..., :3]).copy()
    heat, (x, y, w, h) = cam_on_region(cam, spec, image.shape[0], image.shape[1])
    colours = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
    alpha = (opacity * heat)[..., None]  # no evidence: the photo shows through
    region = image[y: y + h, x: x + w].astype(np.float32)
    image[y: y + h, x: x + w] = (region * (1 - alpha) + colours.astype(np.float32) * alpha).astype(np.uint8)
    if box:
        cv2.rectangle(image, (x, y), (x + w - 1, y + h - 1), (255, 255, 255), max(1, min(image.shape[:2]) // 200))
    return image


# --- the command line's overlays ---------------------------------------------------------------------


class CamWriter:
    """``classify --cam DIR``: per frame, DIR/<frame>.png with the class activation map of the top class over
    the region the model sees (boxed). Runs the model's probed session (one more run per frame)."""

    def __init__(self, classifier, folder: str | os.PathLike, opacity: float = 0.5, force: bool = False) -> None:
        if not classifier.has_probes:
            raise UserError(f"{classifier.path}: --cam needs the block probes (export the model with --probes)")
        self.classifier, self.folder, self.opacity, self.force = classifier, Path(folder), opacity, force
        self.head = read_head(classifier._model_bytes, classifier.output_name)
        self.written: list[Path] = []

    def write(self, frame_id: str, image: np.ndarray) -> Path:
        from .atomicio import write_bytes_atomic

        prediction, blocks = self.classifier.probe(image)
        cam = class_activation_map(last_stage_features(blocks, self.classifier.contract), self.head,
                                   prediction.top[0][1]) if prediction.finite else np.zeros((1, 1), np.float32)
        overlay = overlay_cam(image, cam, self.classifier.contract.preprocess, self.opacity)
        ok, encoded = cv2.imencode(".png", overlay)
        if not ok:
            raise UserError(f"could not encode the overlay of {frame_id}")
        stem = Path(frame_id).with_suffix("")
        stem = Path(stem.name) if stem.is_absolute() or ".." in stem.parts else stem  # an image given by its path
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem.as_posix())
        target = self.folder / f"{name}.cam.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(target, encoded.tobytes(), force=self.force)  # a clash without --force: one line, exit 2
        self.written.append(target)
        return target
