"""The one live-capture core, for the command line and the app alike.

    slot = LatestFrame()
    loop = CaptureLoop(slot, opener, CapturePolicy(), events)
    threading.Thread(target=loop.run).start()      # the app runs it in a QThread, the CLI in a daemon thread
    frame = slot.wait_newer(0, timeout=1.0)        # the consumer takes the newest frame, never a queue
    loop.stop()

What the loop does with a source:

- opens it (``opener()``), publishes its frames into the one-frame slot, paced for files (``pace_fps``);
- a camera or stream ("live") is watched: the very same frame for ``repeat_limit_s`` is a frozen driver
  (reopen), a change of resolution is a notice; a read that fails or raises is trouble: the source is
  reopened after a capped exponential back-off that starts over once frames flowed again, and after
  ``max_retries`` failed reopens in a row the loop gives up;
- a file is not a camera: a video, image or folder that cannot be opened or yields no frame is reported once
  (``failed``) and never retried; one that ends is played again (``replay``) or ends the loop.

Events go to a :class:`CaptureEvents` (the app turns them into Qt signals, the CLI prints them).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .errors import describe_error

LIVE_KINDS = ("camera", "stream")  # sources whose frames stopping is a fault to recover from, not the end

# Reconnect timing for live sources (the defaults of CapturePolicy).
BACKOFF_FIRST_S = 0.5  # first wait before reopening; doubles per failure in a row
BACKOFF_LIMIT_S = 8.0  # the cap: a camera unplugged for an hour is retried every 8 s, not every hour
REPEAT_LIMIT_S = 2.0  # the very same frame for this long means a frozen driver: reopen

Opener = Callable[[], "FrameSourceLike"]  # opens a source; called in the capture thread, may raise


class FrameSourceLike:  # the part of resnet_edge.sources.FrameSource the loop uses (no import cycle)
    kind: str
    description: str

    def __iter__(self):  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - interface
        pass


# --- the frame slot --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CapturedFrame:
    seq: int  # 1, 2, 3... for the life of a capture loop, so a reader can tell a new frame from a seen one
    id: str  # the source's name for it ("frame 12", "demo 3", a file name)
    image: np.ndarray  # BGR uint8 (H, W, 3); never modified after it is published
    time: float  # time.monotonic() when it was captured
    kind: str = ""  # the source's kind ("camera", "video", "image", "folder", "demo"...)
    opening: int = 0  # which open of the loop it came from: frames of an older source are stale


class LatestFrame:
    """The single slot frames cross threads through: one reference, overwritten by each newer frame."""

    def __init__(self, on_put: Callable[[], None] | None = None) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._frame: CapturedFrame | None = None
        self._wakes = 0
        self.on_put = on_put  # called (in the capture thread) after each frame: the app queues a Qt signal

    def put(self, frame: CapturedFrame) -> None:
        with self._cond:
            self._frame = frame
            self._cond.notify_all()
        if self.on_put is not None:
            self.on_put()

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


# --- the checks ------------------------------------------------------------------------------------


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


def pace_fps(source: FrameSourceLike) -> float | None:
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


def opener_is_live(opener: Opener) -> bool:
    """Whether a failed open of ``opener`` is worth retrying: openers say so with a ``live`` attribute
    (set by the app's and the CLI's factories); one that does not say is treated as a camera."""
    return bool(getattr(opener, "live", True))


# --- the loop --------------------------------------------------------------------------------------


@dataclass
class CapturePolicy:
    backoff_first_s: float = BACKOFF_FIRST_S  # first wait before reopening a live source; doubles per failure
    backoff_limit_s: float = BACKOFF_LIMIT_S  # the longest wait between reopens
    repeat_limit_s: float = REPEAT_LIMIT_S  # the very same frame this long from a live source: frozen, reopen
    max_retries: int | None = None  # failed reopens in a row before giving up on a live source (None: never)
    replay: bool = True  # a video, folder or image that came to its end starts over (False: the loop ends)
    wait_for_next: bool = True  # after a failure or an end, wait for set_source() (False: run() returns)
    pace: Callable[[FrameSourceLike], float | None] = pace_fps  # frames/s to publish a source at (None: as read)


class CaptureEvents:
    """What a CaptureLoop reports, from its own thread; every method may be overridden, none must block."""

    def opened(self, description: str, kind: str) -> None:
        """A source opened (first open, reconnect, replay of a file)."""

    def trouble(self, message: str, delay: float) -> None:
        """A live source failed; it is reopened in ``delay`` s."""

    def notice(self, message: str) -> None:
        """Worth saying, nothing to recover from (a camera changed its resolution)."""

    def failed(self, message: str) -> None:
        """This source is done for: a file that cannot be read, a live source given up on."""

    def ended(self, description: str) -> None:
        """A file came to its end and is not replayed."""

    def published(self, frame: CapturedFrame) -> None:
        """A frame went into the slot (a rate meter counts here)."""


class CaptureLoop:
    """Reads one source at a time into ``slot``; control methods are safe from any thread."""

    def __init__(self, slot: LatestFrame, opener: Opener | None, policy: CapturePolicy | None = None,
                 events: CaptureEvents | None = None, first: FrameSourceLike | None = None) -> None:
        self.slot = slot
        self.policy = policy or CapturePolicy()
        self.events = events or CaptureEvents()
        self.backoff = Backoff(self.policy.backoff_first_s, self.policy.backoff_limit_s)
        self.frames = 0  # published frames, all sources together
        self.opens = 0  # successful opens, reconnects and replays included
        self.live = False  # the current source is a camera or stream
        self.kind = ""  # the current source's kind
        self.description = ""
        self.last_frame_time = 0.0  # time.monotonic() of the last published frame
        self.retrying = False  # in a back-off wait (no frames expected meanwhile)
        self.failure: str | None = None  # why the last source was given up, until another one opens
        self.mirror = False  # flip camera frames left-right (a webcam facing the user), before anyone sees them
        self.troubles: deque[tuple[str, float]] = deque(maxlen=50)  # recent (message, retry delay), newest last
        self.notices: deque[str] = deque(maxlen=50)  # recent notices, newest last
        self._lock = threading.Lock()
        # a source the caller already opened (the CLI opens it to fail early) is read first, reopened by opener
        self._first = first
        self._opener = opener if first is not None else None
        self._pending: Opener | None = None if first is not None else opener
        self._paused = False
        self._step = 0  # images to move by in a folder (next/previous), taken by the loop
        self._stopping = threading.Event()
        self._wakeup = threading.Event()  # interrupts pacing and back-off waits
        self._seq = 0
        self._failures = 0  # failed attempts in a row since frames last flowed

    # --- control, from any thread -----------------------------------------------------------------

    def set_source(self, opener: Opener) -> None:
        """Switch to another source; the newest request wins."""
        with self._lock:
            self._pending = opener
        self._wakeup.set()

    def set_paused(self, paused: bool) -> None:
        if not paused and self.last_frame_time:
            self.last_frame_time = time.monotonic()  # the pause was ours: not a silence of the source
        self._paused = paused
        self._wakeup.set()

    @property
    def paused(self) -> bool:
        return self._paused

    def step(self, delta: int) -> None:
        """Show the image ``delta`` places on in a folder (-1: the previous one), paused or not."""
        with self._lock:
            self._step += delta
        self._wakeup.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wakeup.set()
        self.slot.wake()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # --- the loop ---------------------------------------------------------------------------------

    def run(self) -> None:
        """Capture until stop(); with ``wait_for_next`` off, also until a source fails for good or ends."""
        opener = self._opener
        source, self._first = self._first, None
        try:
            while not self._stopping.is_set():
                with self._lock:
                    if self._pending is not None:
                        opener, self._pending = self._pending, None
                        if source is not None:  # a pre-opened source nobody read: superseded
                            source.close()
                            source = None
                        self.backoff.reset()
                        self._failures = 0
                if source is None:
                    if opener is None:
                        self._wait(0.5)
                        continue
                    try:
                        source = opener()
                    except Exception as error:  # a camera that is not there, a missing file, a driver error
                        live = opener_is_live(opener)
                        if live and self._retry(describe_error(error)):
                            continue
                        if not live:  # a file does not appear by waiting for it: say so once
                            self._fail(describe_error(error))
                        opener = None
                        if not (self.policy.wait_for_next and self._idle()):
                            return
                        continue
                outcome = self._session(source)
                source = None
                if outcome == "done":
                    opener = None
                    if not (self.policy.wait_for_next and self._idle()):
                        return
        finally:
            self.slot.wake()  # a consumer waiting for frames learns the loop is over

    def _session(self, source: FrameSourceLike) -> str:
        """Read one opened source; "again" (reopen it, or take the newer request) or "done" (it is finished)."""
        self.opens += 1
        self.live, self.kind, self.description = source.kind in LIVE_KINDS, source.kind, source.description
        self.failure = None
        self.events.opened(source.description, source.kind)
        try:
            delivered, reason = self._pump(source)
        finally:
            try:
                source.close()
            except Exception:  # closing a broken device must not take the thread down
                pass
        if reason is None:  # stopped, or switched to another source
            return "again"
        if self.live:
            if delivered:  # it worked for a while: start the back-off over
                self.backoff.reset()
                self._failures = 0
            return "again" if self._retry(f"{source.description}: {reason}") else "done"
        if delivered and reason == "ended":
            if self.policy.replay:
                return "again"  # a video, folder or image came to its end: play it again
            self.events.ended(source.description)
        else:  # a file that yields nothing, or breaks: say it once, never retry it
            why = "no frame could be decoded" if reason == "ended" else reason
            self._fail(f"{source.description}: cannot be read ({why})")
        return "done"

    def _idle(self) -> bool:
        """Wait for another source (the app picks one); False if stopped meanwhile."""
        while not self._stopping.is_set():
            with self._lock:
                if self._pending is not None:
                    return True
            self._wait(0.5)
        return False

    def _retry(self, message: str) -> bool:
        """Say what went wrong and wait out the back-off; False (and failed) when the policy says give up."""
        self._failures += 1
        retries = self.policy.max_retries
        if retries is not None and self._failures > retries:
            self._fail(f"{message}; gave up after {retries} reconnect attempts")
            return False
        delay = self.backoff.next()
        message = f"{message}; reconnecting in {delay:g} s"
        self.troubles.append((message, delay))
        self.events.trouble(message, delay)
        self.retrying = True
        try:
            self._wait(delay)
        finally:
            self.retrying = False
        return True

    def _fail(self, message: str) -> None:
        self.failure = message
        self.live = False
        self.events.failed(message)

    def _wait(self, seconds: float) -> None:
        # state (stop flag, pending source, pause) is re-read by the caller after this returns,
        # so clearing the event cannot lose a request
        self._wakeup.wait(seconds)
        self._wakeup.clear()

    def _interrupted(self) -> bool:
        return self._stopping.is_set() or self._pending is not None

    def _pump(self, source: FrameSourceLike) -> tuple[bool, str | None]:
        """Publish frames until the source ends or fails (returns why) or a stop/switch (returns None)."""
        fps = self.policy.pace(source)
        interval = 1.0 / fps if fps else 0.0
        delivered, live = False, self.live
        watch = FrameWatch(source.description, self.policy.repeat_limit_s)
        due = time.monotonic()
        frames = iter(source)
        while not self._interrupted():
            with self._lock:
                step, self._step = self._step, 0
            forced = bool(step) and hasattr(source, "seek")
            if forced:
                source.seek(step)  # type: ignore[attr-defined]
                due = time.monotonic()
            if self._paused and not live and not forced:
                self._wait(0.2)  # a file holds its place while paused
                continue
            try:
                frame = next(frames, None)
            except Exception as error:  # a camera unplugged mid-stream, a decoder error
                return delivered, f"stopped delivering frames ({describe_error(error)})"
            if frame is None:
                return delivered, "stopped delivering frames (read failed)" if live else "ended"
            now = time.monotonic()
            if live:
                verdict, message = watch.check(frame.image, now)
                if verdict == "frozen":
                    return delivered, message
                if verdict == "repeat":
                    continue
                if message:
                    self.notices.append(message)
                    self.events.notice(message)
                if self._paused:
                    continue  # keep reading so the camera's buffer stays fresh, publish nothing
            image = frame.image[:, ::-1] if self.mirror and live else frame.image
            delivered = True
            self._failures = 0
            self._seq += 1
            captured = CapturedFrame(self._seq, frame.id, np.ascontiguousarray(image), now, source.kind, self.opens)
            self.events.published(captured)
            self.frames += 1
            self.last_frame_time = now
            delay = 0.0
            if interval:
                due += interval
                delay = due - time.monotonic()
                if delay <= 0:
                    due = time.monotonic()  # fell behind: carry on from now rather than burst
            # published last, just before this thread sleeps: the consumer it wakes finds the interpreter free
            # rather than waiting for this thread's bookkeeping (each such wait is one more thread switch)
            self.slot.put(captured)
            if delay > 0:
                self._wait(delay)
        return delivered, None
