"""Where models are: the shipped ones (the checkout's models/, an installed wheel, or a PyInstaller bundle),
then the ones `resnet-edge fetch` wrote into the user's models folder (:func:`user_models_dir`).

The wheel carries the top-level models/ folder as the package data ``resnet_edge/_models`` (see
pyproject.toml); the bundle carries it as ``models/`` beside the executable's files.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .errors import UserError

DEFAULT_MODEL = "cifar10-resnet20"  # what every command and the app use when no model is named


def user_dir(kind: str) -> Path:
    """The per-user folder for ``kind`` "cache" (downloaded weights) or "data" (models you fetched), under
    resnet-edge/: XDG on Linux and BSD, ~/Library on macOS, %LOCALAPPDATA% on Windows."""
    home = Path.home()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local") / "resnet-edge"
        return base / ("cache" if kind == "cache" else "data")
    if sys.platform == "darwin":
        library = home / "Library" / ("Caches" if kind == "cache" else "Application Support")
        return library / "resnet-edge"
    variable, fallback = ("XDG_CACHE_HOME", ".cache") if kind == "cache" else ("XDG_DATA_HOME", ".local/share")
    base = os.environ.get(variable)
    # the XDG spec: a relative path in these variables is invalid and must be ignored
    return (Path(base) if base and os.path.isabs(base) else home / fallback) / "resnet-edge"


def user_models_dir(override: str | os.PathLike | None = None) -> Path:
    """Where `resnet-edge fetch` writes models and every command finds them by name: ``override``
    (--models-dir), else $RESNET_EDGE_MODELS, else the per-user data folder's models/."""
    if override:
        return Path(override)
    if os.environ.get("RESNET_EDGE_MODELS"):
        return Path(os.environ["RESNET_EDGE_MODELS"])
    return user_dir("data") / "models"


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
    """A model by name (``cifar10-resnet20``), fp32 or int8 (``<name>.int8.onnx``): shipped, or fetched
    into the user's models folder (``resnet-edge fetch``)."""
    filename = f"{name}.onnx" if precision == "fp32" else f"{name}.{precision}.onnx"
    folder = models_folder()
    if folder is not None and (folder / filename).is_file():
        return folder / filename
    fetched = user_models_dir()
    if (fetched / filename).is_file():
        return fetched / filename
    looked = ", ".join(dict.fromkeys(str(d) for d in ([folder] if folder else model_dirs()) + [fetched]))
    hint = ""
    if name.startswith("imagenet-"):
        hint = f"; get it with: resnet-edge fetch {name}" + (" --int8 --calib IMAGES" if precision == "int8" else "")
    raise UserError(f"model {filename} not found (looked in {looked}){hint}; or name a model file with --model")


def resolve_model(model: str | None, precision: str = "fp32") -> Path:
    """--model as given: a path, a shipped model's name, or None for the default."""
    if model is None:
        return find_model(DEFAULT_MODEL, precision)
    path = Path(model)
    if path.suffix.lower() == ".onnx" or path.exists() or os.sep in model:
        return path
    return find_model(model, precision)
