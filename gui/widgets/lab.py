"""The Lab tab: the residual-learning lab's figures, and the narrow-network experiment run live.

Figures are the PNG files the `resnet-edge lab ...` commands write: every *.png in the chosen folder
and one level below (``lab/narrow/boundaries.png``), newest first. "Run" trains the narrow nets of
:mod:`resnet_edge.lab.narrow` (numpy only, so the app stays torch-free) on a worker thread; progress
comes back as signals, and Cancel makes the progress callback return False, which stops run_narrow
between steps. Matplotlib draws the figure files on that worker thread and is imported only there, so
the app starts without it.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from PySide6.QtCore import Qt, QThread, Signal
from PySide6.QtGui import QFont, QPixmap, QResizeEvent
from PySide6.QtWidgets import (QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QListWidget,
                               QListWidgetItem, QPlainTextEdit, QProgressBar, QPushButton, QScrollArea, QSizePolicy,
                               QSpinBox, QSplitter,
                               QVBoxLayout, QWidget)

from resnet_edge.lab.narrow import NarrowCancelled, NarrowConfig, format_summary, run_narrow, write_narrow

from ..workers import describe_error

LIVE_FOLDER = "narrow-live"  # where a run from the tab writes, inside the figures folder (replaced each run)
MIN_SEEDS = NarrowConfig().seeds  # fewer seeds than the command line's default cannot judge the claim


def verdict_line(holds: bool | None, measured: str, seeds: int) -> str:
    """The verdict as the tab shows it: HOLDS / DOES NOT HOLD by the command line's rule, but only on at least
    MIN_SEEDS seeds (the rule asks most seeds to succeed: with 2 seeds one unlucky seed decides)."""
    from resnet_edge.lab.common import verdict_word

    if seeds < MIN_SEEDS:
        return f"too few seeds to judge ({seeds}; the claim is judged on {MIN_SEEDS} or more): {measured}"
    return f"{verdict_word(holds)}: {measured}"


class NarrowWorker(QThread):
    """Runs one narrow-network experiment and writes its files; never touches a widget."""

    progressed = Signal(int, int, str)  # steps done, steps in all, which net
    succeeded = Signal(dict, str, str)  # {name: file path} (empty without matplotlib), the table, the verdict line
    failed = Signal(str)  # one line
    cancelled = Signal()

    def __init__(self, config: NarrowConfig, out: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("lab-narrow")
        self.config, self.out = config, out
        self._stopping = threading.Event()  # the app's one stop idiom (gui/workers.py)

    def stop(self) -> None:
        self._stopping.set()

    cancel = stop  # what the Cancel button calls

    def _progress(self, done: int, total: int, message: str) -> bool:
        self.progressed.emit(done, total, message)
        return not self._stopping.is_set()  # False stops run_narrow at its next report (every 100 steps)

    def run(self) -> None:
        from resnet_edge.lab.common import NO_MATPLOTLIB

        try:
            result = run_narrow(self.config, self._progress)
            if self._stopping.is_set():
                raise NarrowCancelled("after the last step")
            self.progressed.emit(1, 1, "drawing the figures")
            files = write_narrow(result, self.out, force=True)
            # the packaged app leaves matplotlib out (size): the numbers, no figures
            note = "" if "boundaries" in files else f"\n{NO_MATPLOTLIB}"
        except NarrowCancelled:
            self.cancelled.emit()
            return
        except Exception as error:  # a worker thread must report, not die silently (e.g. no matplotlib)
            self.failed.emit(describe_error(error))
            return
        verdict = result.verdict()
        line = verdict_line(verdict["holds"], verdict["measured"], self.config.seeds)
        report = f"{format_summary(result)}\n\nverdict: {line}\n{result.seconds:.1f} s{note}"
        self.succeeded.emit(files, report, line)


def _spin(low: int, high: int, value: int, step: int = 1) -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)  # before the value, which would be clipped to the default range 0..99
    box.setValue(value)
    box.setSingleStep(step)
    return box


class LabTab(QWidget):
    """Figures from a folder on the right, a list of them on the left, the live experiment above."""

    def __init__(self, folder: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.folder = Path(folder)
        self.worker: NarrowWorker | None = None
        self.shown: Path | None = None  # the figure on display
        self._pixmap = QPixmap()
        self._message = "no figure"  # shown in place of a figure

        self.folder_label = QLabel()
        self.folder_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # a long path must not widen the window past a small screen: clipped, the whole path in the tooltip
        self.folder_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        choose = QPushButton("Choose folder…")
        choose.clicked.connect(self._choose_folder)
        reload_button = QPushButton("Reload")
        reload_button.clicked.connect(lambda: self.reload())
        folder_row = QHBoxLayout()
        folder_row.addWidget(QLabel("Figures in"))
        folder_row.addWidget(self.folder_label, 1)
        folder_row.addWidget(choose)
        folder_row.addWidget(reload_button)

        # the live run: the command line's defaults (5 seeds x 4000 steps), so the tab and the CLI judge alike
        defaults = NarrowConfig()
        self.seeds_spin = _spin(1, 10, defaults.seeds)
        self.steps_spin = _spin(100, 20000, defaults.steps, step=500)
        self.depth_spin = _spin(1, 8, 5)
        self.run_button = QPushButton("Run narrow-network experiment")
        self.run_button.clicked.connect(lambda: self.run_narrow())
        self.cancel_button = QPushButton("Cancel", enabled=False)
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar(minimum=0, maximum=1, value=0)
        self.status = QLabel("Plain nets with 2 units per layer against residual nets with 1 unit per block, "
                             "on a disk inside a ring (claim 1 of the lab).")
        self.status.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Seeds", self.seeds_spin)
        form.addRow("Adam steps", self.steps_spin)
        form.addRow("Depths 1 to", self.depth_spin)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        # the verdict goes first, where it is seen, not at the bottom of the scrolled report
        self.verdict_label = QLabel("no run yet")
        self.verdict_label.setWordWrap(True)
        bold = QFont(self.verdict_label.font())
        bold.setBold(True)
        self.verdict_label.setFont(bold)
        self.verdict_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        run_box = QGroupBox("Narrow networks, live")
        run_layout = QVBoxLayout(run_box)
        run_layout.addWidget(self.verdict_label)
        run_layout.addLayout(form)
        run_layout.addLayout(buttons)
        run_layout.addWidget(self.progress)
        run_layout.addWidget(self.status)
        # the command line's table and verdict: fixed-width and unwrapped to keep the columns, scrolls sideways
        self.report = QPlainTextEdit(readOnly=True)
        self.report.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        font = QFont("monospace", 8)
        font.setStyleHint(QFont.StyleHint.Monospace)
        self.report.setFont(font)
        self.report.setPlaceholderText("the table and verdict of a run appear here")
        run_layout.addWidget(self.report)

        self.figure_list = QListWidget()
        self.figure_list.currentItemChanged.connect(self._on_figure_chosen)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(run_box)
        left_layout.addWidget(QLabel("Figures (newest first)"))
        left_layout.addWidget(self.figure_list, 1)

        self.figure_label = QLabel("no figure")
        self.figure_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.scroll = QScrollArea()
        self.scroll.setWidget(self.figure_label)
        self.scroll.setWidgetResizable(True)

        left_scroll = QScrollArea()  # a short window (a 200 %-scaled laptop) scrolls the controls, never squeezes them
        left_scroll.setWidget(left)
        left_scroll.setWidgetResizable(True)
        left_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        left_scroll.setMinimumWidth(260)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left_scroll)
        splitter.addWidget(self.scroll)
        splitter.setSizes([420, 980])
        layout = QVBoxLayout(self)
        layout.addLayout(folder_row)
        layout.addWidget(splitter, 1)
        self.set_folder(self.folder)

    # --- figures ----------------------------------------------------------------------------------

    def set_folder(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder_label.setText(str(self.folder))
        self.folder_label.setToolTip(str(self.folder))
        self.reload()

    def figures(self) -> list[Path]:
        """PNG files in the folder and one level below, newest first."""
        if not self.folder.is_dir():
            return []
        found = [p for pattern in ("*.png", "*/*.png") for p in self.folder.glob(pattern) if not p.name.startswith(".")]
        return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)

    def reload(self, select: Path | None = None) -> None:
        """List the folder's figures again and show ``select`` (default: the one shown, else the newest)."""
        keep = select or self.shown
        self.figure_list.blockSignals(True)
        self.figure_list.clear()
        for path in self.figures():
            item = QListWidgetItem(str(path.relative_to(self.folder)))
            item.setData(Qt.ItemDataRole.UserRole, str(path))
            self.figure_list.addItem(item)
        self.figure_list.blockSignals(False)
        if self.figure_list.count() == 0:
            self.show_figure(None, f"no figures in {self.folder} yet: press Run, or write some with\n"
                                   f"resnet-edge lab narrow --out {self.folder / 'narrow'}")
            return
        paths = [Path(self.figure_list.item(i).data(Qt.ItemDataRole.UserRole)) for i in range(self.figure_list.count())]
        self.figure_list.setCurrentRow(paths.index(keep) if keep in paths else 0)  # shows it

    def show_figure(self, path: Path | None, message: str = "no figure") -> None:
        """Show a PNG file; without one (or an unreadable one), ``message``."""
        self.shown = path
        self._pixmap = QPixmap(str(path)) if path else QPixmap()
        self._message = f"{path}: not a readable PNG" if path and self._pixmap.isNull() else message
        self._fit()

    def _on_figure_chosen(self, item: QListWidgetItem | None, _previous: QListWidgetItem | None) -> None:
        self.show_figure(Path(item.data(Qt.ItemDataRole.UserRole)) if item else None)

    def _fit(self) -> None:
        """The figure scaled to the view's width (never enlarged: a blown-up PNG only blurs)."""
        if self._pixmap.isNull():
            self.figure_label.setText(self._message)  # replaces any picture shown before
            return
        width = min(self._pixmap.width(), max(100, self.scroll.viewport().width() - 4))
        self.figure_label.setPixmap(self._pixmap.scaledToWidth(width, Qt.TransformationMode.SmoothTransformation))

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._fit()

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of lab figures", str(self.folder))
        if folder:
            self.set_folder(Path(folder))

    # --- the live experiment ----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """A run started and its thread's end not yet handled (its last signals are handled before that)."""
        return self.worker is not None

    def run_narrow(self, config: NarrowConfig | None = None) -> bool:
        """Start a run (the spin boxes' settings unless ``config`` is given); False if one is running."""
        if self.running:
            return False
        config = config or NarrowConfig(depths=tuple(range(1, self.depth_spin.value() + 1)),
                                        seeds=self.seeds_spin.value(), steps=self.steps_spin.value())
        self.worker = NarrowWorker(config, self.folder / LIVE_FOLDER, parent=self)
        self.worker.progressed.connect(self._on_progress)
        self.worker.succeeded.connect(self._on_succeeded)
        self.worker.failed.connect(lambda message: self._finish(f"failed: {message}"))
        self.worker.cancelled.connect(lambda: self._finish("cancelled"))
        self.worker.finished.connect(self._on_thread_finished)  # after the signals above: they were sent first
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status.setText(f"training {len(config.depths) * 2} kinds of net x {config.seeds} seeds x "
                            f"{config.restarts} restarts…")
        self.worker.start()
        return True

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            self.status.setText("cancelling…")

    def _on_progress(self, done: int, total: int, message: str) -> None:
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        self.status.setText(message)

    def _on_succeeded(self, files: dict, report: str, verdict: str) -> None:
        self.report.setPlainText(report)
        self.verdict_label.setText(f"verdict: {verdict}")
        if "boundaries" in files:
            self._finish(f"done: wrote {self.folder / LIVE_FOLDER}")
            self.reload(select=Path(files["boundaries"]))
        else:
            self._finish("done, without figures: matplotlib is not installed")

    def _finish(self, message: str) -> None:
        self.status.setText(message)
        self.cancel_button.setEnabled(False)

    def _on_thread_finished(self) -> None:
        self.worker.deleteLater()
        self.worker = None
        self.run_button.setEnabled(True)  # only now: a click before the thread ended would be refused

    def shutdown(self) -> None:
        """Stop a run and join its thread (it stops within 100 steps, or after the figure it is drawing)."""
        if self.worker is not None and self.worker.isRunning():
            self.worker.stop()
            if not self.worker.wait(5000):
                print("resnet-edge: waiting for the lab experiment to stop…", file=sys.stderr)
                self.worker.wait()
