"""The resnet-edge desktop app: live video, the top-5 classes, and what every residual block adds.

    python -m gui [--model PATH_OR_NAME] [--source auto|demo|0|clip.mp4|photo.jpg|folder]
                  [--provider auto|cpu|cuda|directml|openvino] [--precision fp32|int8] [--threads N]

The UI thread only draws. A CaptureWorker (the one capture core, resnet_edge/capture.py) reads the source into a
one-frame slot, an InferenceWorker classifies the newest frame and probes one about 4 times a second for the
block panel and the class activation map (see workers.py). A model file the app did not ship is first loaded
in a child process by a ModelCheckWorker (modelcheck.py), so a model that crashes or hangs ONNX Runtime is refused
with a message while the previous model keeps running.

What the user sees is honest about itself: "not sure" below a threshold, the region the model sees drawn on
the video, no prediction while the source is not delivering, a file that cannot be read said once (and the
source that worked comes back). Window geometry, model, source, precision and the per-model choices are kept
between runs in QSettings (an .ini file named by RESNET_EDGE_SETTINGS instead, for portable use); a window made
without settings remembers nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from PySide6.QtCore import QObject, QRect, QSettings, QSize, QStandardPaths, Qt, QThread, QTimer
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QGuiApplication, QKeySequence
from PySide6.QtWidgets import (QApplication, QCheckBox, QComboBox, QFileDialog, QFormLayout, QFrame, QGroupBox,
                               QHBoxLayout, QLabel, QMainWindow, QMenu, QMessageBox, QScrollArea, QSizePolicy,
                               QSlider, QSpinBox, QSplitter, QTabWidget, QToolButton, QVBoxLayout, QWidget)

from resnet_edge.cam import cam_on_region, visible_region
from resnet_edge.capture import CapturedFrame
from resnet_edge.errors import UserError
from resnet_edge.images import IMAGE_SUFFIXES
from resnet_edge.catalog import remember_recent
from resnet_edge.importer import inspect_for_import
from resnet_edge.modelzoo import resolve_model, user_dir, user_models_dir
from resnet_edge.preprocess import RESIZE_POLICIES
from resnet_edge.providers import CHOICES as PROVIDER_CHOICES
from resnet_edge.providers import available_providers
from resnet_edge.safety import printable, source_label
from resnet_edge.sources import VIDEO_SUFFIXES, live_opencv_threads

from .confidence import DEFAULT_THRESHOLD, SMOOTHING_CHOICES, STILL_KINDS, Smoother, model_threshold, shown_prediction
from .outputs import PredictionRecorder, save_png_atomic, timestamped
from .widgets import BlockPanel, ChannelGrid, TopKBars, VideoView
from .widgets.lab import LabTab
from .widgets.models import ImportDialog, ModelPicker, imported_name
from .widgets.teach import TeachTab
from .modelcheck import CHECK_FLAG
from .workers import (CameraScanner, CaptureWorker, InferenceResult, InferenceWorker, LatestFrame, ModelInfo,
                      ModelCheckWorker, SourceFactory, describe_error)
from .workers import source_factory as make_source_factory

KEEP_UP_SHARE = 0.25  # a model whose run takes under this share of the frame interval brings frames with results
FLOWING_FPS = 10.0  # a source delivering at least this often gets its predictions drawn with its next frame
WATCH_MS = 250  # a source silent this long is checked on (each shown frame restarts the watch timer)
STATUS_MS = 500  # the status box's figures are refreshed this often
PRECISIONS = ("fp32", "int8")
SETTINGS_ENV = "RESNET_EDGE_SETTINGS"  # an .ini file to keep the app's settings in instead of the user's
WANTED_SIZE = QSize(1400, 900)  # the window's size where the screen has room for it
CAM_SIDE = 160  # the activation map overlay's longest side in pixels (the painter scales it to the video)
SCREEN_SHARE = 0.92  # at most this share of the available screen (the rest: the desktop around it)
POLICY_NAMES = {"center_crop": "centre crop (square)", "letterbox": "whole frame, letterboxed",
                "stretch": "whole frame, stretched"}
RESOLUTIONS = (("camera default", None), ("640 x 480", (640, 480)), ("1280 x 720", (1280, 720)),
               ("1920 x 1080", (1920, 1080)))
LEGEND = ("Each block adds a correction F(x<sub>l</sub>) to what it receives (the panel's first line gives the model's form). "
          "Heatmaps: mean |activation| over channels, one colour scale per stage. "
          "Bars: ‖F(x<sub>l</sub>)‖ / ‖x<sub>l</sub>‖, how large the correction is. Click a block for its channels.")
SHORT_LEGEND = "xₗ₊₁ = xₗ + F(xₗ) · heatmaps: mean |activation| · bars: ‖F‖/‖x‖ · click a block (hover for more)"


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


def model_key(path: Path) -> str:
    """A settings key for one model (both precisions share it): the file name without .int8/.onnx."""
    name = path.name
    for suffix in (".int8.onnx", ".onnx"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def resize_policies() -> list[str]:
    """The resize policies the runtime offers, in the app's order (letterbox where preprocess has it)."""
    return [policy for policy in ("center_crop", "letterbox", "stretch") if policy in RESIZE_POLICIES]


# --- settings and screen ---------------------------------------------------------------------------


class MemorySettings:
    """The part of QSettings the window uses, kept in memory: a window made without settings (tests, the
    self-test, benchmarks) remembers nothing and never touches the user's."""

    def __init__(self) -> None:
        self._values: dict[str, Any] = {}

    def value(self, key: str, default: Any = None) -> Any:
        return self._values.get(key, default)

    def setValue(self, key: str, value: Any) -> None:  # noqa: N802 - QSettings' name
        self._values[key] = value

    def sync(self) -> None:
        pass


def app_settings(location: str | os.PathLike | None = None) -> QSettings:
    """Where the app keeps what it remembers: ``location`` or $RESNET_EDGE_SETTINGS (.ini files), else the user's."""
    path = location or os.environ.get(SETTINGS_ENV)
    if path:
        return QSettings(str(path), QSettings.Format.IniFormat)
    return QSettings("resnet-edge", "resnet-edge")


def fit_rect(available: QRect, wanted: QSize = WANTED_SIZE, share: float = SCREEN_SHARE) -> QRect:
    """A window rectangle centred in ``available``: ``wanted``, shrunk to ``share`` of the screen where needed."""
    width = min(wanted.width(), int(available.width() * share))
    height = min(wanted.height(), int(available.height() * share))
    left = available.left() + (available.width() - width) // 2
    top = available.top() + (available.height() - height) // 2
    return QRect(left, top, width, height)


def source_name(spec: str) -> str:
    """How a source spec reads in messages."""
    if spec.isdigit():
        return f"camera {spec}"
    if spec in ("auto", "demo"):
        return spec
    if "://" in spec:
        return source_label(spec)  # a stream: its credentials masked, even with no path (user:pw@host)
    return printable(Path(spec).name or spec)


# --- the window ------------------------------------------------------------------------------------


class MainWindow(QMainWindow):
    """Wires the workers to the widgets; every public method is safe to call from tests."""

    def __init__(self, model: str | None = None, source: str = "auto", provider: str = "auto",
                 precision: str = "fp32", *, source_factory: SourceFactory | None = None,
                 threads: int | None = None, output_dir: Path | None = None, probe_hz: float = 4.0,
                 scan_cameras: bool = True, capture_options: Mapping[str, Any] | None = None,
                 stall_seconds: float = 2.0, check_options: Mapping[str, Any] | None = None,
                 settings: QSettings | str | os.PathLike | None = None, ort_spinning: bool = False,
                 teach_root: Path | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("resnet-edge")
        # None: remember nothing (tests, the self-test); main() passes the user's settings
        self.settings = settings if isinstance(settings, QSettings) else (
            MemorySettings() if settings is None else app_settings(settings))
        self.output_dir = Path(output_dir) if output_dir else default_output_dir()
        self.teach_root = Path(teach_root) if teach_root else user_dir("data") / "teach" / "default"  # a teach project
        self.requested_provider = provider
        self.model_info: ModelInfo | None = None  # the model running now (confirmed by the worker)
        self.last_result: InferenceResult | None = None
        self.last_probe: InferenceResult | None = None  # the result the block panel shows
        self.recorder: PredictionRecorder | None = None
        self.message_box: QMessageBox | None = None
        self.source_spec = source
        self.working_spec: str | None = None  # the last source that delivered frames: where a failure goes back to
        self.stall_seconds = stall_seconds  # a camera silent this long gets a banner, even while read() blocks
        self.cameras: list[int] = []
        self.smoother = Smoother()
        self.threshold = DEFAULT_THRESHOLD
        self.policy: str | None = None  # resize policy chosen for the running model (None: the model's own)
        self.resolution: tuple[int, int] | None = None  # asked of cameras
        self._custom_factory = source_factory is not None  # tests and benchmarks bring their own sources
        self._source_trouble: str | None = None
        self._switch_opening = 0  # capture opens before the newest source switch: older frames are stale
        self._auto_note: str | None = None  # "no camera" said at start by the auto source
        self._announce_scan = False  # a Rescan the user asked for: say what it found
        self.shown_seq = 0  # the frame on screen (CapturedFrame.seq)
        self._frame_shape: tuple[int, int] | None = None
        self._closed = False
        self._model_request = 0  # id of the newest model request: a probe result for an older one is ignored
        self.picker: ModelPicker | None = None  # the model picker while it is open
        self.import_dialog: ImportDialog | None = None
        self.fetch_dialog = None  # "Get ImageNet models…", made when first asked for
        # scan once the source has opened (or failed): probing a camera the capture is opening can upset both
        self._scan_pending = scan_cameras

        self.slot = LatestFrame()
        factory = source_factory or make_source_factory(source)
        self.capture = CaptureWorker(self.slot, factory, parent=self, **dict(capture_options or {}))
        self.inference = InferenceWorker(self.slot, probe_interval=1.0 / probe_hz, threads=threads,
                                         spinning=ort_spinning, parent=self)
        # options: timeout (s), command (the child's argv, for tests), cache
        self.model_check = ModelCheckWorker(parent=self, **dict(check_options or {}))
        self.scanner: CameraScanner | None = None

        self._build_actions()
        self._build_ui()
        self._connect()
        self._restore_settings()
        self._load_start_model(model, precision)
        live_opencv_threads()
        self.capture.start()
        self.inference.start()
        self.model_check.start()
        # The capture thread says when a frame is in the slot (a queued signal), so the UI thread wakes once per
        # frame; a timer polling often enough not to skip frames woke it three times as often (each wake-up costs
        # CPU, benchmarks/gui_pipeline.py). Neither timer below fires while frames flow: each shown frame restarts
        # the watch timer, and the status box is refreshed with a result (painted in that frame's pass); they
        # fire when the source goes silent, to say so.
        self.watch_timer = QTimer(self, interval=WATCH_MS, timeout=self._watch_source)
        # twice the refresh interval: a result due at STATUS_MS comes well before it fires
        self.status_timer = QTimer(self, interval=2 * STATUS_MS, timeout=self._refresh_status)
        self._status_due = 0.0  # time.monotonic() when a result next refreshes the status box
        self.watch_timer.start()
        self.status_timer.start()

    # --- construction -----------------------------------------------------------------------------

    def _build_actions(self) -> None:
        def action(text: str, shortcut: str, slot: Callable[..., Any], checkable: bool = False) -> QAction:
            act = QAction(text, self, checkable=checkable)
            act.setShortcut(QKeySequence(shortcut))
            (act.toggled if checkable else act.triggered).connect(slot)
            self.addAction(act)  # shortcuts work with the toolbar hidden too
            return act

        self.open_model_action = action("Open model…", "Ctrl+O", self.choose_model)
        self.open_source_action = action("Open video/image…", "Ctrl+Shift+O", self._choose_source_file)
        self.pause_action = action("Pause", "Space", self.set_paused, checkable=True)
        self.previous_action = action("◀ Previous", "PgUp", lambda: self.step_image(-1))
        self.next_action = action("Next ▶", "PgDown", lambda: self.step_image(1))
        self.snapshot_action = action("Snapshot", "Ctrl+S", lambda: self.snapshot())
        self.record_action = action("Record CSV", "Ctrl+R", self._toggle_recording, checkable=True)
        self.fullscreen_action = action("Full screen", "F11", self.set_video_only, checkable=True)
        self.quit_action = action("Quit", "Ctrl+Q", self.close)
        self.leave_fullscreen_action = action("Leave full screen", "Esc", lambda: self.set_video_only(False))
        self.toolbar = self.addToolBar("main")
        self.toolbar.setObjectName("main-toolbar")
        self.toolbar.setMovable(False)
        self.toolbar.addActions([self.open_model_action, self.open_source_action])
        self.toolbar.addSeparator()
        self.toolbar.addActions([self.pause_action, self.previous_action, self.next_action])
        self.toolbar.addSeparator()
        self.toolbar.addActions([self.snapshot_action, self.record_action, self.fullscreen_action])
        self._set_folder_controls(False)

    def _build_ui(self) -> None:
        self.video = VideoView()
        self.topk = TopKBars()
        self.block_panel = BlockPanel()
        self.channel_grid = ChannelGrid()
        self.setAcceptDrops(True)  # a model .onnx opens it; an image, video or folder becomes the source

        # model and source
        self.source_combo = QComboBox()
        self.source_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.source_combo.setMinimumContentsLength(12)
        self.precision_combo = QComboBox()
        self.provider_combo = QComboBox()
        self.provider_combo.addItems(["auto", *available_providers()])
        self._set_combo(self.provider_combo, self.requested_provider)
        self.policy_combo = QComboBox()
        for policy in resize_policies():
            self.policy_combo.addItem(POLICY_NAMES.get(policy, policy), policy)
        self.policy_combo.setToolTip("How a frame is brought to the model's square input; the dashed box on "
                                     "the video is the part the model sees")
        self.model_label = QLabel("loading…")
        self.model_label.setWordWrap(True)
        self.model_label.setTextFormat(Qt.TextFormat.PlainText)  # arch and names come from the file: never HTML
        self.classes_button = QToolButton(text="classes")
        self.classes_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.classes_menu = QMenu(self.classes_button)
        self.classes_button.setMenu(self.classes_menu)
        self.mirror_check = QCheckBox("mirror")
        self.resolution_combo = QComboBox()
        for label, size in RESOLUTIONS:
            self.resolution_combo.addItem(label, size)
        camera_row = QHBoxLayout()
        camera_row.setContentsMargins(0, 0, 0, 0)
        camera_row.addWidget(self.resolution_combo, 1)
        camera_row.addWidget(self.mirror_check)
        model_row = QHBoxLayout()
        model_row.setContentsMargins(0, 0, 0, 0)
        model_row.addWidget(self.model_label, 1)
        model_row.addWidget(self.classes_button, 0, Qt.AlignmentFlag.AlignTop)
        controls = QGroupBox("Model and source")
        form = QFormLayout(controls)
        form.addRow("Source", self.source_combo)
        form.addRow("Camera", camera_row)
        form.addRow("Model", model_row)
        form.addRow("Precision", self.precision_combo)
        form.addRow("Provider", self.provider_combo)
        form.addRow("Model sees", self.policy_combo)

        # what the app claims
        self.threshold_spin = QSpinBox(suffix=" %")
        self.threshold_spin.setRange(0, 100)
        self.threshold_spin.setToolTip("Below this top-1 probability the app says \"not sure\" (a taught model "
                                       "brings its own threshold)")
        self.smoothing_combo = QComboBox()
        for label, mode, amount in SMOOTHING_CHOICES:
            self.smoothing_combo.addItem(label, (mode, amount))
        self.smoothing_combo.setToolTip("Average the class probabilities over recent frames (never for still images)")
        self.cam_check = QCheckBox("where it looks (CAM)")
        self.cam_check.setToolTip("Class activation map of the class the model ranked first, from the block "
                                  "panel's probe runs (Zhou et al. 2016)")
        self.cam_opacity = QSlider(Qt.Orientation.Horizontal)
        self.cam_opacity.setRange(10, 90)
        self.cam_opacity.setValue(50)
        self.cam_opacity.setToolTip("opacity of the activation map")
        cam_row = QHBoxLayout()
        cam_row.setContentsMargins(0, 0, 0, 0)
        cam_row.addWidget(self.cam_check)
        cam_row.addWidget(self.cam_opacity, 1)
        confidence = QGroupBox("What it claims")
        confidence_form = QFormLayout(confidence)
        confidence_form.addRow("Not sure below", self.threshold_spin)
        confidence_form.addRow("Smoothing", self.smoothing_combo)
        confidence_form.addRow(cam_row)

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
        for box in (top5, confidence, controls, status):
            side_layout.addWidget(box)
        side_layout.addStretch(1)
        self.side = QScrollArea()  # a short window scrolls the side column instead of clipping it
        self.side.setWidget(side_content)
        self.side.setWidgetResizable(True)
        self.side.setFrameShape(QFrame.Shape.NoFrame)
        self.side.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.side.setMinimumWidth(230)
        self.side.setMaximumWidth(330)
        self.side.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)

        top = QWidget()
        top_layout = QHBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addWidget(self.video, 1)
        top_layout.addWidget(self.side)

        panel_box = QGroupBox("Residual blocks")
        panel_layout = QVBoxLayout(panel_box)
        panel_layout.addWidget(self.block_panel, 1)
        # one line, never wrapped: a wrapped legend squeezed by the splitter was drawn over the bars
        self.legend = QLabel(SHORT_LEGEND)
        self.legend.setToolTip(f"<p>{LEGEND}</p>")
        self.legend.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        panel_layout.addWidget(self.legend)
        grid_box = QGroupBox("Channels of the selected block (blue < 0 < red)")
        QVBoxLayout(grid_box).addWidget(self.channel_grid)
        self.bottom = QSplitter(Qt.Orientation.Horizontal)
        self.bottom.addWidget(panel_box)
        self.bottom.addWidget(grid_box)
        self.bottom.setStretchFactor(0, 3)
        self.bottom.setStretchFactor(1, 1)
        self.bottom.setSizes([1050, 350])  # the panel's columns need the width (ResNet-56: 27 of them)

        self.live_view = QSplitter(Qt.Orientation.Vertical)
        self.live_view.addWidget(top)
        self.live_view.addWidget(self.bottom)
        self.live_view.setSizes([480, 400])  # the block panel needs room for its heatmaps
        self.live_scroll = QScrollArea()  # below its minimum (a small or 200 %-scaled screen) the tab scrolls
        self.live_scroll.setWidget(self.live_view)
        self.live_scroll.setWidgetResizable(True)
        self.live_scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.lab = LabTab(self.output_dir / "lab")  # the residual-learning lab's figures and its live experiment
        # teach your own classes from the live source; the taught model takes over the live view when trained
        self.teach = TeachTab(self.teach_root, frame_source=self._newest_image)
        self.teach.model_trained.connect(self._on_model_taught)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.live_scroll, "Live")
        self.teach_scroll = QScrollArea()  # like the Live tab: on a small screen it scrolls, the window still fits
        self.teach_scroll.setWidget(self.teach)
        self.teach_scroll.setWidgetResizable(True)
        self.teach_scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.tabs.addTab(self.teach_scroll, "Teach")
        self.tabs.addTab(self.lab, "Lab")
        self.setCentralWidget(self.tabs)
        self._rebuild_source_combo()
        self.statusBar()
        self.fit_to_screen()

    def _connect(self) -> None:
        self.capture.opened.connect(self._on_source_opened)
        self.capture.frameReady.connect(self._refresh_frame)
        self.capture.trouble.connect(self._on_source_trouble)
        self.capture.failed.connect(self._on_source_failed)
        self.capture.notice.connect(lambda message: self.statusBar().showMessage(message, 10000))
        self.model_check.passed.connect(self._on_check_passed)
        self.model_check.failed.connect(self._on_check_failed)
        self.inference.resultReady.connect(self._on_result)
        self.inference.modelLoaded.connect(self._on_model_loaded)
        self.inference.modelFailed.connect(self._on_model_failed)
        self.inference.failed.connect(lambda message: self.statusBar().showMessage(f"inference: {message}", 10000))
        self.block_panel.blockClicked.connect(self._on_block_clicked)
        self.source_combo.activated.connect(self._on_source_chosen)
        self.precision_combo.activated.connect(lambda _i: self.set_precision(self.precision_combo.currentText()))
        self.provider_combo.activated.connect(lambda _i: self.set_provider(self.provider_combo.currentText()))
        self.policy_combo.activated.connect(lambda _i: self.set_policy(self.policy_combo.currentData()))
        self.threshold_spin.valueChanged.connect(lambda value: self.set_threshold(value / 100.0))
        self.smoothing_combo.activated.connect(lambda _i: self.set_smoothing(*self.smoothing_combo.currentData()))
        self.cam_check.toggled.connect(self.set_cam_visible)
        self.cam_opacity.valueChanged.connect(lambda value: self.set_cam_visible(self.cam_check.isChecked()))
        self.mirror_check.toggled.connect(self.set_mirror)
        self.resolution_combo.activated.connect(lambda _i: self.set_resolution(self.resolution_combo.currentData()))

    def _restore_settings(self) -> None:
        """What the user chose last time (geometry, smoothing, overlay, camera options)."""
        settings = self.settings
        geometry = settings.value("window/geometry")
        if geometry is not None and self.restoreGeometry(geometry):
            self.fit_to_screen(keep_size=True)  # the screen may have changed since: never open larger than it
        smoothing = settings.value("view/smoothing", "off")
        index = max(0, next((i for i, (label, _m, _a) in enumerate(SMOOTHING_CHOICES) if label == smoothing), 0))
        self.smoothing_combo.setCurrentIndex(index)
        self.set_smoothing(*self.smoothing_combo.currentData())
        self.cam_opacity.setValue(int(settings.value("view/cam_opacity", 50)))
        self.cam_check.setChecked(settings.value("view/cam", "true") in (True, "true"))
        self.set_cam_visible(self.cam_check.isChecked())
        self.mirror_check.setChecked(settings.value("camera/mirror", "false") in (True, "true"))
        resolution = settings.value("camera/resolution", "camera default")
        self.resolution_combo.setCurrentIndex(max(0, self.resolution_combo.findText(str(resolution))))
        self.resolution = self.resolution_combo.currentData()
        self.threshold_spin.blockSignals(True)
        self.threshold_spin.setValue(round(self.threshold * 100))
        self.threshold_spin.blockSignals(False)

    def save_settings(self) -> None:
        """Remember geometry, model, source and precision for the next start (also done on close)."""
        settings = self.settings
        settings.setValue("window/geometry", self.saveGeometry())
        if self.model_info is not None:
            settings.setValue("start/model", str(self.model_info.path))
            settings.setValue("start/precision", precision_of(self.model_info.path))
        if self.working_spec is not None and not self._custom_factory:
            settings.setValue("start/source", self.working_spec)
        settings.setValue("view/smoothing", self.smoothing_combo.currentText())
        settings.setValue("view/cam", self.cam_check.isChecked())
        settings.setValue("view/cam_opacity", self.cam_opacity.value())
        settings.setValue("camera/mirror", self.mirror_check.isChecked())
        settings.setValue("camera/resolution", self.resolution_combo.currentText())
        settings.sync()

    def _load_start_model(self, model: str | None, precision: str) -> None:
        try:
            path = resolve_start_model(model, precision)
        except UserError as error:  # no default model yet: the app still shows video; pick one with Open model
            self.model_label.setText("none")
            self.block_panel.set_note(f"no model: {error}")
            self.statusBar().showMessage(str(error))
            return
        self._request_model(path, self.requested_provider)

    # --- the screen -------------------------------------------------------------------------------

    def available_geometry(self) -> QRect:
        """The screen area a window may use (without panels and docks), of the screen the window is on."""
        screen = self.screen() or QGuiApplication.primaryScreen()
        return screen.availableGeometry() if screen is not None else QRect(0, 0, 1024, 700)

    def fit_to_screen(self, available: QRect | None = None, keep_size: bool = False) -> None:
        """Place the window inside ``available`` (default: the screen's available area): the wanted size (or the
        current one with ``keep_size``), shrunk to fit; below the layout's minimum the Live tab scrolls."""
        available = available or self.available_geometry()
        wanted = self.size() if keep_size else WANTED_SIZE
        if keep_size and available.contains(self.frameGeometry()):
            return
        frame_extra = self.frameGeometry().size() - self.geometry().size()  # title bar and borders, once shown
        room = QRect(available.topLeft(), available.size() - frame_extra)
        target = fit_rect(room, wanted, 1.0 if keep_size else SCREEN_SHARE)
        self.resize(target.size())
        self.move(target.topLeft())

    # --- public controls --------------------------------------------------------------------------

    def open_model(self, path: str | Path) -> None:
        """Load another model file live; if it fails, a message says why and the old one keeps running. A
        classifier without our metadata opens the import dialog first, which asks for what it lacks."""
        try:
            lacks = [key for key in inspect_for_import(path).missing if key != "resize"]
        except UserError:  # not a model we read at all: the worker's check says why, as for any file
            lacks = []
        if lacks:
            self.import_model(Path(path))
            return
        self.settings.setValue("models/recent", remember_recent(self._recent_models(), path))
        self.statusBar().showMessage(f"loading {path}…")
        self._request_model(Path(path), self.requested_provider)

    def _recent_models(self) -> list[str]:
        stored = self.settings.value("models/recent") or []
        return [str(p) for p in (stored if isinstance(stored, list) else [stored])]

    def choose_model(self) -> None:
        """The model picker: shipped, fetched, taught and recent models, with their classes and accuracy."""
        self.picker = ModelPicker(self._recent_models(), [user_models_dir()], parent=self)
        if self.model_info is not None:
            self.picker.select(self.model_info.path)
        self.picker.import_requested.connect(lambda: (self.picker.reject(), self._choose_import()))
        self.picker.fetch_requested.connect(lambda: (self.picker.reject(), self.get_imagenet_models()))
        self.picker.accepted.connect(lambda: self.picker.chosen and self.open_model(self.picker.chosen))
        self.picker.open()

    def _choose_import(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "ONNX classifier to import", self.last_folder(),
                                              "ONNX models (*.onnx);;All files (*)")
        if path:
            self.remember_folder(Path(path).parent)
            self.import_model(Path(path))

    def import_model(self, path: Path) -> ImportDialog | None:
        """Ask what a third-party classifier lacks, write a copy with our metadata and open it."""
        folder = user_models_dir()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self.import_dialog = ImportDialog(path, imported_name(path, folder), parent=self)
        except (UserError, OSError) as error:
            self._on_model_failed(str(error))
            return None
        self.import_dialog.accepted.connect(lambda: self.import_dialog.imported and self.open_model(self.import_dialog.imported))
        self.import_dialog.open()
        return self.import_dialog

    def get_imagenet_models(self) -> None:
        """Download published ImageNet ResNets on a worker thread, with progress and Cancel; open the one made."""
        try:
            from .widgets.fetch_dialog import FetchDialog
        except ModuleNotFoundError as error:  # the packaged app leaves out HTTPS: say so, once, where it was asked
            from resnet_edge.extras import missing_module_message

            self._on_model_failed(missing_module_message(error) or str(error))
            return
        if self.fetch_dialog is None:
            self.fetch_dialog = FetchDialog(self)
            self.fetch_dialog.model_ready.connect(self.open_model)
        self.fetch_dialog.open()

    def _newest_image(self):
        """The newest captured frame (the Teach tab records from it; called from its threads)."""
        frame = self.slot.latest()
        return None if frame is None else frame.image

    def _on_model_taught(self, path: str) -> None:
        self.statusBar().showMessage(f"taught model ready: {Path(path).name} takes over the live view", 10000)
        self.open_model(path)

    def _request_model(self, path: Path, provider: str) -> None:
        """Every model request goes through here: a file the app did not ship (and not yet tried unchanged) is
        first loaded in a child process; the inference worker gets it only if that process survived it."""
        self._model_request += 1
        self._frames_on_arrival()  # no results while it loads
        if self.model_check.cache.needs_check(path):
            self.statusBar().showMessage(f"trying {Path(path).name} in a separate process first…")
            self.model_check.request(self._model_request, path, provider)
        else:
            self.model_check.cancel()  # a probe still running is for an older request
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
        self.set_source_factory(make_source_factory(spec, resolution=self.resolution), spec)

    def set_source_factory(self, factory: SourceFactory, spec: str) -> None:
        self.source_spec = spec
        self._source_trouble = None
        self._switch_opening = self.capture.opens  # frames and results of the source before are stale from now
        self._frames_on_arrival()
        self.smoother.reset()
        self.video.set_message(None)
        self.video.set_caption(None)
        self._clear_prediction("waiting for the new source…")
        self.capture.set_source(factory)
        self._rebuild_source_combo()

    def set_paused(self, paused: bool) -> None:
        self._frames_on_arrival()
        self.capture.set_paused(paused)
        self.video.set_paused(paused)
        self.pause_action.setText("Resume" if paused else "Pause")
        if self.pause_action.isChecked() != paused:
            self.pause_action.setChecked(paused)

    def step_image(self, delta: int) -> None:
        """Previous (-1) or next (+1) image of a folder source."""
        if self.capture.kind == "folder":
            self.capture.step(delta)

    def set_threshold(self, threshold: float) -> None:
        """"Not sure" below this top-1 probability (0..1); remembered for the running model."""
        self.threshold = min(1.0, max(0.0, float(threshold)))
        if self.threshold_spin.value() != round(self.threshold * 100):
            self.threshold_spin.blockSignals(True)
            self.threshold_spin.setValue(round(self.threshold * 100))
            self.threshold_spin.blockSignals(False)
        if self.model_info is not None:
            self.settings.setValue(f"models/{model_key(self.model_info.path)}/threshold", self.threshold)
        self._reshow()

    def set_smoothing(self, mode: str, amount: float) -> None:
        """off | window (amount: frames) | ema (amount: weight of the newest frame)."""
        self.smoother = Smoother(mode, amount)
        index = self.smoothing_combo.findData((mode, amount))
        if index >= 0 and index != self.smoothing_combo.currentIndex():
            self.smoothing_combo.setCurrentIndex(index)

    def set_policy(self, policy: str | None) -> None:
        """How frames are brought to the model's input (centre crop, letterbox, stretch); remembered per model."""
        self.policy = policy
        self.inference.set_resize_policy(policy)
        index = self.policy_combo.findData(policy)
        if index >= 0:
            self.policy_combo.setCurrentIndex(index)
        if self.model_info is not None and policy:
            self.settings.setValue(f"models/{model_key(self.model_info.path)}/policy", policy)
        self._frame_shape = None  # redraw the region
        self.smoother.reset()
        self.video.set_cam(None)
        self._update_region()

    def set_cam_visible(self, visible: bool) -> None:
        if self.cam_check.isChecked() != visible:
            self.cam_check.setChecked(visible)
        if not visible:
            self.video.set_cam(None)
        elif self.last_probe is not None:
            self._show_cam(self.last_probe)

    def set_mirror(self, mirror: bool) -> None:
        """Flip camera frames left-right (the model sees what the user sees)."""
        self.capture.loop.mirror = mirror
        if self.mirror_check.isChecked() != mirror:
            self.mirror_check.setChecked(mirror)

    def set_resolution(self, resolution: tuple[int, int] | None) -> None:
        """Ask cameras for this resolution (the camera reopens now when one is running)."""
        self.resolution = tuple(resolution) if resolution else None
        if (self.source_spec.isdigit() or self.source_spec == "auto") and not self._custom_factory:
            self.set_source(self.source_spec)

    def set_video_only(self, on: bool) -> None:
        """Full screen with only the video (F11; Esc or F11 again to leave)."""
        for widget in (self.toolbar, self.statusBar(), self.side, self.bottom, self.tabs.tabBar()):
            widget.setVisible(not on)
        if on:
            self.tabs.setCurrentWidget(self.live_scroll)
            self.showFullScreen()
        elif self.isFullScreen():
            self.showNormal()
        if self.fullscreen_action.isChecked() != on:
            self.fullscreen_action.setChecked(on)

    def handle_drop(self, paths: list[Path]) -> bool:
        """A model file (.onnx) opens it; an image, video or folder becomes the source. False: nothing usable."""
        for path in paths:
            if path.suffix.lower() == ".onnx" and path.is_file():
                self.open_model(path)
                return True
            if path.is_dir() or path.suffix.lower() in (*IMAGE_SUFFIXES, *VIDEO_SUFFIXES):
                self.remember_folder(path if path.is_dir() else path.parent)
                self.set_source(str(path))
                return True
        self.statusBar().showMessage("dropped files: not a model (.onnx), an image, a video or a folder", 10000)
        return False

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if event.mimeData().hasUrls() and any(url.isLocalFile() for url in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        paths = [Path(url.toLocalFile()) for url in event.mimeData().urls() if url.isLocalFile()]
        if self.handle_drop(paths):
            event.acceptProposedAction()

    def snapshot(self, path: Path | None = None) -> Path | None:
        """The live view (frame, predictions, block panel), from whichever tab is showing, to a PNG, atomically."""
        target = Path(path) if path else timestamped(self.output_dir, "snapshot", ".png")
        try:
            save_png_atomic(self.live_view.grab(), target)
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

    def rescan_cameras(self, announce: bool = False) -> None:
        """Look for cameras 0..4 in the background; the source list shows those that open (and with
        ``announce``, the status bar says what was found)."""
        if self._closed or (self.scanner is not None and self.scanner.isRunning()):
            return  # after shutdown a late signal must not start a thread nobody joins
        self._scan_pending = False
        self._announce_scan = self._announce_scan or announce
        # the camera we are reading from counts as found without being opened a second time
        index = int(self.source_spec) if self.source_spec.isdigit() else 0
        self.scanner = CameraScanner(skip=[index] if self.capture.live else [], parent=self)
        self.scanner.found.connect(self._on_cameras_found)
        if announce:
            self.statusBar().showMessage("looking for cameras 0–4…")
        self.scanner.start()

    def worker_threads(self) -> list[QThread]:
        """Every worker thread this window started (for a clean shutdown, and tests)."""
        return [thread for thread in (self.capture, self.inference, self.model_check, self.scanner, self.lab.worker)
                if thread is not None]

    def shutdown(self) -> None:
        """Stop and join every worker; safe to call twice. Never terminates a thread."""
        if self._closed:
            return
        self.save_settings()
        self._closed = True
        self.watch_timer.stop()
        self.status_timer.stop()
        self.stop_recording()
        for worker in (self.capture, self.inference, self.model_check):
            worker.stop()  # the one stop idiom: set the worker's stop event and wake it (the model_check kills its child)
        self.lab.shutdown()
        self.teach.shutdown()
        if self.fetch_dialog is not None:
            self.fetch_dialog.shutdown()
        for thread in self.worker_threads():
            # a camera read() can block for a while: wait, but say so rather than hang silently
            if not thread.wait(5000):
                print(f"resnet-edge: waiting for the {thread.objectName()} thread to finish…", file=sys.stderr)
                thread.wait()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.shutdown()
        super().closeEvent(event)

    # --- what is shown ----------------------------------------------------------------------------

    def _clear_prediction(self, why: str) -> None:
        """No prediction on screen: the source is not delivering (or a new one is coming)."""
        self.video.set_prediction(None)
        self.video.set_cam(None)
        self.topk.set_prediction(None, placeholder=why)

    def _delivering(self) -> bool:
        return self._source_trouble is None and self.video.message is None

    def _reshow(self) -> None:
        """Show the last result again under changed settings (threshold)."""
        if self.last_result is not None and self.model_info is not None and self._delivering() \
                and self.video.prediction is not None:
            self._show(self.last_result, smooth=False)

    def _pace_frames(self, result: InferenceResult, rate: float | None = None) -> None:
        """Frames come with their results while the model takes under KEEP_UP_SHARE of the frame interval of a
        flowing source; else (a slow model, a slow source) each frame is shown as it arrives (frameReady)."""
        rate = self.capture.meter.rate() if rate is None else rate
        took_ms = max(self.inference.latency_ms, result.latency_ms)
        self.capture.notify_frames = not (rate >= FLOWING_FPS and took_ms < KEEP_UP_SHARE * 1000.0 / rate)

    def _frames_on_arrival(self) -> None:
        """Show each frame as it comes until results show the (new) model keeps up with the (new) source."""
        self.capture.notify_frames = True

    def _show(self, result: InferenceResult, smooth: bool = True, with_frame: bool = False,
              rate: float | None = None) -> None:
        prediction = result.prediction
        if smooth:
            if result.frame.kind in STILL_KINDS:
                self.smoother.reset()  # a still image: each frame stands alone
            probabilities = self.smoother.update(prediction.probabilities)
        else:
            probabilities = self.video.prediction.probabilities
        shown = shown_prediction(prediction, probabilities, result.model.labels, self.threshold)
        # a live source brings the next frame within ~1/FLOWING_FPS s: the label is drawn with it, one paint a frame
        flowing = result.frame.kind not in STILL_KINDS and not self.capture.paused \
            and (self.capture.meter.rate() if rate is None else rate) >= FLOWING_FPS
        numbers_due = self.topk.set_prediction(shown)  # the label's number changes with the bars', not between
        self.video.set_prediction(shown, with_next_frame=flowing and not with_frame,
                                  numbers_due=numbers_due or not flowing)

    def _show_cam(self, result: InferenceResult) -> None:
        spec = self._spec()
        if result.cam is None or spec is None or not self.cam_check.isChecked():
            self.video.set_cam(None)
            return
        height, width = result.frame.image.shape[:2]
        spec = dataclasses.replace(spec, resize_policy=result.resize_policy or spec.resize_policy)
        # a small map, scaled smoothly by the painter: blending a frame-sized overlay 30 times a second costs CPU
        shrink = min(1.0, CAM_SIDE / max(height, width))
        heat, _region = cam_on_region(result.cam, spec, max(1, round(height * shrink)), max(1, round(width * shrink)))
        self.video.set_cam(heat, self.cam_opacity.value() / 100.0)

    def _spec(self):
        info = self.model_info
        if info is None or info.preprocess is None:
            return None
        return dataclasses.replace(info.preprocess, resize_policy=self.policy or info.resize_policy)

    def _update_region(self) -> None:
        spec, shape = self._spec(), self.video.frame_size
        if spec is None or shape is None:
            self.video.set_region(None)
            return
        self.video.set_region(visible_region(spec, shape[0], shape[1]))

    # --- worker signals ---------------------------------------------------------------------------

    def _on_result(self, result: InferenceResult) -> None:
        if self._closed:
            return
        if result.frame.opening <= self._switch_opening or not self._delivering():
            return  # a frame of the source before, or a source in trouble: never shown as live
        self.last_result = result
        # a model that keeps up brings each frame with its prediction: both drawn in one paint, and the frame on
        # screen is the one the label is about
        with_frame = result.frame.seq > self.shown_seq
        if with_frame:
            self._show_frame(result.frame)
        rate = self.capture.meter.rate()  # once per result: both decisions below read it
        self._show(result, with_frame=with_frame, rate=rate)
        self._pace_frames(result, rate)
        if result.blocks is not None:
            self.last_probe = result
            self.block_panel.set_blocks(result.blocks)
            selected = self.block_panel.selected
            self.channel_grid.set_block(result.blocks[selected] if selected is not None else None)
            self._show_cam(result)
        if self.recorder is not None:
            self.recorder.write(result)
        if time.monotonic() >= self._status_due:
            self._refresh_status()

    def _on_check_passed(self, request_id: int, path: Path, provider: str) -> None:
        if request_id == self._model_request and not self._closed:
            self.inference.request_model(path, provider)

    def _on_check_failed(self, request_id: int, message: str) -> None:
        if request_id == self._model_request and not self._closed:
            self._on_model_failed(message)

    def _on_model_loaded(self, info: ModelInfo) -> None:
        self.model_info = info
        self.requested_provider = info.requested_provider
        self.model_label.setText(printable(f"{info.path.name}") + f"\n{printable(info.arch, 64)}, {printable(info.precision, 16)}, {len(info.labels)} classes")
        self.model_label.setToolTip(str(info.path))
        self.classes_button.setText(f"{len(info.labels)} classes")
        self.classes_button.setToolTip("The classes this model knows (it can only answer one of them):\n"
                                       + "\n".join(info.labels[:60]) + ("\n…" if len(info.labels) > 60 else ""))
        self.classes_menu.clear()
        for label in info.labels[:200]:
            self.classes_menu.addAction(label).setEnabled(False)
        variants = precision_variants(info.path) or {precision_of(info.path): info.path}
        self.precision_combo.clear()
        self.precision_combo.addItems(list(variants))
        self._set_combo(self.precision_combo, precision_of(info.path))
        self.precision_combo.setEnabled(len(variants) > 1)
        self._set_combo(self.provider_combo, info.requested_provider)
        key = f"models/{model_key(info.path)}"
        # the model's own threshold (a taught model brings one) unless the user set one for this model
        stored = self.settings.value(f"{key}/threshold")
        own = model_threshold(info.extra)
        self.set_threshold(float(stored) if stored is not None else own if own is not None else DEFAULT_THRESHOLD)
        policy = self.settings.value(f"{key}/policy")
        self.set_policy(policy if policy in resize_policies() else info.resize_policy)
        self.cam_check.setEnabled(info.cam_note is None)
        if info.cam_note:
            self.cam_check.setToolTip(f"no activation map for this model: {info.cam_note}")
        self.channel_grid.set_block(None)
        self.last_probe = None
        self.smoother.reset()
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

    def _on_source_opened(self, description: str, kind: str = "") -> None:
        self._source_trouble = None
        self._frames_on_arrival()  # a reopened or another source: its first frames are shown as they come
        self.video.set_message(None)
        self.status_labels["source"].setText(description)
        self._set_folder_controls(kind == "folder")
        if self.source_spec == "auto" and kind == "demo" and self._auto_note is None:
            self._auto_note = "no camera found: showing the demo (pick a video, an image or a folder, or Rescan cameras)"
            self.video.set_caption(self._auto_note)
            self.statusBar().showMessage(self._auto_note, 20000)
        self._rebuild_source_combo(kind)
        if self._scan_pending:
            self.rescan_cameras()

    def _on_source_trouble(self, message: str, _delay: float) -> None:
        self._source_trouble = message
        self._frames_on_arrival()
        self.video.set_message(message)
        self._clear_prediction("the source is not delivering frames")
        self.statusBar().showMessage(message, 10000)
        if self._scan_pending:
            self.rescan_cameras()

    def _on_source_failed(self, message: str) -> None:
        """A file that cannot be read (said once, never retried): back to the source that worked, if any."""
        self._clear_prediction("the source is not delivering frames")
        back = self.working_spec if self.working_spec not in (None, self.source_spec) else None
        if back is None:
            self._source_trouble = message
            self.video.set_message(message)
            self.statusBar().showMessage(message)
            return
        self.set_source(back)
        self.statusBar().showMessage(f"{message}; back to {source_name(back)}", 20000)

    def _on_cameras_found(self, cameras: list[int]) -> None:
        self.cameras = cameras
        if self._announce_scan:
            self._announce_scan = False
            found = ", ".join(f"camera {index}" for index in cameras)
            self.statusBar().showMessage(f"found {found}" if cameras else "no camera found (tried 0–4)", 15000)
        self._rebuild_source_combo()

    def _on_block_clicked(self, index: int) -> None:
        if self.last_probe is not None and self.last_probe.blocks and index < len(self.last_probe.blocks):
            self.channel_grid.set_block(self.last_probe.blocks[index])

    # --- timers -----------------------------------------------------------------------------------

    def _refresh_frame(self) -> bool:
        """Show the slot's frame if it is new (the capture thread's frameReady, and the watch timer)."""
        frame = self.slot.latest()
        if frame is not None and frame.seq != self.shown_seq and frame.opening > self._switch_opening:
            self._show_frame(frame)
            return True
        return False

    def _show_frame(self, frame: CapturedFrame) -> None:
        self.shown_seq = frame.seq
        if not self._closed:
            self.watch_timer.start()  # restarted: it fires only after WATCH_MS without a frame
        if self.video.message is not None and self._source_trouble is None:
            self.video.set_message(None)  # frames again after a silence the watch reported: the banner goes here
        self.video.set_frame(frame.image)
        if self.working_spec != self.source_spec:
            self.working_spec = self.source_spec  # it delivered: a later failure comes back here
        self._set_folder_controls(frame.kind == "folder")
        self.video.set_caption(Path(frame.id).name if frame.kind == "image" else frame.id if frame.kind == "folder" else
                               self._auto_note if frame.kind == "demo" and self.source_spec == "auto" else None)
        if frame.image.shape[:2] != self._frame_shape:
            self._frame_shape = frame.image.shape[:2]
            self._update_region()

    def _watch_source(self) -> None:
        if self._refresh_frame():  # a frame no result brought and no signal announced: the model stopped keeping up
            self._frames_on_arrival()
        if self.video.label_pending:  # the frame it waited for did not come
            self.video.flush_label()
        # a camera whose read() hangs cannot tell us itself: notice the silence here
        capture, message = self.capture, self._source_trouble
        silent = time.monotonic() - capture.last_frame_time
        if message is None and capture.live and not capture.paused and capture.last_frame_time and silent > self.stall_seconds:
            message = f"{capture.description}: no frames for {silent:.0f} s; waiting for the camera"
        if message is not None and self.video.prediction is not None:
            self._clear_prediction("the source is not delivering frames")
        self.video.set_message(message)

    def _refresh_status(self) -> None:
        self._status_due = time.monotonic() + STATUS_MS / 1000
        if not self._closed:
            self.status_timer.start()  # restarted: while results come, they refresh the box and the timer waits
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

    def _set_folder_controls(self, folder: bool) -> None:
        self.previous_action.setEnabled(folder)
        self.next_action.setEnabled(folder)

    def _rebuild_source_combo(self, kind: str | None = None) -> None:
        entries: list[tuple[str, str]] = []
        known = {"auto", "demo"} | {str(index) for index in self.cameras}
        if self.source_spec not in known:
            entries.append((source_name(self.source_spec), self.source_spec))
        if self.source_spec == "auto":
            running = kind or self.capture.kind
            text = ("auto: no camera, demo" if running == "demo" else "auto: camera 0" if running == "camera"
                    else "auto (camera 0, else demo)")
            entries.append((text, "auto"))
        entries.append(("Demo (moving shapes)", "demo"))
        entries += [(f"Camera {index}", str(index)) for index in self.cameras]
        entries += [("Video or image file…", ":file"), ("Image folder…", ":folder"), ("Rescan cameras", ":scan")]
        self.source_combo.clear()
        for label, spec in entries:
            self.source_combo.addItem(label, spec)
        self.source_combo.setCurrentIndex(max(0, self.source_combo.findData(self.source_spec)))

    def last_folder(self) -> str:
        return str(self.settings.value("paths/last_folder", "") or "")

    def remember_folder(self, folder: Path) -> None:
        self.settings.setValue("paths/last_folder", str(folder))

    def _on_source_chosen(self, index: int) -> None:
        spec = self.source_combo.itemData(index)
        if spec == ":file":
            self._choose_source_file()
        elif spec == ":folder":
            folder = QFileDialog.getExistingDirectory(self, "Image folder", self.last_folder())
            if folder:
                self.remember_folder(Path(folder))
                self.set_source(folder)
        elif spec == ":scan":
            self.rescan_cameras(announce=True)
        elif spec != self.source_spec:
            self.set_source(spec)
        self._rebuild_source_combo()  # show what is playing, whatever the menu entry was

    def _choose_source_file(self) -> None:
        patterns = " ".join(f"*{suffix}" for suffix in (*VIDEO_SUFFIXES, *IMAGE_SUFFIXES))
        path, _ = QFileDialog.getOpenFileName(self, "Video or image", self.last_folder(),
                                              f"Videos and images ({patterns});;All files (*)")
        if path:
            self.remember_folder(Path(path).parent)
            self.set_source(path)

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
    parser = argparse.ArgumentParser(prog="resnet-edge gui", description="resnet-edge live view: predictions and "
                                     "residual blocks. With no display, the demo source is classified on the command line.")
    parser.add_argument("--model", "-m", help="an .onnx file or a shipped model's name (default: the last one used, "
                                        "else cifar10-resnet20)")
    parser.add_argument("--source", "-s", default=None,
                        help="auto (camera 0 if it opens, else demo), demo, a camera index, a video, an image or a "
                             "folder (default: the last one that worked, else auto)")
    parser.add_argument("--provider", default="auto", choices=PROVIDER_CHOICES, help="execution provider (default: auto)")
    parser.add_argument("--precision", default=None, choices=PRECISIONS,
                        help="which version of the model to start on (default: the last one used, else fp32)")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: all cores)")
    parser.add_argument("--self-test", nargs="?", type=int, const=5, default=None, metavar="N",
                        help="headless check (offscreen unless QT_QPA_PLATFORM is set): N predictions on the demo "
                             "source (default 5), then the bundled sample image in fp32 and int8; prints them and "
                             "the provider, exits 0 if all worked (see gui/selftest.py)")
    parser.add_argument("--self-test-timeout", type=float, default=60.0, metavar="S", help=argparse.SUPPRESS)
    # internal: the app runs its own executable with these to try a model in a child process (gui/modelcheck.py)
    parser.add_argument(CHECK_FLAG, dest="check_model", metavar="PATH", help=argparse.SUPPRESS)
    parser.add_argument("--check-result", metavar="FILE", help=argparse.SUPPRESS)
    return parser


def remembered_start(args: argparse.Namespace, settings: QSettings) -> tuple[str | None, str, str]:
    """(model, source, precision): the command line's, else what worked last time, else the defaults."""
    model = args.model
    if model is None:
        stored = settings.value("start/model")
        model = stored if stored and Path(str(stored)).is_file() else None
    source = args.source
    if source is None:
        stored = str(settings.value("start/source", "") or "")
        usable = stored in ("auto", "demo") or stored.isdigit() or (stored and Path(stored).exists())
        source = stored if usable else "auto"
    precision = args.precision or str(settings.value("start/precision", "fp32"))
    return model, source, precision if precision in PRECISIONS else "fp32"


def classify_instead(args: argparse.Namespace) -> int:
    """No display: say so, and classify the demo source (or the one given) on the command line instead."""
    from resnet_edge.cli import main as cli_main

    print("no display found (DISPLAY and WAYLAND_DISPLAY are not set): classifying the demo source on the "
          "command line instead", file=sys.stderr)
    argv = ["classify", "--source", "demo" if args.source in (None, "auto") else args.source, "--max-frames", "30",
            "--provider", args.provider, "--precision", args.precision or "fp32"]
    return cli_main(argv + (["--model", args.model] if args.model else []))


def main(argv: list[str] | None = None) -> int:
    """Run the app until its window closes; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.check_model is not None:  # a child process trying a model for the app: no window, no Qt
        from .modelcheck import check_main

        return check_main(list(sys.argv[1:] if argv is None else argv))
    if args.self_test is None:
        from .qtdeps import check_qt_system_libs, has_display

        if not has_display():  # the self-test runs offscreen by itself
            return classify_instead(args)
        # before Qt can abort the process over a missing system library (exit 134)
        code = check_qt_system_libs()
        if code:
            return code
    if pyside_drops_references():
        import PySide6

        print(f"resnet-edge: PySide6 {PySide6.__version__} has a reference-counting bug that crashes the app on "
              f"Python {sys.version_info.major}.{sys.version_info.minor}; install another version "
              f"(pip install 'PySide6-Essentials<6.12') or use Python 3.12+", file=sys.stderr)
        return 2
    if args.self_test is not None:
        from .selftest import run_self_test

        args.source, args.precision = args.source or "auto", args.precision or "fp32"
        return run_self_test(args)
    app = QApplication.instance() or QApplication([sys.argv[0]])
    app.setApplicationName("resnet-edge")
    settings = app_settings()
    model, source, precision = remembered_start(args, settings)
    window = MainWindow(model=model, source=source, provider=args.provider, precision=precision,
                        threads=args.threads, settings=settings)
    window.show()
    code = app.exec()
    window.shutdown()  # after quit() from elsewhere than the window's close button
    return int(code)
