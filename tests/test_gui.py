"""The desktop app, offscreen: sources, live predictions, the block panel, switching, trouble, shutdown.

Every window runs its real workers (capture + inference threads) on a freshly exported resnet20 with
probes; fake cameras stand in for hardware. Waits are qtbot.waitUntil on the condition itself.
"""

from __future__ import annotations

import csv
import itertools
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QThread, QTimer, Qt  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

import resnet_edge_gui.app  # noqa: E402
from resnet_edge_gui.app import MainWindow, main, precision_variants, resolve_start_model  # noqa: E402
from resnet_edge_gui.outputs import CSV_COLUMNS  # noqa: E402
from resnet_edge_gui.workers import (Backoff, CaptureWorker, CapturedFrame, InferenceWorker, LatestFrame,  # noqa: E402
                         source_factory)
from resnet_edge.errors import UserError  # noqa: E402
from resnet_edge.providers import available_providers  # noqa: E402
from resnet_edge.runtime import Classifier  # noqa: E402
from resnet_edge.sources import DemoSource, Frame, FrameSource  # noqa: E402
from conftest import wait_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WAIT_MS = 15000  # generous for a loaded machine; waitUntil returns as soon as the condition holds
PROBE_WAIT_MS = 180000  # a model the app did not ship is tried in a child process first (gui/modelcheck.py)


def live_threads() -> set[threading.Thread]:
    # QThreads that ran Python code can leave _DummyThread entries behind forever; they are not ours to join
    return {t for t in threading.enumerate() if t.is_alive() and not isinstance(t, threading._DummyThread)}


# --- pieces without a window -----------------------------------------------------------------------


def _frame(seq: int) -> CapturedFrame:
    return CapturedFrame(seq, f"f{seq}", np.zeros((4, 4, 3), np.uint8), time.monotonic())


def test_latest_frame_slot_keeps_only_the_newest():
    slot = LatestFrame()
    for seq in (1, 2, 3):
        slot.put(_frame(seq))
    assert slot.wait_newer(0, timeout=0.01).seq == 3  # 1 and 2 were overwritten, not queued
    assert slot.wait_newer(3, timeout=0.01) is None
    woke = []
    waiter = threading.Thread(target=lambda: woke.append(slot.wait_newer(3, timeout=10)))
    waiter.start()
    time.sleep(0.05)
    start = time.monotonic()
    slot.wake()  # a stop or a model request must not wait for the next frame
    waiter.join(timeout=5)
    assert woke == [None] and time.monotonic() - start < 1


def test_backoff_doubles_to_the_limit_and_resets():
    backoff = Backoff(0.5, 8.0)
    assert [backoff.next() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    backoff.reset()
    assert backoff.next() == 0.5


def test_auto_source_is_camera_0_else_demo_and_decides_once():
    calls = []

    def no_camera(index: int) -> FrameSource:
        calls.append(index)
        raise UserError(f"camera {index} did not open")

    factory = source_factory("auto", camera=no_camera)
    assert isinstance(factory(), DemoSource) and isinstance(factory(), DemoSource)
    assert calls == [0]

    class Camera(FrameSource):
        kind = "camera"

    opened = []
    factory = source_factory("auto", camera=lambda index: opened.append(index) or Camera())
    assert isinstance(factory(), Camera) and isinstance(factory(), Camera)  # a reconnect reopens the camera
    assert opened == [0, 0]


def test_start_model_follows_precision(models_dir):
    fp32 = models_dir / "cifar10-resnet20.onnx"
    with pytest.raises(UserError, match="int8"):
        resolve_start_model(None, "int8")
    with pytest.raises(UserError, match="no int8 version"):
        resolve_start_model(str(fp32), "int8")
    shutil.copy(fp32, models_dir / "cifar10-resnet20.int8.onnx")
    assert resolve_start_model(None, "int8") == models_dir / "cifar10-resnet20.int8.onnx"
    assert resolve_start_model(str(fp32), "int8") == models_dir / "cifar10-resnet20.int8.onnx"
    assert resolve_start_model(None, "fp32") == fp32
    assert precision_variants(fp32) == {"fp32": fp32, "int8": models_dir / "cifar10-resnet20.int8.onnx"}


def test_slow_model_drops_frames_and_never_queues_them(qtbot):
    """A model slower than the source sees only the newest frame; the skipped ones are counted as dropped."""

    def slow_classify(frame):
        time.sleep(0.08)
        return [SimpleNamespace(label="x", probability=1.0, top=[("x", 0, 1.0)], finite=True)]

    fake = SimpleNamespace(classify=slow_classify, has_probes=False, provider="cpu", warnings=[],
                           contract=SimpleNamespace(precision="fp32", arch="fake", labels=["x"]))
    slot = LatestFrame()
    capture = CaptureWorker(slot, lambda: DemoSource(max_frames=None, height=48, width=64))
    inference = InferenceWorker(slot, loader=lambda *args, **kwargs: fake)
    seen = []
    inference.resultReady.connect(lambda result: seen.append((result.frame.seq, capture.frames)))
    inference.request_model("fake.onnx")
    inference.start()
    capture.start()
    try:
        qtbot.waitUntil(lambda: len(seen) >= 8, timeout=WAIT_MS)
    finally:
        capture.stop()
        inference.stop()
        assert capture.wait(5000) and inference.wait(5000)
    assert inference.dropped > 0
    # each run took the newest frame there was: never more than the frames published during one run behind
    assert all(published - seq <= 6 for seq, published in seen)
    seqs = [seq for seq, _ in seen]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


# --- the window ------------------------------------------------------------------------------------


def test_main_starts_on_the_default_model_with_the_demo_source(qapp, models_dir):
    seen = {}

    def check_and_close():
        windows = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
        if windows and windows[0].last_probe is not None and windows[0].topk.rows():
            window = windows[0]
            seen.update(model=window.model_info.path, source=window.capture.description, rows=window.topk.rows(),
                        blocks=len(window.block_panel.summaries), threads=window.inference.threads)
            window.close()  # the last window closing ends app.exec(), so main returns

    poll = QTimer(interval=50, timeout=check_and_close)
    give_up = QTimer(singleShot=True, interval=WAIT_MS, timeout=qapp.quit)  # a hang fails, it does not block
    poll.start()
    give_up.start()
    try:
        code = main(["--source", "demo", "--threads", "1"])
    finally:
        poll.stop()
        give_up.stop()
    assert code == 0
    assert seen, "no prediction reached the window"
    assert seen["model"] == models_dir / "cifar10-resnet20.onnx"
    assert seen["source"].startswith("demo")
    assert len(seen["rows"]) == 5 and seen["blocks"] == 9 and seen["threads"] == 1


def test_video_file_plays_in_a_loop_with_predictions(qtbot, make_window, tmp_path, models_dir):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30, (96, 64))
    assert writer.isOpened()
    frames = 12
    for index in range(frames):
        image = np.zeros((64, 96, 3), np.uint8)
        image[:] = (20 * index, 255 - 20 * index, 128)
        cv2.circle(image, (8 * index, 32), 10, (255, 255, 255), -1)
        writer.write(image)
    writer.release()

    window = make_window(source=str(video))
    # more frames than the file holds: it looped, and predictions kept coming
    qtbot.waitUntil(lambda: window.capture.opens >= 2 and window.inference.results >= frames + 2, timeout=WAIT_MS)
    assert window.capture.description == str(video) and not window.capture.live
    result = window.last_result
    assert result.frame.id.startswith("frame ") and result.frame.image.shape == (64, 96, 3)
    expected = Classifier.load(models_dir / "cifar10-resnet20.onnx", provider="cpu", threads=1, quiet=True).classify(result.frame.image)[0]
    assert [label for label, _, _ in result.prediction.top] == [label for label, _, _ in expected.top]
    assert window.topk.rows() == [(label, p) for label, _, p in result.prediction.top]
    assert window.video.prediction.raw is result.prediction and window.video.frames_shown > 0
    window._refresh_status()
    assert window.status_labels["capture"].text().endswith("fps")
    assert window.status_labels["provider"].text() == window.model_info.provider


def test_block_panel_shows_what_probe_computes_and_is_throttled(qtbot, make_window, models_dir):
    window = make_window()
    panel = window.block_panel
    qtbot.waitUntil(lambda: panel.updates >= 2, timeout=WAIT_MS)

    shown = window.last_probe
    reference = Classifier.load(models_dir / "cifar10-resnet20.onnx", provider="cpu", threads=1, quiet=True)
    prediction, blocks = reference.probe(shown.frame.image)  # the very frame the panel was drawn from
    assert [s.name for s in panel.summaries] == [b.name for b in blocks] == reference.contract.blocks
    for summary, block in zip(panel.summaries, blocks):
        assert summary.ratio == pytest.approx(block.ratio, rel=1e-4)
        np.testing.assert_allclose(summary.x_map, np.abs(block.x).mean(axis=0), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(summary.f_map, np.abs(block.residual).mean(axis=0), rtol=1e-4, atol=1e-6)
    for stage in ("layer1", "layer2", "layer3"):  # one colour scale per stage, shared by x_l and F(x_l)
        members = [s for s in panel.summaries if s.stage == stage]
        assert panel.stage_max[stage] == pytest.approx(max(max(s.x_map.max(), s.f_map.max()) for s in members))
    assert [label for label, _, _ in shown.prediction.top] == [label for label, _, _ in prediction.top]

    qtbot.mouseClick(panel, Qt.MouseButton.LeftButton, pos=panel.block_center(4))
    assert panel.selected == 4
    assert window.channel_grid.block.name == blocks[4].name
    np.testing.assert_allclose(window.channel_grid.block.residual, blocks[4].residual, rtol=1e-4, atol=1e-5)

    # live but throttled: ~4 panel updates a second while every frame is classified
    updates, results, start = panel.updates, window.inference.results, time.monotonic()
    qtbot.waitUntil(lambda: window.inference.results >= results + 30, timeout=WAIT_MS)
    elapsed = time.monotonic() - start
    drawn = panel.updates - updates
    # the probe rate is bounded by time, not by frames: how many frames skip the probe depends on load
    assert 1 <= drawn <= elapsed * 4 + 2
    assert window.channel_grid.block is not None and window.channel_grid.block.name == blocks[4].name


def test_precision_and_provider_switch_live(qtbot, make_window, models_dir):
    shutil.copy(models_dir / "cifar10-resnet20.onnx", models_dir / "cifar10-resnet20.int8.onnx")
    window = make_window()
    qtbot.waitUntil(lambda: window.model_info is not None, timeout=WAIT_MS)
    combo = window.precision_combo
    assert [combo.itemText(i) for i in range(combo.count())] == ["fp32", "int8"] and combo.isEnabled()

    combo.setCurrentIndex(1)
    combo.activated.emit(1)  # as a user picking int8
    qtbot.waitUntil(lambda: window.model_info.path.name == "cifar10-resnet20.int8.onnx", timeout=WAIT_MS)
    qtbot.waitUntil(lambda: window.last_result is not None and window.last_result.model.path.name == "cifar10-resnet20.int8.onnx", timeout=WAIT_MS)
    window._refresh_status()
    assert "cifar10-resnet20.int8.onnx" in window.status_labels["model"].text()

    providers = window.provider_combo
    assert [providers.itemText(i) for i in range(providers.count())] == ["auto", *available_providers()]
    window.set_provider("cpu")
    qtbot.waitUntil(lambda: window.model_info.requested_provider == "cpu", timeout=WAIT_MS)
    assert window.model_info.provider == "cpu" and window.model_info.path.name == "cifar10-resnet20.int8.onnx"
    assert providers.currentText() == "cpu"
    wait_results(qtbot, window, 3)

    missing = [name for name in ("cuda", "directml", "openvino") if name not in available_providers()]
    if missing:  # a provider this onnxruntime lacks: runs on CPU, and says so
        window.set_provider(missing[0])
        qtbot.waitUntil(lambda: window.model_info.requested_provider == missing[0], timeout=WAIT_MS)
        assert window.model_info.provider == "cpu" and window.model_info.warnings
        window._refresh_status()
        assert f"asked for {missing[0]}" in window.status_labels["provider"].text()
        assert "running on CPU" in window.statusBar().currentMessage()


def test_bad_model_file_keeps_the_old_model_running(qtbot, make_window, tmp_path, models_dir):
    window = make_window()
    qtbot.waitUntil(lambda: window.model_info is not None, timeout=WAIT_MS)
    good = window.model_info.path
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"this is not an ONNX model")

    window.open_model(bad)
    qtbot.waitUntil(lambda: window.message_box is not None and window.message_box.isVisible(), timeout=PROBE_WAIT_MS)
    assert "broken.onnx" in window.message_box.text() and "keeps running" in window.message_box.text()
    assert "model not loaded" in window.statusBar().currentMessage()
    assert window.model_info.path == good
    count = window.inference.results
    qtbot.waitUntil(lambda: window.inference.results >= count + 5, timeout=WAIT_MS)
    assert window.last_result.model.path == good

    window.message_box.close()
    window.open_model(tmp_path / "missing.onnx")
    qtbot.waitUntil(lambda: window.message_box.isVisible() and "missing.onnx" in window.message_box.text(), timeout=PROBE_WAIT_MS)
    assert window.model_info.path == good


class FakeCamera(FrameSource):
    """A camera that delivers noisy frames, then fails, freezes or blocks as scripted."""

    kind = "camera"

    def __init__(self, name: str, mode: str, release: threading.Event | None = None, period: float = 0.01) -> None:
        self.name, self.mode, self.release, self.period = name, mode, release, period
        self.description = f"fake camera ({name})"
        self.rng = np.random.default_rng(0)

    def __iter__(self):
        frozen = self.rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        for index in itertools.count():
            time.sleep(self.period)  # a camera's read() waits for the sensor
            if self.mode == "fail" and index == 5:
                raise RuntimeError("USB cable unplugged")
            if self.mode == "freeze" and index >= 3:
                yield Frame(f"{self.name} {index}", frozen.copy())
                continue
            if self.mode == "block" and index == 3:
                self.release.wait(5)  # read() hangs until the test lets it go
            yield Frame(f"{self.name} {index}", self.rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))


def test_camera_failing_mid_stream_reconnects_with_backoff(qtbot, make_window):
    camera_back = threading.Event()
    plan = iter(["fail", "freeze", "good"])  # what the camera does each time it opens
    unplugged = []

    def factory() -> FrameSource:
        if unplugged and not camera_back.is_set():
            raise UserError("camera 0 did not open (no such camera, or it is in use)")
        mode = next(plan, "good")
        if mode == "fail":
            unplugged.append(True)
        return FakeCamera(mode, mode)

    window = make_window(source="0", source_factory=factory,
                         capture_options={"backoff_start": 0.05, "backoff_limit": 0.2, "repeat_limit_s": 0.3})
    capture = window.capture
    # unplugged after 5 frames, then the camera does not open: retries at 0.05, 0.1, 0.2, 0.2 s...
    qtbot.waitUntil(lambda: len(capture.troubles) >= 4, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: window.video.message is not None and "did not open" in window.video.message, timeout=WAIT_MS)
    troubles = list(capture.troubles)
    assert "USB cable unplugged" in troubles[0][0] and "reconnecting in 0.05 s" in troubles[0][0]
    assert all("did not open" in message for message, _ in troubles[1:4])
    assert [delay for _, delay in troubles[:4]] == [0.05, 0.1, 0.2, 0.2]

    camera_back.set()  # plugged in again: it opens, freezes (the same frame over and over), then works
    qtbot.waitUntil(lambda: window.last_result is not None and window.last_result.frame.id.startswith("good"), timeout=WAIT_MS)
    frozen = [message for message, _ in capture.troubles if "frozen" in message]
    assert frozen and dict((m, d) for m, d in capture.troubles)[frozen[0]] == 0.05  # it had worked: back-off reset
    qtbot.waitUntil(lambda: window.video.message is None, timeout=WAIT_MS)
    count = window.inference.results
    qtbot.waitUntil(lambda: window.inference.results >= count + 5, timeout=WAIT_MS)


def test_camera_that_stops_delivering_shows_a_banner(qtbot, make_window):
    release = threading.Event()
    window = make_window(source="0", source_factory=lambda: FakeCamera("stuck", "block", release), stall_seconds=0.3)
    try:
        qtbot.waitUntil(lambda: window.video.message is not None and "no frames for" in window.video.message, timeout=WAIT_MS)
        assert window.video.message.startswith("fake camera (stuck)")
    finally:
        release.set()
    qtbot.waitUntil(lambda: window.video.message is None, timeout=WAIT_MS)


def test_pause_snapshot_and_record(qtbot, make_window, tmp_path, monkeypatch):
    window = make_window()
    wait_results(qtbot, window, 3)

    window.pause_action.trigger()  # as the toolbar button / space bar does
    assert window.capture.paused and window.video.paused
    qtbot.wait(100)  # let a frame that was being published when pause came in land
    frozen = window.capture.frames
    qtbot.wait(300)
    assert window.capture.frames == frozen
    window.pause_action.trigger()
    qtbot.waitUntil(lambda: window.capture.frames > frozen + 3, timeout=WAIT_MS)

    replaced = []  # the PNG reaches its name from a temp file beside it: os.link (never clobbers) or os.replace
    real_replace, real_link = os.replace, os.link
    monkeypatch.setattr(os, "replace", lambda src, dst: (replaced.append((Path(src), Path(dst))), real_replace(src, dst))[1])
    monkeypatch.setattr(os, "link", lambda src, dst: (replaced.append((Path(src), Path(dst))), real_link(src, dst))[1])
    path = window.snapshot(tmp_path / "snaps" / "shot.png")
    assert path is not None and path.is_file()
    assert replaced and replaced[-1][1] == path and replaced[-1][0].parent == path.parent and replaced[-1][0] != path
    image = cv2.imread(str(path))
    assert image.shape[:2] == (window.live_view.height(), window.live_view.width())  # the live view, from any tab
    assert sorted(p.name for p in path.parent.iterdir()) == ["shot.png"]  # no temp file left behind

    csv_path = window.start_recording(tmp_path / "predictions.csv")
    assert window.record_action.isChecked()
    wait_results(qtbot, window, 6)
    window.record_action.trigger()  # stop, as the toolbar does
    assert window.recorder is None
    with open(csv_path, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == CSV_COLUMNS and len(rows) >= 7
    labels = set(window.model_info.labels)
    for row in rows[1:]:
        record = dict(zip(CSV_COLUMNS, row))
        assert record["label"] in labels and 0.0 <= float(record["probability"]) <= 1.0
        assert record["model"] == "cifar10-resnet20.onnx"
    seqs = [int(row[1]) for row in rows[1:]]
    assert seqs == sorted(seqs)


def test_closing_the_window_joins_every_thread(qtbot, models_dir, tmp_path):
    before = live_threads()
    # a slow camera: its thread notices the stop only after its current read(), so closing must wait for it
    window = MainWindow(source="0", source_factory=lambda: FakeCamera("slow", "good", period=0.15), threads=1,
                        output_dir=tmp_path, scan_cameras=True)
    qtbot.addWidget(window)
    window.show()
    wait_results(qtbot, window, 3)
    workers = window.worker_threads()
    # capture, inference, the model probe (idle: a shipped model needs none) and the camera scan
    assert len(workers) == 4 and window.capture.isRunning() and window.inference.isRunning()
    assert window.model_check.isRunning() and window.model_check.probes == 0

    start = time.monotonic()
    window.close()
    assert time.monotonic() - start < 5
    assert not any(thread.isRunning() for thread in window.findChildren(QThread))
    assert not any(thread.isRunning() for thread in workers)
    assert live_threads() == before
    frames = window.capture.frames
    qtbot.wait(100)
    assert window.capture.frames == frames
    window.close()  # a second close is harmless


def test_close_does_not_wait_out_a_reconnect_backoff(qtbot, models_dir, tmp_path):
    def no_camera() -> FrameSource:
        raise UserError("camera 3 did not open")

    window = MainWindow(source="3", source_factory=no_camera, threads=1, output_dir=tmp_path, scan_cameras=False,
                        capture_options={"backoff_start": 30.0})
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: len(window.capture.troubles) >= 1, timeout=WAIT_MS)  # now sleeping 30 s
    start = time.monotonic()
    window.close()
    assert time.monotonic() - start < 2
    assert not window.capture.isRunning() and not window.inference.isRunning()


def test_installed_pyside6_keeps_its_references():
    """PySide6 6.12.0 on Python < 3.12 drops a reference to None per void call and the app dies in a minute."""
    assert not resnet_edge_gui.app.pyside_drops_references()


def test_main_refuses_a_pyside6_that_would_crash(monkeypatch, capsys):
    monkeypatch.setattr(resnet_edge_gui.app, "pyside_drops_references", lambda: True)
    assert main(["--source", "demo"]) == 2
    assert "PySide6-Essentials<6.12" in capsys.readouterr().err


def test_gui_runs_without_torch_or_matplotlib():
    code = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "matplotlib"):
            raise ImportError(name + " is blocked in this test")
sys.meta_path.insert(0, _Block())
import resnet_edge_gui.app, resnet_edge_gui.workers, resnet_edge_gui.widgets, resnet_edge_gui.outputs
import runpy
sys.argv = ["resnet_edge_gui", "--help"]
runpy.run_module("resnet_edge_gui", run_name="__main__")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                            env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert result.returncode == 0, result.stderr
    assert "--source" in result.stdout and "--precision" in result.stdout
