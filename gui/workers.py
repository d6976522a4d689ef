"""Capture and inference off the UI thread.

    capture thread --put--> LatestFrame (a lock + one reference) --wait_newer--> inference thread --signal--> UI
                                  `--latest()--> UI display timer

A newer frame overwrites an older one nobody has read yet: a slow model drops frames, it never queues
them. Both workers follow Qt's Mandelbrot example: a request (new source, new model) is kept as "the
newest request" under a lock and picked up by the loop; stop() sets a flag and wakes the thread, and
the owner joins it with wait(). Nothing here calls QThread.terminate().

ModelProbeWorker loads a model the user picked in a child process before the inference worker may (probe.py).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
from PySide6.QtCore import QObject, QThread, Signal

from resnet_edge.errors import UserError
from resnet_edge.runtime import BlockActivation, Classifier, Prediction
from resnet_edge.sources import (LIVE_KINDS, Backoff, DemoSource, FrameSource, FrameWatch, VideoSource,
                                 open_source)
from resnet_edge.sources import describe_error as describe_error  # re-exported: the app's one-line error text

from .probe import PROBE_TIMEOUT_S, PROBED, ProbeCache, ProbeCommand, ProbeOutcome, probe_command, probe_key, run_probe

SourceFactory = Callable[[], FrameSource]  # opens a source; called in the capture thread, may raise
CAMERA_INDICES = range(5)  # what the camera scan tries


# --- the frame slot --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CapturedFrame:
    seq: int  # 1, 2, 3... for the life of a capture worker, so a reader can tell a new frame from a seen one
    id: str  # the source's name for it ("frame 12", "demo 3", a file name)
    image: np.ndarray  # BGR uint8 (H, W, 3); never modified after it is published
    time: float  # time.monotonic() when it was captured


class LatestFrame:
    """The single slot frames cross threads through: one reference, overwritten by each newer frame."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._frame: CapturedFrame | None = None
        self._wakes = 0

    def put(self, frame: CapturedFrame) -> None:
        with self._cond:
            self._frame = frame
            self._cond.notify_all()

    def latest(self) -> CapturedFrame | None:
        with self._cond:
            return self._frame

    def wait_newer(self, seq: int, timeout: float) -> CapturedFrame | None:
        """The latest frame if it is newer than ``seq``; waits up to ``timeout`` s or until wake()."""
        with self._cond:
            wakes = self._wakes
            self._cond.wait_for(lambda: self._is_newer(seq) or self._wakes != wakes, timeout)
            return self._frame if self._is_newer(seq) else None

    def wake(self) -> None:
        """Release waiters without a frame (a stop or a model request is waiting to be handled)."""
        with self._cond:
            self._wakes += 1
            self._cond.notify_all()

    def _is_newer(self, seq: int) -> bool:
        return self._frame is not None and self._frame.seq > seq


class RateMeter:
    """Events per second over the last ``window`` seconds; ticked by a worker, read by the UI."""

    def __init__(self, window: float = 2.0) -> None:
        self.window = window
        self._times: deque[float] = deque()
        self._lock = threading.Lock()
        self._start: float | None = None

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._start = now if self._start is None else self._start
            self._times.append(now)
            self._trim(now)

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._trim(now)
            if self._start is None or not self._times:
                return 0.0
            # divide by the time covered so far, so the first seconds are not under-reported
            span = min(self.window, now - self._start)
            return len(self._times) / span if span > 0 else 0.0

    def _trim(self, now: float) -> None:
        while self._times and self._times[0] < now - self.window:
            self._times.popleft()


# --- sources ---------------------------------------------------------------------------------------


def source_factory(spec: str, camera: Callable[[int], FrameSource] = VideoSource) -> SourceFactory:
    """``auto`` (camera 0 if it opens, else demo) | ``demo`` | camera index | image | folder | video file."""
    if spec == "auto":
        chosen: list[SourceFactory] = []

        def open_auto() -> FrameSource:
            # decide once: a camera that later drops out is reconnected, not swapped for the demo
            if chosen:
                return chosen[0]()
            try:
                source = camera(0)
                chosen.append(lambda: camera(0))
                return source
            except UserError:
                chosen.append(lambda: DemoSource(max_frames=None))
                return chosen[0]()

        return open_auto
    if spec == "demo":
        return lambda: DemoSource(max_frames=None)
    if spec.isdigit():
        return lambda: camera(int(spec))
    return lambda: open_source(spec)


def pace_fps(source: FrameSource) -> float | None:
    """Frames per second to publish at; None for a camera or stream, whose read() waits for the next frame itself."""
    if source.kind in LIVE_KINDS:
        return None
    if source.kind == "video":
        return float(min(max(getattr(source, "fps", 0.0) or 30.0, 1.0), 120.0))
    if source.kind == "folder":
        return 1.0  # a slide show: time to look at each image
    if source.kind == "image":
        return 2.0  # the same picture: re-reading it faster shows nothing new
    return 30.0


def scan_cameras(indices: Sequence[int] = CAMERA_INDICES, skip: Sequence[int] = ()) -> list[int]:
    """Camera indices OpenCV can open (those in ``skip`` are in use by us and count as present)."""
    found = []
    for index in indices:
        if index in skip:
            found.append(index)
            continue
        capture = cv2.VideoCapture(index)
        try:
            if capture.isOpened():
                found.append(index)
        finally:
            capture.release()
    return found


# --- capture ---------------------------------------------------------------------------------------


class CaptureWorker(QThread):
    """Reads a source into the slot: loops files, reconnects cameras with back-off, never raises."""

    opened = Signal(str)  # description of the source that just opened
    trouble = Signal(str, float)  # what went wrong, seconds until the next try
    notice = Signal(str)  # worth saying, nothing to recover from (a camera changed its resolution)

    def __init__(self, slot: LatestFrame, factory: SourceFactory, *, backoff_start: float = 0.5,
                 backoff_limit: float = 8.0, repeat_limit_s: float = 2.0,
                 pace: Callable[[FrameSource], float | None] = pace_fps, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("capture")
        self.slot = slot
        self.backoff = Backoff(backoff_start, backoff_limit)
        self.repeat_limit_s = repeat_limit_s
        self.pace = pace
        self.meter = RateMeter()
        self.frames = 0  # published frames, all sources together
        self.opens = 0  # successful opens, reconnects and loops included
        self.live = False  # the current source is a camera or stream (frames stop = trouble, not the end of a file)
        self.description = ""
        self.last_frame_time = 0.0
        self.troubles: deque[tuple[str, float]] = deque(maxlen=50)  # recent (message, retry delay), newest last
        self.notices: deque[str] = deque(maxlen=50)  # recent notices, newest last
        self._lock = threading.Lock()
        self._pending: SourceFactory | None = factory
        self._paused = False
        self._stopping = threading.Event()
        self._wakeup = threading.Event()  # interrupts pacing and back-off waits
        self._seq = 0

    # called from the UI thread

    def set_source(self, factory: SourceFactory) -> None:
        """Switch to another source; the newest request wins."""
        with self._lock:
            self._pending = factory
        self._wakeup.set()

    def set_paused(self, paused: bool) -> None:
        if not paused and self.last_frame_time:
            self.last_frame_time = time.monotonic()  # the pause was ours: no "camera silent" banner for it
        self._paused = paused
        self._wakeup.set()

    @property
    def paused(self) -> bool:
        return self._paused

    def stop(self) -> None:
        self._stopping.set()
        self._wakeup.set()

    # the thread

    def run(self) -> None:
        factory: SourceFactory | None = None
        while not self._stopping.is_set():
            with self._lock:
                if self._pending is not None:
                    factory, self._pending = self._pending, None
                    self.backoff.reset()
            if factory is None:
                self._wait(0.5)
                continue
            try:
                source = factory()
            except Exception as error:  # a camera that is not there, a missing file, a driver error
                self._retry(describe_error(error))
                continue
            self.opens += 1
            self.live = source.kind in LIVE_KINDS
            self.description = source.description
            self.opened.emit(source.description)
            try:
                delivered, reason = self._pump(source)
            finally:
                try:
                    source.close()
                except Exception:  # closing a broken device must not take the thread down
                    pass
            if reason is None:  # stopped, or switched to another source
                continue
            if delivered and not self.live and reason == "ended":
                continue  # a video, folder or image came to its end: play it again
            if delivered:
                self.backoff.reset()  # it worked for a while: start the back-off over
            self._retry(f"{source.description}: {reason}")

    def _retry(self, message: str) -> None:
        delay = self.backoff.next()
        message = f"{message}; reconnecting in {delay:g} s"
        self.troubles.append((message, delay))
        self.trouble.emit(message, delay)
        self._wait(delay)

    def _wait(self, seconds: float) -> None:
        # state (stop flag, pending source, pause) is re-read by the caller after this returns,
        # so clearing the event cannot lose a request
        self._wakeup.wait(seconds)
        self._wakeup.clear()

    def _interrupted(self) -> bool:
        return self._stopping.is_set() or self._pending is not None

    def _pump(self, source: FrameSource) -> tuple[bool, str | None]:
        """Publish frames until the source ends or fails (returns why) or a stop/switch (returns None)."""
        fps = self.pace(source)
        interval = 1.0 / fps if fps else 0.0
        delivered = False
        watch = FrameWatch(source.description, self.repeat_limit_s)
        due = time.monotonic()
        frames = iter(source)
        while not self._interrupted():
            if self._paused and not self.live:
                self._wait(0.2)  # a file holds its place while paused
                continue
            try:
                frame = next(frames, None)
            except Exception as error:  # a camera unplugged mid-stream, a decoder error
                return delivered, f"stopped delivering frames ({describe_error(error)})"
            if frame is None:
                return delivered, "stopped delivering frames" if self.live else "ended"
            now = time.monotonic()
            if self.live:
                verdict, message = watch.check(frame.image, now)
                if verdict == "frozen":
                    return delivered, message
                if verdict == "repeat":
                    continue
                if message:
                    self.notices.append(message)
                    self.notice.emit(message)
                if self._paused:
                    continue  # keep reading so the camera's buffer stays fresh, publish nothing
            delivered = True
            self._seq += 1
            self.slot.put(CapturedFrame(self._seq, frame.id, np.ascontiguousarray(frame.image), now))
            self.frames += 1
            self.last_frame_time = now
            self.meter.tick(now)
            if interval:
                due += interval
                delay = due - time.monotonic()
                if delay > 0:
                    self._wait(delay)
                else:
                    due = time.monotonic()  # fell behind: carry on from now rather than burst
        return delivered, None


# --- inference -------------------------------------------------------------------------------------


@dataclass
class ModelInfo:
    path: Path
    requested_provider: str  # what was asked for: auto, cpu, cuda...
    provider: str  # what is actually running
    precision: str  # from the model's contract
    arch: str
    has_probes: bool
    labels: list[str]
    warnings: list[str] = field(default_factory=list)


@dataclass
class InferenceResult:
    frame: CapturedFrame  # the frame this prediction is for
    prediction: Prediction
    latency_ms: float  # this run: classify, or probe on a probed frame
    blocks: list[BlockActivation] | None  # x_l and F(x_l) per block on probed frames (~4 Hz), else None
    model: ModelInfo


class InferenceWorker(QThread):
    """Classifies the newest frame, probes one every ``probe_interval`` s, loads models on request."""

    resultReady = Signal(object)  # InferenceResult
    modelLoaded = Signal(object)  # ModelInfo
    modelFailed = Signal(str)  # the model asked for did not load; the previous one keeps running
    failed = Signal(str)  # a frame the model could not run on

    def __init__(self, slot: LatestFrame, *, probe_interval: float = 0.25, threads: int | None = None,
                 loader: Callable[..., Classifier] = Classifier.load, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("inference")
        self.slot = slot
        self.probe_interval = probe_interval
        self.threads = threads
        self.loader = loader
        self.classifier: Classifier | None = None  # touched by the worker thread only
        self.model: ModelInfo | None = None
        self.meter = RateMeter()
        self.latency_ms = 0.0  # smoothed classify latency
        self.probe_ms = 0.0
        self.results = 0
        self.dropped = 0  # frames overwritten in the slot before the model got to them
        self.probing = True
        self._lock = threading.Lock()
        self._request: tuple[Path, str] | None = None
        self._stopping = False
        self._last_error = ""

    def request_model(self, path: str | Path, provider: str = "auto") -> None:
        """Load ``path`` on ``provider`` in the worker; the newest request wins."""
        with self._lock:
            self._request = (Path(path), provider)
        self.slot.wake()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
        classifier = self.classifier  # a run that never ends (a model that loops) must not hang the app's close
        if classifier is not None and hasattr(classifier, "cancel"):
            classifier.cancel(future_runs=True)
        self.slot.wake()

    def run(self) -> None:
        last_seq = 0
        next_probe = 0.0
        while True:
            with self._lock:
                if self._stopping:
                    return
                request, self._request = self._request, None
            if request is not None:
                if self._load(*request):
                    last_seq, next_probe = 0, 0.0  # run the new model on the frame on screen, probe it at once
                continue
            frame = self.slot.wait_newer(last_seq, timeout=0.5)
            if frame is None:
                continue
            if last_seq:
                self.dropped += frame.seq - last_seq - 1
            last_seq = frame.seq
            if self.classifier is None:
                continue
            next_probe = self._infer(frame, next_probe)

    def _infer(self, frame: CapturedFrame, next_probe: float) -> float:
        classifier, model = self.classifier, self.model
        now = time.monotonic()
        probe = self.probing and classifier.has_probes and now >= next_probe
        try:
            start = time.perf_counter()
            if probe:  # the probed session also gives the prediction: no second run for this frame
                prediction, blocks = classifier.probe(frame.image)
                next_probe = now + self.probe_interval
            else:
                prediction, blocks = classifier.classify(frame.image)[0], None
            elapsed_ms = (time.perf_counter() - start) * 1000
        except Exception as error:  # a frame the model cannot take must not stop the worker
            message = describe_error(error)
            if message != self._last_error:  # say it once, not thirty times a second
                self._last_error = message
                self.failed.emit(message)
            return next_probe
        self._last_error = ""
        if probe:
            self.probe_ms = elapsed_ms
        else:  # the panel's probe runs are slower: keep them out of the model latency shown
            self.latency_ms = elapsed_ms if not self.latency_ms else 0.9 * self.latency_ms + 0.1 * elapsed_ms
        self.results += 1
        self.meter.tick()
        self.resultReady.emit(InferenceResult(frame, prediction, elapsed_ms, blocks, model))
        return next_probe

    def _load(self, path: Path, provider: str) -> bool:
        try:
            classifier = self.loader(path, provider=provider, threads=self.threads, quiet=True)
        except Exception as error:  # UserError for bad files; anything else still must not kill the worker
            self.modelFailed.emit(describe_error(error))
            return False
        contract = classifier.contract
        info = ModelInfo(Path(path), provider, classifier.provider, contract.precision, contract.arch,
                         classifier.has_probes, list(contract.labels), list(classifier.warnings))
        self.classifier, self.model = classifier, info
        self.latency_ms = 0.0
        self.modelLoaded.emit(info)
        return True


class ModelProbeWorker(QThread):
    """Loads each model the user picks in a child process first (gui/probe.py), off the UI thread.

    Mandelbrot style: the newest request wins; a newer request or a cancel kills the child now working on an
    older one; stop() kills it too, so closing the window never waits out a hung model.
    """

    passed = Signal(int, object, str)  # request id, Path, provider: safe to load in the app
    failed = Signal(int, str)  # request id, one line saying why it is not loaded

    def __init__(self, *, timeout: float = PROBE_TIMEOUT_S, command: ProbeCommand = probe_command,
                 cache: ProbeCache = PROBED, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("model-probe")
        self.timeout, self.command, self.cache = timeout, command, cache
        self.probes = 0  # child processes started
        self._cond = threading.Condition(threading.Lock())
        self._pending: tuple[int, Path, str] | None = None
        self._generation = 0  # bumped by every request and cancel: the child in flight is stale when it moved
        self._stopping = False

    def request(self, request_id: int, path: str | Path, provider: str) -> None:
        with self._cond:
            self._pending = (request_id, Path(path), provider)
            self._generation += 1
            self._cond.notify_all()

    def cancel(self) -> None:
        """Forget any request (another model was chosen that needs no probe)."""
        with self._cond:
            self._pending = None
            self._generation += 1
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopping or self._pending is not None)
                if self._stopping:
                    return
                (request_id, path, provider), self._pending = self._pending, None
                generation = self._generation

            def stale() -> bool:
                with self._cond:
                    return self._stopping or self._generation != generation

            key = probe_key(path)  # taken before the child reads the file: a change meanwhile means probe again
            self.probes += 1
            try:
                outcome = run_probe(path, provider, timeout=self.timeout, command=self.command, cancelled=stale)
            except Exception as error:  # cannot start a process at all (no memory, no executable)
                outcome = ProbeOutcome(False, f"{path.name}: could not start a process to test it: {describe_error(error)}")
            if outcome is None or stale():
                continue  # superseded: the newer request is picked up above
            if outcome.ok:
                self.cache.add(key)
                self.passed.emit(request_id, path, provider)
            else:
                self.failed.emit(request_id, outcome.message)


class CameraScanner(QThread):
    """Finds the cameras OpenCV can open, off the UI thread (opening one can take seconds)."""

    found = Signal(list)  # list[int]

    def __init__(self, indices: Sequence[int] = CAMERA_INDICES, skip: Sequence[int] = (),
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("camera-scan")
        self.indices, self.skip = list(indices), list(skip)

    def run(self) -> None:
        try:
            cameras = scan_cameras(self.indices, self.skip)
        except Exception:  # a misbehaving driver: report no cameras rather than crash
            cameras = []
        self.found.emit(cameras)
