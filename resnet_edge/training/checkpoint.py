"""Checkpoints: ours (weights + what export needs) and torchvision-style bare state_dicts.

Loading is always ``torch.load(weights_only=True)``: a checkpoint is untrusted input and a pickle
that would run code is refused, never retried with the unsafe loader.
"""

from __future__ import annotations

import dataclasses
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atomicio import atomic_path
from ..errors import UserError
from ..preprocess import PreprocessSpec

CHECKPOINT_FORMAT = "resnet-edge-checkpoint/1"


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None, epoch: int,
                    config: Any, labels: list[str], spec: PreprocessSpec, history: list[dict]) -> None:
    """Everything needed to resume training and to export: written to a temp file, then renamed."""
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
    with atomic_path(path, force=True) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint safely. Returns our dict, or {"model": state_dict} for a bare state_dict."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint file")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if any(name.endswith("constants.pkl") or "/code/" in name for name in names):
            raise UserError(f"{path}: a TorchScript archive, not a state_dict checkpoint; refusing to load it")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else "unsafe content"
        raise UserError(f"{path}: refused: the checkpoint holds more than weights ({first_line})") from None
    except (RuntimeError, EOFError, ValueError, OSError) as error:
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({str(error).splitlines()[0]})") from None
    if not isinstance(state, dict):
        raise UserError(f"{path}: expected a dict of tensors, found {type(state).__name__}")
    if state.get("format") == CHECKPOINT_FORMAT:
        return state
    for key in ("state_dict", "model"):  # common wrappers around a bare state_dict
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    if not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise UserError(f"{path}: not a state_dict (values are not all tensors)")
    # checkpoints saved from DataParallel/DDP prefix every key with "module."
    return {"model": {key.removeprefix("module."): value for key, value in state.items()}}


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
    model.load_state_dict(state_dict, strict=True)
