"""Bring a third-party ONNX classifier under the contract: ask for what its file lacks (labels, mean/std,
input size, resize policy), write a copy with our metadata, and it opens everywhere like one of ours.

No torch and no onnx package: the metadata is written at the protobuf wire level (onnxfile), so the packaged
app can do it too. The graph itself is not touched.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomicio import write_bytes_atomic
from .errors import UserError
from .labelsets import load_labels
from .metadata import REQUIRED_KEYS, ModelContract
from .onnxfile import ModelFileError, OnnxSummary, read_model_file, set_metadata_props
from .preprocess import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD

# what published classifiers of each family were trained with
PRESETS: dict[str, dict[str, Any]] = {
    "imagenet": {"labels": "imagenet", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "input_size": [224, 224],
                 "color_order": "RGB", "resize": {"policy": "center_crop", "crop_ratio": 0.875}},
    "cifar10": {"labels": "cifar10", "mean": list(CIFAR10_MEAN), "std": list(CIFAR10_STD), "input_size": [32, 32],
                "color_order": "RGB", "resize": {"policy": "center_crop", "crop_ratio": 1.0}},
}


@dataclass
class ImportPlan:
    """What a file has, what it lacks, and what its graph tells us anyway."""
    path: Path
    summary: OnnxSummary
    present: dict[str, Any]  # contract keys the file already carries (parsed)
    missing: list[str]  # of REQUIRED_KEYS + "resize"
    classes: int | None  # from the output shape, when static
    input_size: list[int] | None  # from the input shape, when static
    problems: list[str] = field(default_factory=list)  # why it is no image classifier at all


def inspect_for_import(path: str | os.PathLike) -> ImportPlan:
    """Read (vetted) and say what the file lacks; the graph must look like an image classifier."""
    _, summary = read_model_file(path)
    present: dict[str, Any] = {}
    for key in (*REQUIRED_KEYS, "resize"):
        if key in summary.metadata:
            try:
                present[key] = json.loads(summary.metadata[key])
            except json.JSONDecodeError:
                pass
    problems = []
    if len(summary.inputs) != 1:
        problems.append(f"it has {len(summary.inputs)} inputs; an image classifier takes one")
    elif len(summary.inputs[0].shape) != 4:
        problems.append(f"its input has rank {len(summary.inputs[0].shape)}; expected (N, 3, H, W)")
    if not summary.outputs:
        problems.append("it has no outputs")
    shape = summary.inputs[0].shape if summary.inputs else []
    input_size = [shape[2], shape[3]] if len(shape) == 4 and all(isinstance(v, int) for v in shape[2:]) else None
    out_shape = summary.outputs[0].shape if summary.outputs else []
    classes = out_shape[-1] if out_shape and isinstance(out_shape[-1], int) else None
    missing = [key for key in (*REQUIRED_KEYS, "resize") if key not in present]
    return ImportPlan(Path(path), summary, present, missing, classes, input_size, problems)


def build_contract(plan: ImportPlan, preset: str | None = None, labels: str | None = None,
                   overrides: dict[str, Any] | None = None) -> ModelContract:
    """The contract: the file's own keys, then the preset's, then what the user gave (last wins), and the graph's
    input size and names, which cannot be wrong."""
    if plan.problems:
        raise ModelFileError(f"{plan.path}: not an image classifier we can run: {plan.problems[0]}")
    values: dict[str, Any] = {}
    if preset:
        if preset not in PRESETS:
            raise UserError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
        values.update({k: v for k, v in PRESETS[preset].items() if k != "labels"})
        if labels is None and "labels" not in plan.present:
            labels = PRESETS[preset]["labels"]
    values.update(plan.present)
    values.update(overrides or {})
    if labels is not None:
        values["labels"] = load_labels(labels)
    if plan.input_size is not None:
        values["input_size"] = plan.input_size
    missing = [key for key in REQUIRED_KEYS if key not in values]
    if missing:
        raise UserError(f"{plan.path}: still missing {', '.join(missing)}: choose a preset or give them")
    if plan.classes is not None and len(values["labels"]) != plan.classes:
        raise UserError(f"{plan.path}: the model has {plan.classes} outputs but the labels list has "
                        f"{len(values['labels'])} names")
    values.setdefault("arch", "imported")
    values["input_name"] = plan.summary.inputs[0].name
    values["output_name"] = plan.summary.outputs[0].name
    values["blocks"], values["probes"] = [], {}
    return ModelContract.from_values(values, source=str(plan.path))


def import_classifier(source: str | os.PathLike, output: str | os.PathLike, contract: ModelContract,
                      force: bool = False) -> Path:
    """Write a copy of ``source`` carrying ``contract`` in its metadata (atomically, never over a file without
    ``force``); the graph bytes are unchanged."""
    data, _ = read_model_file(source)
    props = contract.to_props()
    props["imported_from"] = json.dumps(Path(source).name)
    return write_bytes_atomic(output, set_metadata_props(data, props), force=force)
