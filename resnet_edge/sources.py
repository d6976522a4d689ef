"""Frame sources for classify and the app: an image, a folder of images, a video file, a camera index,
a network stream (``rtsp://...``), or ``demo`` (moving synthetic shapes, for machines with no camera).

Every source yields (frame id, BGR uint8 frame). ``open_source`` picks the kind from the string.
Cameras and streams are "live": a read that fails, blocks or keeps returning the same frame is trouble,
not the end. :class:`LiveSource` (the CLI) and the app's CaptureWorker report it and reopen the source
with exponential back-off, capped, and reset after frames flow again.
"""

from __future__ import annotations

import queue
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from .errors import UserError, first_line
from .images import (DECODED_FORMATS, IMAGE_SUFFIXES, MAX_PIXELS, ImageError, check_media_file,  # also quiets
                     list_images, read_image)  # OpenCV's log
from .safety import printable, redact_text, redact_url  # noqa: F401 - redact_url moved to safety.py; imported from here too

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
LIVE_KINDS = ("camera", "stream")  # sources whose frames stopping is a fault to recover from, not the end

# Reconnect timing for live sources. Module constants, read when a LiveSource is made, so tests can shrink them.
BACKOFF_FIRST_S = 0.5  # first wait before reopening; doubles per failure in a row
BACKOFF_LIMIT_S = 8.0  # the cap: a camera unplugged for an hour is retried every 8 s, not every hour
STALL_S = 5.0  # a live read silent this long is reported (and reported again every STALL_S while it lasts)
REPEAT_LIMIT_S = 2.0  # the very same frame for this long means a frozen driver: reopen
OPEN_TIMEOUT_MS = 10_000  # video files and streams: FFmpeg's open and read give up after this (OpenCV's props)
READ_TIMEOUT_MS = 10_000


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

    def __iter__(self) -> Iterator[Frame]:
        for path in self.files:
            try:
                image = read_image(path)
            except ImageError as error:
                self.skipped += 1
                print(f"warning: skipping {printable(error)}", file=sys.stderr)
                continue
            yield Frame(str(path.relative_to(self.root)), image)


def is_stream(spec: str) -> bool:
    """rtsp://, http(s)://, udp://...: a network stream OpenCV's FFmpeg backend opens like a file."""
    return "://" in spec


def describe_error(error: BaseException) -> str:
    """One line: our own errors carry their message, others get their type too."""
    text = redact_text(first_line(error))  # library errors quote the stream URL they failed on, secrets and all
    if isinstance(error, UserError):
        return text or type(error).__name__
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class VideoSource(FrameSource):
    """A video file (OpenCV's FFmpeg backend), a camera index or a network stream URL."""

    def __init__(self, target: str | int, max_frames: int | None = None) -> None:
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


class Backoff:
    """Reconnect delays: first, 2*first, 4*first... capped at limit; reset() after a success."""

    def __init__(self, first: float = BACKOFF_FIRST_S, limit: float = BACKOFF_LIMIT_S) -> None:
        self.first, self.limit = first, limit
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.limit)
        return delay

    def reset(self) -> None:
        self._next = self.first


class FrameWatch:
    """What one connection's frames say about a live source: the very same frame for ``repeat_limit_s`` means
    a frozen driver (a real sensor always has noise); a change of size deserves a notice (the model takes any
    size, but a user wondering why the picture changed should see it was the camera)."""

    def __init__(self, description: str, repeat_limit_s: float) -> None:
        self.description, self.repeat_limit_s = description, repeat_limit_s
        self._previous: np.ndarray | None = None
        self._repeat_since: float | None = None

    def check(self, image: np.ndarray, now: float) -> tuple[str, str | None]:
        """("new", notice or None): use the frame; ("repeat", None): skip it; ("frozen", why): reopen the source."""
        previous = self._previous
        if previous is not None and image.shape == previous.shape and _same_pixels(image, previous):
            self._repeat_since = self._repeat_since or now
            if now - self._repeat_since >= self.repeat_limit_s:
                return "frozen", f"frozen (the same frame for {now - self._repeat_since:.1f} s)"
            return "repeat", None
        notice = None
        if previous is not None and image.shape != previous.shape:
            old, new = previous.shape, image.shape
            notice = f"{self.description}: resolution changed from {old[1]}x{old[0]} to {new[1]}x{new[0]}"
        self._previous, self._repeat_since = image, None
        return "new", notice


def _same_pixels(a: np.ndarray, b: np.ndarray) -> bool:
    # every frame of a camera goes through here: a sparse sample tells noisy frames apart without touching (or
    # allocating) a whole frame's worth; only frames that agree on it are compared in full
    return np.array_equal(a[::16, ::16], b[::16, ::16]) and np.array_equal(a, b)


class SourceLost(UserError):
    """A live source that did not come back within the allowed reconnects (not a user mistake: exit 1)."""

    exit_code = 1


class LiveSource(FrameSource):
    """A camera or stream that survives faults, for the command line.

    The wrapped source is read in a daemon thread through a one-frame queue, so a read() that blocks can be
    reported while it blocks ("no frames for 5 s"). A read that fails or raises, and a frame repeated
    unchanged for ``REPEAT_LIMIT_S`` (a frozen driver), close the source and reopen it after a back-off wait;
    a change of resolution is reported and classification goes on. The first open is not retried: a camera
    that is not there at all is the user's mistake (UserError, exit 2).
    """

    def __init__(self, opener: Callable[[], FrameSource], report: Callable[[str], None],
                 max_frames: int | None = None, max_retries: int | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.opener, self.report, self.max_frames, self.max_retries = opener, report, max_frames, max_retries
        self.sleep = sleep
        self.backoff = Backoff(BACKOFF_FIRST_S, BACKOFF_LIMIT_S)
        self.stall_s, self.repeat_limit_s = STALL_S, REPEAT_LIMIT_S
        self._first: FrameSource | None = opener()  # raises UserError when it does not open
        self.kind, self.description = self._first.kind, self._first.description
        self.frames = 0  # frames delivered, all connections together
        self.reconnects = 0  # successful reopens
        self.faults: list[str] = []  # every fault reported, oldest first
        self._failures = 0  # failed attempts in a row since frames last flowed
        self._delivered = False

    def __iter__(self) -> Iterator[Frame]:
        source, self._first = self._first, None
        while not self._enough():
            if source is None:
                try:
                    source = self.opener()
                except Exception as error:  # not there (yet), in use, a driver error: try again later
                    self._retry(describe_error(error))
                    continue
                self.reconnects += 1
                self.report(f"{source.description}: reconnected")
            self._delivered = False
            reason = yield from self._session(source)
            source = None
            if reason is None:  # enough frames
                return
            if self._delivered:  # it worked for a while: start the back-off over
                self.backoff.reset()
                self._failures = 0
            self._retry(f"{self.description}: {reason}")

    def _enough(self) -> bool:
        return self.max_frames is not None and self.frames >= self.max_frames

    def _retry(self, message: str) -> None:
        self._failures += 1
        if self.max_retries is not None and self._failures > self.max_retries:
            self.faults.append(message)
            raise SourceLost(f"{message}; gave up after {self.max_retries} reconnect attempts")
        delay = self.backoff.next()
        message = f"{message}; reconnecting in {delay:g} s"
        self.faults.append(message)
        self.report(message)
        self.sleep(delay)

    def _session(self, source: FrameSource) -> Iterator[Frame]:
        """Frames from one open source; returns why it ended (None: enough frames, or the caller stopped)."""
        slot: queue.Queue = queue.Queue(maxsize=1)  # one frame read ahead, no more: a slow model drops none
        stop = threading.Event()

        def hand_over(item: tuple[str, object]) -> bool:
            while not stop.is_set():
                try:
                    slot.put(item, timeout=0.2)
                    return True
                except queue.Full:
                    continue
            return False

        def read() -> None:
            try:
                for frame in source:
                    if not hand_over(("frame", frame)):
                        return
                hand_over(("end", "stopped delivering frames (read failed)"))
            except Exception as error:  # unplugged mid-stream, a decoder error
                hand_over(("end", f"stopped delivering frames ({describe_error(error)})"))
            finally:
                try:  # closed here, in the thread that reads it: never under a read() in progress
                    source.close()
                except Exception:
                    pass

        # daemon: a read() stuck in a driver must not keep the process alive after the last frame
        reader = threading.Thread(target=read, name="live-source", daemon=True)
        reader.start()
        watch = FrameWatch(self.description, self.repeat_limit_s)
        silent_since = time.monotonic()
        try:
            while not self._enough():
                try:
                    kind, value = slot.get(timeout=self.stall_s)
                except queue.Empty:
                    self.report(f"{self.description}: no frames for {time.monotonic() - silent_since:.1f} s; "
                                f"waiting for it")
                    continue
                if kind == "end":
                    return str(value)
                frame: Frame = value  # type: ignore[assignment]
                now = silent_since = time.monotonic()
                verdict, message = watch.check(frame.image, now)
                if verdict == "frozen":
                    return message
                if verdict == "repeat":
                    continue
                if message:
                    self.report(message)
                self._delivered = True
                self.frames += 1
                yield Frame(f"frame {self.frames - 1}", frame.image)
            return None
        finally:
            stop.set()  # the reader sees it at its next hand-over and closes the source
            reader.join(timeout=1.0)

    def close(self) -> None:
        if self._first is not None:
            self._first.close()


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
