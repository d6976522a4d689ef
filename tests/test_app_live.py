"""The live view a user can trust (issue 23), offscreen: "not sure" and smoothing, the crop box, the CAM overlay,
sources that fail honestly, a window that fits the screen, settings that persist, drag and drop, the Qt
system-library check, the lab's verdict."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QMimeData, QPointF, QRect, Qt, QUrl  # noqa: E402
from PySide6.QtGui import QDropEvent  # noqa: E402

import resnet_edge_gui.qtdeps as qtdeps  # noqa: E402
from resnet_edge_gui.app import MainWindow, app_settings, build_parser, fit_rect, main, remembered_start  # noqa: E402
from resnet_edge_gui.confidence import Smoother, is_unsure, model_threshold, shown_prediction  # noqa: E402
from resnet_edge.errors import UserError  # noqa: E402
from resnet_edge.runtime import BlockActivation, Classifier, top_k  # noqa: E402
from resnet_edge.sources import Frame, FrameSource  # noqa: E402
from conftest import wait_results  # noqa: E402

WAIT_MS = 20000


# --- not sure, smoothing, the classes ---------------------------------------------------------------


def test_smoother_window_and_exponential():
    frames = [np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array([0.5, 0.5]), np.array([1.0, 0.0])]
    window = Smoother("window", 3)
    out = [window.update(p) for p in frames]
    np.testing.assert_allclose(out[-1], np.mean(frames[1:], axis=0))
    ema = Smoother("ema", 0.25)
    expected = frames[0]
    ema.update(frames[0])
    for p in frames[1:]:
        expected = 0.25 * p + 0.75 * expected
        got = ema.update(p)
    np.testing.assert_allclose(got, expected)
    np.testing.assert_array_equal(Smoother("off").update(frames[1]), frames[1])
    assert np.isnan(window.update(np.array([np.nan, 0.0]))).any()  # NaN passes through and resets
    np.testing.assert_array_equal(window.update(frames[0]), frames[0])


def test_not_sure_rule_and_the_models_own_threshold():
    prediction = top_k(np.array([[2.0, 1.0, 0.0]]), ["a", "b", "c"])[0]
    shown = shown_prediction(prediction, prediction.probabilities, ["a", "b", "c"], threshold=0.7)
    assert shown.label == "a" and shown.unsure and 0.6 < shown.probability < 0.7
    assert not shown_prediction(prediction, prediction.probabilities, ["a", "b", "c"], 0.5).unsure
    prediction.unsure = False  # a model's own out-of-distribution flag wins over the threshold
    assert not is_unsure(prediction, 0.1, 0.9)
    assert model_threshold({"teach": {"threshold": 0.8}}) == 0.8
    assert model_threshold({"unsure.threshold": "0.35"}) == 0.35
    assert model_threshold({"teach": {"threshold": 7}}) is None and model_threshold({}) is None


def test_threshold_smoothing_and_classes_in_the_window(qtbot, make_window):
    window = make_window()
    wait_results(qtbot, window, 3)
    assert window.classes_button.text() == "10 classes"
    assert [a.text() for a in window.classes_menu.actions()] == window.model_info.labels

    window.threshold_spin.setValue(100)  # as a user typing 100 %
    assert window.threshold == 1.0
    qtbot.waitUntil(lambda: window.video.prediction is not None and window.video.prediction.unsure, timeout=WAIT_MS)
    assert window.video.prediction_text().startswith("not sure") and window.topk.heading().startswith("not sure")
    window.set_threshold(0.0)
    qtbot.waitUntil(lambda: window.video.prediction is not None and not window.video.prediction.unsure, timeout=WAIT_MS)
    assert not window.video.prediction_text().startswith("not sure")

    raw, checks = [], []

    def check(result):  # runs after the window's own slot: what it shows now
        if window.video.prediction is not None and window.video.prediction.raw is result.prediction:
            raw.append(result.prediction.probabilities)
            if len(raw) >= 3:
                checks.append(np.allclose(window.topk.prediction.probabilities, np.mean(raw[-3:], axis=0), atol=1e-6))

    window.smoothing_combo.setCurrentIndex(1)
    window.smoothing_combo.activated.emit(1)  # "average of 3 frames"
    window.inference.resultReady.connect(check)
    qtbot.waitUntil(lambda: len(checks) >= 4, timeout=WAIT_MS)
    assert all(checks)
    rows = window.topk.rows()
    assert rows == [(label, p) for label, _i, p in window.topk.prediction.top]


def test_still_images_are_not_smoothed_and_show_their_file_name(qtbot, make_window, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png", "c.png"):
        cv2.imwrite(str(folder / name), rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
    window = make_window(source=str(folder))
    window.set_smoothing("window", 10)
    qtbot.waitUntil(lambda: window.video.caption in ("a.png", "b.png", "c.png"), timeout=WAIT_MS)
    assert window.next_action.isEnabled() and window.previous_action.isEnabled()
    window.set_paused(True)
    assert window.pause_action.text() == "Resume"
    qtbot.wait(300)
    shown = window.video.caption
    order = ["a.png", "b.png", "c.png"]
    window.next_action.trigger()
    qtbot.waitUntil(lambda: window.video.caption == order[(order.index(shown) + 1) % 3], timeout=WAIT_MS)
    window.previous_action.trigger()
    qtbot.waitUntil(lambda: window.video.caption == shown, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: window.last_result is not None and window.last_result.frame.id == shown, timeout=WAIT_MS)
    # each picture stands alone: what is shown is that picture's own probabilities
    np.testing.assert_allclose(window.topk.prediction.probabilities, window.last_result.prediction.probabilities)
    window.set_paused(False)
    assert window.pause_action.text() == "Pause"


# --- what the model sees, where it looks ------------------------------------------------------------


def test_crop_box_follows_the_policy_and_is_remembered_per_model(qtbot, make_window, tmp_path, models_dir):
    photo = tmp_path / "wide.png"
    cv2.imwrite(str(photo), np.random.default_rng(1).integers(0, 256, (360, 640, 3), dtype=np.uint8))
    settings = tmp_path / "settings.ini"
    window = make_window(source=str(photo), settings=settings)
    window.resize(1200, 800)
    qtbot.waitUntil(lambda: window.video.region is not None and window.model_info is not None, timeout=WAIT_MS)
    # a 32x32 model with crop ratio 1 sees the centre, as torchvision's geometry has it: the shorter side resized to
    # 32 makes the frame int(32 * 640 / 360) = 56 wide, the crop starts at round((56 - 32) / 2) = 12, so the frame
    # region is x = 12 * 640 / 56 = 137.1, w = 32 * 640 / 56 = 365.7
    assert window.video.region == (137, 0, 366, 360)
    shown, box = window.video.image_rect(), window.video.region_rect()
    scale = shown.width() / 640
    assert box.left() == pytest.approx(shown.left() + 137 * scale, abs=1) and box.width() == pytest.approx(366 * scale, abs=1)
    assert box.top() == pytest.approx(shown.top()) and box.height() == pytest.approx(shown.height())

    index = window.policy_combo.findData("stretch")
    window.policy_combo.setCurrentIndex(index)
    window.policy_combo.activated.emit(index)  # as a user picking "whole frame, stretched"
    assert window.video.region == (0, 0, 640, 360)
    qtbot.waitUntil(lambda: window.last_result is not None and window.last_result.resize_policy == "stretch",
                    timeout=WAIT_MS)
    classifier = Classifier.load(models_dir / "cifar10-resnet20.onnx", provider="cpu", threads=1, quiet=True)
    classifier.contract.preprocess = dataclasses.replace(classifier.contract.preprocess, resize_policy="stretch")
    expected = classifier.classify(window.last_result.frame.image)[0]
    np.testing.assert_allclose(window.last_result.prediction.probabilities, expected.probabilities, atol=1e-5)
    window.shutdown()

    again = make_window(source=str(photo), settings=settings)
    qtbot.waitUntil(lambda: again.model_info is not None and again.video.region is not None, timeout=WAIT_MS)
    assert again.policy == "stretch" and again.policy_combo.currentData() == "stretch"
    assert again.video.region == (0, 0, 640, 360)


def test_cam_overlay_is_drawn_in_the_crop_box(qtbot, make_window):
    window = make_window()
    assert window.cam_check.isChecked()
    qtbot.waitUntil(lambda: window.video.cam is not None, timeout=WAIT_MS)
    x, y, w, h = window.video.region
    ch, cw = window.video.cam.shape  # the region's shape, at most CAM_SIDE pixels a side
    assert max(ch, cw) <= 160 and abs(ch / cw - h / w) < 0.05
    assert 0.0 <= window.video.cam.min() and window.video.cam.max() <= 1.0
    assert window.last_probe.cam is not None and window.last_probe.cam.shape == (8, 8)
    assert window.inference.cam_ms > 0
    window.cam_check.setChecked(False)
    assert window.video.cam is None
    window.cam_check.setChecked(True)
    assert window.video.cam is not None
    window.video.grab()  # paints with the overlay without error


# --- sources that fail honestly ---------------------------------------------------------------------


def test_broken_video_file_says_so_once_and_goes_back_with_no_stale_label(qtbot, make_window, tmp_path):
    window = make_window()
    qtbot.waitUntil(lambda: window.video.prediction is not None and window.working_spec == "demo", timeout=WAIT_MS)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    failures = []
    window.capture.failed.connect(lambda message: failures.append(
        (message, window.video.prediction, window.topk.prediction)))  # after the window's own slot
    window.set_source(str(broken))
    assert window.video.prediction is None  # nothing of the old source is shown as the new one's
    qtbot.waitUntil(lambda: bool(failures), timeout=WAIT_MS)
    message, label, bars = failures[0]
    assert "broken.mp4" in message and label is None and bars is None
    qtbot.waitUntil(lambda: window.source_spec == "demo", timeout=WAIT_MS)
    assert "back to demo" in window.statusBar().currentMessage()
    assert window.source_combo.currentData() == "demo"
    qtbot.waitUntil(lambda: window.video.prediction is not None and window.last_result.frame.kind == "demo",
                    timeout=WAIT_MS)
    qtbot.wait(500)
    assert len(failures) == 1 and not window.capture.troubles  # said once, never retried like a camera


def test_a_silent_camera_shows_no_prediction(qtbot, make_window):
    release = threading.Event()

    class Stuck(FrameSource):
        kind, description = "camera", "stuck camera"

        def __iter__(self):
            rng = np.random.default_rng(0)
            for index in range(10 ** 9):
                if index == 20:
                    release.wait(10)
                threading.Event().wait(0.01)
                yield Frame(str(index), rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))

    window = make_window(source="0", source_factory=lambda: Stuck(), stall_seconds=0.4)
    try:
        qtbot.waitUntil(lambda: window.video.message is not None, timeout=WAIT_MS)
        qtbot.wait(200)
        assert window.video.prediction is None and window.topk.prediction is None
    finally:
        release.set()
    qtbot.waitUntil(lambda: window.video.message is None and window.video.prediction is not None, timeout=WAIT_MS)


def test_auto_without_camera_says_so(qtbot, make_window, monkeypatch):
    import resnet_edge_gui.workers as workers

    def no_camera(index, resolution=None):
        raise UserError(f"camera {index} did not open (no such camera, or it is in use)")

    monkeypatch.setattr(workers, "VideoSource", no_camera)
    window = make_window(source="auto", source_factory=workers.source_factory("auto", camera=no_camera))
    qtbot.waitUntil(lambda: window.capture.kind == "demo" and window.source_combo.currentText().startswith("auto:"),
                    timeout=WAIT_MS)
    assert window.source_combo.currentText() == "auto: no camera, demo"
    assert window.video.caption.startswith("no camera found: showing the demo")  # on the video, not a fleeting line
    assert "no camera" in window.status_labels["source"].text()


def test_rescan_says_what_it_found(qtbot, make_window, monkeypatch):
    import resnet_edge_gui.workers as workers

    monkeypatch.setattr(workers, "scan_cameras", lambda indices, skip: [])
    window = make_window()
    qtbot.waitUntil(lambda: window.model_info is not None, timeout=WAIT_MS)  # its own status line comes first
    window.rescan_cameras(announce=True)
    qtbot.waitUntil(lambda: "no camera found" in window.statusBar().currentMessage(), timeout=WAIT_MS)
    monkeypatch.setattr(workers, "scan_cameras", lambda indices, skip: [0, 2])
    window.rescan_cameras(announce=True)
    qtbot.waitUntil(lambda: window.statusBar().currentMessage() == "found camera 0, camera 2", timeout=WAIT_MS)
    items = [window.source_combo.itemText(i) for i in range(window.source_combo.count())]
    assert "Camera 0" in items and "Camera 2" in items and "Camera 1" not in items


# --- a window that fits -----------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1, 2])
def test_window_fits_a_1366x768_screen_at_100_and_200_percent(qtbot, make_window, scale):
    window = make_window()
    taskbar = 40
    available = QRect(0, 0, 1366 // scale, (768 - taskbar) // scale)  # what Qt reports in logical pixels
    window.fit_to_screen(available)
    qtbot.wait(50)
    assert available.contains(window.frameGeometry()), (window.frameGeometry(), available)
    expected = fit_rect(available)
    frame = window.frameGeometry().size() - window.size()  # title bar and borders
    assert window.width() >= expected.width() - frame.width() - 1  # not held larger by a minimum size,
    assert window.height() >= expected.height() - frame.height() - 1  # not needlessly small
    assert window.topk.isVisibleTo(window) and window.status_labels["source"].isVisibleTo(window)


def overlapping(widgets):
    rects = [(w, QRect(w.mapTo(w.window(), w.rect().topLeft()), w.size())) for w in widgets]
    return [(a.objectName() or type(a).__name__, b.objectName() or type(b).__name__)
            for i, (a, ra) in enumerate(rects) for b, rb in rects[i + 1:] if ra.intersects(rb)]


def test_nothing_overlaps_at_800x600_and_resnet56_blocks_are_readable_at_1024x700(qtbot, make_window):
    window = make_window()
    window.resize(800, 600)
    qtbot.wait(100)
    parts = [window.video, window.side, window.block_panel, window.legend, window.channel_grid]
    assert overlapping(parts) == []
    assert window.legend.height() >= window.legend.sizeHint().height()  # one line, not squeezed
    assert window.block_panel.height() >= window.block_panel.minimumHeight()

    names = [f"layer{stage}.{index}" for stage in (1, 2, 3) for index in range(9)]  # ResNet-56: 27 blocks
    window.resize(1024, 700)
    qtbot.wait(100)
    window.inference.probing = False  # keep the real model's probes from replacing the 27 blocks
    qtbot.wait(300)
    window.block_panel.set_blocks([BlockActivation(name, np.ones((4, 8, 8), np.float32), np.ones((4, 8, 8), np.float32))
                                   for name in names])
    rects, tile = window.block_panel._geometry()
    assert len(rects) == 27 and rects[-1].right() <= window.block_panel.width()
    assert min(r.width() for r in rects) >= 16 and tile >= 12  # a column per block, a visible heatmap


# --- settings ---------------------------------------------------------------------------------------


def test_settings_persist_between_runs(qtbot, make_window, tmp_path, models_dir, monkeypatch):
    settings = tmp_path / "app.ini"
    window = make_window(settings=settings)
    qtbot.waitUntil(lambda: window.model_info is not None and window.working_spec == "demo", timeout=WAIT_MS)
    window.fit_to_screen(QRect(0, 0, 700, 600))  # inside the offscreen platform's 800x800 screen
    window.set_threshold(0.7)
    window.smoothing_combo.setCurrentIndex(2)
    window.smoothing_combo.activated.emit(2)
    window.set_mirror(True)
    window.cam_check.setChecked(False)
    window.remember_folder(tmp_path)
    window.shutdown()
    size = window.size()  # as saved

    again = make_window(settings=settings)
    qtbot.waitUntil(lambda: again.model_info is not None, timeout=WAIT_MS)
    assert again.size() == size
    assert again.threshold == pytest.approx(0.7) and again.threshold_spin.value() == 70
    assert again.smoothing_combo.currentIndex() == 2 and again.smoother.mode == "window" and again.smoother.amount == 5
    assert again.mirror_check.isChecked() and again.capture.loop.mirror
    assert not again.cam_check.isChecked() and again.last_folder() == str(tmp_path)

    stored = app_settings(settings)
    assert stored.value("start/source") == "demo"
    assert Path(stored.value("start/model")) == models_dir / "cifar10-resnet20.onnx"
    model, source, precision = remembered_start(build_parser().parse_args([]), stored)
    assert (model, source, precision) == (str(models_dir / "cifar10-resnet20.onnx"), "demo", "fp32")
    model, source, _ = remembered_start(build_parser().parse_args(["--source", "0"]), stored)
    assert source == "0"  # the command line wins


def test_files_dropped_on_the_window(qtbot, make_window, tmp_path, models_dir, monkeypatch):
    window = make_window()
    opened = []
    monkeypatch.setattr(window, "open_model", opened.append)
    model = models_dir / "cifar10-resnet20.onnx"
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(model))])
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    window.dropEvent(event)
    assert opened == [model]
    photo = tmp_path / "p.jpg"
    cv2.imwrite(str(photo), np.zeros((20, 20, 3), np.uint8))
    assert window.handle_drop([photo]) and window.source_spec == str(photo)
    assert not window.handle_drop([tmp_path / "notes.txt"])


def test_video_only_full_screen(qtbot, make_window):
    window = make_window()
    window.fullscreen_action.trigger()
    assert not window.side.isVisible() and not window.bottom.isVisible() and not window.toolbar.isVisible()
    assert window.video.isVisible()
    window.set_video_only(False)
    assert window.side.isVisible() and window.bottom.isVisible() and not window.fullscreen_action.isChecked()


# --- first launch on a minimal Linux ----------------------------------------------------------------


def test_missing_qt_system_libraries_are_named_with_one_install_command(monkeypatch, capsys):
    present = {"xcb-xkb", "xkbcommon-x11", "EGL", "GL", "xcb-image", "xcb-render-util", "dbus-1"}
    finder = lambda name: f"lib{name}.so" if name in present else None  # noqa: E731
    missing = qtdeps.missing_system_libs(finder)
    assert [lib.apt for lib in missing] == ["libxcb-cursor0", "libxcb-icccm4", "libxcb-keysyms1"]
    assert qtdeps.install_command(missing, "apt-get", root=False) == \
        "sudo apt-get install -y libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1"
    assert qtdeps.install_command(missing, "dnf", root=True) == \
        "dnf install -y xcb-util-cursor xcb-util-keysyms xcb-util-wm"
    assert qtdeps.missing_system_libs(lambda name: "found") == []
    # the packaged app leaves D-Bus to the system: where it is missing, it is named too
    assert [lib.apt for lib in qtdeps.missing_system_libs(lambda name: None if name == "dbus-1" else "found")] == [
        "libdbus-1-3"]
    assert qtdeps.needs_xcb("linux", {"QT_QPA_PLATFORM": "xcb"})
    assert not qtdeps.needs_xcb("linux", {"QT_QPA_PLATFORM": "offscreen"})
    assert not qtdeps.needs_xcb("win32", {}) and not qtdeps.needs_xcb("linux", {"WAYLAND_DISPLAY": "wayland-0"})

    # the app checks before it creates the QApplication: one message, exit 2, no abort
    monkeypatch.setenv("QT_QPA_PLATFORM", "xcb")
    monkeypatch.setattr(qtdeps, "default_finder", finder)
    monkeypatch.setattr(qtdeps, "package_manager", lambda: "apt-get")
    assert main(["--source", "demo"]) == 2
    err = capsys.readouterr().err
    assert "missing system libraries" in err and "apt-get install -y libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1" in err


# --- the lab's verdict ------------------------------------------------------------------------------


def test_lab_judges_only_on_enough_seeds(qtbot, tmp_path):
    from resnet_edge_gui.widgets.lab import MIN_SEEDS, LabTab, verdict_line

    assert verdict_line(False, "plain bounded 0/5", 2).startswith("too few seeds to judge (2;")
    assert verdict_line(True, "x", MIN_SEEDS) == "HOLDS: x" and verdict_line(False, "x", 7) == "DOES NOT HOLD: x"
    tab = LabTab(tmp_path)
    qtbot.addWidget(tab)
    assert tab.seeds_spin.value() == MIN_SEEDS == 5  # the one-click run uses as many seeds as the CLI
    assert tab.verdict_label.text() == "no run yet"


def test_snapshot_from_the_lab_tab_and_dialogs_at_the_last_folder(qtbot, make_window, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    window = make_window()
    qtbot.waitUntil(lambda: window.video.prediction is not None, timeout=WAIT_MS)
    window.tabs.setCurrentWidget(window.lab)
    path = window.snapshot(tmp_path / "shot.png")
    image = cv2.imread(str(path))
    assert image.shape[:2] == (window.live_view.height(), window.live_view.width())  # the live view, not the lab

    photo = tmp_path / "pictures" / "p.png"
    photo.parent.mkdir()
    cv2.imwrite(str(photo), np.zeros((20, 30, 3), np.uint8))
    asked = []

    def fake_dialog(parent, title, start, filters):
        asked.append(start)
        return str(photo), filters

    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(fake_dialog))
    window._choose_source_file()
    assert window.source_spec == str(photo)
    window._choose_source_file()  # the second dialog opens where the first file was
    assert asked[1] == str(photo.parent)


# --- a tenth of the CPU: what the live path does to stay cheap ---------------------------------------


def test_a_model_that_keeps_up_brings_each_frame_with_its_prediction(qtbot, make_window):
    """The demo runs at 30 fps and the test model takes a few ms: frames come with their results (one wake and
    one paint per frame), the label on screen is the prediction for the frame on screen, and a model request
    puts frames back on arrival until the new model shows it keeps up."""
    window = make_window()
    wait_results(qtbot, window, 3)
    qtbot.waitUntil(lambda: not window.capture.notify_frames, timeout=WAIT_MS)
    seen = []

    def check(result):  # after the window's own slot
        if not window.capture.notify_frames and window.video.prediction is not None:
            seen.append((window.shown_seq, result.frame.seq, window.video.prediction.raw is result.prediction,
                         window.video.label_pending))

    window.inference.resultReady.connect(check)
    shown_before = window.video.frames_shown
    qtbot.waitUntil(lambda: len(seen) >= 10, timeout=WAIT_MS)
    window.inference.resultReady.disconnect(check)
    assert window.video.frames_shown >= shown_before + 10
    assert all(shown == classified and same and not pending for shown, classified, same, pending in seen)

    window.open_model(window.model_info.path)  # the same file again: a request like any other
    assert window.capture.notify_frames


def test_a_slow_model_leaves_frames_on_arrival_and_draws_its_label_with_the_next_frame(qtbot, make_window):
    window = make_window()
    wait_results(qtbot, window, 3)
    result = window.last_result
    slow = dataclasses.replace(result, latency_ms=30.0)  # more than a quarter of a 30 fps frame interval
    window._pace_frames(slow)
    assert window.capture.notify_frames
    window.video.set_prediction(window.video.prediction, with_next_frame=True)
    assert window.video.label_pending
    window.video.repaint()  # the next frame's paint draws it
    assert not window.video.label_pending
    window.video.set_prediction(window.video.prediction, with_next_frame=True)
    window._watch_source()  # no frame came: the watch timer draws it
    assert not window.video.label_pending


def test_the_label_number_changes_with_the_bars_and_a_new_class_at_once(qtbot):
    from types import SimpleNamespace

    from resnet_edge_gui.widgets.video import VideoView

    view = VideoView()
    qtbot.addWidget(view)
    view.resize(400, 300)
    view.set_frame(np.full((240, 320, 3), 128, np.uint8))

    def frame(label, probability, unsure=False, due=False, flowing=True):
        view.set_prediction(SimpleNamespace(label=label, probability=probability, finite=True, unsure=unsure),
                            with_next_frame=flowing, numbers_due=due)
        view.grab()  # a paint, as the next frame's
        return view.label_shown

    blank = view.grab().toImage()
    assert frame("cat", 0.932) == "cat  93 %"  # the first label is drawn whatever the beat
    assert view.grab().toImage().pixelColor(14, 20) != blank.pixelColor(14, 20)  # the tag is drawn over the frame
    assert frame("cat", 0.939) == "cat  93 %"  # whole percent, rounded down
    assert frame("cat", 0.951) == "cat  93 %"  # the same class, the bars not redrawn: the number waits
    assert view._label_late.isActive()  # ...and is drawn LATE_MS after the last result at the latest
    assert frame("dog", 0.5) == "dog  50 %"  # a new class at once
    assert not view._label_late.isActive()
    assert frame("dog", 0.2, unsure=True) == "not sure  (maybe dog  20 %)"  # "not sure" at once
    assert frame("dog", 0.6) == "dog  60 %"
    assert frame("dog", 0.62, due=True) == "dog  62 %"  # with the bars
    view.set_prediction(SimpleNamespace(label="dog", probability=0.64, finite=True, unsure=False), True, True)
    view.set_prediction(SimpleNamespace(label="dog", probability=0.66, finite=True, unsure=False), True, False)
    view.grab()
    assert view.label_shown == "dog  66 %"  # a due number not yet painted stays due for the next paint
    assert frame("dog", 0.4, flowing=False, due=True) == "dog  40 %"  # a still image: its own number
    assert frame("dog", 0.55) == "dog  40 %"
    view.show()
    qtbot.waitExposed(view)
    qtbot.waitUntil(lambda: view.label_shown == "dog  55 %", timeout=WAIT_MS)  # no later result came
    view.set_prediction(None)
    view.grab()
    assert view.label_shown is None


def test_the_app_redraws_the_label_number_with_the_bars(qtbot, make_window):
    window = make_window()
    wait_results(qtbot, window, 3)
    qtbot.waitUntil(lambda: not window.capture.notify_frames, timeout=WAIT_MS)  # frames come with their results
    seen = []

    def check(_result):  # after the window's own slot
        window.video.repaint()
        held = window.video.label_shown != window.video.prediction_text()
        seen.append((held, window.topk._repaint.isActive()))

    window.inference.resultReady.connect(check)
    qtbot.waitUntil(lambda: len(seen) >= 30 and any(held for held, _ in seen), timeout=WAIT_MS)
    window.inference.resultReady.disconnect(check)
    # a number is held back only while the bars hold theirs too (their catch-up timer runs), and both move on
    assert all(bars_waiting for held, bars_waiting in seen if held)
    assert any(not held for held, _ in seen)


def test_live_loops_run_small_models_on_one_thread_and_opencv_single_threaded(models_dir, monkeypatch):
    from resnet_edge.classify import classify_source
    from resnet_edge.runtime import LIVE_ONE_THREAD_PIXELS, live_threads

    model = models_dir / "cifar10-resnet20.onnx"
    assert Classifier.load(model, spinning=False, quiet=True).threads == 1  # 32x32: one thread
    assert Classifier.load(model, spinning=True, quiet=True).threads is None  # a batch job: ORT's default
    assert Classifier.load(model, spinning=False, threads=2, quiet=True).threads == 2  # asked for: kept
    contract = Classifier.load(model, quiet=True).contract
    big = dataclasses.replace(contract, preprocess=dataclasses.replace(contract.preprocess, input_size=(224, 224),
                                                                       resize_size=None))
    assert 224 * 224 > LIVE_ONE_THREAD_PIXELS and live_threads(big) is None

    class Camera(FrameSource):
        kind = "camera"

        def __iter__(self):
            yield Frame("frame 1", np.zeros((48, 64, 3), np.uint8))

    calls = []
    monkeypatch.setattr(cv2, "setNumThreads", calls.append)
    classifier = Classifier.load(model, spinning=False, quiet=True)
    stats = classify_source(classifier, Camera(), k=1, batch_size=1, on_prediction=lambda frame, p: None)
    assert stats.frames == 1 and calls == [1]
    classify_source(classifier, type("Folder", (Camera,), {"kind": "folder"})(), 1, 1, lambda frame, p: None)
    assert calls == [1]  # a folder is not a live loop: OpenCV keeps its threads


def test_the_frame_slot_calls_back_after_each_frame():
    from resnet_edge.capture import CapturedFrame, LatestFrame

    calls = []
    slot = LatestFrame(on_put=lambda: calls.append(slot.latest().seq))
    for seq in (1, 2):
        slot.put(CapturedFrame(seq, f"frame {seq}", np.zeros((2, 2, 3), np.uint8), 0.0))
    assert calls == [1, 2]


def test_timers_stay_quiet_while_frames_flow_and_speak_when_they_stop(qtbot, make_window):
    """Each wake-up of the UI thread costs CPU: while frames flow, the watch, status and top-5 timers do not fire
    (the status box and the bars are refreshed with results, in the frame's paint); when the source stops, the
    watch timer checks on it again."""
    window = make_window()
    wait_results(qtbot, window, 3)
    qtbot.waitUntil(lambda: not window.capture.notify_frames, timeout=WAIT_MS)
    fired = {"watch": 0, "status": 0, "bars": 0}
    for name, timer in (("watch", window.watch_timer), ("status", window.status_timer), ("bars", window.topk._repaint)):
        timer.timeout.connect(lambda name=name: fired.__setitem__(name, fired[name] + 1))
    status_before, frames_before = window._status_due, window.video.frames_shown
    qtbot.wait(1500)
    assert window.video.frames_shown >= frames_before + 20  # frames did flow
    assert window._status_due > status_before + 0.4  # the status box was refreshed by results...
    assert fired == {"watch": 0, "status": 0, "bars": 0}  # ...and no timer woke the UI thread
    window.set_paused(True)
    qtbot.waitUntil(lambda: fired["watch"] >= 2, timeout=WAIT_MS)  # no frames: the watch is back


def test_a_frame_no_result_brought_puts_frames_back_on_arrival(qtbot, make_window):
    """A model that stops keeping up (or hangs) while frames were coming with results: the watch timer finds a frame
    nobody showed, shows it and has the capture thread announce frames again."""
    from resnet_edge.capture import CapturedFrame

    window = make_window()
    wait_results(qtbot, window, 3)
    qtbot.waitUntil(lambda: not window.capture.notify_frames, timeout=WAIT_MS)
    window.set_paused(True)
    qtbot.wait(100)
    latest = window.slot.latest()
    window.capture.notify_frames = False  # as while results bring the frames
    window.slot.put(CapturedFrame(latest.seq + 1000, "held back", latest.image.copy(), latest.time, latest.kind,
                                  latest.opening))
    assert window.shown_seq != latest.seq + 1000
    window._watch_source()
    assert window.shown_seq == latest.seq + 1000 and window.capture.notify_frames


def test_the_bars_are_redrawn_with_results_not_on_a_timer_of_their_own(qtbot):
    from resnet_edge_gui.widgets.topk import LATE_MS, REPAINT_S, TopKBars

    bars = TopKBars()
    qtbot.addWidget(bars)
    prediction = top_k(np.array([[2.0, 1.0, 0.5]], np.float32), ["cat", "dog", "cup"], 3)[0]
    bars.set_prediction(prediction)  # the first: drawn at once
    assert not bars._repaint.isActive()
    bars.set_prediction(prediction)  # within REPAINT_S: only the late timer, in case no other comes
    assert bars._repaint.isActive() and bars._repaint.interval() == LATE_MS
    bars._requested -= REPAINT_S  # the next result falls due: drawn with it, the timer stopped
    bars.set_prediction(prediction)
    assert not bars._repaint.isActive()
    bars.set_prediction(prediction)
    bars.set_prediction(None)  # a cleared prediction goes at once
    assert not bars._repaint.isActive() and bars.prediction is None


def test_the_video_fills_only_the_bands_around_the_frame(qtbot):
    from PySide6.QtGui import QImage
    from resnet_edge_gui.widgets.video import BACKGROUND, VideoView

    view = VideoView()
    qtbot.addWidget(view)
    view.resize(400, 400)
    view.set_frame(np.full((100, 200, 3), (0, 200, 0), np.uint8))  # 2:1 -> 400x200, bands above and below
    image = QImage(400, 400, QImage.Format.Format_RGB32)
    image.fill(0xFF0000FF)  # blue: anything left unpainted shows
    view.render(image)
    target = view.image_rect()
    assert (target.top(), target.height()) == (100, 200)
    for y in (0, 50, 99, 300, 399):  # the bands
        assert image.pixelColor(200, y) == BACKGROUND
    for y in (101, 200, 298):  # the frame
        assert image.pixelColor(200, y).green() == 200 and image.pixelColor(200, y).blue() == 0
