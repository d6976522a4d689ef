"""Where the shipped models are: the checkout's models/, an installed wheel, or a PyInstaller bundle.

The wheel carries the top-level models/ folder as the package data ``resnet_edge/_models`` (see
pyproject.toml); the bundle carries it as ``models/`` beside the executable's files.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .errors import UserError

DEFAULT_MODEL = "cifar10-resnet20"  # what every command and the app use when no model is named


def model_dirs() -> list[Path]:
    """Folders to look in, first match wins."""
    dirs = []
    if os.environ.get("RESNET_EDGE_MODELS"):
        dirs.append(Path(os.environ["RESNET_EDGE_MODELS"]))
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        dirs.append(Path(bundle) / "models")
    package = Path(__file__).resolve().parent
    dirs.append(package / "_models")  # installed wheel
    dirs.append(package.parent / "models")  # source checkout
    return dirs


def models_folder() -> Path | None:
    """The first folder of :func:`model_dirs` that holds any .onnx file. Only that one is used, so a
    model's fp32 and int8 files never come from two different places (say RESNET_EDGE_MODELS and the
    checkout)."""
    for folder in model_dirs():
        if folder.is_dir() and any(folder.glob("*.onnx")):
            return folder
    return None


def find_model(name: str = DEFAULT_MODEL, precision: str = "fp32") -> Path:
    """A shipped model by name (``cifar10-resnet20``), fp32 or int8 (``<name>.int8.onnx``)."""
    filename = f"{name}.onnx" if precision == "fp32" else f"{name}.{precision}.onnx"
    folder = models_folder()
    if folder is not None and (folder / filename).is_file():
        return folder / filename
    looked = str(folder) if folder else ", ".join(str(d) for d in model_dirs())
    raise UserError(f"shipped model {filename} not found (looked in {looked}); name a model with --model")


def resolve_model(model: str | None, precision: str = "fp32") -> Path:
    """--model as given: a path, a shipped model's name, or None for the default."""
    if model is None:
        return find_model(DEFAULT_MODEL, precision)
    path = Path(model)
    if path.suffix.lower() == ".onnx" or path.exists() or os.sep in model:
        return path
    return find_model(model, precision)
