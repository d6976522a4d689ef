"""The model-file contract: what an exported ONNX model carries in ``metadata_props`` (stdlib only).

Every value is JSON-encoded text, so Netron shows it and a bare ONNX Runtime script reads it with
``json.loads(session.get_modelmeta().custom_metadata_map[key])``. Keys read by tools outside the project
(keep their names and meaning): ``labels``, ``mean``, ``std``, ``color_order``, ``input_size``.

    labels         ["airplane", ...]          class names in output order
    mean, std      [0.49, 0.48, 0.45]         per channel, 0..1 scale, in color_order
    color_order    "RGB"                      channel order of the input tensor
    input_size     [32, 32]                   [H, W]
    resize         {"policy": "center_crop", "crop_ratio": 0.875, "resize_size": 256,
                    "interpolation": "bilinear_antialias"}
                                              how a frame of another size is brought to input_size:
                                              policy center_crop | stretch | letterbox; crop_ratio = input /
                                              resize_size (what older readers use); resize_size, when known, the
                                              shorter side before the centre crop (torchvision's Resize(256));
                                              interpolation, how pixels are resampled
    label_ids      ["n01440764", ...]         optional: an id per label, in output order (ImageNet: WordNet ids,
                                              which tell apart labels with the same name)
    layout         "NCHW"                     input tensor layout
    arch           "resnet20"                 registry name of the network
    blocks         ["layer1.0", ...]          residual block names in forward order
    probes         {"layer1.0": {"x": "probe.layer1.0.x", "residual": "probe.layer1.0.residual"}}
                                              extra outputs holding x_l and F(x_l); {} when exported without
    block_output   {"layer3.2": "probe.layer3.2.out"}
                                              extra output holding the last block's output x_L (before any
                                              final BN-ReLU); with the probes, every block's x_{l+1} is then an
                                              output (the others' are the next block's "x"). Absent without probes
    form           "post-activation" | "pre-activation" | "plain"
                                              how a block's output is formed: relu(x_l + F(x_l)) (He et al. 2015),
                                              x_l + F(x_l) with nothing after the sum (He et al. 2016), or a plain
                                              net without shortcuts (its arch names the family). Absent in files
                                              exported before the key existed
    precision      "fp32" | "fp16" | "int8"
    quantization   {...}                      int8 models: how they were quantized
    input_name, output_name                   graph input and the logits output
    unsure         {"score": "mahalanobis", "threshold": 117.6, "keep": 0.9, "output": "unsure_score", ...}
                                              the "not sure" score the graph computes (resnet_edge/unsure.py);
                                              absent in models without its statistics
    format         "resnet-edge/1"            version of this contract
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from .budgets import MAX_LABEL_CHARS, MAX_LABELS, MAX_NAME_CHARS
from .errors import UserError
from .preprocess import COLOR_ORDERS, INTERPOLATIONS, RESIZE_POLICIES, PreprocessSpec

CONTRACT_FORMAT = "resnet-edge/1"
REQUIRED_KEYS = ("labels", "mean", "std", "color_order", "input_size")


class MetadataError(UserError):
    """Metadata that is missing or does not make sense."""


@dataclass
class ModelContract:
    labels: list[str]  # class names in output order
    preprocess: PreprocessSpec  # input size, mean/std, colour order, resize policy
    arch: str = "unknown"  # registry name of the network, e.g. "resnet20"
    blocks: list[str] = field(default_factory=list)  # residual block names in forward order
    probes: dict[str, dict[str, str]] = field(default_factory=dict)  # block -> {"x": output, "residual": output}
    precision: str = "fp32"  # fp32, fp16 or int8
    layout: str = "NCHW"  # input layout
    input_name: str = "input"  # graph input
    output_name: str = "logits"  # graph output with the class scores
    extra: dict[str, Any] = field(default_factory=dict)  # other keys (quantization, training, verify...)

    def to_props(self) -> dict[str, str]:
        """metadata_props as str -> JSON text."""
        spec = self.preprocess
        props: dict[str, Any] = {
            "format": CONTRACT_FORMAT,
            "labels": list(self.labels),
            "mean": [round(float(v), 6) for v in spec.mean],
            "std": [round(float(v), 6) for v in spec.std],
            "color_order": spec.color_order,
            "input_size": list(spec.input_size),
            "resize": resize_entry(spec),
            "layout": self.layout,
            "arch": self.arch,
            "blocks": list(self.blocks),
            "probes": self.probes,
            "precision": self.precision,
            "input_name": self.input_name,
            "output_name": self.output_name,
        }
        for key, value in self.extra.items():
            props.setdefault(key, value)
        return {key: json.dumps(value) for key, value in props.items()}

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: str = "model") -> "ModelContract":
        """Parse metadata_props; MetadataError names the first key that is missing or wrong."""
        missing = [key for key in REQUIRED_KEYS if key not in props]
        if missing:
            raise MetadataError(
                f"{source} has no resnet-edge metadata ({', '.join(missing)} missing); "
                "pass --labels, --mean, --std, --input-size and --color-order to use it anyway")
        values: dict[str, Any] = {}
        for key, text in props.items():
            try:
                values[key] = json.loads(text)
            except (json.JSONDecodeError, TypeError):
                values[key] = text  # foreign keys need not be JSON; ours are checked below
        return cls.from_values(values, source)

    @classmethod
    def from_values(cls, values: Mapping[str, Any], source: str = "model") -> "ModelContract":
        labels = values.get("labels")
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
            raise MetadataError(f"{source}: metadata 'labels' must be a non-empty list of strings")
        _check_sizes(values, labels, source)
        mean = _floats(values.get("mean"), "mean", source)
        std = _floats(values.get("std"), "std", source)
        size = values.get("input_size")
        if isinstance(size, int):
            size = [size, size]
        if (not isinstance(size, list) or len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in size)
                or not all(1 <= v <= 8192 for v in size)):
            raise MetadataError(f"{source}: metadata 'input_size' must be [H, W] with 1..8192, got {size!r}")
        color_order = values.get("color_order")
        if color_order not in COLOR_ORDERS:
            raise MetadataError(f"{source}: metadata 'color_order' must be one of {COLOR_ORDERS}, got {color_order!r}")
        resize = values.get("resize") or {"policy": "center_crop", "crop_ratio": 1.0}
        if not isinstance(resize, dict) or resize.get("policy", "center_crop") not in RESIZE_POLICIES:
            raise MetadataError(f"{source}: metadata 'resize' must be {{'policy': one of {RESIZE_POLICIES}, 'crop_ratio': r}}")
        crop_ratio = resize.get("crop_ratio", 1.0)
        if isinstance(crop_ratio, bool) or not isinstance(crop_ratio, (int, float)) or not 0 < crop_ratio <= 1:
            raise MetadataError(f"{source}: metadata crop_ratio must be in (0, 1], got {crop_ratio!r}")
        resize_size = resize.get("resize_size")
        if resize_size is not None and (isinstance(resize_size, bool) or not isinstance(resize_size, int)
                                        or not min(size) <= resize_size <= 16384):
            raise MetadataError(f"{source}: metadata resize_size must be a whole number from the input side to 16384, "
                                f"got {resize_size!r}")
        interpolation = resize.get("interpolation", INTERPOLATIONS[0])
        if interpolation not in INTERPOLATIONS:
            raise MetadataError(f"{source}: metadata interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
        label_ids = values.get("label_ids")
        if label_ids is not None and (not isinstance(label_ids, list) or len(label_ids) != len(labels)
                                      or not all(isinstance(x, str) for x in label_ids)):
            raise MetadataError(f"{source}: metadata 'label_ids' must be a list of {len(labels)} strings, one per label")
        try:
            spec = PreprocessSpec(input_size=(size[0], size[1]), mean=mean, std=std, color_order=color_order,
                                  resize_policy=resize.get("policy", "center_crop"), crop_ratio=float(crop_ratio),
                                  resize_size=resize_size, interpolation=interpolation)
        except UserError as error:  # the checks above should catch it all; keep the promised error type
            raise MetadataError(f"{source}: metadata preprocessing is unusable: {error}") from None
        blocks = values.get("blocks") or []
        probes = values.get("probes") or {}
        if not isinstance(blocks, list) or not all(isinstance(b, str) for b in blocks):
            raise MetadataError(f"{source}: metadata 'blocks' must be a list of block names")
        if not isinstance(probes, dict) or not all(
                isinstance(k, str) and isinstance(v, dict) and isinstance(v.get("x"), str)
                and isinstance(v.get("residual"), str) for k, v in probes.items()):
            raise MetadataError(f"{source}: metadata 'probes' must map block -> {{'x': name, 'residual': name}}")
        if probes and set(probes) != set(blocks):  # the block panel asks for every block's probes
            raise MetadataError(f"{source}: metadata 'probes' must name exactly the blocks in 'blocks'")
        known = {"format", "labels", "mean", "std", "color_order", "input_size", "resize", "layout", "arch",
                 "blocks", "probes", "precision", "input_name", "output_name"}
        return cls(
            labels=list(labels), preprocess=spec, arch=str(values.get("arch", "unknown")), blocks=list(blocks),
            probes=dict(probes), precision=str(values.get("precision", "fp32")),
            layout=str(values.get("layout", "NCHW")), input_name=str(values.get("input_name", "input")),
            output_name=str(values.get("output_name", "logits")),
            extra={k: v for k, v in values.items() if k not in known},
        )


def _check_sizes(values: Mapping[str, Any], labels: list[str], source: str) -> None:
    """Label count and string lengths within budgets.py's caps: what we print and draw stays small."""
    if len(labels) > MAX_LABELS:
        raise MetadataError(f"{source}: metadata 'labels' has {len(labels):,} entries, over the limit of {MAX_LABELS:,}")
    longest = max(len(label) for label in labels)
    if longest > MAX_LABEL_CHARS:
        raise MetadataError(f"{source}: a metadata label is {longest:,} characters long, over the limit of {MAX_LABEL_CHARS}")
    for key in ("arch", "precision", "layout", "input_name", "output_name"):
        if len(str(values.get(key, ""))) > MAX_NAME_CHARS:
            raise MetadataError(f"{source}: metadata '{key}' is over {MAX_NAME_CHARS} characters long")
    blocks = values.get("blocks")
    if isinstance(blocks, list) and (len(blocks) > MAX_LABELS or any(len(str(b)) > MAX_NAME_CHARS for b in blocks)):
        raise MetadataError(f"{source}: metadata 'blocks' is too large (over {MAX_LABELS:,} names or {MAX_NAME_CHARS} characters)")
def resize_entry(spec: PreprocessSpec) -> dict[str, Any]:
    """The ``resize`` value: policy and crop_ratio as always, plus resize_size (when known) and interpolation."""
    entry: dict[str, Any] = {"policy": spec.resize_policy, "crop_ratio": spec.crop_ratio}
    if spec.resize_policy == "center_crop" and spec.resize_size is not None:
        entry["resize_size"] = spec.resize_size
    entry["interpolation"] = spec.interpolation
    return entry


def _floats(value: Any, key: str, source: str) -> tuple[float, float, float]:
    if (not isinstance(value, list) or len(value) != 3
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
        raise MetadataError(f"{source}: metadata '{key}' must be a list of 3 numbers, got {value!r}")
    # on the 0..1 scale; ImageNet's 0..255 figures (123.7 / 58.4) are the usual mistake, and would blank the input
    if key == "mean" and not all(-1.0 <= v <= 2.0 for v in value):
        raise MetadataError(f"{source}: metadata 'mean' must be on the 0..1 scale (-1..2), got {value!r}")
    if key == "std" and not all(1e-6 <= v <= 10.0 for v in value):
        raise MetadataError(f"{source}: metadata 'std' must be on the 0..1 scale (1e-6..10), got {value!r}")
    return float(value[0]), float(value[1]), float(value[2])


FORMS = ("post-activation", "pre-activation", "plain")


def form_of(contract: ModelContract) -> str | None:
    """The ``form`` key of a model file (one of FORMS), or None where it is absent or unknown."""
    form = contract.extra.get("form")
    return form if form in FORMS else None


def block_output_name(block: str) -> str:
    """Graph output name for a block's output x_{l+1} (exported for the last block)."""
    return f"probe.{block}.out"


def probe_output_names(block: str) -> dict[str, str]:
    """Graph output names for a block's x_l and F(x_l)."""
    return {"x": f"probe.{block}.x", "residual": f"probe.{block}.residual"}
