"""resnet_edge/capture.py, the one live-capture core, without Qt: files fail once, cameras retry, policies hold."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from conftest import ROOT
from resnet_edge.capture import CaptureEvents, CaptureLoop, CapturePolicy, LatestFrame
from resnet_edge.errors import UserError
from resnet_edge.sources import DemoSource, FolderSource, Frame, FrameSource


class Recorder(CaptureEvents):
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def opened(self, description: str, kind: str) -> None:
        self.events.append(("opened", description))

    def trouble(self, message: str, delay: float) -> None:
        self.events.append(("trouble", message))

    def failed(self, message: str) -> None:
        self.events.append(("failed", message))

    def ended(self, description: str) -> None:
        self.events.append(("ended", description))

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]


def run_loop(opener, policy: CapturePolicy, timeout: float = 10.0) -> tuple[CaptureLoop, Recorder]:
    events = Recorder()
    loop = CaptureLoop(LatestFrame(), opener, policy, events)
    thread = threading.Thread(target=loop.run)
    thread.start()
    thread.join(timeout)
    alive = thread.is_alive()
    loop.stop()
    thread.join(5)
    assert not alive, "the loop did not end by itself"
    return loop, events


def test_a_file_that_does_not_open_fails_once_and_is_never_retried():
    calls = []

    def broken_file() -> FrameSource:
        calls.append(1)
        raise UserError("clip.mp4: not a video file OpenCV can open")

    broken_file.live = False
    loop, events = run_loop(broken_file, CapturePolicy(backoff_first_s=0.01, wait_for_next=False))
    assert calls == [1]
    assert events.events == [("failed", "clip.mp4: not a video file OpenCV can open")]
    assert loop.failure and not loop.troubles and loop.frames == 0


class Empty(FrameSource):
    kind, description = "video", "empty.avi"

    def __iter__(self):
        return iter(())


def test_a_file_that_yields_no_frame_says_it_cannot_be_read():
    loop, events = run_loop(lambda: Empty(), CapturePolicy(wait_for_next=False))
    assert events.kinds() == ["opened", "failed"]
    assert events.events[1][1] == "empty.avi: cannot be read (no frame could be decoded)"


def test_a_camera_is_retried_with_backoff_and_given_up_by_policy():
    def no_camera() -> FrameSource:
        raise UserError("camera 0 did not open")

    loop, events = run_loop(no_camera, CapturePolicy(backoff_first_s=0.01, backoff_limit_s=0.02, max_retries=3,
                                                     wait_for_next=False))
    assert events.kinds() == ["trouble", "trouble", "trouble", "failed"]
    assert [delay for _, delay in loop.troubles] == [0.01, 0.02, 0.02]
    assert events.events[-1][1] == "camera 0 did not open; gave up after 3 reconnect attempts"


def test_a_file_that_ends_replays_or_ends_by_policy():
    loop, events = run_loop(lambda: DemoSource(max_frames=3, height=8, width=8),
                            CapturePolicy(replay=False, wait_for_next=False, pace=lambda source: None))
    assert loop.frames == 3 and events.kinds() == ["opened", "ended"]

    slot = LatestFrame()
    replaying = CaptureLoop(slot, lambda: DemoSource(max_frames=2, height=8, width=8),
                            CapturePolicy(pace=lambda source: None))
    thread = threading.Thread(target=replaying.run)
    thread.start()
    try:
        assert slot.wait_newer(6, timeout=10) is not None  # more frames than one pass holds
    finally:
        replaying.stop()
        thread.join(5)
    assert replaying.opens >= 3 and not thread.is_alive()


def test_folder_steps_to_next_and_previous_image_while_paused(tmp_path):
    import cv2

    for index in range(3):
        cv2.imwrite(str(tmp_path / f"{index}.png"), np.full((8, 8, 3), 60 * index, np.uint8))
    slot = LatestFrame()
    loop = CaptureLoop(slot, lambda: FolderSource(tmp_path), CapturePolicy(pace=lambda source: 1000.0))
    thread = threading.Thread(target=loop.run)
    thread.start()
    try:
        first = slot.wait_newer(0, timeout=10)
        loop.set_paused(True)
        latest = slot.wait_newer(first.seq, timeout=0.3) or first  # a frame may land as the pause comes in
        shown = latest
        for delta in (1, 1, -1):
            loop.step(delta)
            frame = slot.wait_newer(shown.seq, timeout=10)
            assert frame is not None
            order = ["0.png", "1.png", "2.png"]
            assert order.index(frame.id) == (order.index(shown.id) + delta) % 3
            assert frame.kind == "folder"
            shown = frame
    finally:
        loop.stop()
        thread.join(5)


def test_mirror_flips_camera_frames():
    originals: list[np.ndarray] = []

    class Camera(FrameSource):
        kind, description = "camera", "camera 9"

        def __iter__(self):
            rng = np.random.default_rng(0)
            while True:
                image = rng.integers(0, 255, (4, 6, 3), dtype=np.uint8)
                originals.append(image)
                yield Frame("x", image)

    seen = []

    class Keep(CaptureEvents):
        def published(self, frame):
            seen.append(frame)

    slot = LatestFrame()
    loop = CaptureLoop(slot, lambda: Camera(), CapturePolicy(), Keep())
    loop.mirror = True
    thread = threading.Thread(target=loop.run)
    thread.start()
    try:
        assert slot.wait_newer(2, timeout=10) is not None
    finally:
        loop.stop()
        thread.join(5)
    np.testing.assert_array_equal(seen[0].image, originals[0][:, ::-1])


@pytest.mark.parametrize("spec_live", [("demo", False), ("0", True), ("clip.mp4", False), ("rtsp://h/x", True)])
def test_app_factories_say_whether_a_failed_open_is_retried(spec_live):
    pytest.importorskip("PySide6")
    from resnet_edge_gui.workers import source_factory

    spec, live = spec_live
    assert source_factory(spec).live is live


def test_live_paths_switch_ort_spinning_off(monkeypatch, capsys):
    """A camera's frames come at its pace: ORT's pool must sleep between them, not spin (issue 23)."""
    import cv2

    from resnet_edge import cli
    from resnet_edge.runtime import Classifier

    classifier = Classifier.load(ROOT / "models" / "cifar10-resnet20.onnx", threads=2, quiet=True, spinning=False)
    options = classifier.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"

    made = []
    real_init = Classifier.__init__

    def recording_init(self, *args, **kwargs):
        made.append(kwargs.get("spinning", True))
        real_init(self, *args, **kwargs)

    class Camera:
        def __init__(self, *args):
            self.rng = np.random.default_rng(0)

        def isOpened(self):  # noqa: N802 - OpenCV's name
            return True

        def get(self, prop):
            return 30.0

        def set(self, prop, value):
            return True

        def read(self):
            return True, self.rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)

        def release(self):
            pass

    monkeypatch.setattr(Classifier, "__init__", recording_init)
    monkeypatch.setattr(cv2, "VideoCapture", Camera)
    assert cli.main(["classify", "--source", "0", "--max-frames", "2", "--threads", "1", "--provider", "cpu"]) == 0
    assert cli.main(["classify", "--source", "demo", "--max-frames", "2", "--threads", "1", "--provider", "cpu"]) == 0
    assert made == [False, True]  # the camera: off; the demo, classified as fast as it goes: on
    capsys.readouterr()
