"""Frame sources for classify and the app: an image, a folder of images, a video file, a camera index,
a network stream (``rtsp://...``), or ``demo`` (moving synthetic shapes, for machines with no camera).

Every source yields (frame id, BGR uint8 frame). ``open_source`` picks the kind from the string.
Cameras and streams are "live": a read that fails, blocks or keeps returning the same frame is trouble,
not the end. The one capture core (resnet_edge/capture.py) reports it and reopens the source with capped
exponential back-off; :class:`LiveSource` adapts it for the CLI, gui/workers.CaptureWorker for the app.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from .capture import (BACKOFF_FIRST_S, BACKOFF_LIMIT_S, LIVE_KINDS, REPEAT_LIMIT_S, CaptureEvents, CaptureLoop,
                      CapturePolicy, LatestFrame)
from .errors import UserError, describe_error
from .images import (DECODED_FORMATS, IMAGE_SUFFIXES, MAX_PIXELS, ImageError, check_media_file,  # also quiets
                     list_images, read_image)  # OpenCV's log
from .safety import printable, redact_url  # noqa: F401 - redact_url moved to safety.py; imported from here too

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
# Module constants, read when a LiveSource is made, so tests can shrink them (defaults from resnet_edge.capture:
# BACKOFF_FIRST_S, BACKOFF_LIMIT_S, REPEAT_LIMIT_S).
STALL_S = 5.0  # a live read silent this long is reported (and reported again every STALL_S while it lasts)
OPEN_TIMEOUT_MS = 10_000  # video files and streams: FFmpeg's open and read give up after this (OpenCV's props)
READ_TIMEOUT_MS = 10_000
LIVE_OPENCV_THREADS = 1  # see live_opencv_threads()
__all__ = ["BACKOFF_FIRST_S", "BACKOFF_LIMIT_S", "LIVE_KINDS", "REPEAT_LIMIT_S", "describe_error", "redact_url"]  # re-exported


def live_opencv_threads() -> None:
    """Run OpenCV single-threaded for a live loop. After every parallel call (a frame's colour conversion, its
    resize) OpenCV's worker threads spin in sched_yield for a while; at 30 frames a second that spinning cost
    more CPU than the split saved on a 640x480 frame (benchmarks/gui_pipeline.py). Process-wide."""
    cv2.setNumThreads(LIVE_OPENCV_THREADS)


@dataclass
class Frame:
    id: str  # file name, "frame 12", "camera 0 #12"
    image: np.ndarray  # BGR uint8 (H, W, 3)


class FrameSource:
    kind = "source"
    description = ""
    skipped = 0  # frames that could not be read and were left out

    def __iter__(self) -> Iterator[Frame]:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass


class ImageSource(FrameSource):
    kind = "image"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = str(path)

    def __iter__(self) -> Iterator[Frame]:
        yield Frame(str(self.path), read_image(self.path))


class FolderSource(FrameSource):
    """Images in a folder (recursively), in sorted order; unreadable ones are skipped with a warning."""

    kind = "folder"

    def __init__(self, path: Path) -> None:
        self.files = list_images(path)
        if not self.files:
            raise UserError(f"{path}: no images found ({', '.join(IMAGE_SUFFIXES)})")
        self.root = path
        self.description = f"{path} ({len(self.files)} images)"

        self.position = 0  # index of the next image to read

    def __iter__(self) -> Iterator[Frame]:
        self.position = 0
        while 0 <= self.position < len(self.files):
            path = self.files[self.position]
            self.position += 1
            try:
                image = read_image(path)
            except ImageError as error:
                self.skipped += 1
                print(f"warning: skipping {printable(error)}", file=sys.stderr)
                continue
            yield Frame(str(path.relative_to(self.root)), image)

    def seek(self, delta: int) -> None:
        """Make the next image read the one ``delta`` places from the last one read (wrapping around)."""
        self.position = (self.position - 1 + delta) % len(self.files)


def is_stream(spec: str) -> bool:
    """rtsp://, http(s)://, udp://...: a network stream OpenCV's FFmpeg backend opens like a file."""
    return "://" in spec




class VideoSource(FrameSource):
    """A video file (OpenCV's FFmpeg backend), a camera index or a network stream URL."""

    def __init__(self, target: str | int, max_frames: int | None = None,
                 resolution: tuple[int, int] | None = None) -> None:
        self.target = target
        self.max_frames = max_frames
        stream = isinstance(target, str) and is_stream(target)
        self.kind = "camera" if isinstance(target, int) else "stream" if stream else "video"
        name = f"camera {target}" if isinstance(target, int) else redact_url(target) if stream else str(target)
        if isinstance(target, str):  # FFmpeg waits forever on a dead server or a stalled file unless told
            self.capture = cv2.VideoCapture(target, cv2.CAP_ANY, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS,
                                                                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS])
        else:
            self.capture = cv2.VideoCapture(target)
        if not self.capture.isOpened():
            self.capture.release()
            if isinstance(target, int):
                raise UserError(f"camera {target} did not open (no such camera, or it is in use)")
            if stream:
                raise UserError(f"{name}: the stream did not open (wrong address, or the server is down)")
            raise UserError(f"{target}: not a video file OpenCV can open")
        if resolution is not None and isinstance(target, int):  # a request: the driver picks its nearest mode
            self.capture.set(cv2.CAP_PROP_FRAME_WIDTH, resolution[0])
            self.capture.set(cv2.CAP_PROP_FRAME_HEIGHT, resolution[1])
        self.fps = self.capture.get(cv2.CAP_PROP_FPS) or 0.0
        self.description = name
        width, height = (int(self.capture.get(prop) or 0) for prop in (cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT))
        if width * height > MAX_PIXELS:  # the pixel cap holds for video frames too, before the first is decoded
            self.capture.release()
            raise ImageError(f"{name}: {width}x{height} pixel frames are over the limit of {MAX_PIXELS:,}")

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        while self.max_frames is None or index < self.max_frames:
            ok, image = self.capture.read()
            if not ok or image is None:
                break
            yield Frame(f"frame {index}", image)
            index += 1
        self.close()

    def close(self) -> None:
        self.capture.release()


class DemoSource(FrameSource):
    """Moving coloured shapes on a gradient: a live-looking source on machines without a camera."""

    kind = "demo"
    description = "demo (synthetic moving shapes)"

    def __init__(self, max_frames: int | None = 100, height: int = 480, width: int = 640, seed: int = 0) -> None:
        self.max_frames, self.height, self.width = max_frames, height, width
        rng = np.random.default_rng(seed)
        self.shapes = [(rng.uniform(0, 1, 2), rng.uniform(-0.01, 0.01, 2), int(rng.integers(20, 90)),
                        tuple(int(v) for v in rng.integers(0, 256, 3))) for _ in range(5)]
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        self.background = np.stack([80 + 100 * xs / width, 60 + 120 * ys / height, 140 - 60 * xs / width], -1).astype(np.uint8)

    def render(self, index: int) -> np.ndarray:
        frame = self.background.copy()
        for position, velocity, radius, color in self.shapes:
            x, y = np.abs(((position + velocity * index) % 2.0) - 1.0)  # bounce inside the frame
            cv2.circle(frame, (int(x * self.width), int(y * self.height)), radius, color, -1, cv2.LINE_AA)
        return frame

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        while self.max_frames is None or index < self.max_frames:
            yield Frame(f"demo {index}", self.render(index))
            index += 1


class SourceLost(UserError):
    """A live source that did not come back within the allowed reconnects (not a user mistake: exit 1)."""

    exit_code = 1


class _Report(CaptureEvents):
    """The capture core's events as the CLI's lines on stderr."""

    def __init__(self, report: Callable[[str], None]) -> None:
        self.report, self.opens = report, 0
        self.faults: list[str] = []  # every fault reported, oldest first

    def opened(self, description: str, kind: str) -> None:
        self.opens += 1
        if self.opens > 1:
            self.report(f"{description}: reconnected")

    def trouble(self, message: str, delay: float) -> None:
        self.faults.append(message)
        self.report(message)

    def notice(self, message: str) -> None:
        self.report(message)

    def failed(self, message: str) -> None:
        self.faults.append(message)


class LiveSource(FrameSource):
    """A camera or stream that survives faults, for the command line: the capture core (resnet_edge/capture.py)
    in a daemon thread, read through its one-frame slot.

    A read that fails or raises and a frame repeated unchanged for ``REPEAT_LIMIT_S`` (a frozen driver) reopen
    the source after a back-off wait; a change of resolution is reported and classification goes on; a read()
    that blocks is reported while it blocks ("no frames for 5 s"). The first open is not retried: a camera that
    is not there at all is the user's mistake (UserError, exit 2).
    """

    def __init__(self, opener: Callable[[], FrameSource], report: Callable[[str], None],
                 max_frames: int | None = None, max_retries: int | None = None) -> None:
        self.report, self.max_frames = report, max_frames
        self.stall_s = STALL_S
        first = opener()  # raises UserError when it does not open
        self.kind, self.description = first.kind, first.description
        policy = CapturePolicy(BACKOFF_FIRST_S, BACKOFF_LIMIT_S, REPEAT_LIMIT_S, max_retries, replay=False,
                               wait_for_next=False)
        self._events = _Report(report)
        self._slot = LatestFrame()
        self._loop = CaptureLoop(self._slot, opener, policy, self._events, first=first)
        self._first: FrameSource | None = first
        self.frames = 0  # frames delivered, all connections together

    @property
    def reconnects(self) -> int:
        return max(0, self._events.opens - 1)

    @property
    def faults(self) -> list[str]:
        return self._events.faults

    def __iter__(self) -> Iterator[Frame]:
        self._first = None  # the loop owns it now
        # daemon: a read() stuck in a driver must not keep the process alive after the last frame
        reader = threading.Thread(target=self._loop.run, name="live-source", daemon=True)
        reader.start()
        seq, silent_since = 0, time.monotonic()
        try:
            while self.max_frames is None or self.frames < self.max_frames:
                frame = self._slot.wait_newer(seq, timeout=self.stall_s)
                if frame is None:
                    if not reader.is_alive():
                        if self._loop.failure:
                            raise SourceLost(self._loop.failure)
                        return
                    if not self._loop.retrying and time.monotonic() - silent_since >= self.stall_s:
                        self.report(f"{self.description}: no frames for {time.monotonic() - silent_since:.1f} s; "
                                    f"waiting for it")
                    continue
                seq, silent_since = frame.seq, time.monotonic()
                self.frames += 1
                yield Frame(f"frame {self.frames - 1}", frame.image)
        finally:
            self._loop.stop()
            reader.join(timeout=1.0)

    def close(self) -> None:
        if self._first is not None:
            self._first.close()
        self._loop.stop()


def open_source(spec: str, max_frames: int | None = None,
                report: Callable[[str], None] | None = None, max_retries: int | None = None) -> FrameSource:
    """``demo`` | camera index (``0``) | stream URL | image file | folder | video file.

    With ``report``, a camera or stream comes wrapped in a :class:`LiveSource` that reconnects with back-off
    and passes every fault to ``report``.
    """
    if spec == "demo":
        return DemoSource(max_frames=100 if max_frames is None else max_frames)
    if spec.isdigit() or is_stream(spec):
        target: str | int = int(spec) if spec.isdigit() else spec
        if report is not None:
            return LiveSource(lambda: VideoSource(target), report, max_frames=max_frames, max_retries=max_retries)
        return VideoSource(target, max_frames=max_frames)
    path = Path(spec)
    if not path.exists():
        raise UserError(f"{path}: no such file or folder (a source is an image, a folder, a video, a camera index or 'demo')")
    if path.is_dir():
        return FolderSource(path)
    if spec.startswith("/dev/video") and path.is_char_device():  # a camera by its device node stays a camera
        if report is not None:
            return LiveSource(lambda: VideoSource(spec), report, max_frames=max_frames, max_retries=max_retries)
        return VideoSource(spec, max_frames=max_frames)
    # the format from the bytes, not the name: a 16000x16000 PNG named .tif must not reach FFmpeg uncapped
    # (files named as images go to read_image, which checks their bytes the same way)
    if path.suffix.lower() in IMAGE_SUFFIXES or check_media_file(path) in DECODED_FORMATS:
        return ImageSource(path)
    return VideoSource(str(path), max_frames=max_frames)
