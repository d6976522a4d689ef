"""What the three lab commands share: the output folder rule, atomic JSON/CSV/PNG writes, verdict lines.

An output folder that exists and holds anything is refused unless ``force`` is set; every file goes
through :mod:`resnet_edge.atomicio`, so a reader never sees half a file.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Sequence

from ..atomicio import atomic_path, check_folder_writable, write_text_atomic
from ..errors import UserError


def prepare_out(out: str | Path, force: bool) -> Path:
    """The output folder, created; refuse an existing non-empty one without ``force``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError(f"output folder {out} already exists and is not empty; pass --force to write over it")
    check_folder_writable(out)  # a read-only folder is refused now, not after an hour of training
    out.mkdir(parents=True, exist_ok=True)
    return out


def _clean(value: Any) -> Any:
    """JSON-safe: numpy scalars/arrays to Python, NaN/inf to None (JSON has neither)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_json(path: Path, data: dict, force: bool = True) -> Path:
    return write_text_atomic(path, json.dumps(_clean(data), indent=2) + "\n", force=force)


def write_csv(path: Path, rows: Sequence[dict], force: bool = True) -> Path:
    """Rows of equal keys as CSV (header from the first row)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
    writer.writeheader()
    writer.writerows([_clean(row) for row in rows])
    return write_text_atomic(path, buffer.getvalue(), force=force)


def have_matplotlib() -> bool:
    """Whether figures can be drawn: matplotlib is optional (the packaged app leaves it out for size)."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


NO_MATPLOTLIB = "no figures: matplotlib is not installed (pip install matplotlib); the numbers are in the CSV and JSON"


def save_figure(figure, path: Path, force: bool = True, dpi: int = 110) -> Path:
    """Save a matplotlib Figure (made with ``matplotlib.figure.Figure``, no pyplot) as PNG, atomically."""
    with atomic_path(path, force=force) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi)
    return path


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain fixed-width text table (first column left-aligned, the rest right-aligned)."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for index, row in enumerate(cells):
        line = "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
        lines.append(line.rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# One spelling of the lab's network kinds: "plain" (no shortcuts) and "residual". The CIFAR nets come in two
# families: "post" (the original post-activation blocks, resnet56/plain56) and "pre" (pre-activation,
# He et al. 2016: preact_resnet56/preact_plain56).
KINDS = ("plain", "residual")
FAMILIES = ("post", "pre")
FAMILY_CHOICES = {"post": ("post",), "pre": ("pre",), "both": ("post", "pre")}  # what --family takes
FAMILY_NAMES = {"post": "post-activation", "pre": "pre-activation"}


def cifar_arch(kind: str, depth: int, family: str = "post") -> str:
    """Registry name of a lab net: ("residual", 56, "pre") -> "preact_resnet56", ("plain", 20) -> "plain20"."""
    if kind not in KINDS or family not in FAMILIES:
        raise ValueError(f"kind must be one of {KINDS} and family one of {FAMILIES}, got {kind!r}, {family!r}")
    return f"{'preact_' if family == 'pre' else ''}{'plain' if kind == 'plain' else 'resnet'}{depth}"


def verdict_word(holds: bool | None) -> str:
    return {True: "HOLDS", False: "DOES NOT HOLD", None: "INCONCLUSIVE"}[holds]
