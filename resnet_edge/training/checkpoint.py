"""Checkpoints: ours (weights + what export needs) and torchvision-style bare state_dicts.

Loading is always ``torch.load(weights_only=True)``: a checkpoint is untrusted input and a pickle
that would run code is refused, never retried with the unsafe loader.
"""

from __future__ import annotations

import dataclasses
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atomicio import atomic_path
from ..errors import UserError, first_line
from ..preprocess import PreprocessSpec

CHECKPOINT_FORMAT = "resnet-edge-checkpoint/1"


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None, epoch: int,
                    config: Any, labels: list[str], spec: PreprocessSpec, history: list[dict],
                    trained: nn.Module | None = None, averaged_epochs: int = 0) -> None:
    """Everything needed to resume training and to export: written to a temp file, then renamed.

    ``model`` is the net that ships (export, verify, --teacher and --init read "model"). Under weight averaging
    it is the average, and ``trained`` the net SGD is moving, kept as "trained_model" for --resume.
    """
    state = {
        "format": CHECKPOINT_FORMAT,
        "arch": config.arch,
        "model_kwargs": {"shortcut": config.shortcut} if hasattr(config, "shortcut") else {},
        "labels": list(labels),
        "preprocess": {"input_size": list(spec.input_size), "mean": list(spec.mean), "std": list(spec.std),
                       "color_order": spec.color_order, "resize_policy": spec.resize_policy,
                       "crop_ratio": spec.crop_ratio},
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "epoch": epoch,
        "config": dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config),
        "history": history,
    }
    if trained is not None:
        state.update(trained_model=trained.state_dict(), averaged_epochs=averaged_epochs)
    with atomic_path(path, force=True) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint safely. Returns our dict, or {"model": state_dict} for a bare state_dict."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file, not a PyTorch checkpoint")
    with open(path, "rb") as handle:
        head = handle.read(40)
    if head.startswith(b"version https://git-lfs"):
        raise UserError(f"{path} is a Git LFS pointer file, not the checkpoint: run `git lfs pull` to fetch it")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as error:
            raise UserError(f"{path}: not a readable PyTorch checkpoint (damaged zip archive: {error})") from None
        if any(name.endswith("constants.pkl") or "/code/" in name for name in names):
            raise UserError(f"{path}: a TorchScript archive, not a state_dict checkpoint; refusing to load it")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr; we say what matters
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise UserError(f"{path}: refused: the checkpoint holds more than weights ({_unpickling_reason(error)}); "
                        "it is not loaded without weights_only") from None
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, IndexError, TypeError, AttributeError) as error:
        # a damaged archive surfaces as any of these from torch's reader
        reason = first_line(error) or type(error).__name__
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({reason[:200]})") from None
    if not isinstance(state, dict):
        raise UserError(f"{path}: expected a dict of tensors, found {type(state).__name__}")
    if state.get("format") == CHECKPOINT_FORMAT:
        _check_ours(state, path)
        return state
    for key in ("state_dict", "model"):  # common wrappers around a bare state_dict
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    if not state or not _is_state_dict(state):
        raise UserError(f"{path}: not a state_dict (expected names mapped to tensors)")
    # checkpoints saved from DataParallel/DDP prefix every key with "module."
    return {"model": {key.removeprefix("module."): value for key, value in state.items()}}


def _unpickling_reason(error: BaseException) -> str:
    """The line of torch's weights_only refusal that names what was refused (not its advice to load unsafely)."""
    for line in str(error).splitlines():
        line = line.strip()
        if line.startswith(("Trying to load", "Unsupported")) or "GLOBAL" in line:
            return line.rstrip(".")
    return "content other than tensors and plain containers"


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


def _check_ours(state: dict, path: Path) -> None:
    """Our checkpoint's fields are read by export, verify and resume: refuse a damaged one here, in one line."""
    def bad(what: str) -> UserError:
        return UserError(f"{path}: damaged resnet-edge checkpoint ({what})")

    if not isinstance(state.get("arch"), str):
        raise bad("'arch' is not a name")
    labels = state.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise bad("'labels' is not a non-empty list of names")
    if not _is_state_dict(state.get("model")):
        raise bad("'model' is not a state_dict")
    kwargs = state.get("model_kwargs", {})
    if not isinstance(kwargs, dict) or set(kwargs) - {"shortcut"} or kwargs.get("shortcut", "A") not in ("A", "B"):
        raise bad(f"'model_kwargs' must be {{'shortcut': 'A' or 'B'}}, got {kwargs!r}")
    try:
        spec_from_checkpoint(state)
    except (KeyError, TypeError, AttributeError, UserError) as error:
        raise bad(f"'preprocess': {error}") from None
    if not isinstance(state.get("epoch", 0), int):
        raise bad("'epoch' is not a number")
    if "trained_model" in state and not (_is_state_dict(state["trained_model"])
                                         and isinstance(state.get("averaged_epochs"), int)):
        raise bad("'trained_model' without its 'averaged_epochs' count, or not a state_dict")


def spec_from_checkpoint(state: dict) -> PreprocessSpec:
    """The preprocessing a checkpoint of ours was trained with (its "preprocess" entry)."""
    p = state["preprocess"]
    return PreprocessSpec(tuple(p["input_size"]), tuple(p["mean"]), tuple(p["std"]), p["color_order"],
                          p.get("resize_policy", "center_crop"), p.get("crop_ratio", 1.0))


def load_weights(model: nn.Module, state_dict: dict, source: str) -> None:
    """``load_state_dict(strict=True)`` with a one-line error naming what does not fit."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_shape = [k for k in expected if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong_shape:
            key = wrong_shape[0]
            parts.append(f"{len(wrong_shape)} with other shapes (e.g. {key}: "
                         f"{tuple(state_dict[key].shape)} vs {tuple(expected[key].shape)})")
        raise UserError(f"{source} does not fit architecture {getattr(model, 'arch', '?')}: " + "; ".join(parts))
    # a diverged run saves NaN weights; exported, they would give NaN for every frame
    broken = [k for k, v in state_dict.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise UserError(f"{source} holds NaN/Inf weights in {len(broken)} tensor(s) (e.g. {broken[0]}); "
                        "the training run diverged")
    model.load_state_dict(state_dict, strict=True)
