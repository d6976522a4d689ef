"""The resnet-edge desktop app: live video, the top-5 classes, and what every residual block adds.

    python -m gui [--model PATH_OR_NAME] [--source auto|demo|0|clip.mp4|photo.jpg|folder]
                  [--provider auto|cpu|cuda|directml|openvino] [--precision fp32|int8] [--threads N]

The UI thread only draws. A CaptureWorker reads the source into a one-frame slot, an InferenceWorker
classifies the newest frame and probes one about 4 times a second for the block panel (see workers.py).
A model file the app did not ship is first loaded in a child process by a ModelProbeWorker (probe.py), so a
model that crashes or hangs ONNX Runtime is refused with a message while the previous model keeps running.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from PySide6.QtCore import QObject, QStandardPaths, Qt, QThread, QTimer
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (QApplication, QComboBox, QFileDialog, QFormLayout, QFrame, QGroupBox, QHBoxLayout,
                               QLabel, QMainWindow, QMessageBox, QScrollArea, QSplitter, QTabWidget, QVBoxLayout,
                               QWidget)

from resnet_edge.errors import UserError
from resnet_edge.modelzoo import resolve_model
from resnet_edge.providers import CHOICES as PROVIDER_CHOICES
from resnet_edge.providers import available_providers

from .outputs import PredictionRecorder, save_png_atomic, timestamped
from .widgets import BlockPanel, ChannelGrid, TopKBars, VideoView
from .widgets.lab import LabTab
from .probe import PROBE_FLAG
from .workers import (CameraScanner, CaptureWorker, InferenceResult, InferenceWorker, LatestFrame, ModelInfo,
                      ModelProbeWorker, SourceFactory, describe_error)
from .workers import source_factory as make_source_factory

DISPLAY_POLL_MS = 10  # how often the UI looks for a new frame to show (it repaints only on a new one)
PRECISIONS = ("fp32", "int8")
LEGEND = ("Each block adds a correction F(x<sub>l</sub>) to what it receives (the panel's first line gives the model's form). "
          "Heatmaps: mean |activation| over channels, one colour scale per stage. "
          "Bars: ‖F(x<sub>l</sub>)‖ / ‖x<sub>l</sub>‖, how large the correction is. Click a block for its channels.")


# --- model files -----------------------------------------------------------------------------------


def precision_of(path: Path) -> str:
    """fp32 or int8, from the file name (name.onnx / name.int8.onnx)."""
    return "int8" if path.name.endswith(".int8.onnx") else "fp32"


def precision_variants(path: Path) -> dict[str, Path]:
    """The files of one model that exist side by side, by precision: {"fp32": name.onnx, "int8": name.int8.onnx}."""
    base = path.stem
    for suffix in (".int8.onnx", ".onnx"):
        if path.name.endswith(suffix):
            base = path.name[: -len(suffix)]
            break
    candidates = {"fp32": path.with_name(f"{base}.onnx"), "int8": path.with_name(f"{base}.int8.onnx")}
    return {precision: file for precision, file in candidates.items() if file.is_file()}


def resolve_start_model(model: str | None, precision: str) -> Path:
    """--model and --precision -> the file to load; a path given with another precision means its sibling."""
    path = resolve_model(model, precision)
    if precision_of(path) != precision and path.is_file():
        variant = precision_variants(path).get(precision)
        if variant is None:
            raise UserError(f"{path}: no {precision} version of this model next to it")
        return variant
    return path


def default_output_dir() -> Path:
    pictures = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.PicturesLocation)
    return Path(pictures or Path.home()) / "resnet-edge"


# --- the window ------------------------------------------------------------------------------------


class MainWindow(QMainWindow):
    """Wires the workers to the widgets; every public method is safe to call from tests."""

    def __init__(self, model: str | None = None, source: str = "auto", provider: str = "auto",
                 precision: str = "fp32", *, source_factory: SourceFactory | None = None,
                 threads: int | None = None, output_dir: Path | None = None, probe_hz: float = 4.0,
                 scan_cameras: bool = True, capture_options: Mapping[str, Any] | None = None,
                 stall_seconds: float = 2.0, probe_options: Mapping[str, Any] | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("resnet-edge")
        self.output_dir = Path(output_dir) if output_dir else default_output_dir()
        self.requested_provider = provider
        self.model_info: ModelInfo | None = None  # the model running now (confirmed by the worker)
        self.last_result: InferenceResult | None = None
        self.last_probe: InferenceResult | None = None  # the result the block panel shows
        self.recorder: PredictionRecorder | None = None
        self.message_box: QMessageBox | None = None
        self.source_spec = source
        self.stall_seconds = stall_seconds  # a camera silent this long gets a banner, even while read() blocks
        self.cameras: list[int] = []
        self._source_trouble: str | None = None
        self._shown_seq = 0
        self._closed = False
        self._model_request = 0  # id of the newest model request: a probe result for an older one is ignored
        # scan once the source has opened (or failed): probing a camera the capture is opening can upset both
        self._scan_pending = scan_cameras

        self.slot = LatestFrame()
        factory = source_factory or make_source_factory(source)
        self.capture = CaptureWorker(self.slot, factory, parent=self, **dict(capture_options or {}))
        self.inference = InferenceWorker(self.slot, probe_interval=1.0 / probe_hz, threads=threads, parent=self)
        # options: timeout (s), command (the child's argv, for tests), cache
        self.prober = ModelProbeWorker(parent=self, **dict(probe_options or {}))
        self.scanner: CameraScanner | None = None

        self._build_actions()
        self._build_ui()
        self._connect()
        self._load_start_model(model, precision)
        self.capture.start()
        self.inference.start()
        self.prober.start()
        # Poll the latest-frame slot every 10 ms and repaint only when a new frame is there: a 33 ms timer beat
        # against a 30 fps source and skipped ~4% of its frames (benchmarks/gui_pipeline.py); polling is cheap.
        self.display_timer = QTimer(self, interval=DISPLAY_POLL_MS, timeout=self._refresh_frame)
        self.status_timer = QTimer(self, interval=500, timeout=self._refresh_status)
        self.display_timer.start()
        self.status_timer.start()

    # --- construction -----------------------------------------------------------------------------

    def _build_actions(self) -> None:
        def action(text: str, shortcut: str, slot: Callable[..., Any], checkable: bool = False) -> QAction:
            act = QAction(text, self, checkable=checkable)
            act.setShortcut(QKeySequence(shortcut))
            (act.toggled if checkable else act.triggered).connect(slot)
            self.addAction(act)  # shortcuts work with the toolbar hidden too
            return act

        self.open_model_action = action("Open model…", "Ctrl+O", self._choose_model)
        self.open_source_action = action("Open video/image…", "Ctrl+Shift+O", self._choose_source_file)
        self.pause_action = action("Pause", "Space", self.set_paused, checkable=True)
        self.snapshot_action = action("Snapshot", "Ctrl+S", lambda: self.snapshot())
        self.record_action = action("Record CSV", "Ctrl+R", self._toggle_recording, checkable=True)
        self.quit_action = action("Quit", "Ctrl+Q", self.close)
        toolbar = self.addToolBar("main")
        toolbar.setObjectName("main-toolbar")
        toolbar.setMovable(False)
        toolbar.addActions([self.open_model_action, self.open_source_action])
        toolbar.addSeparator()
        toolbar.addActions([self.pause_action, self.snapshot_action, self.record_action])

    def _build_ui(self) -> None:
        self.video = VideoView()
        self.topk = TopKBars()
        self.block_panel = BlockPanel()
        self.channel_grid = ChannelGrid()

        self.source_combo = QComboBox()
        self.precision_combo = QComboBox()
        self.provider_combo = QComboBox()
        self.provider_combo.addItems(["auto", *available_providers()])
        self._set_combo(self.provider_combo, self.requested_provider)
        self.model_label = QLabel("loading…")
        self.model_label.setWordWrap(True)
        controls = QGroupBox("Model and source")
        form = QFormLayout(controls)
        form.addRow("Source", self.source_combo)
        form.addRow("Model", self.model_label)
        form.addRow("Precision", self.precision_combo)
        form.addRow("Provider", self.provider_combo)

        self.status_labels: dict[str, QLabel] = {}
        status = QGroupBox("Status")
        status_form = QFormLayout(status)
        for key, title in (("source", "Source"), ("capture", "Capture"), ("inference", "Inference"),
                           ("latency", "Latency"), ("provider", "Running on"), ("model", "Model"),
                           ("dropped", "Dropped frames")):
            label = QLabel("–")
            label.setWordWrap(True)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.status_labels[key] = label
            status_form.addRow(title, label)

        top5 = QGroupBox("Top 5")
        QVBoxLayout(top5).addWidget(self.topk)
        side_content = QWidget()
        side_layout = QVBoxLayout(side_content)
        side_layout.setContentsMargins(0, 0, 4, 0)
        for box in (top5, controls, status):
            side_layout.addWidget(box)
        side_layout.addStretch(1)
        side = QScrollArea()  # a short window scrolls the side column instead of clipping it
        side.setWidget(side_content)
        side.setWidgetResizable(True)
        side.setFrameShape(QFrame.Shape.NoFrame)
        side.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        side.setFixedWidth(320)

        top = QWidget()
        top_layout = QHBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addWidget(self.video, 1)
        top_layout.addWidget(side)

        panel_box = QGroupBox("Residual blocks")
        panel_layout = QVBoxLayout(panel_box)
        panel_layout.addWidget(self.block_panel, 1)
        legend = QLabel(LEGEND)
        legend.setWordWrap(True)
        legend.setTextFormat(Qt.TextFormat.RichText)
        panel_layout.addWidget(legend)
        grid_box = QGroupBox("Channels of the selected block (blue < 0 < red)")
        QVBoxLayout(grid_box).addWidget(self.channel_grid)
        bottom = QSplitter(Qt.Orientation.Horizontal)
        bottom.addWidget(panel_box)
        bottom.addWidget(grid_box)
        bottom.setSizes([960, 440])

        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(top)
        splitter.addWidget(bottom)
        splitter.setSizes([480, 400])  # the block panel needs room for its heatmaps
        self.lab = LabTab(self.output_dir / "lab")  # the residual-learning lab's figures and its live experiment
        self.tabs = QTabWidget()
        self.tabs.addTab(splitter, "Live")
        self.tabs.addTab(self.lab, "Lab")
        self.setCentralWidget(self.tabs)
        self._rebuild_source_combo()
        self.statusBar()
        self.resize(1400, 900)

    def _connect(self) -> None:
        self.capture.opened.connect(self._on_source_opened)
        self.capture.trouble.connect(self._on_source_trouble)
        self.capture.notice.connect(lambda message: self.statusBar().showMessage(message, 10000))
        self.prober.passed.connect(self._on_probe_passed)
        self.prober.failed.connect(self._on_probe_failed)
        self.inference.resultReady.connect(self._on_result)
        self.inference.modelLoaded.connect(self._on_model_loaded)
        self.inference.modelFailed.connect(self._on_model_failed)
        self.inference.failed.connect(lambda message: self.statusBar().showMessage(f"inference: {message}", 10000))
        self.block_panel.blockClicked.connect(self._on_block_clicked)
        self.source_combo.activated.connect(self._on_source_chosen)
        self.precision_combo.activated.connect(lambda _i: self.set_precision(self.precision_combo.currentText()))
        self.provider_combo.activated.connect(lambda _i: self.set_provider(self.provider_combo.currentText()))

    def _load_start_model(self, model: str | None, precision: str) -> None:
        try:
            path = resolve_start_model(model, precision)
        except UserError as error:  # no default model yet: the app still shows video; pick one with Open model
            self.model_label.setText("none")
            self.block_panel.set_note(f"no model: {error}")
            self.statusBar().showMessage(str(error))
            return
        self._request_model(path, self.requested_provider)

    # --- public controls --------------------------------------------------------------------------

    def open_model(self, path: str | Path) -> None:
        """Load another model file live; if it fails, a message says why and the old one keeps running."""
        self.statusBar().showMessage(f"loading {path}…")
        self._request_model(Path(path), self.requested_provider)

    def _request_model(self, path: Path, provider: str) -> None:
        """Every model request goes through here: a file the app did not ship (and not yet tried unchanged) is
        first loaded in a child process; the inference worker gets it only if that process survived it."""
        self._model_request += 1
        if self.prober.cache.needs_probe(path):
            self.statusBar().showMessage(f"trying {Path(path).name} in a separate process first…")
            self.prober.request(self._model_request, path, provider)
        else:
            self.prober.cancel()  # a probe still running is for an older request
            self.inference.request_model(path, provider)

    def set_precision(self, precision: str) -> None:
        if self.model_info is None:
            return
        variant = precision_variants(self.model_info.path).get(precision)
        if variant is None:
            self._on_model_failed(f"no {precision} version of {self.model_info.path.name}")
            return
        if variant != self.model_info.path:
            self.open_model(variant)

    def set_provider(self, provider: str) -> None:
        self.requested_provider = provider
        if self.model_info is not None:
            self.statusBar().showMessage(f"switching to {provider}…")
            self._request_model(self.model_info.path, provider)

    def set_source(self, spec: str) -> None:
        """auto | demo | camera index | video/image file | folder."""
        self.set_source_factory(make_source_factory(spec), spec)

    def set_source_factory(self, factory: SourceFactory, spec: str) -> None:
        self.source_spec = spec
        self._source_trouble = None
        self.video.set_message(None)
        self.capture.set_source(factory)
        self._rebuild_source_combo()

    def set_paused(self, paused: bool) -> None:
        self.capture.set_paused(paused)
        self.video.set_paused(paused)
        if self.pause_action.isChecked() != paused:
            self.pause_action.setChecked(paused)

    def snapshot(self, path: Path | None = None) -> Path | None:
        """Frame, predictions and block panel (the whole central area) to a PNG, written atomically."""
        target = Path(path) if path else timestamped(self.output_dir, "snapshot", ".png")
        try:
            save_png_atomic(self.centralWidget().grab(), target)
        except (OSError, UserError) as error:
            self.statusBar().showMessage(f"snapshot failed: {describe_error(error)}", 10000)
            return None
        self.statusBar().showMessage(f"snapshot saved: {target}", 10000)
        return target

    def start_recording(self, path: Path | None = None) -> Path | None:
        """Write every prediction to a CSV until stop_recording()."""
        self.stop_recording()
        target = Path(path) if path else timestamped(self.output_dir, "predictions", ".csv")
        try:
            self.recorder = PredictionRecorder(target)
        except OSError as error:
            self.statusBar().showMessage(f"cannot record: {describe_error(error)}", 10000)
            self.record_action.setChecked(False)
            return None
        self.record_action.setChecked(True)
        self.statusBar().showMessage(f"recording predictions to {target}")
        return target

    def stop_recording(self) -> None:
        if self.recorder is not None:
            recorder, self.recorder = self.recorder, None
            recorder.close()
            self.statusBar().showMessage(f"recorded {recorder.rows} predictions to {recorder.path}", 10000)
        if self.record_action.isChecked():
            self.record_action.setChecked(False)

    def rescan_cameras(self) -> None:
        """Look for cameras 0..4 in the background; the source list shows those that open."""
        if self._closed or (self.scanner is not None and self.scanner.isRunning()):
            return  # after shutdown a late signal must not start a thread nobody joins
        self._scan_pending = False
        # the camera we are reading from counts as found without being opened a second time
        index = int(self.source_spec) if self.source_spec.isdigit() else 0
        self.scanner = CameraScanner(skip=[index] if self.capture.live else [], parent=self)
        self.scanner.found.connect(self._on_cameras_found)
        self.scanner.start()

    def worker_threads(self) -> list[QThread]:
        """Every worker thread this window started (for a clean shutdown, and tests)."""
        return [thread for thread in (self.capture, self.inference, self.prober, self.scanner, self.lab.worker)
                if thread is not None]

    def shutdown(self) -> None:
        """Stop and join every worker; safe to call twice. Never terminates a thread."""
        if self._closed:
            return
        self._closed = True
        self.display_timer.stop()
        self.status_timer.stop()
        self.stop_recording()
        self.capture.stop()
        self.inference.stop()
        self.prober.stop()  # kills a child process still loading a model
        self.lab.shutdown()
        for thread in self.worker_threads():
            # a camera read() can block for a while: wait, but say so rather than hang silently
            if not thread.wait(5000):
                print(f"resnet-edge: waiting for the {thread.objectName()} thread to finish…", file=sys.stderr)
                thread.wait()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.shutdown()
        super().closeEvent(event)

    # --- worker signals ---------------------------------------------------------------------------

    def _on_result(self, result: InferenceResult) -> None:
        if self._closed:
            return
        self.last_result = result
        self.video.set_prediction(result.prediction)
        self.topk.set_prediction(result.prediction)
        if result.blocks is not None:
            self.last_probe = result
            self.block_panel.set_blocks(result.blocks)
            selected = self.block_panel.selected
            self.channel_grid.set_block(result.blocks[selected] if selected is not None else None)
        if self.recorder is not None:
            self.recorder.write(result)

    def _on_probe_passed(self, request_id: int, path: Path, provider: str) -> None:
        if request_id == self._model_request and not self._closed:
            self.inference.request_model(path, provider)

    def _on_probe_failed(self, request_id: int, message: str) -> None:
        if request_id == self._model_request and not self._closed:
            self._on_model_failed(message)

    def _on_model_loaded(self, info: ModelInfo) -> None:
        self.model_info = info
        self.requested_provider = info.requested_provider
        self.model_label.setText(f"{info.path.name}\n{info.arch}, {info.precision}, {len(info.labels)} classes")
        self.model_label.setToolTip(str(info.path))
        variants = precision_variants(info.path) or {precision_of(info.path): info.path}
        self.precision_combo.clear()
        self.precision_combo.addItems(list(variants))
        self._set_combo(self.precision_combo, precision_of(info.path))
        self.precision_combo.setEnabled(len(variants) > 1)
        self._set_combo(self.provider_combo, info.requested_provider)
        self.channel_grid.set_block(None)
        self.last_probe = None
        self.block_panel.set_note("waiting for the first probe…" if info.has_probes else
                                  "this model has no probes: export it with --probes to see its blocks")
        message = f"model {info.path.name} ({info.precision}) running on {info.provider}"
        self.statusBar().showMessage("; ".join([message, *info.warnings]), 15000)
        self._refresh_status()

    def _on_model_failed(self, message: str) -> None:
        keeps = f"\n\n{self.model_info.path.name} keeps running." if self.model_info else ""
        self.statusBar().showMessage(f"model not loaded: {message}", 15000)
        if self.model_info is not None:  # put the controls back to what is actually running
            self._set_combo(self.precision_combo, precision_of(self.model_info.path))
            self._set_combo(self.provider_combo, self.model_info.requested_provider)
            self.requested_provider = self.model_info.requested_provider
        if self.message_box is not None:
            self.message_box.close()
        # open(), not exec(): a window-modal box that does not start a nested event loop
        self.message_box = QMessageBox(QMessageBox.Icon.Warning, "Model not loaded", message + keeps,
                                       QMessageBox.StandardButton.Ok, self)
        self.message_box.open()

    def _on_source_opened(self, description: str) -> None:
        self._source_trouble = None
        self.video.set_message(None)
        self.status_labels["source"].setText(description)
        if self._scan_pending:
            self.rescan_cameras()

    def _on_source_trouble(self, message: str, _delay: float) -> None:
        self._source_trouble = message
        self.video.set_message(message)
        self.statusBar().showMessage(message, 10000)
        if self._scan_pending:
            self.rescan_cameras()

    def _on_cameras_found(self, cameras: list[int]) -> None:
        self.cameras = cameras
        self._rebuild_source_combo()

    def _on_block_clicked(self, index: int) -> None:
        if self.last_probe is not None and self.last_probe.blocks and index < len(self.last_probe.blocks):
            self.channel_grid.set_block(self.last_probe.blocks[index])

    # --- timers -----------------------------------------------------------------------------------

    def _refresh_frame(self) -> None:
        frame = self.slot.latest()
        if frame is not None and frame.seq != self._shown_seq:
            self._shown_seq = frame.seq
            self.video.set_frame(frame.image)
        # a camera whose read() hangs cannot tell us itself: notice the silence here
        capture, message = self.capture, self._source_trouble
        silent = time.monotonic() - capture.last_frame_time
        if message is None and capture.live and not capture.paused and capture.last_frame_time and silent > self.stall_seconds:
            message = f"{capture.description}: no frames for {silent:.0f} s; waiting for the camera"
        self.video.set_message(message)

    def _refresh_status(self) -> None:
        labels = self.status_labels
        labels["capture"].setText(f"{self.capture.meter.rate():.1f} fps" + ("  (paused)" if self.capture.paused else ""))
        labels["inference"].setText(f"{self.inference.meter.rate():.1f} fps")
        probe = f"; panel probe {self.inference.probe_ms:.1f} ms" if self.inference.probe_ms else ""
        labels["latency"].setText(f"{self.inference.latency_ms:.1f} ms{probe}")
        labels["dropped"].setText(str(self.inference.dropped))
        info = self.model_info
        if info is not None:
            asked = "" if info.requested_provider in ("auto", info.provider) else f" (asked for {info.requested_provider})"
            labels["provider"].setText(info.provider + asked)
            labels["model"].setText(f"{info.path.name} ({info.precision})")

    # --- choosers ---------------------------------------------------------------------------------

    def _rebuild_source_combo(self) -> None:
        entries: list[tuple[str, str]] = []
        known = {"auto", "demo"} | {str(index) for index in self.cameras}
        if self.source_spec not in known:
            entries.append((Path(self.source_spec).name or self.source_spec, self.source_spec))
        if self.source_spec == "auto":
            entries.append(("auto (camera 0, else demo)", "auto"))
        entries.append(("Demo (moving shapes)", "demo"))
        entries += [(f"Camera {index}", str(index)) for index in self.cameras]
        entries += [("Video or image file…", ":file"), ("Image folder…", ":folder"), ("Rescan cameras", ":scan")]
        self.source_combo.clear()
        for label, spec in entries:
            self.source_combo.addItem(label, spec)
        self.source_combo.setCurrentIndex(max(0, self.source_combo.findData(self.source_spec)))

    def _on_source_chosen(self, index: int) -> None:
        spec = self.source_combo.itemData(index)
        if spec == ":file":
            self._choose_source_file()
        elif spec == ":folder":
            folder = QFileDialog.getExistingDirectory(self, "Image folder")
            if folder:
                self.set_source(folder)
        elif spec == ":scan":
            self.rescan_cameras()
        elif spec != self.source_spec:
            self.set_source(spec)
        self._rebuild_source_combo()  # show what is playing, whatever the menu entry was

    def _choose_source_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Video or image", "",
                                              "Videos and images (*.mp4 *.avi *.mkv *.mov *.webm *.m4v *.mpg *.jpg *.jpeg *.png *.bmp *.webp *.tif *.tiff);;All files (*)")
        if path:
            self.set_source(path)

    def _choose_model(self) -> None:
        start = str(self.model_info.path.parent) if self.model_info else ""
        path, _ = QFileDialog.getOpenFileName(self, "ONNX model", start, "ONNX models (*.onnx);;All files (*)")
        if path:
            self.open_model(path)

    def _toggle_recording(self, on: bool) -> None:
        if on and self.recorder is None:
            self.start_recording()
        elif not on and self.recorder is not None:
            self.stop_recording()

    @staticmethod
    def _set_combo(combo: QComboBox, text: str) -> None:
        index = combo.findText(text)
        if index >= 0:
            combo.setCurrentIndex(index)


# --- entry point -----------------------------------------------------------------------------------


def pyside_drops_references() -> bool:
    """True for a PySide6 that loses a reference to None on every void call (6.12.0 does).

    On Python < 3.12, where None is not immortal, such a build kills the app within a minute of painting
    ("Fatal Python error: none_dealloc"); a few calls show it.
    """
    if sys.version_info >= (3, 12):
        return False
    probe = QObject()
    before = sys.getrefcount(None)
    for _ in range(100):
        probe.setObjectName("probe")
    return sys.getrefcount(None) < before - 50


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gui", description="resnet-edge live view: predictions and residual blocks")
    parser.add_argument("--model", help="an .onnx file or a shipped model's name (default: cifar10-resnet20)")
    parser.add_argument("--source", default="auto",
                        help="auto (camera 0 if it opens, else demo), demo, a camera index, a video, an image or a folder")
    parser.add_argument("--provider", default="auto", choices=PROVIDER_CHOICES, help="execution provider (default: auto)")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS, help="which version of the model to start on")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: all cores)")
    parser.add_argument("--self-test", nargs="?", type=int, const=5, default=None, metavar="N",
                        help="headless check (offscreen unless QT_QPA_PLATFORM is set): N predictions on the demo "
                             "source (default 5), then the bundled sample image in fp32 and int8; prints them and "
                             "the provider, exits 0 if all worked (see gui/selftest.py)")
    parser.add_argument("--self-test-timeout", type=float, default=60.0, metavar="S", help=argparse.SUPPRESS)
    # internal: the app runs its own executable with these to try a model in a child process (gui/probe.py)
    parser.add_argument(PROBE_FLAG, dest="probe_model", metavar="PATH", help=argparse.SUPPRESS)
    parser.add_argument("--probe-result", metavar="FILE", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the app until its window closes; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.probe_model is not None:  # a child process trying a model for the app: no window, no Qt
        from .probe import probe_main

        return probe_main(list(sys.argv[1:] if argv is None else argv))
    if pyside_drops_references():
        import PySide6

        print(f"resnet-edge: PySide6 {PySide6.__version__} has a reference-counting bug that crashes the app on "
              f"Python {sys.version_info.major}.{sys.version_info.minor}; install another version "
              f"(pip install 'PySide6-Essentials<6.12') or use Python 3.12+", file=sys.stderr)
        return 2
    if args.self_test is not None:
        from .selftest import run_self_test

        return run_self_test(args)
    app = QApplication.instance() or QApplication([sys.argv[0]])
    app.setApplicationName("resnet-edge")
    window = MainWindow(model=args.model, source=args.source, provider=args.provider,
                        precision=args.precision, threads=args.threads)
    window.show()
    code = app.exec()
    window.shutdown()  # after quit() from elsewhere than the window's close button
    return int(code)
