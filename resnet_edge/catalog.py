"""What the model picker lists: every model file we can find (shipped, fetched, recently opened), each
described from its own metadata, without starting a session. Qt-free and torch-free."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .modelzoo import model_dirs


@dataclass
class ModelEntry:
    path: Path
    name: str  # file name without .onnx
    origin: str  # "shipped", "fetched", "taught", "imported" or "recent"
    classes: int | None  # label count
    precision: str  # fp32, int8, fp16
    arch: str
    accuracy: str  # top-1 with where it was measured, from the metadata ("" when it carries none)
    problem: str = ""  # why the file cannot be used ("" when it can)


def _accuracy(meta: dict) -> str:
    weights = meta.get("weights")
    if isinstance(weights, dict) and isinstance(weights.get("acc1"), (int, float)):
        return f"{weights['acc1']:.2f}% ImageNet top-1 (published)"
    for key in ("metrics", "verify"):
        block = meta.get(key)
        if isinstance(block, dict):
            for name in ("test_top1", "val_top1", "top1", "accuracy"):
                value = block.get(name)
                if isinstance(value, (int, float)):
                    pct = value * 100 if value <= 1 else value
                    return f"{pct:.2f}% top-1 ({name.replace('_top1', '').replace('_', ' ')})"
    teach = meta.get("teach")
    if isinstance(teach, dict) and isinstance(teach.get("held_out_accuracy"), (int, float)):
        return f"{teach['held_out_accuracy'] * 100:.1f}% on held-out samples"
    return ""


def describe(path: str | os.PathLike, origin: str) -> ModelEntry:
    from .onnxfile import read_model_file

    path = Path(path)
    name = path.name[:-5] if path.name.endswith(".onnx") else path.name
    try:
        _, summary = read_model_file(path)
    except UserError as error:
        return ModelEntry(path, name, origin, None, "?", "?", "", problem=str(error))
    meta = {}
    for key, text in summary.metadata.items():
        try:
            meta[key] = json.loads(text)
        except json.JSONDecodeError:
            meta[key] = text
    labels = meta.get("labels")
    if "teach" in meta:
        origin = "taught" if origin != "recent" else origin
    elif "imported_from" in meta and origin != "recent":
        origin = "imported"
    return ModelEntry(path, name, origin, len(labels) if isinstance(labels, list) else None,
                      str(meta.get("precision", "fp32")), str(meta.get("arch", "unknown")), _accuracy(meta),
                      problem="" if isinstance(labels, list) else "no resnet-edge metadata: import it first")


def catalog(recent: list[str] | None = None, extra_dirs: list[Path] | None = None) -> list[ModelEntry]:
    """Shipped models (the first models folder found), models in ``extra_dirs`` (the user's fetched and taught
    models), then recently opened files that still exist; each path once."""
    seen: set[Path] = set()
    entries: list[ModelEntry] = []

    def add(path: Path, origin: str) -> None:
        key = path.resolve()
        if key not in seen and path.is_file():
            seen.add(key)
            entries.append(describe(path, origin))

    shipped = next((d for d in model_dirs() if d.is_dir() and any(d.glob("*.onnx"))), None)
    for path in sorted(shipped.glob("*.onnx")) if shipped else []:
        add(path, "shipped")
    for folder in extra_dirs or []:
        for path in sorted(folder.glob("*.onnx")) if folder.is_dir() else []:
            add(path, "fetched")
    for text in recent or []:
        add(Path(text), "recent")
    return entries


def remember_recent(recent: list[str], path: str | os.PathLike, keep: int = 10) -> list[str]:
    """The recent list with ``path`` first, each once, at most ``keep`` long."""
    text = str(Path(path).resolve())
    return [text] + [p for p in recent if p != text][:keep - 1]
