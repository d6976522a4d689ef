"""What the app writes: PNG snapshots (atomically) and a CSV of predictions while recording."""

from __future__ import annotations

import csv
import datetime as _dt
from pathlib import Path
from typing import IO

from PySide6.QtGui import QPixmap

from resnet_edge.atomicio import atomic_path
from resnet_edge.safety import csv_cell

from .workers import InferenceResult

CSV_COLUMNS = ["time", "frame_seq", "frame_id", "label", "probability", "top5", "latency_ms", "provider", "model"]


def timestamped(folder: Path, prefix: str, suffix: str) -> Path:
    """folder/prefix-20250101-120000-123.suffix, with a counter if that name is taken."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")[:-3]
    path = folder / f"{prefix}-{stamp}{suffix}"
    counter = 1
    while path.exists():
        path = folder / f"{prefix}-{stamp}-{counter}{suffix}"
        counter += 1
    return path


def save_png_atomic(pixmap: QPixmap, path: Path) -> Path:
    """Write to a temp file beside ``path``, then os.replace it: a reader never sees half a PNG."""
    with atomic_path(path) as tmp:
        if not pixmap.save(str(tmp), "PNG"):
            raise OSError(f"could not write {path}")
    return path


class PredictionRecorder:
    """Appends one CSV row per prediction; rows are flushed as they come, so a crash keeps what was seen."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.rows = 0
        self._file: IO[str] | None = open(path, "w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)
        self._writer.writerow(CSV_COLUMNS)

    def write(self, result: InferenceResult) -> None:
        if self._file is None:
            return
        prediction = result.prediction
        top = ";".join(f"{label}:{probability:.4f}" for label, _index, probability in prediction.top)
        # labels, frame ids and file names are others' text: csv_cell keeps "=cmd|..." from running as a formula
        self._writer.writerow([_dt.datetime.now().isoformat(timespec="milliseconds"), result.frame.seq,
                               csv_cell(result.frame.id), csv_cell(prediction.label), f"{prediction.probability:.4f}",
                               csv_cell(top), f"{result.latency_ms:.2f}", result.model.provider,
                               csv_cell(result.model.path.name)])
        self.rows += 1
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
