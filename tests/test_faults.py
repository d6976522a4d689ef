"""Faults: cameras and streams that misbehave, providers that are not there, models that crash ONNX Runtime.

Cameras are a fake ``cv2.VideoCapture`` (scripted per open) behind the real VideoSource, so the CLI's
LiveSource and the app's CaptureWorker see exactly what a misbehaving driver gives them. Models that crash or
hang ONNX Runtime are made by running the real probe entry in a child whose InferenceSession aborts or sleeps.
Back-off waits are shrunk so the tests take seconds; nothing here asserts on speed.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from resnet_edge import cli, providers, sources
from resnet_edge.errors import UserError
from resnet_edge.modelzoo import find_model
from resnet_edge.sources import LiveSource, VideoSource, open_source

WAIT_MS = 30000  # waitUntil returns as soon as the condition holds; generous for a loaded 2-core machine
PROBE_WAIT_MS = 180000  # a child process importing onnxruntime on a machine busy training


# --- a scripted camera -----------------------------------------------------------------------------


class FakeCapture:
    """Stands in for cv2.VideoCapture. Each open takes the next mode from ``plan``:

    closed: does not open | false: 3 frames, then read() returns (False, None) | raise: 3 frames, then read()
    raises | frozen: 3 frames, then the same frame forever | resize: 3 frames at 64x48, then 32x24 |
    block: 3 frames, then one read() that takes ``block_s`` | good: noisy 64x48 frames forever.
    """

    plan: list[str] = []
    opened: list[str] = []
    block_s = 1.0

    def __init__(self, target, *args) -> None:
        self.target = target
        self.mode = FakeCapture.plan.pop(0) if FakeCapture.plan else "good"
        FakeCapture.opened.append(self.mode)
        self.rng = np.random.default_rng(len(FakeCapture.opened))
        self.frozen = self.rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        self.reads = 0
        self.released = False

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return self.mode != "closed" and not self.released

    def get(self, prop: int) -> float:
        return 30.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def read(self):
        index = self.reads
        self.reads += 1
        time.sleep(0.002)  # a sensor takes time
        if index >= 3:
            if self.mode == "false":
                return False, None
            if self.mode == "raise":
                raise RuntimeError("USB cable unplugged")
            if self.mode == "frozen":
                return True, self.frozen.copy()
            if self.mode == "block" and index == 3:
                time.sleep(FakeCapture.block_s)
        shape = (24, 32, 3) if self.mode == "resize" and index >= 3 else (48, 64, 3)
        return True, self.rng.integers(0, 256, shape, dtype=np.uint8)

    def release(self) -> None:
        self.released = True


@pytest.fixture()
def fake_camera(monkeypatch):
    """Install FakeCapture as cv2.VideoCapture, with quick back-off; returns the class to script it."""
    monkeypatch.setattr(cv2, "VideoCapture", FakeCapture)
    monkeypatch.setattr(FakeCapture, "plan", [])
    monkeypatch.setattr(FakeCapture, "opened", [])
    monkeypatch.setattr(sources, "BACKOFF_FIRST_S", 0.01)
    monkeypatch.setattr(sources, "BACKOFF_LIMIT_S", 0.04)
    monkeypatch.setattr(sources, "REPEAT_LIMIT_S", 0.05)
    monkeypatch.setattr(sources, "STALL_S", 0.2)
    return FakeCapture


def classify(capsys, *args: str) -> tuple[int, list[str], str]:
    """resnet-edge classify in this process (so the fake camera is seen): exit code, stdout lines, stderr."""
    code = cli.main(["classify", "--provider", "cpu", "--threads", "1", *args])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def delays(err: str) -> list[float]:
    return [float(line.rsplit("reconnecting in ", 1)[1].split()[0]) for line in err.splitlines() if "reconnecting in" in line]


def frame_lines(lines: list[str]) -> list[str]:
    return [line.split(":")[0] for line in lines if line.startswith("frame ")]


# --- the command line ------------------------------------------------------------------------------


def test_cli_camera_reconnects_with_capped_backoff_reset_after_success(fake_camera, capsys):
    # read() returns False; then the camera does not open three times; then it raises mid-stream; then it works
    fake_camera.plan = ["false", "closed", "closed", "closed", "raise", "good"]
    code, out, err = classify(capsys, "--source", "0", "--max-frames", "12")
    assert code == 0, err
    assert frame_lines(out) == [f"frame {i}" for i in range(12)]  # numbered on across reconnects
    assert "camera 0: stopped delivering frames (read failed); reconnecting in 0.01 s" in err
    assert err.count("camera 0 did not open") == 3
    assert "stopped delivering frames (RuntimeError: USB cable unplugged)" in err
    # exponential, capped at 0.04, and back to the start once frames flowed again
    assert delays(err) == [0.01, 0.02, 0.04, 0.04, 0.01]
    assert err.count("camera 0: reconnected") == 2
    assert "5 faults, 2 reconnects" in out[-1]
    assert "Traceback" not in err


def test_cli_camera_frozen_is_reopened_and_resolution_change_reported(fake_camera, capsys):
    fake_camera.plan = ["frozen", "resize"]
    code, out, err = classify(capsys, "--source", "0", "--max-frames", "9")
    assert code == 0, err
    assert frame_lines(out) == [f"frame {i}" for i in range(9)]
    assert "camera 0: frozen (the same frame for" in err and delays(err) == [0.01]
    assert "camera 0: resolution changed from 64x48 to 32x24" in err
    assert fake_camera.opened == ["frozen", "resize"]  # a new resolution is reported, not reconnected


def test_cli_camera_that_blocks_is_reported_while_it_blocks(fake_camera, capsys):
    fake_camera.plan = ["block"]
    fake_camera.block_s = 1.0
    code, out, err = classify(capsys, "--source", "0", "--max-frames", "6")
    assert code == 0, err
    assert len(frame_lines(out)) == 6
    assert "camera 0: no frames for" in err and "waiting for it" in err
    assert fake_camera.opened == ["block"]  # it came back by itself: no reconnect


def test_cli_gives_up_after_max_retries_and_a_missing_camera_is_a_user_error(fake_camera, capsys):
    fake_camera.plan = ["false", "closed", "closed", "closed"]
    code, out, err = classify(capsys, "--source", "0", "--max-retries", "2")
    assert code == 1
    assert len(frame_lines(out)) == 3
    assert err.strip().splitlines()[-1].endswith("gave up after 2 reconnect attempts")
    assert delays(err) == [0.01, 0.02]

    fake_camera.plan = ["closed"]  # never opened at all: the user's mistake, one line, exit 2
    code, out, err = classify(capsys, "--source", "3")
    assert code == 2
    assert err.strip() == "resnet-edge classify: error: camera 3 did not open (no such camera, or it is in use)"


def test_cli_video_file_ends_normally(tmp_path, capsys):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30, (64, 48))
    for index in range(5):
        writer.write(np.full((48, 64, 3), 40 * index, np.uint8))
    writer.release()
    code, out, err = classify(capsys, "--source", str(video))
    assert code == 0, err
    assert frame_lines(out) == [f"frame {i}" for i in range(5)]
    assert "reconnect" not in err and "faults" not in out[-1]


def test_stream_urls_are_live_and_their_passwords_never_printed(fake_camera):
    fake_camera.plan = ["closed"]
    with pytest.raises(UserError) as caught:
        VideoSource("rtsp://admin:hunter2@10.0.0.5:554/live")
    assert "hunter2" not in str(caught.value) and "rtsp://admin:***@10.0.0.5:554/live" in str(caught.value)
    reports: list[str] = []
    source = open_source("rtsp://admin:hunter2@10.0.0.5/live", max_frames=5, report=reports.append)
    assert isinstance(source, LiveSource) and source.kind == "stream"
    assert len(list(source)) == 5 and "hunter2" not in source.description


# --- providers -------------------------------------------------------------------------------------


no_cuda = pytest.mark.skipif("cuda" in providers.available_providers(), reason="CUDA is really there")


@no_cuda
def test_cli_warns_naming_the_provider_that_runs_when_cuda_is_missing(capsys):
    code = cli.main(["classify", "--source", "demo", "--max-frames", "2", "--provider", "cuda", "--threads", "1"])
    out, err = capsys.readouterr()
    assert code == 0
    assert "warning: provider 'cuda' is not available in this onnxruntime build" in err
    assert "running on CPU (CPUExecutionProvider) instead" in err
    assert " on cpu; source demo" in out.splitlines()[0]


@no_cuda
def test_cli_warns_when_a_provider_that_is_listed_fails_to_start(monkeypatch, capsys):
    # as onnxruntime-gpu without the CUDA libraries: CUDA is offered, the session comes up on CPU anyway (on this
    # CPU-only onnxruntime, ONNX Runtime itself drops the CUDA provider it does not have)
    monkeypatch.setattr(providers, "available_providers", lambda: ["cuda", "cpu"])
    code = cli.main(["classify", "--source", "demo", "--max-frames", "2", "--provider", "cuda", "--threads", "1"])
    out, err = capsys.readouterr()
    assert code == 0
    assert ("warning: provider 'cuda' (CUDAExecutionProvider) failed to start (see onnxruntime's log above); "
            "running on cpu (CPUExecutionProvider) instead") in err


@no_cuda
def test_cli_falls_back_to_cpu_aloud_when_a_provider_raises_at_session_creation(monkeypatch, capsys):
    # some providers raise instead of falling back (a broken driver, a kernel they lack): CPU runs, and says so
    import onnxruntime as ort

    real_session = ort.InferenceSession

    def session(model, sess_options=None, providers=None, **kwargs):
        if providers and providers[0][0] != "CPUExecutionProvider":
            raise RuntimeError("CUDA failure 35: CUDA driver version is insufficient for CUDA runtime version")
        return real_session(model, sess_options=sess_options, providers=providers, **kwargs)

    monkeypatch.setattr(providers, "available_providers", lambda: ["cuda", "cpu"])
    monkeypatch.setattr(ort, "InferenceSession", session)
    code = cli.main(["classify", "--source", "demo", "--max-frames", "2", "--provider", "cuda", "--threads", "1"])
    out, err = capsys.readouterr()
    assert code == 0
    assert err.count("warning: ") == 1, err
    assert ("warning: provider 'cuda' (CUDAExecutionProvider) could not create a session (CUDA failure 35: CUDA "
            "driver version is insufficient for CUDA runtime version); running on cpu (CPUExecutionProvider) instead") in err
    assert " on cpu; source demo" in out.splitlines()[0]
    assert "summary: 2 frames" in out


# --- the child-process probe -----------------------------------------------------------------------


def child_that(behaviour: str):
    """A probe command whose InferenceSession aborts the process or hangs; the rest is the real probe entry."""
    effect = {"crash": "os.abort()", "hang": "time.sleep(3600)"}[behaviour]
    code = (f"import os, sys, time, onnxruntime; onnxruntime.InferenceSession = lambda *a, **k: {effect}; "
            "from resnet_edge_gui.modelcheck import check_main; sys.exit(check_main(sys.argv[1:]))")

    def command(path: Path, provider: str, result: Path) -> list[str]:
        return [sys.executable, "-c", code, "--check-model", str(path), "--provider", provider, "--check-result", str(result)]

    return command


@pytest.fixture()
def user_model(tmp_path) -> Path:
    """A model file the app did not ship (a copy of the shipped one, somewhere else)."""
    folder = tmp_path / "mine"
    folder.mkdir()
    return Path(shutil.copy(find_model(), folder / "my-model.onnx"))


def test_probe_command_uses_the_bundle_executable_when_frozen(monkeypatch, tmp_path):
    from resnet_edge_gui.modelcheck import check_command

    model, result = tmp_path / "m.onnx", tmp_path / "r.json"
    tail = ["--check-model", str(model), "--provider", "cpu", "--check-result", str(result)]
    assert check_command(model, "cpu", result) == [sys.executable, "-m", "resnet_edge_gui", *tail]
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", "/opt/resnet-edge-gui/resnet-edge-gui")
    assert check_command(model, "cpu", result) == ["/opt/resnet-edge-gui/resnet-edge-gui", *tail]


def test_probe_entry_prints_one_json_line(user_model, tmp_path, capsys):
    import resnet_edge_gui.app

    assert resnet_edge_gui.app.main(["--check-model", str(user_model), "--provider", "cpu"]) == 0  # resnet-edge-gui's entry
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    report = json.loads(lines[0])
    assert report["ok"] and report["provider"] == "cpu" and report["classes"] == 10 and report["finite"]
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    assert resnet_edge_gui.app.main(["--check-model", str(junk)]) == 2
    report = json.loads(capsys.readouterr().out)
    assert not report["ok"] and "junk.onnx" in report["error"]


def test_run_probe_judges_real_crashing_and_hanging_children(user_model):
    from resnet_edge_gui.modelcheck import run_model_check

    passed = run_model_check(user_model, "cpu", timeout=120)  # the real `python -m gui --check-model` child
    assert passed.ok and passed.details["provider"] == "cpu" and passed.returncode == 0
    crashed = run_model_check(user_model, "cpu", timeout=120, command=child_that("crash"))
    assert not crashed.ok and crashed.returncode < 0
    assert "my-model.onnx: ONNX Runtime crashed loading this model" in crashed.message and "SIGABRT" in crashed.message
    hung = run_model_check(user_model, "cpu", timeout=0.5, command=child_that("hang"))
    assert not hung.ok and "did not finish within 0.5 s" in hung.message


# --- the app ---------------------------------------------------------------------------------------


@pytest.fixture()
def models_dir(tmp_path, monkeypatch) -> Path:
    """The shipped default model in its own models folder (RESNET_EDGE_MODELS)."""
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(find_model(), folder / "cifar10-resnet20.onnx")
    monkeypatch.setenv("RESNET_EDGE_MODELS", str(folder))
    return folder


def keeps_classifying(qtbot, window, model: Path, frames: int = 5) -> None:
    count = window.inference.results
    qtbot.waitUntil(lambda: window.inference.results >= count + frames, timeout=WAIT_MS)
    assert window.model_info.path == model and window.last_result.model.path == model


def test_app_camera_faults_through_the_real_video_source(qtbot, make_window, fake_camera):
    # does not open; read() returns False; frozen; raises mid-stream; changes resolution (and keeps going)
    fake_camera.plan = ["closed", "false", "frozen", "raise", "resize"]
    window = make_window(source="0", capture_options={"backoff_start": 0.05, "backoff_limit": 0.2, "repeat_limit_s": 0.1})
    capture = window.capture
    qtbot.waitUntil(lambda: len(capture.notices) >= 1, timeout=WAIT_MS)
    messages = [message for message, _ in capture.troubles]
    assert len(messages) == 4, messages
    assert "camera 0 did not open" in messages[0]
    assert messages[1].startswith("camera 0: stopped delivering frames (read failed);")  # read() returned False
    assert messages[2].startswith("camera 0: frozen (the same frame for")
    assert "stopped delivering frames (RuntimeError: USB cable unplugged)" in messages[3]
    # 0.05 after the failed open; each later one followed frames that flowed, so the back-off started over
    assert [delay for _, delay in capture.troubles] == [0.05, 0.05, 0.05, 0.05]
    assert capture.notices[0] == "camera 0: resolution changed from 64x48 to 32x24"
    qtbot.waitUntil(lambda: window.last_result is not None and window.last_result.frame.image.shape == (24, 32, 3),
                    timeout=WAIT_MS)
    qtbot.waitUntil(lambda: window.video.message is None, timeout=WAIT_MS)
    keeps_classifying(qtbot, window, window.model_info.path)
    assert fake_camera.opened == ["closed", "false", "frozen", "raise", "resize"]


@no_cuda
def test_app_names_the_provider_that_runs_when_the_one_asked_for_fails(qtbot, make_window, monkeypatch):
    monkeypatch.setattr(providers, "available_providers", lambda: ["cuda", "cpu"])
    window = make_window(provider="cuda")
    qtbot.waitUntil(lambda: window.model_info is not None, timeout=WAIT_MS)
    assert window.model_info.provider == "cpu" and window.model_info.requested_provider == "cuda"
    assert "running on cpu (CPUExecutionProvider) instead" in window.statusBar().currentMessage()
    window._refresh_status()
    assert window.status_labels["provider"].text() == "cpu (asked for cuda)"


@pytest.mark.slow  # over 4 s on 2 cores: left out of the quick tier
def test_app_tries_a_picked_model_in_a_child_first_and_survives_crashes_and_hangs(qtbot, make_window, models_dir,
                                                                                  user_model):
    behaviour = {"now": "crash"}
    from resnet_edge_gui.modelcheck import CheckCache, check_command

    def command(path: Path, provider: str, result: Path) -> list[str]:
        if behaviour["now"] == "real":
            return check_command(path, provider, result)
        return child_that(behaviour["now"])(path, provider, result)

    options = {"command": command, "timeout": 120.0, "cache": CheckCache()}
    window = make_window(check_options=options)
    shipped = models_dir / "cifar10-resnet20.onnx"
    qtbot.waitUntil(lambda: window.model_info is not None, timeout=WAIT_MS)
    assert window.model_info.path == shipped and window.model_check.probes == 0  # shipped: no child process

    window.open_model(user_model)  # as the file dialog does
    qtbot.waitUntil(lambda: window.message_box is not None and window.message_box.isVisible(), timeout=PROBE_WAIT_MS)
    text = window.message_box.text()
    assert "my-model.onnx: ONNX Runtime crashed loading this model" in text and "SIGABRT" in text
    assert "cifar10-resnet20.onnx keeps running" in text
    assert "model not loaded" in window.statusBar().currentMessage()
    keeps_classifying(qtbot, window, shipped)
    window.message_box.close()

    behaviour["now"] = "hang"
    window.model_check.timeout = 1.0
    window.open_model(user_model)
    qtbot.waitUntil(lambda: window.message_box.isVisible(), timeout=PROBE_WAIT_MS)
    assert "did not finish within 1 s" in window.message_box.text()
    keeps_classifying(qtbot, window, shipped)
    window.message_box.close()

    behaviour["now"] = "real"
    window.model_check.timeout = 120.0
    window.open_model(user_model)
    qtbot.waitUntil(lambda: window.model_info.path == user_model, timeout=PROBE_WAIT_MS)
    keeps_classifying(qtbot, window, user_model)
    probes = window.model_check.probes
    assert probes == 3 and not window.message_box.isVisible()

    window.open_model(shipped)  # back to the shipped model, then the user's again: it passed before, unchanged
    qtbot.waitUntil(lambda: window.model_info.path == shipped, timeout=WAIT_MS)
    window.open_model(user_model)
    qtbot.waitUntil(lambda: window.model_info.path == user_model, timeout=WAIT_MS)
    assert window.model_check.probes == probes
    future = time.time() + 5  # the same bytes, a new modification time: tried again
    os.utime(user_model, (future, future))
    window.open_model(user_model)
    qtbot.waitUntil(lambda: window.model_check.probes == probes + 1, timeout=WAIT_MS)


def test_closing_the_window_kills_a_hung_probe(qtbot, models_dir, user_model, tmp_path):
    from resnet_edge_gui.app import MainWindow
    from resnet_edge_gui.modelcheck import CheckCache

    started = threading.Event()

    def command(path: Path, provider: str, result: Path) -> list[str]:
        started.set()
        return child_that("hang")(path, provider, result)

    window = MainWindow(source="demo", threads=1, output_dir=tmp_path, scan_cameras=False,
                        check_options={"command": command, "timeout": 3600.0, "cache": CheckCache()})
    qtbot.addWidget(window)
    window.show()
    window.open_model(user_model)
    qtbot.waitUntil(started.is_set, timeout=WAIT_MS)
    qtbot.wait(200)
    window.close()  # must not wait out the hour
    assert not window.model_check.isRunning() and not window.inference.isRunning()
