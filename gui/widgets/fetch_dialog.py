""""Get ImageNet models...": torchvision's published ResNets, downloaded on a worker thread with progress
and Cancel, then exported into the user's models folder.

    dialog = FetchDialog(parent)
    dialog.model_ready.connect(window.open_model)   # path of the exported .onnx
    dialog.open()                                   # may be opened again after it was closed

The download is resnet_edge.fetch.download (resumable, hash-checked) on FetchWorker, a QThread in the style
of gui/workers.py: the newest request wins, Cancel sets a flag the download loop checks after every chunk
(the .part is kept, so the next Download resumes), stop() + wait() on close; never terminate(). The export
needs torch, which the app does not: when torch is installed, `resnet-edge fetch NAME` runs in a child
process (killed on Cancel); otherwise the dialog says which command to run.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import threading
import time
from pathlib import Path

from PySide6.QtCore import Qt, QThread, Signal
from PySide6.QtWidgets import (QAbstractItemView, QDialog, QHBoxLayout, QHeaderView, QLabel, QProgressBar,
                               QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from resnet_edge.errors import UserError
from resnet_edge.fetch import DownloadCancelled, cache_dir, download, part_path
from resnet_edge.modelzoo import user_models_dir
from resnet_edge.sources import describe_error
from resnet_edge.weights import WeightsPreset, all_presets

COLUMNS = ("model", "weights", "MiB", "acc@1", "acc@5", "on this machine")


def can_export() -> bool:
    """Exporting needs torch and a Python to run `resnet-edge fetch` in (not the packaged app)."""
    if getattr(sys, "frozen", False):
        return False
    try:
        return importlib.util.find_spec("torch") is not None  # found, not imported: the app stays torch-free
    except (ImportError, ValueError):
        return False


class FetchWorker(QThread):
    """Downloads (and exports) one preset at a time, off the UI thread."""

    progress = Signal(int, int)  # bytes so far, total bytes (-1: unknown)
    message = Signal(str)  # a line for the status label
    exporting = Signal(str)  # model name: the export child process started
    finished_model = Signal(str, str)  # model name, exported .onnx path ("" when not exported)
    failed = Signal(str)  # one line
    cancelled = Signal(str)  # one line: what was kept

    def __init__(self, cache: Path, models: Path, export: bool, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("fetch")
        self.cache, self.models, self.export = cache, models, export
        self._cond = threading.Condition(threading.Lock())
        self._pending: WeightsPreset | None = None
        self._cancel = threading.Event()
        self._stopping = False

    def request(self, preset: WeightsPreset) -> None:
        with self._cond:
            self._pending = preset
            self._cancel.clear()
            self._cond.notify_all()

    def cancel(self) -> None:
        self._cancel.set()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cancel.set()
            self._cond.notify_all()

    def resume(self) -> None:
        """Start (again, after stop() and wait()): the dialog runs its worker only while it is shown."""
        with self._cond:
            self._stopping = False
            self._pending = None
        self.start()

    def run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopping or self._pending is not None)
                if self._stopping:
                    return
                preset, self._pending = self._pending, None
            try:
                self._fetch(preset)
            except DownloadCancelled:
                self.cancelled.emit(f"cancelled; {part_path(self.cache / preset.filename).name} kept: Download "
                                    "resumes it")
            except UserError as error:
                self.failed.emit(str(error))
            except Exception as error:  # a bug must not kill the thread silently
                self.failed.emit(describe_error(error))

    def _fetch(self, preset: WeightsPreset) -> None:
        path = download(preset.url, self.cache / preset.filename, sha256=preset.sha256,
                        hash_prefix=preset.hash_prefix, show_progress=False,
                        on_progress=lambda done, total: self.progress.emit(done, -1 if total is None else total),
                        cancelled=self._cancel.is_set, log=self.message.emit)
        output = self.models / f"{preset.model_name}.onnx"
        if output.is_file():
            self.finished_model.emit(preset.model_name, str(output))
            return
        if not self.export:
            self.message.emit(f"downloaded {path.name}; to make a model of it, install torch (pip install -e "
                              f"'.[train]') and run: resnet-edge fetch {preset.model_name}")
            self.finished_model.emit(preset.model_name, "")
            return
        self.exporting.emit(preset.model_name)
        self._run_export(preset)
        self.finished_model.emit(preset.model_name, str(output))

    def _run_export(self, preset: WeightsPreset) -> None:
        """`resnet-edge fetch NAME` in a child process (it reuses the download); killed on Cancel or stop."""
        command = [sys.executable, "-m", "resnet_edge.cli", "fetch", preset.model_name, "--no-progress",
                   "--cache-dir", str(self.cache), "--models-dir", str(self.models)]
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        while child.poll() is None:
            if self._cancel.is_set():
                child.kill()
                child.wait()
                raise DownloadCancelled("export cancelled")
            time.sleep(0.1)
        if child.returncode != 0:
            lines = [line for line in (child.stderr.read() if child.stderr else "").splitlines() if line.strip()]
            raise UserError(lines[-1] if lines else f"the export failed (exit {child.returncode})")


class FetchDialog(QDialog):
    """The presets in a table; Download / Cancel; a progress bar with bytes, rate and time left."""

    model_ready = Signal(str)  # the exported .onnx, for the app to open

    def __init__(self, parent: QWidget | None = None, *, cache: Path | None = None, models: Path | None = None,
                 export: bool | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Get ImageNet models")
        self.cache, self.models = cache or cache_dir(), models or user_models_dir()
        self.presets = all_presets()
        self.table = QTableWidget(len(self.presets), len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.status = QLabel("Pick a model: its file comes from torchvision's official address and is checked "
                             "against its published hash.")
        self.status.setWordWrap(True)
        self.download_button = QPushButton("Download")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        close_button = QPushButton("Close")
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        for button in (self.download_button, self.cancel_button, close_button):
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addLayout(buttons)
        self.resize(820, 420)

        self.worker = FetchWorker(self.cache, self.models, can_export() if export is None else export, self)
        self.worker.progress.connect(self._on_progress)
        self.worker.message.connect(self.status.setText)
        self.worker.exporting.connect(self._on_exporting)
        self.worker.finished_model.connect(self._on_finished)
        self.worker.failed.connect(lambda line: self._done(f"failed: {line}"))
        self.worker.cancelled.connect(self._done)
        self.download_button.clicked.connect(self.start_download)
        self.cancel_button.clicked.connect(self.worker.cancel)
        close_button.clicked.connect(self.reject)
        self._started = 0.0
        self._first_bytes = 0
        self.refresh()
        self.table.selectRow(next((i for i, p in enumerate(self.presets) if p.model_name == "imagenet-resnet50"), 0))

    def refresh(self) -> None:
        for row, preset in enumerate(self.presets):
            values = (preset.model_name, preset.tag if not preset.name else preset.name,
                      f"{preset.file_size_mib:.1f}" if preset.file_size_mib else "?",
                      f"{preset.acc1:.2f}" if preset.acc1 else "?", f"{preset.acc5:.2f}" if preset.acc5 else "?",
                      self._state(preset))
            for column, value in enumerate(values):
                item = QTableWidgetItem(value)
                if column >= 2 and column <= 4:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, column, item)

    def _state(self, preset: WeightsPreset) -> str:
        if (self.models / f"{preset.model_name}.onnx").is_file():
            return "model ready" + (" (+int8)" if (self.models / f"{preset.model_name}.int8.onnx").is_file() else "")
        if (self.cache / preset.filename).is_file():
            return "downloaded"
        return "partly downloaded" if part_path(self.cache / preset.filename).is_file() else ""

    def selected(self) -> WeightsPreset:
        rows = self.table.selectionModel().selectedRows()
        return self.presets[rows[0].row() if rows else 0]

    def start_download(self) -> None:
        preset = self.selected()
        self.download_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        self._started, self._first_bytes = time.monotonic(), -1
        self.worker.request(preset)

    def _on_progress(self, done: int, total: int) -> None:
        if self._first_bytes < 0:  # a resume starts part-way: the rate counts this run's bytes only
            self._first_bytes = done
        elapsed = max(time.monotonic() - self._started, 1e-6)
        rate = (done - self._first_bytes) / elapsed
        if total > 0:
            self.progress.setValue(int(100 * done / total))
            left = (total - done) / rate if rate > 0 else float("inf")
            eta = f", {left:.0f} s left" if left != float("inf") else ""
            self.progress.setFormat(f"%p%  {done / 2**20:.1f} / {total / 2**20:.1f} MiB, {rate / 2**20:.1f} MiB/s{eta}")
        else:
            self.progress.setRange(0, 0)  # unknown size: a busy bar
            self.progress.setFormat(f"{done / 2**20:.1f} MiB, {rate / 2**20:.1f} MiB/s")

    def _on_exporting(self, name: str) -> None:
        self.progress.setRange(0, 0)
        self.progress.setFormat("exporting...")
        self.status.setText(f"exporting {name} to ONNX and checking it against PyTorch (a minute or so)")

    def _on_finished(self, name: str, path: str) -> None:
        if path:
            self._done(f"{name} is ready: {path}")
            self.model_ready.emit(path)
        else:
            self._done(self.status.text())

    def _done(self, line: str) -> None:
        self.status.setText(line)
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 100)
        self.progress.setFormat("%p%")
        self.download_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.refresh()

    def showEvent(self, event) -> None:
        if not self.worker.isRunning():
            self.worker.resume()
            self.refresh()
        super().showEvent(event)

    def shutdown(self) -> None:
        """Stop the worker (a download in flight stops at its next chunk, keeping its .part) and join it."""
        self.worker.stop()
        self.worker.wait()

    def done(self, result: int) -> None:  # Close, Esc and the window's X all come here
        self.shutdown()
        super().done(result)

    def closeEvent(self, event) -> None:
        self.shutdown()
        super().closeEvent(event)
