"""Capture and inference off the UI thread.

    capture thread --put--> LatestFrame (a lock + one reference) --wait_newer--> inference thread --signal--> UI
                                  `--frameReady (while the model does not keep up) --latest()--> UI

A newer frame overwrites an older one nobody has read yet: a slow model drops frames, it never queues
them. Both workers follow Qt's Mandelbrot example: a request (new source, new model) is kept as "the
newest request" under a lock and picked up by the loop. One stop idiom for every worker of the app:
stop() sets a threading.Event named _stopping and wakes whatever the thread waits on; the owner joins it
with wait(). Nothing here calls QThread.terminate().

ModelCheckWorker loads a model the user picked in a child process before the inference worker may (modelcheck.py).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
from PySide6.QtCore import QObject, QThread, Signal

from resnet_edge.cam import CamUnavailable, ClassifierHead, class_activation_map, last_stage_features, read_head
from resnet_edge.capture import (LIVE_KINDS, Backoff, CapturedFrame, CaptureEvents, CaptureLoop, CapturePolicy,  # noqa: F401 - LIVE_KINDS, Backoff re-exported
                                 LatestFrame, pace_fps)
from resnet_edge.errors import UserError
from resnet_edge.errors import describe_error as describe_error  # re-exported: the app's one-line error text
from resnet_edge.runtime import BlockActivation, Classifier, Prediction
from resnet_edge.sources import DemoSource, FrameSource, VideoSource, is_stream, open_source

from .modelcheck import CHECK_TIMEOUT_S, PROBED, CheckCache, CheckCommand, CheckOutcome, check_command, check_key, run_model_check

SourceFactory = Callable[[], FrameSource]  # opens a source; called in the capture thread, may raise
CAMERA_INDICES = range(5)  # what the camera scan tries


# --- the frame slot: resnet_edge.capture's LatestFrame, shared with the CLI --------------------------------


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


def source_factory(spec: str, camera: Callable[[int], FrameSource] = VideoSource,
                   resolution: tuple[int, int] | None = None) -> SourceFactory:
    """``auto`` (camera 0 if it opens, else demo) | ``demo`` | camera index | image | folder | video file.

    Each factory says with ``.live`` whether a failed open is worth retrying (a camera) or not (a file).
    ``resolution`` (width, height) is asked of a camera when it opens."""
    if resolution is not None and camera is VideoSource:
        camera = lambda index: VideoSource(index, resolution=resolution)  # noqa: E731
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
            except UserError as error:
                reason = str(error)

                def demo() -> FrameSource:
                    source = DemoSource(max_frames=None)
                    source.description = f"demo: no camera ({reason})"
                    return source

                chosen.append(demo)
                return demo()

        return _opener(open_auto, live=True)
    if spec == "demo":
        return _opener(lambda: DemoSource(max_frames=None), live=False)
    if spec.isdigit():
        return _opener(lambda: camera(int(spec)), live=True)
    return _opener(lambda: open_source(spec), live=is_stream(spec))


def _opener(function: Callable[[], FrameSource], live: bool) -> SourceFactory:
    function.live = live  # type: ignore[attr-defined]  # read by resnet_edge.capture: retry a failed open?
    return function


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
    """The app's adapter of the one capture core (resnet_edge.capture.CaptureLoop): its events as signals.

    Loops files, reconnects cameras with back-off, says once that a file cannot be read; never raises."""

    opened = Signal(str, str)  # description and kind of the source that just opened
    trouble = Signal(str, float)  # what went wrong, seconds until the next try
    notice = Signal(str)  # worth saying, nothing to recover from (a camera changed its resolution)
    failed = Signal(str)  # this source is done for (a file that cannot be read): pick another
    frameReady = Signal()  # a new frame is in the slot (emitted in the capture thread, queued to the UI)

    def __init__(self, slot: LatestFrame, factory: SourceFactory, *, backoff_start: float = 0.5,
                 backoff_limit: float = 8.0, repeat_limit_s: float = 2.0,
                 pace: Callable[[FrameSource], float | None] = pace_fps, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("capture")
        self.slot = slot
        # frameReady per frame while this is True; the app turns it off while results bring their frames along,
        # so the UI thread wakes once per frame, not twice
        self.notify_frames = True
        slot.on_put = self._frame_put
        self.meter = RateMeter()
        policy = CapturePolicy(backoff_start, backoff_limit, repeat_limit_s, pace=pace)
        self.loop = CaptureLoop(slot, factory, policy, _Signals(self))
        self.backoff = self.loop.backoff

    def _frame_put(self) -> None:  # the capture thread, after each frame
        if self.notify_frames:
            self.frameReady.emit()

    # state, read by the UI thread
    frames = property(lambda self: self.loop.frames)  # published frames, all sources together
    opens = property(lambda self: self.loop.opens)  # successful opens, reconnects and loops included
    live = property(lambda self: self.loop.live)  # a camera or stream (frames stopping = trouble)
    kind = property(lambda self: self.loop.kind)
    description = property(lambda self: self.loop.description)
    last_frame_time = property(lambda self: self.loop.last_frame_time)
    troubles = property(lambda self: self.loop.troubles)  # recent (message, retry delay), newest last
    notices = property(lambda self: self.loop.notices)
    failure = property(lambda self: self.loop.failure)  # why the last source was given up, until another opens
    paused = property(lambda self: self.loop.paused)

    # called from the UI thread

    def set_source(self, factory: SourceFactory) -> None:
        """Switch to another source; the newest request wins."""
        self.loop.set_source(factory)

    def set_paused(self, paused: bool) -> None:
        self.loop.set_paused(paused)

    def step(self, delta: int) -> None:
        """Next (+1) or previous (-1) image of a folder."""
        self.loop.step(delta)

    def stop(self) -> None:
        self.loop.stop()

    def run(self) -> None:
        self.loop.run()


class _Signals(CaptureEvents):
    def __init__(self, worker: CaptureWorker) -> None:
        self.worker = worker

    def opened(self, description: str, kind: str) -> None:
        self.worker.opened.emit(description, kind)

    def trouble(self, message: str, delay: float) -> None:
        self.worker.trouble.emit(message, delay)

    def notice(self, message: str) -> None:
        self.worker.notice.emit(message)

    def failed(self, message: str) -> None:
        self.worker.failed.emit(message)

    def published(self, frame: CapturedFrame) -> None:
        self.worker.meter.tick(frame.time)


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
    resize_policy: str = "center_crop"  # the policy in the model's metadata
    extra: dict = field(default_factory=dict)  # the model's other metadata (a taught model's threshold...)
    cam_note: str | None = None  # why this model has no class activation map (None: it has one)
    preprocess: object = None  # the model's PreprocessSpec as loaded (input size, crop ratio, its own policy)


@dataclass
class InferenceResult:
    frame: CapturedFrame  # the frame this prediction is for
    prediction: Prediction
    latency_ms: float  # this run: classify, or probe on a probed frame
    blocks: list[BlockActivation] | None  # x_l and F(x_l) per block on probed frames (~4 Hz), else None
    model: ModelInfo
    cam: np.ndarray | None = None  # on probed frames: the class activation map (H, W) of the top class
    resize_policy: str = ""  # how this frame was brought to the model's input (the policy chosen live)


class InferenceWorker(QThread):
    """Classifies the newest frame, probes one every ``probe_interval`` s, loads models on request."""

    resultReady = Signal(object)  # InferenceResult
    modelLoaded = Signal(object)  # ModelInfo
    modelFailed = Signal(str)  # the model asked for did not load; the previous one keeps running
    failed = Signal(str)  # a frame the model could not run on

    def __init__(self, slot: LatestFrame, *, probe_interval: float = 0.25, threads: int | None = None,
                 loader: Callable[..., Classifier] = Classifier.load, spinning: bool = False,
                 parent: QObject | None = None) -> None:
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
        self.spinning = spinning
        self.cam_ms = 0.0  # the last class activation map's cost, on top of its probe run
        self._head: ClassifierHead | None = None  # the model's final linear layer, for the CAM
        self._policy: str | None = None  # resize policy chosen in the app (None: the model's own)
        self._lock = threading.Lock()
        self._request: tuple[Path, str] | None = None
        self._stopping = threading.Event()
        self._last_error = ""

    def request_model(self, path: str | Path, provider: str = "auto") -> None:
        """Load ``path`` on ``provider`` in the worker; the newest request wins."""
        with self._lock:
            self._request = (Path(path), provider)
        self.slot.wake()

    def set_resize_policy(self, policy: str | None) -> None:
        """How frames are brought to the model's input from the next frame on (None: the model's own)."""
        self._policy = policy

    def stop(self) -> None:
        self._stopping.set()
        classifier = self.classifier  # a run that never ends (a model that loops) must not hang the app's close
        if classifier is not None and hasattr(classifier, "cancel"):
            classifier.cancel(future_runs=True)
        self.slot.wake()

    def run(self) -> None:
        last_seq = 0
        next_probe = 0.0
        while not self._stopping.is_set():
            with self._lock:
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
        cam = None
        try:
            policy = self._policy or model.resize_policy
            spec = getattr(classifier.contract, "preprocess", None)
            if spec is not None and spec.resize_policy != policy:
                classifier.contract.preprocess = dataclasses.replace(spec, resize_policy=policy)
            start = time.perf_counter()
            if probe:  # the probed session also gives the prediction: no second run for this frame
                prediction, blocks = classifier.probe(frame.image)
                next_probe = now + self.probe_interval
            else:
                prediction, blocks = classifier.classify(frame.image)[0], None
            elapsed_ms = (time.perf_counter() - start) * 1000
            if blocks is not None and self._head is not None and prediction.finite:
                cam_start = time.perf_counter()  # rides on the probe run: a dot product over the last features
                try:
                    cam = class_activation_map(last_stage_features(blocks, classifier.contract), self._head,
                                               prediction.top[0][1])
                except CamUnavailable:
                    self._head = None  # this model's structure gives none: do not try on every probe
                self.cam_ms = (time.perf_counter() - cam_start) * 1000
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
        self.resultReady.emit(InferenceResult(frame, prediction, elapsed_ms, blocks, model, cam, policy))
        return next_probe

    def _load(self, path: Path, provider: str) -> bool:
        try:
            # spinning off: between a live source's frames ORT's idle threads would otherwise busy-wait a core away
            classifier = self.loader(path, provider=provider, threads=self.threads, quiet=True, spinning=self.spinning)
        except Exception as error:  # UserError for bad files; anything else still must not kill the worker
            self.modelFailed.emit(describe_error(error))
            return False
        contract = classifier.contract
        head, cam_note = None, None
        if classifier.has_probes:
            try:
                head = read_head(Path(path).read_bytes(), contract.output_name)
                if head.weight.shape[0] != len(contract.labels):
                    head, cam_note = None, "the final layer's size does not match the labels"
            except CamUnavailable as error:
                cam_note = str(error)
            except Exception as error:  # a file the CAM reader does not understand: no map, the model still runs
                cam_note = describe_error(error)
        else:
            cam_note = "the model has no block probes (export it with --probes)"
        info = ModelInfo(Path(path), provider, classifier.provider, contract.precision, contract.arch,
                         classifier.has_probes, list(contract.labels), list(classifier.warnings),
                         getattr(getattr(contract, "preprocess", None), "resize_policy", "center_crop"),
                         dict(getattr(contract, "extra", {})), cam_note, getattr(contract, "preprocess", None))
        self.classifier, self.model, self._head = classifier, info, head
        self.latency_ms = 0.0
        self.modelLoaded.emit(info)
        return True


class ModelCheckWorker(QThread):
    """Loads each model the user picks in a child process first (gui/modelcheck.py), off the UI thread.

    Mandelbrot style: the newest request wins; a newer request or a cancel kills the child now working on an
    older one; stop() kills it too, so closing the window never waits out a hung model.
    """

    passed = Signal(int, object, str)  # request id, Path, provider: safe to load in the app
    failed = Signal(int, str)  # request id, one line saying why it is not loaded

    def __init__(self, *, timeout: float = CHECK_TIMEOUT_S, command: CheckCommand = check_command,
                 cache: CheckCache = PROBED, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("model-check")
        self.timeout, self.command, self.cache = timeout, command, cache
        self.probes = 0  # child processes started
        self._cond = threading.Condition(threading.Lock())
        self._pending: tuple[int, Path, str] | None = None
        self._generation = 0  # bumped by every request and cancel: the child in flight is stale when it moved
        self._stopping = threading.Event()

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
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()

    def run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopping.is_set() or self._pending is not None)
                if self._stopping.is_set():
                    return
                (request_id, path, provider), self._pending = self._pending, None
                generation = self._generation

            def stale() -> bool:
                with self._cond:
                    return self._stopping.is_set() or self._generation != generation

            key = check_key(path)  # taken before the child reads the file: a change meanwhile means probe again
            self.probes += 1
            try:
                outcome = run_model_check(path, provider, timeout=self.timeout, command=self.command, cancelled=stale)
            except Exception as error:  # cannot start a process at all (no memory, no executable)
                outcome = CheckOutcome(False, f"{path.name}: could not start a process to test it: {describe_error(error)}")
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
