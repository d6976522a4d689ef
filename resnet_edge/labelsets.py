"""Class-name lists: built-in sets (``imagenet``: the 1000 ImageNet-1k classes in torchvision's order,
``cifar10``), a text file with one name per line, or a comma-separated list."""

from __future__ import annotations

from pathlib import Path

from .errors import UserError

_BUILTIN_DIR = Path(__file__).resolve().parent / "labels"
BUILTIN = {"imagenet": "imagenet1k.txt", "imagenet1k": "imagenet1k.txt", "cifar10": "cifar10.txt",
           "imagenet_wnids": "imagenet1k_wnids.txt"}  # the WordNet id of each ImageNet class, in the same order


def load_labels(spec: str) -> list[str]:
    """``imagenet`` | ``cifar10`` | path/to/labels.txt | ``cat,dog,bird``."""
    if spec.lower() in BUILTIN:
        return _read_lines(_BUILTIN_DIR / BUILTIN[spec.lower()])
    path = Path(spec)
    if path.suffix.lower() in (".txt", ".labels") or path.is_file():
        if not path.is_file():
            raise UserError(f"{path}: no such labels file")
        return _read_lines(path)
    labels = [name.strip() for name in spec.split(",") if name.strip()]
    if len(labels) < 2:
        raise UserError(f"--labels {spec!r}: expected imagenet, cifar10, a .txt file or a comma-separated list")
    return labels


def _read_lines(path: Path) -> list[str]:
    labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not labels:
        raise UserError(f"{path}: labels file is empty")
    return labels
