"""The Teach tab: record or import examples of your own classes, train a head on residual features, export.

The engine is :mod:`resnet_edge.teach` (numpy + ONNX Runtime, no torch). The tab owns a teach project
folder (class folders of images + teach.json), so what is recorded survives a crash or a restart.

- Classes: add, rename, delete. Samples: hold "Hold to record" to save frames from ``frame_source`` at the
  set rate; import files or folders, or drop them on the tab; a thumbnail grid of the chosen class, where
  samples can be removed. ``frame_source`` returns the newest BGR frame (or None), the same array object
  until a new frame arrives; it is called from the UI thread and from the preview thread, so it must be
  thread-safe: the app's latest-frame slot is (``lambda: (f := slot.latest()) and f.image``).
- After training, a preview thread runs the taught head on the newest frame a few times a second and the
  tab shows the label, or "not sure" below the threshold.
- Train runs on a QThread (:class:`TrainWorker`) with a progress bar and Cancel; the previous model keeps
  running meanwhile and nothing is written when cancelled. When training ends the taught model is written
  to ``<project>/.teach/model.onnx`` and ``model_trained(path)`` is emitted, so the app can switch its live
  view to it; per-class held-out accuracy and the confusion matrix are shown.
- Export writes the model and its int8 twin (calibrated on the project's images) on a worker thread; a
  build without the ``onnx`` package (which the int8 tools need) writes the fp32 model and says why.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from PySide6.QtCore import QSize, Qt, QThread, QTimer, Signal
from PySide6.QtGui import QIcon, QImage, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QDoubleSpinBox, QFileDialog, QGroupBox, QHBoxLayout,
                               QInputDialog, QLabel, QListView, QListWidget, QListWidgetItem, QMessageBox,
                               QProgressBar, QPushButton, QSplitter, QTableWidget, QTableWidgetItem, QVBoxLayout,
                               QWidget)

from resnet_edge.errors import UserError
from resnet_edge.images import read_image
from resnet_edge.teach import (Cancelled, FeatureExtractor, TeachConfig, TeachProject, TeachResult, build_model,
                               export, int8_path, int8_tools_missing, scan_teach_folder, train)
from resnet_edge.atomicio import write_bytes_atomic
from resnet_edge.sources import describe_error

LIVE_MODEL = Path(".teach") / "model.onnx"  # inside the project: a hidden folder is never taken for a class
THUMB = 72  # thumbnail side in pixels
MAX_THUMBS = 300  # newest samples shown per class; the count says how many there are
FINE_TUNE_NOTE = ("The project folder is also training data for full fine-tuning where torch is installed: "
                  "resnet-edge train PROJECT --init CHECKPOINT --out RUN")

FrameSource = Callable[[], "np.ndarray | None"]


class TrainWorker(QThread):
    """Features, head and the live model file for one project; never touches a widget."""

    progressed = Signal(float, str)  # fraction, message
    succeeded = Signal(object, object, str)  # TeachResult, FeatureExtractor, path of the written model
    failed = Signal(str)  # one line
    cancelled = Signal()

    def __init__(self, root: Path, backbone: str, config: TeachConfig, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("teach-train")
        self.root, self.backbone, self.config = root, backbone, config
        self._stop = threading.Event()

    def cancel(self) -> None:
        self._stop.set()

    def run(self) -> None:
        try:
            data = scan_teach_folder(self.root)
            self.progressed.emit(0.0, f"loading the backbone {self.backbone}")
            extractor = FeatureExtractor(self.backbone, self.config.stages, self.config.threads)
            result = train(data, extractor, self.config, progress=self.progressed.emit, cancel=self._stop.is_set)
            if self._stop.is_set():
                raise Cancelled("after training")
            path = self.root / LIVE_MODEL
            write_bytes_atomic(path, build_model(result, extractor), force=True)  # the project's own file
        except Cancelled:
            self.cancelled.emit()
            return
        except Exception as error:  # a worker reports, it does not die silently
            self.failed.emit(describe_error(error) if not isinstance(error, UserError) else str(error))
            return
        self.succeeded.emit(result, extractor, str(path))


class ExportWorker(QThread):
    """Writes the taught model and its int8 twin."""

    succeeded = Signal(list)  # [Path]
    failed = Signal(str)

    def __init__(self, result: TeachResult, extractor: FeatureExtractor, output: Path, calib: Path,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("teach-export")
        self.result, self.extractor, self.output, self.calib = result, extractor, output, calib

    def run(self) -> None:
        try:
            # the save dialog has asked before replacing a file; a build without onnx writes fp32 only
            written = export(self.result, self.extractor, self.output, force=True, int8=int8_tools_missing() is None,
                             calib=self.calib, log=lambda message: None)
        except Exception as error:
            self.failed.emit(str(error) if isinstance(error, UserError) else describe_error(error))
            return
        self.succeeded.emit(written)


class PreviewWorker(QThread):
    """The taught head on the newest live frame, a few times a second, until stopped: the tab's own live
    check (the app's live view gets the model file through ``model_trained``)."""

    predicted = Signal(str, float, bool)  # label, top probability, sure (top probability >= the threshold)

    def __init__(self, source: FrameSource, result: TeachResult, extractor: FeatureExtractor, rate: float = 5.0,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("teach-preview")
        self.source, self.result, self.extractor, self.period = source, result, extractor, 1.0 / rate
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        while not self._stop.is_set():
            frame = self.source()
            if frame is not None:
                try:
                    probabilities = self.result.head.probabilities(self.extractor.features([frame]))[0]
                except Exception:  # a frame the model cannot take: skip it, the next one may do
                    probabilities = None
                if probabilities is not None:
                    best = int(probabilities.argmax())
                    top = float(probabilities[best])
                    self.predicted.emit(self.result.classes[best], top, top >= self.result.threshold)
            self._stop.wait(self.period)


def thumbnail(path: Path) -> QIcon:
    try:
        image = read_image(path)
    except UserError:
        image = np.full((THUMB, THUMB, 3), 128, np.uint8)
    height, width = image.shape[:2]
    scale = THUMB / max(height, width)
    small = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
    rgb = np.ascontiguousarray(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))
    qimage = QImage(rgb.data, rgb.shape[1], rgb.shape[0], rgb.strides[0], QImage.Format.Format_RGB888).copy()
    return QIcon(QPixmap.fromImage(qimage))


class TeachTab(QWidget):
    model_trained = Signal(str)  # path of the taught model, written when training ends
    exported = Signal(list)  # [fp32 path, int8 path]

    def __init__(self, project_root: Path, frame_source: FrameSource | None = None, backbones: list[str] | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAcceptDrops(True)
        self.project = TeachProject.open(project_root)
        self.frame_source = frame_source
        self.result: TeachResult | None = None
        self.extractor: FeatureExtractor | None = None
        self.worker: TrainWorker | None = None
        self.preview: PreviewWorker | None = None
        self.export_worker: ExportWorker | None = None
        self.recorded = 0  # frames saved by the current (or last) hold of the record button
        self._thumb_cache: dict[Path, QIcon] = {}
        self._last_recorded: np.ndarray | None = None  # the same frame object is not saved twice

        # classes
        self.class_list = QListWidget()
        self.class_list.currentTextChanged.connect(lambda _: self.refresh_samples())
        add_button, rename_button, delete_button = QPushButton("Add…"), QPushButton("Rename…"), QPushButton("Delete")
        add_button.clicked.connect(self._ask_add_class)
        rename_button.clicked.connect(self._ask_rename_class)
        delete_button.clicked.connect(self._ask_delete_class)
        class_buttons = QHBoxLayout()
        for button in (add_button, rename_button, delete_button):
            class_buttons.addWidget(button)
        class_box = QGroupBox("Classes")
        class_layout = QVBoxLayout(class_box)
        class_layout.addWidget(self.class_list, 1)
        class_layout.addLayout(class_buttons)

        # samples of the chosen class
        self.record_button = QPushButton("Hold to record")
        self.record_button.pressed.connect(self.start_recording)
        self.record_button.released.connect(self.stop_recording)
        self.rate_spin = QDoubleSpinBox(minimum=0.5, maximum=30.0, value=8.0, suffix=" frames/s", singleStep=1.0)
        self.counter = QLabel("0 recorded")
        self.record_timer = QTimer(self)
        self.record_timer.timeout.connect(self.record_frame)
        import_files, import_folder = QPushButton("Import images…"), QPushButton("Import folder…")
        import_files.clicked.connect(self._ask_import_files)
        import_folder.clicked.connect(self._ask_import_folder)
        self.thumbs = QListWidget()
        self.thumbs.setViewMode(QListView.ViewMode.IconMode)
        self.thumbs.setIconSize(QSize(THUMB, THUMB))
        self.thumbs.setResizeMode(QListView.ResizeMode.Adjust)
        self.thumbs.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        remove_button = QPushButton("Remove selected")
        remove_button.clicked.connect(self.remove_selected)
        self.samples_label = QLabel()
        record_row = QHBoxLayout()
        for widget in (self.record_button, self.rate_spin, self.counter, import_files, import_folder, remove_button):
            record_row.addWidget(widget)
        sample_box = QGroupBox("Samples")
        sample_layout = QVBoxLayout(sample_box)
        sample_layout.addLayout(record_row)
        sample_layout.addWidget(self.samples_label)
        sample_layout.addWidget(self.thumbs, 1)

        # training and results
        self.backbone_combo = QComboBox()
        self.backbone_combo.setEditable(True)  # a path to any model with our contract
        self.backbone_combo.addItems(backbones or self._shipped_backbones())
        offered = [self.backbone_combo.itemText(i) for i in range(self.backbone_combo.count())]
        # the project's backbone where it is here (or a path); else the first offered (a bundle ships fewer models)
        wanted = self.project.backbone
        if wanted not in offered and offered and not wanted.endswith(".onnx"):
            wanted = offered[0]
        self.backbone_combo.setCurrentText(wanted)
        self.train_button = QPushButton("Train")
        self.train_button.clicked.connect(lambda: self.train())
        self.cancel_button = QPushButton("Cancel", enabled=False)
        self.cancel_button.clicked.connect(self.cancel)
        self.export_button = QPushButton("Export fp32 + int8…", enabled=False)
        self.export_button.clicked.connect(self._ask_export)
        self.progress = QProgressBar(minimum=0, maximum=100, value=0)
        self.live_label = QLabel("live: no taught model yet")
        self.status = QLabel("Add classes, record or import a few examples of each, then Train.")
        self.status.setWordWrap(True)
        self.accuracy_table = QTableWidget(0, 3)
        self.accuracy_table.setHorizontalHeaderLabels(["class", "held out", "accuracy"])
        self.confusion_table = QTableWidget(0, 0)
        self.confusion_table.setToolTip("rows: true class, columns: predicted, on the held-out samples")
        note = QLabel(FINE_TUNE_NOTE)
        note.setWordWrap(True)
        note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        train_row = QHBoxLayout()
        train_row.addWidget(QLabel("Backbone"))
        train_row.addWidget(self.backbone_combo, 1)
        for button in (self.train_button, self.cancel_button, self.export_button):
            train_row.addWidget(button)
        train_box = QGroupBox("Train")
        train_layout = QVBoxLayout(train_box)
        train_layout.addLayout(train_row)
        train_layout.addWidget(self.progress)
        train_layout.addWidget(self.status)
        train_layout.addWidget(self.live_label)
        tables = QHBoxLayout()
        tables.addWidget(self.accuracy_table, 1)
        tables.addWidget(self.confusion_table, 2)
        train_layout.addLayout(tables, 1)
        train_layout.addWidget(note)

        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(sample_box)
        right.addWidget(train_box)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(class_box)
        splitter.addWidget(right)
        splitter.setSizes([240, 900])
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"Project: {self.project.root}"))
        layout.addWidget(splitter, 1)
        self.refresh_classes()

    @staticmethod
    def _shipped_backbones() -> list[str]:
        """Shipped and fetched fp32 models, by name (the picker's catalog)."""
        from resnet_edge.catalog import catalog
        from resnet_edge.modelzoo import user_models_dir

        return [entry.name for entry in catalog([], [user_models_dir()])
                if entry.precision == "fp32" and not entry.problem and entry.origin in ("shipped", "fetched")]

    # --- classes and samples ------------------------------------------------------------------------------

    @property
    def current_class(self) -> str | None:
        item = self.class_list.currentItem()
        return item.data(Qt.ItemDataRole.UserRole) if item else None

    def refresh_classes(self, select: str | None = None) -> None:
        keep = select or self.current_class
        self.class_list.blockSignals(True)
        self.class_list.clear()
        for name in self.project.classes():
            item = QListWidgetItem(f"{name} ({len(self.project.samples(name))})")
            item.setData(Qt.ItemDataRole.UserRole, name)
            self.class_list.addItem(item)
            if name == keep:
                self.class_list.setCurrentItem(item)
        if self.class_list.currentItem() is None and self.class_list.count():
            self.class_list.setCurrentRow(0)
        self.class_list.blockSignals(False)
        self.refresh_samples()

    def refresh_samples(self) -> None:
        self.thumbs.clear()
        name = self.current_class
        samples = self.project.samples(name) if name else []
        self.samples_label.setText(f"{name}: {len(samples)} samples" if name else "no class chosen")
        for path in samples[-MAX_THUMBS:]:
            if path not in self._thumb_cache:  # decoded once: a refresh after each recording stays quick
                self._thumb_cache[path] = thumbnail(path)
            item = QListWidgetItem(self._thumb_cache[path], "")
            item.setData(Qt.ItemDataRole.UserRole, str(path))
            item.setToolTip(path.name)
            self.thumbs.addItem(item)

    def _show_error(self, message: str) -> None:
        self.status.setText(f"error: {message}")

    def add_class(self, name: str) -> str | None:
        try:
            clean = self.project.add_class(name)
        except UserError as error:
            self._show_error(str(error))
            return None
        self.refresh_classes(select=clean)
        return clean

    def rename_class(self, old: str, new: str) -> str | None:
        try:
            clean = self.project.rename_class(old, new)
        except UserError as error:
            self._show_error(str(error))
            return None
        self.refresh_classes(select=clean)
        return clean

    def delete_class(self, name: str) -> None:
        self.project.delete_class(name)
        self.refresh_classes()

    def import_paths(self, paths: list[Path]) -> int:
        if self.current_class is None:
            self._show_error("add a class first")
            return 0
        try:
            added, skipped = self.project.import_images(self.current_class, paths)
        except UserError as error:
            self._show_error(str(error))
            return 0
        self.status.setText(f"imported {len(added)} image(s) into {self.current_class}"
                            + (f"; skipped {len(skipped)}: {skipped[0]}" if skipped else ""))
        self.refresh_classes()
        return len(added)

    def remove_selected(self) -> None:
        for item in self.thumbs.selectedItems():
            self.project.remove_sample(item.data(Qt.ItemDataRole.UserRole))
        self.refresh_classes()

    def _ask_add_class(self) -> None:
        name, ok = QInputDialog.getText(self, "Add class", "Class name:")
        if ok and name.strip():
            self.add_class(name)

    def _ask_rename_class(self) -> None:
        if self.current_class is None:
            return
        name, ok = QInputDialog.getText(self, "Rename class", "New name:", text=self.current_class)
        if ok and name.strip():
            self.rename_class(self.current_class, name)

    def _ask_delete_class(self) -> None:
        name = self.current_class
        if name and QMessageBox.question(
                self, "Delete class", f"Delete {name} and its {len(self.project.samples(name))} samples?") \
                == QMessageBox.StandardButton.Yes:
            self.delete_class(name)

    def _ask_import_files(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Import images", "", "Images (*.jpg *.jpeg *.png *.bmp *.webp)")
        if files:
            self.import_paths([Path(f) for f in files])

    def _ask_import_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Import a folder of images")
        if folder:
            self.import_paths([Path(folder)])

    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        paths = [Path(url.toLocalFile()) for url in event.mimeData().urls() if url.isLocalFile()]
        if paths:
            self.import_paths(paths)
            event.acceptProposedAction()

    # --- recording ----------------------------------------------------------------------------------------

    def start_recording(self) -> None:
        if self.current_class is None:
            self._show_error("add a class first, then hold the button to record it")
            return
        if self.frame_source is None:
            self._show_error("no live source to record from")
            return
        self.recorded = 0
        self.counter.setText("0 recorded")
        self.record_timer.start(max(1, round(1000 / self.rate_spin.value())))

    def stop_recording(self) -> None:
        if self.record_timer.isActive():
            self.record_timer.stop()
            self.refresh_classes()

    def record_frame(self) -> None:
        """Save the newest frame into the chosen class (one timer tick)."""
        frame = self.frame_source() if self.frame_source else None
        if frame is None or frame is self._last_recorded or self.current_class is None:
            return  # no frame yet, or the camera has not delivered a new one since the last tick
        self._last_recorded = frame
        try:
            self.project.add_frame(self.current_class, frame)
        except UserError as error:  # a full disk: stop, keep what was saved
            self.record_timer.stop()
            self._show_error(str(error))
            self.refresh_classes()
            return
        self.recorded += 1
        self.counter.setText(f"{self.recorded} recorded")

    # --- training and export ------------------------------------------------------------------------------

    @property
    def training(self) -> bool:
        return self.worker is not None

    def train(self, config: TeachConfig | None = None) -> bool:
        """Start training on a worker thread; False when one is running."""
        if self.worker is not None:
            return False
        backbone = self.backbone_combo.currentText().strip()
        if backbone != self.project.backbone:
            self.project.settings["backbone"] = backbone
            self.project.save()
        self.worker = TrainWorker(self.project.root, backbone, config or self.project.config, parent=self)
        self.worker.progressed.connect(self._on_progress)
        self.worker.succeeded.connect(self._on_trained)
        self.worker.failed.connect(lambda message: self._finish(f"error: {message}"))
        self.worker.cancelled.connect(lambda: self._finish("cancelled; the previous model keeps running"))
        self.worker.finished.connect(self._on_thread_finished)
        self.train_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        self.status.setText("training…")
        self.worker.start()
        return True

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            self.status.setText("cancelling…")

    def _on_progress(self, fraction: float, message: str) -> None:
        self.progress.setValue(round(100 * fraction))
        self.status.setText(message)

    def _on_trained(self, result: TeachResult, extractor: FeatureExtractor, path: str) -> None:
        self.result, self.extractor = result, extractor
        self.show_result(result)
        self.export_button.setEnabled(True)
        self._finish(f"trained: held-out accuracy {100 * result.accuracy:.1f}%, 'not sure' below "
                     f"{result.threshold:.2f}; the live view can use {path}")
        self.project.settings["last"] = {"accuracy": round(result.accuracy, 4), "threshold": round(result.threshold, 6),
                                         "classes": result.classes}
        self.project.save()
        self.start_preview()
        self.model_trained.emit(path)

    def start_preview(self) -> None:
        """Run the taught head on the live source (replacing a preview of an earlier model)."""
        self.stop_preview()
        if self.frame_source is None or self.result is None or self.extractor is None:
            return
        self.preview = PreviewWorker(self.frame_source, self.result, self.extractor, parent=self)
        self.preview.predicted.connect(self._on_preview)
        self.preview.start()

    def stop_preview(self) -> None:
        if self.preview is not None:
            self.preview.stop()
            self.preview.wait()  # it sleeps at most one period between frames
            self.preview.deleteLater()
            self.preview = None

    def _on_preview(self, label: str, probability: float, sure: bool) -> None:
        self.live_label.setText(f"live: {label} {probability:.2f}" if sure else
                                f"live: not sure (best {label} {probability:.2f})")

    def show_result(self, result: TeachResult) -> None:
        self.accuracy_table.setRowCount(len(result.classes))
        for row, (name, held, accuracy) in enumerate(zip(result.classes, result.holdout_counts, result.holdout_accuracy)):
            for column, text in enumerate((name, str(held), f"{100 * accuracy:.0f}%")):
                self.accuracy_table.setItem(row, column, QTableWidgetItem(text))
        count = len(result.classes)
        self.confusion_table.setRowCount(count)
        self.confusion_table.setColumnCount(count)
        self.confusion_table.setHorizontalHeaderLabels(result.classes)
        self.confusion_table.setVerticalHeaderLabels(result.classes)
        for i in range(count):
            for j in range(count):
                self.confusion_table.setItem(i, j, QTableWidgetItem(str(result.confusion[i][j])))

    def _finish(self, message: str) -> None:
        self.status.setText(message)
        self.cancel_button.setEnabled(False)

    def _on_thread_finished(self) -> None:
        self.worker.deleteLater()
        self.worker = None
        self.train_button.setEnabled(True)

    def export_to(self, output: Path) -> bool:
        """Write the taught model and its int8 twin on a worker thread; False if there is nothing to export
        or an export is running."""
        if self.result is None or self.extractor is None or self.export_worker is not None:
            return False
        self.export_worker = ExportWorker(self.result, self.extractor, Path(output), self.project.root, parent=self)
        self.export_worker.succeeded.connect(self._on_exported)
        self.export_worker.failed.connect(lambda message: self.status.setText(f"export failed: {message}"))
        self.export_worker.finished.connect(self._on_export_finished)
        self.export_button.setEnabled(False)
        self.status.setText(f"exporting {output} and {int8_path(output).name}…")
        self.export_worker.start()
        return True

    def _on_exported(self, written: list) -> None:
        missing = int8_tools_missing()
        self.status.setText("exported " + ", ".join(str(p) for p in written) + (f" ({missing})" if missing else ""))
        self.exported.emit([str(p) for p in written])

    def _on_export_finished(self) -> None:
        self.export_worker.deleteLater()
        self.export_worker = None
        self.export_button.setEnabled(self.result is not None)

    def _ask_export(self) -> None:
        output, _ = QFileDialog.getSaveFileName(self, "Export the taught model", str(Path.home() / "taught.onnx"),
                                                "ONNX models (*.onnx)")
        if output:
            self.export_to(Path(output if output.endswith(".onnx") else output + ".onnx"))

    def shutdown(self) -> None:
        """Stop recording and the preview, cancel training and join the threads (training stops at its next
        batch)."""
        self.record_timer.stop()
        self.stop_preview()
        for worker in (self.worker, self.export_worker):
            if worker is not None and worker.isRunning():
                if isinstance(worker, TrainWorker):
                    worker.cancel()
                if not worker.wait(10000):
                    print("resnet-edge: waiting for the teach worker to stop…", file=sys.stderr)
                    worker.wait()
