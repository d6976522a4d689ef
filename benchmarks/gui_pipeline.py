"""The desktop app's frame pipeline under a live-like source: displayed fps, capture-to-display latency,
UI event-loop stalls and memory.

    python benchmarks/gui_pipeline.py                         # the real run: 10,000 frames (~6 min at 30 fps)
    python benchmarks/gui_pipeline.py --frames 300            # a quick look
    python benchmarks/gui_pipeline.py --model m.onnx --json gui.json

What runs: the real MainWindow (offscreen unless QT_QPA_PLATFORM says otherwise) with its own capture and
inference threads and its own frame signal, on a 640x480 MJPG .avi written to a temp folder (it loops,
as the app loops any video file) or, with --source synthetic, on frames already in memory (no decoding).
Either way the capture worker paces the source at --fps exactly as it paces a video file (pace_fps).
Nothing in the app is changed; the benchmark only observes it:

 - slot.put (capture thread): when each frame was published, its capture time -> offered fps, pacing jitter;
 - video.set_frame (the UI: on the capture thread's frameReady, or with the frame's prediction while the model
   keeps up) and the window's shown_seq: which frame the video widget got, and when;
 - the video widget's Paint event and paintEvent: when that frame was drawn -> frames displayed and
   capture-to-display latency (to the end of the paint);
 - inference.resultReady (UI thread): when each frame's prediction arrived -> capture-to-prediction latency;
 - a 5 ms precise QTimer: how late it fires is how long the event loop was busy (a fixed histogram);
 - VmRSS from /proc/self/status once a second;
 - the process's CPU time (user + system, every thread) over the measured window: % of one core and ms per
   offered frame (target: <= 15% of one core at 30 fps with the default model).

--spinning both runs the app alternately with ONNX Runtime's thread spinning off (as shipped) and on, --rounds
times each, interleaved in one process so machine load hits both alike, and prints one row per run.

The measured window starts after the model is loaded, a prediction has been shown and --warmup more frames
have passed. Every buffer the benchmark fills is allocated and touched before then, so its own bookkeeping
does not show up as memory growth.

Targets (issue; 2-core machine, default model): every frame of a 30 fps source displayed, capture-to-display
latency p99 < 100 ms, no event-loop stall > 50 ms, RSS flat over 10,000 frames (here: less than 5 MB growth
from the first sample after warm-up to the last, and a fitted slope over the second half of the run below
0.5 MB per 1,000 frames, so a start-up step does not count as a leak but a steady climb does; judged on runs
of at least 1,000 frames). The exit status is 0 whatever the verdicts.

To help explain a stall, the JSON also has the time the UI thread spent in the block panel's 4 Hz update
(set_blocks, the channel grid) and in painting the panels, and Python's garbage-collector pauses.
The CPU target is judged on the app alone: after the measured window every hook is removed (the app's own methods
back, no event filter, no stall or control timer) and the process's CPU is read over --alone-seconds more of the
same source. The figure with the hooks is printed too; it reads high (the 5 ms stall timer alone costs about 1.7%
of one core). "by thread" splits both: UI (the main thread), inference, capture (FFmpeg's decoding threads share
the name), Qt's pool.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PySide6.QtCore import QEvent, QEventLoop, QObject, Qt, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from resnet_edge_gui.app import MainWindow, resolve_start_model  # noqa: E402
from resnet_edge.atomicio import write_bytes_atomic  # noqa: E402
from resnet_edge.errors import UserError  # noqa: E402
from resnet_edge.sources import DemoSource, Frame, FrameSource  # noqa: E402

WIDTH, HEIGHT = 640, 480
TARGET_LATENCY_P99_MS = 100.0
TARGET_MAX_STALL_MS = 50.0
TARGET_RSS_SLOPE_MB_PER_1000 = 0.5  # 5 MB over 10,000 frames, fitted over the second half of the run
TARGET_RSS_GROWTH_MB = 5.0  # first sample after warm-up -> last
TARGET_CPU_PERCENT = 15.0  # the whole app process (all threads), % of one core, on a 30 fps source
RSS_MIN_FRAMES = 1000  # shorter runs report the slope without a verdict
SOURCE_FPS_TOLERANCE = 0.02  # the harness check: the capture worker really paced at --fps
STALL_BIN_MS = 0.1
STALL_BINS = 20000  # 0..2 s in 0.1 ms bins, plus the last bin for anything longer
WARMUP_TIMEOUT_S = 120.0
ALONE_S = 20.0  # after the measured window, the app's CPU with the benchmark's hooks removed, for this long
GRACE_S = 0.5  # after the last measured frame is captured, time for it to reach the screen


# --- sources ---------------------------------------------------------------------------------------


def clip_frame(index: int, demo: DemoSource) -> np.ndarray:
    """A moving demo frame with its index written on it (so a screenshot of the run shows progress)."""
    image = demo.render(index)
    cv2.putText(image, f"{index:05d}", (12, HEIGHT - 16), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2, cv2.LINE_AA)
    return image


def make_clip(path: Path, frames: int, fps: float) -> Path:
    """A 640x480 MJPG .avi of ``frames`` demo frames at ``fps``; checks OpenCV reads back that fps."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write MJPG video to {path}")
    demo = DemoSource(max_frames=None, height=HEIGHT, width=WIDTH)
    try:
        for index in range(frames):
            writer.write(clip_frame(index, demo))
    finally:
        writer.release()
    capture = cv2.VideoCapture(str(path))
    try:
        stored = capture.get(cv2.CAP_PROP_FPS)
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()
    if abs(stored - fps) > 0.01 or count != frames:
        raise RuntimeError(f"{path}: OpenCV reads it back as {count} frames at {stored} fps, not {frames} at {fps}")
    return path


class SyntheticVideo(FrameSource):
    """Frames already in memory, endlessly; kind "video" so the capture worker paces it at ``fps``."""

    kind = "video"

    def __init__(self, fps: float, frames: int = 60) -> None:
        self.fps = fps
        demo = DemoSource(max_frames=None, height=HEIGHT, width=WIDTH)
        self.images = [clip_frame(index, demo) for index in range(frames)]
        self.description = f"synthetic {WIDTH}x{HEIGHT} at {fps:g} fps"

    def __iter__(self) -> Iterator[Frame]:
        for index in itertools.count():
            yield Frame(f"synthetic {index}", self.images[index % len(self.images)])


# --- measuring -------------------------------------------------------------------------------------


class Durations:
    """Up to ``capacity`` durations (ms) in a buffer allocated and touched up front."""

    def __init__(self, capacity: int) -> None:
        self.values = np.full(capacity, np.nan)
        self.count = 0
        self.total = 0  # including any that did not fit

    def add(self, ms: float) -> None:
        if self.count < len(self.values):
            self.values[self.count] = ms
            self.count += 1
        self.total += 1

    def stats(self) -> dict[str, float | int | None]:
        return {**stats(self.values[: self.count]), "calls": self.total}


def rss_kb() -> int | None:
    """Resident set size of this process now (Linux); None elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


class StallHistogram:
    """How late a periodic timer fired, in fixed 0.1 ms bins: constant memory for any run length."""

    def __init__(self, bin_ms: float = STALL_BIN_MS, bins: int = STALL_BINS, worst: int = 20) -> None:
        self.bin_ms, self.bins = bin_ms, bins
        self.counts = np.zeros(bins, dtype=np.int64)
        self.counts[:] = 0  # touch the pages now, not during the run
        self.count = 0
        self.max_ms = 0.0
        self.worst: list[tuple[float, float]] = []  # (ms late, seconds into the run), largest first
        self._worst_size = worst

    def add(self, late_ms: float, at_s: float = 0.0) -> None:
        index = int(late_ms / self.bin_ms) if late_ms > 0 else 0
        self.counts[index if index < self.bins else self.bins - 1] += 1
        self.count += 1
        if late_ms > self.max_ms:
            self.max_ms = late_ms
        if late_ms > 5.0 and (len(self.worst) < self._worst_size or late_ms > self.worst[-1][0]):
            self.worst.append((late_ms, at_s))
            self.worst.sort(reverse=True)
            del self.worst[self._worst_size:]

    def percentile(self, q: float) -> float:
        """The upper edge of the bin holding the q-th percentile (ms); 0 with no samples."""
        if not self.count:
            return 0.0
        rank = max(1, int(np.ceil(q / 100.0 * self.count)))
        index = int(np.searchsorted(np.cumsum(self.counts), rank))
        return min((index + 1) * self.bin_ms, self.max_ms)

    def over(self, ms: float) -> int:
        return int(self.counts[int(ms / self.bin_ms):].sum())


class PipelineProbe(QObject):
    """Hooks one MainWindow's frame path (see the module docstring) and drives the measured window."""

    def __init__(self, window: MainWindow, frames: int, fps: float, warmup_frames: int, stall_interval_ms: int,
                 loop: QEventLoop, progress: Callable[[str], None] | None = None,
                 warmup_timeout_s: float = WARMUP_TIMEOUT_S, alone_s: float = 0.0) -> None:
        super().__init__()
        self.alone_s = alone_s  # after the measured window: this long with every hook removed, CPU only
        self.alone: dict[str, Any] | None = None
        self.window, self.n, self.fps, self.warmup_frames = window, frames, fps, warmup_frames
        self.warmup_deadline = time.monotonic() + warmup_timeout_s
        self.loop, self.progress = loop, progress

        def buffer() -> np.ndarray:
            return np.full(frames, np.nan)  # np.full writes every page: RSS includes it from the start

        self.capture_t, self.received_t, self.paint_start_t, self.paint_end_t, self.result_t = (buffer() for _ in range(5))
        samples = int(frames / fps * 2) + 120
        self.rss_t, self.rss_frames, self.rss = np.full(samples, np.nan), np.full(samples, np.nan), np.full(samples, np.nan)
        self.rss_count = 0
        self.stalls = StallHistogram()
        slow = int(frames / fps * 8) + 200  # room for ~8 calls a second (the panel's 4 Hz, gc)
        self.ui_work = {name: Durations(slow) for name in
                        ("block_panel.set_blocks", "channel_grid.set_block", "block_panel.paint", "channel_grid.paint")}
        self.gc_pauses = {generation: Durations(slow) for generation in (0, 1, 2)}
        self._gc_start = 0.0

        self.armed = False  # warm-up over: the next frame captured starts the measured window
        self.start_seq: int | None = None  # set by the capture thread: measured frame i has seq start_seq + 1 + i
        self.offered = 0
        self.done = False
        self.timed_out = False
        self.ready_frames: int | None = None  # capture.frames when the first prediction was on screen
        self.t_start: float | None = None
        self.cpu_start: float | None = None  # process CPU seconds (all threads) when the measured window began
        self.cpu_end: float | None = None
        self.threads_start: dict[str, float] = {}  # CPU seconds per thread group (thread_cpu_s)
        self.threads_end: dict[str, float] = {}
        self.t_end: float | None = None
        self.end_deadline: float | None = None
        self.superseded = 0  # frames handed to the widget but replaced before a paint showed them
        self.paint_events = 0
        self.paint_calls = 0
        self._pending: int | None = None  # measured frame handed to the widget, not painted yet
        self._painting: int | None = None
        self._next_rss = 0.0
        self._next_progress = 0.0
        self.load_start = load_average()

        slot, video = window.slot, window.video
        self._put, slot.put = slot.put, self._on_put
        self._set_frame, video.set_frame = video.set_frame, self._on_set_frame
        self._paint, video.paintEvent = video.paintEvent, self._on_paint  # PySide6 honours this for Python widgets
        video.installEventFilter(self)  # sees every Paint even where it would not
        window.inference.resultReady.connect(self._on_result)  # after the window's own slot: the result is shown
        for widget, method, name in ((window.block_panel, "set_blocks", "block_panel.set_blocks"),
                                     (window.channel_grid, "set_block", "channel_grid.set_block"),
                                     (window.block_panel, "paintEvent", "block_panel.paint"),
                                     (window.channel_grid, "paintEvent", "channel_grid.paint")):
            setattr(widget, method, self._timed(getattr(widget, method), self.ui_work[name]))
        gc.callbacks.append(self._on_gc)

        self.interval_s = stall_interval_ms / 1000.0
        self._last_tick = time.monotonic()
        self.stall_timer = QTimer(self, interval=stall_interval_ms, timeout=self._tick)
        self.stall_timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.control_timer = QTimer(self, interval=50, timeout=self._control)
        self.stall_timer.start()
        self.control_timer.start()

    # hooks: each does O(1) work next to the call it wraps

    def _on_put(self, frame: Any) -> None:  # capture thread
        self._put(frame)
        if self.start_seq is None:
            if not self.armed:
                return
            self.start_seq = frame.seq - 1
        index = frame.seq - self.start_seq - 1
        if index < self.n:
            self.capture_t[index] = frame.time
            self.offered = index + 1

    def _on_set_frame(self, image: np.ndarray) -> None:
        self._set_frame(image)
        start = self.start_seq
        if start is None:
            return
        index = self.window.shown_seq - start - 1  # the app sets it before it hands the frame over
        if 0 <= index < self.n:
            if self._pending is not None:
                self.superseded += 1
            self.received_t[index] = time.monotonic()
            self._pending = index

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Paint:
            self.paint_events += 1
            if self._pending is not None:
                self.paint_start_t[self._pending] = time.monotonic()
                self._painting, self._pending = self._pending, None
        return False

    def _on_paint(self, event: Any) -> None:
        self._paint(event)
        self.paint_calls += 1
        if self._painting is not None:
            self.paint_end_t[self._painting] = time.monotonic()
            self._painting = None

    def _timed(self, call: Callable[..., Any], bucket: Durations) -> Callable[..., Any]:
        def timed(*args: Any) -> Any:
            if self.t_start is None or self.done:
                return call(*args)
            start = time.perf_counter()
            try:
                return call(*args)
            finally:
                bucket.add((time.perf_counter() - start) * 1000.0)
        return timed

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:  # any thread, with the GIL held
        if phase == "start":
            self._gc_start = time.perf_counter()
        elif self.t_start is not None and not self.done:
            self.gc_pauses[info.get("generation", 0)].add((time.perf_counter() - self._gc_start) * 1000.0)

    def _on_result(self, result: Any) -> None:
        start = self.start_seq
        if start is not None:
            index = result.frame.seq - start - 1
            if 0 <= index < self.n and self.result_t[index] != self.result_t[index]:  # NaN: the first result for it
                self.result_t[index] = time.monotonic()

    def _tick(self) -> None:
        now = time.monotonic()
        late_ms = (now - self._last_tick - self.interval_s) * 1000.0
        self._last_tick = now
        if self.t_start is not None and not self.done:
            self.stalls.add(late_ms, now - self.t_start)

    # the run

    def _sample_rss(self, now: float) -> None:
        value = rss_kb()
        if value is not None and self.rss_count < len(self.rss):
            self.rss_t[self.rss_count], self.rss_frames[self.rss_count] = now, self.offered
            self.rss[self.rss_count] = value / 1024.0
            self.rss_count += 1

    def _control(self) -> None:
        now = time.monotonic()
        window = self.window
        if not self.armed:
            if self.ready_frames is None and window.model_info is not None and window.inference.results > 0 \
                    and window.video.frames_shown > 0:
                self.ready_frames = window.capture.frames
            if self.ready_frames is not None and window.capture.frames >= self.ready_frames + self.warmup_frames:
                self.armed = True
            elif now > self.warmup_deadline:
                self.finish(timed_out=True)
            return
        if self.start_seq is None:
            return
        if self.t_start is None:
            self.t_start = now
            self.cpu_start = process_cpu_s()
            self.threads_start = thread_cpu_s()
            self._sample_rss(now)
            self._next_rss, self._next_progress = now + 1.0, now + 10.0
            return
        if now >= self._next_rss:
            self._sample_rss(now)
            self._next_rss += 1.0
        if self.progress is not None and now >= self._next_progress:
            self._next_progress += 10.0
            shown = int(np.count_nonzero(~np.isnan(self.paint_start_t[: self.offered])))
            self.progress(f"{now - self.t_start:5.0f} s  {self.offered}/{self.n} frames offered, {shown} displayed, "
                          f"RSS {self.rss[self.rss_count - 1]:.1f} MB, worst stall {self.stalls.max_ms:.1f} ms")
        if self.offered >= self.n and self.end_deadline is None:
            self.end_deadline = now + GRACE_S
        if self.end_deadline is not None and now >= self.end_deadline:
            self.finish()

    def finish(self, timed_out: bool = False) -> None:
        if self.done:
            return
        now = time.monotonic()
        if self.t_start is not None:
            self._sample_rss(now)
        self.done, self.timed_out, self.t_end = True, timed_out, now
        self.cpu_end = process_cpu_s()
        self.threads_end = thread_cpu_s()
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        self.stall_timer.stop()
        self.control_timer.stop()
        if self.alone_s > 0 and not timed_out:
            self._measure_alone()
        else:
            self.loop.quit()

    def unhook(self) -> None:
        """Put the app back as it was: its own methods, no event filter, no extra slot on resultReady."""
        window = self.window
        for owner, name in ((window.slot, "put"), (window.video, "set_frame"),
                            (window.video, "paintEvent"), (window.block_panel, "set_blocks"),
                            (window.channel_grid, "set_block"), (window.block_panel, "paintEvent"),
                            (window.channel_grid, "paintEvent")):
            if name in vars(owner):
                delattr(owner, name)  # the class's method shows through again
        window.video.removeEventFilter(self)
        window.inference.resultReady.disconnect(self._on_result)

    def _measure_alone(self) -> None:
        """The app's CPU with nothing of the benchmark running: no hooks, no stall timer, no control timer."""
        self.unhook()
        capture = self.window.capture
        start = (time.monotonic(), process_cpu_s(), thread_cpu_s(), capture.frames)

        def end() -> None:
            now, cpu_s, threads, frames = time.monotonic(), process_cpu_s(), thread_cpu_s(), capture.frames
            offered, duration = frames - start[3], now - start[0]
            self.alone = {"seconds": round(cpu_s - start[1], 3), "duration_s": round(duration, 3), "frames": offered,
                          "percent_of_one_core": round(100.0 * (cpu_s - start[1]) / duration, 2),
                          "ms_per_frame": round(1000.0 * (cpu_s - start[1]) / offered, 3) if offered else None,
                          "ms_per_frame_by_thread": {name: round(1000.0 * (threads.get(name, 0.0) - before) / offered, 3)
                                                     for name, before in start[2].items()} if offered else {}}
            self.loop.quit()

        QTimer.singleShot(int(self.alone_s * 1000), end)

    # the numbers

    def summary(self) -> dict[str, Any]:
        n_offered = self.offered
        capture = self.capture_t[:n_offered]
        display = np.where(np.isnan(self.paint_end_t), self.paint_start_t, self.paint_end_t)[:n_offered]
        if self.paint_calls == 0:  # paintEvent override not honoured: the Paint event (start of the paint) it is
            display = self.paint_start_t[:n_offered]
        shown = ~np.isnan(display)
        displayed = int(shown.sum())
        received = int((~np.isnan(self.received_t[:n_offered])).sum())
        latency = (display - capture)[shown] * 1000.0
        to_widget = (self.received_t[:n_offered] - capture) * 1000.0
        paint_ms = (self.paint_end_t - self.paint_start_t)[:n_offered] * 1000.0
        results = self.result_t[:n_offered]
        prediction = (results - capture)[~np.isnan(results)] * 1000.0
        intervals = np.diff(capture) * 1000.0
        span = float(capture[-1] - capture[0]) if n_offered > 1 else 0.0
        shown_times = np.sort(display[shown])
        display_span = float(shown_times[-1] - shown_times[0]) if displayed > 1 else 0.0
        missed_runs = longest_run(~shown)

        rss = self.rss[: self.rss_count]
        rss_frames = self.rss_frames[: self.rss_count]
        slope = fit_slope(rss_frames, rss) * 1000.0 if self.rss_count >= 3 and np.ptp(rss_frames) > 0 else None
        half = self.rss_count // 2
        late_slope = (fit_slope(rss_frames[half:], rss[half:]) * 1000.0
                      if self.rss_count - half >= 3 and np.ptp(rss_frames[half:]) > 0 else None)

        duration = (self.t_end or time.monotonic()) - (self.t_start or time.monotonic())
        cpu_s = (self.cpu_end - self.cpu_start) if self.cpu_start is not None and self.cpu_end is not None else None
        cpu = {"seconds": round(cpu_s, 3) if cpu_s is not None else None,
               "percent_of_one_core": round(100.0 * cpu_s / duration, 2) if cpu_s is not None and duration > 0 else None,
               "ms_per_frame": round(1000.0 * cpu_s / n_offered, 3) if cpu_s is not None and n_offered else None,
               "ms_per_frame_by_thread": {name: round(1000.0 * (self.threads_end.get(name, 0.0) - start) / n_offered, 3)
                                          for name, start in self.threads_start.items()} if n_offered else {}}
        inference = self.window.inference
        return {
            "cpu": cpu,
            "cpu_alone": self.alone,
            "cam_ms": round(inference.cam_ms, 3) if getattr(inference, "cam_ms", None) else None,
            "probe_ms": round(inference.probe_ms, 3) if inference.probe_ms else None,
            "complete": not self.timed_out and n_offered == self.n,
            "duration_s": round((self.t_end or time.monotonic()) - (self.t_start or time.monotonic()), 3),
            "frames": {"requested": self.n, "offered": n_offered, "received_by_widget": received,
                       "displayed": displayed, "not_displayed": n_offered - displayed,
                       "never_taken_by_ui": n_offered - received, "superseded_before_paint": self.superseded,
                       "longest_run_not_displayed": missed_runs,
                       "classified": int((~np.isnan(results)).sum())},
            "source_fps": round((n_offered - 1) / span, 3) if span > 0 else None,
            "displayed_fps": round((displayed - 1) / display_span, 3) if display_span > 0 else None,
            "capture_interval_ms": stats(intervals),
            "latency_ms": stats(latency),
            "capture_to_widget_ms": stats(to_widget[~np.isnan(to_widget)]),
            "paint_ms": stats(paint_ms[~np.isnan(paint_ms)]),
            "prediction_latency_ms": stats(prediction),
            "stall_ms": {"interval_ms": self.interval_s * 1000.0, "ticks": self.stalls.count,
                         "p50": round(self.stalls.percentile(50), 2), "p99": round(self.stalls.percentile(99), 2),
                         "p999": round(self.stalls.percentile(99.9), 2), "max": round(self.stalls.max_ms, 2),
                         "over_16ms": self.stalls.over(16.0), "over_33ms": self.stalls.over(33.0),
                         "over_50ms": self.stalls.over(TARGET_MAX_STALL_MS),
                         "worst": [{"ms": round(ms, 2), "at_s": round(at, 2)} for ms, at in self.stalls.worst]},
            "rss_mb": {"first": round(float(rss[0]), 2) if len(rss) else None,
                       "last": round(float(rss[-1]), 2) if len(rss) else None,
                       "min": round(float(rss.min()), 2) if len(rss) else None,
                       "max": round(float(rss.max()), 2) if len(rss) else None,
                       "growth": round(float(rss[-1] - rss[0]), 2) if len(rss) else None,
                       "slope_mb_per_1000_frames": round(slope, 4) if slope is not None else None,
                       "second_half_slope_mb_per_1000_frames": round(late_slope, 4) if late_slope is not None else None,
                       "samples": [[round(float(f)), round(float(m), 2)] for f, m in zip(rss_frames, rss)]},
            "ui_work_ms": {name: bucket.stats() for name, bucket in self.ui_work.items()},
            "gc_pause_ms": {f"gen{generation}": bucket.stats() for generation, bucket in self.gc_pauses.items()},
            "paint_hook": "paintEvent" if self.paint_calls else "Paint event",
            "load_average": {"start": self.load_start, "end": load_average()},
        }


def process_cpu_s() -> float:
    """CPU seconds this process has used, user + system, all threads together."""
    times = os.times()
    return times.user + times.system


def thread_cpu_s() -> dict[str, float]:
    """CPU seconds (user + system) per thread group, from /proc (Linux; empty elsewhere): "UI" for the main
    thread, else the thread's name (the app's workers are named; pools share a name and are summed)."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    groups: dict[str, float] = {}
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return groups
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/stat", encoding="ascii", errors="replace") as stat:
                text = stat.read()
        except OSError:
            continue  # the thread ended
        name = "UI" if int(tid) == os.getpid() else text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()
        groups[name] = groups.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return groups


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (how contended the machine was), where the OS has them."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def stats(values: np.ndarray) -> dict[str, float | int | None]:
    values = np.asarray(values, dtype=np.float64)
    if not len(values):
        return {"count": 0, "p50": None, "p99": None, "max": None, "mean": None}
    p50, p99 = np.percentile(values, [50, 99])
    return {"count": int(len(values)), "p50": round(float(p50), 3), "p99": round(float(p99), 3),
            "max": round(float(values.max()), 3), "mean": round(float(values.mean()), 3)}


def fit_slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of y over x."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    x = x - x.mean()
    return float((x * (y - y.mean())).sum() / (x * x).sum())


def longest_run(flags: np.ndarray) -> int:
    best = current = 0
    for flag in flags:
        current = current + 1 if flag else 0
        best = max(best, current)
    return best


# --- the run ---------------------------------------------------------------------------------------


def run_benchmark(frames: int = 10000, fps: float = 30.0, model: str | None = None, *, warmup_frames: int = 60,
                  threads: int | None = None, source: str = "video", clip_frames: int = 300,
                  stall_interval_ms: int = 5, provider: str = "auto",
                  json_path: str | os.PathLike | None = None, progress: Callable[[str], None] | None = None,
                  warmup_timeout_s: float = WARMUP_TIMEOUT_S, spinning: bool = False,
                  alone_s: float = ALONE_S) -> dict[str, Any]:
    """Run the app on a paced 640x480 source until ``frames`` frames were offered after warm-up; the numbers.

    ``source``: "video" (an MJPG .avi of ``clip_frames`` frames, looped by the app) or "synthetic".
    ``spinning``: an experiment, ONNX Runtime's threads spin between frames (the app switches that off).
    """
    if frames < 2:
        raise UserError("--frames must be at least 2")
    model_path = resolve_start_model(model, "fp32")
    if not model_path.is_file():
        raise UserError(f"{model_path}: no such model file")
    app = QApplication.instance() or QApplication([sys.argv[0]])
    with tempfile.TemporaryDirectory(prefix="gui-pipeline.") as tmp:
        if source == "video":
            clip = make_clip(Path(tmp) / "clip.avi", clip_frames, fps)
            spec, factory = str(clip), None
        elif source == "synthetic":
            spec, factory = "synthetic", (lambda: SyntheticVideo(fps))
        else:
            raise UserError(f"--source must be video or synthetic, not {source!r}")
        loop = QEventLoop()
        window = MainWindow(model=str(model_path), source=spec, source_factory=factory, provider=provider,
                            threads=threads, scan_cameras=False, output_dir=Path(tmp) / "out", ort_spinning=spinning,
                            settings=None)
        try:
            probe = PipelineProbe(window, frames, fps, warmup_frames, stall_interval_ms, loop, progress, warmup_timeout_s,
                                  alone_s)
            window.show()
            limit_s = WARMUP_TIMEOUT_S + (frames + warmup_frames) / fps * 2 + alone_s + 30  # a last resort
            deadline = QTimer(singleShot=True, interval=int(limit_s * 1000), timeout=lambda: probe.finish(timed_out=True))
            deadline.start()
            loop.exec()
            deadline.stop()
            if probe.start_seq is None:
                note = window.statusBar().currentMessage() or window.block_panel.note
                raise RuntimeError(f"the app never got past warm-up in {warmup_timeout_s:g} s (model loaded: {window.model_info is not None}, "
                                   f"predictions: {window.inference.results}, frames: {window.capture.frames}; {note})")
            result = probe.summary()
            info = window.model_info
            result["config"] = {
                "frames": frames, "fps": fps, "warmup_frames": warmup_frames, "source": source,
                "clip_frames": clip_frames if source == "video" else None, "size": [WIDTH, HEIGHT],
                "model": str(model_path), "provider": info.provider if info else None, "threads": threads,
                "qt_platform": app.platformName(), "window": [window.width(), window.height()],
                "video_widget": [window.video.width(), window.video.height()],
                "cpus": os.cpu_count(), "cpu_model": cpu_model(),
                "ort_spinning": spinning,
                "python": platform.python_version(), "machine": platform.machine(),
            }
        finally:
            window.shutdown()
            window.close()
            window.deleteLater()
            app.processEvents()
    result["verdicts"] = verdicts(result)
    if json_path:
        write_bytes_atomic(json_path, (json.dumps(result, indent=2) + "\n").encode(), force=True)
    return result


# --- report ----------------------------------------------------------------------------------------


def verdicts(result: dict[str, Any]) -> dict[str, str]:
    """PASS/FAIL per target ("n/a" where the run cannot tell)."""
    fps = result["config"]["fps"] if "config" in result else 30.0
    frames, latency, stalls, rss = result["frames"], result["latency_ms"], result["stall_ms"], result["rss_mb"]
    source_fps, shown_fps = result["source_fps"], result["displayed_fps"]

    def judge(ok: bool | None) -> str:
        return "n/a" if ok is None else ("PASS" if ok else "FAIL")

    slope, growth = rss.get("second_half_slope_mb_per_1000_frames"), rss.get("growth")
    flat = None
    if slope is not None and growth is not None and frames["offered"] >= RSS_MIN_FRAMES:
        flat = slope < TARGET_RSS_SLOPE_MB_PER_1000 and growth < TARGET_RSS_GROWTH_MB
    return {
        "source_fps": judge(None if source_fps is None else abs(source_fps - fps) <= SOURCE_FPS_TOLERANCE * fps),
        "all_frames_displayed": judge(frames["offered"] == frames["requested"] and frames["displayed"] == frames["offered"]),
        "displayed_fps": judge(None if shown_fps is None else shown_fps >= fps * (1 - SOURCE_FPS_TOLERANCE / 2)),
        "latency_p99": judge(None if latency["p99"] is None else latency["p99"] < TARGET_LATENCY_P99_MS),
        "max_stall": judge(None if not stalls["ticks"] else stalls["max"] <= TARGET_MAX_STALL_MS),
        "rss_flat": judge(flat),
        "cpu": judge(None if app_cpu(result).get("percent_of_one_core") is None
                     else app_cpu(result)["percent_of_one_core"] <= TARGET_CPU_PERCENT),
    }


def cpu_rows(result: dict[str, Any], verdict: str) -> list[tuple[str, str, str, str]]:
    """The CPU rows: the app alone (judged) and with the benchmark's hooks (reads high), each split by thread."""
    def by_thread(cpu: dict[str, Any]) -> str:
        return ", ".join(f"{name} {value:.2f}" for name, value in sorted(
            cpu["ms_per_frame_by_thread"].items(), key=lambda item: -item[1]) if value >= 0.05)

    rows = []
    alone, hooked = result.get("cpu_alone"), result["cpu"]
    if alone:
        rows += [(f"process CPU, the app alone ({alone['duration_s']:.0f} s)", f"{num_or_dash(alone['percent_of_one_core'], 1)} %",
                  f"<= {TARGET_CPU_PERCENT:g} %", verdict),
                 ("  CPU per offered frame, by thread", f"{num_or_dash(alone['ms_per_frame'], 2)} ms: {by_thread(alone)}", "", "")]
    rows += [("process CPU with the benchmark's hooks", f"{num_or_dash(hooked['percent_of_one_core'], 1)} %",
              "" if alone else f"<= {TARGET_CPU_PERCENT:g} %", "" if alone else verdict),
             ("  CPU per offered frame, by thread", f"{num_or_dash(hooked['ms_per_frame'], 2)} ms: {by_thread(hooked)}", "", "")]
    return rows


def app_cpu(result: dict[str, Any]) -> dict[str, Any]:
    """The CPU figures the target is judged on: the app alone where that phase ran, else with the hooks."""
    return result.get("cpu_alone") or result.get("cpu") or {}


def format_table(result: dict[str, Any]) -> str:
    config, frames, verdict = result["config"], result["frames"], result["verdicts"]
    latency, prediction, stalls, rss = result["latency_ms"], result["prediction_latency_ms"], result["stall_ms"], result["rss_mb"]
    fps = config["fps"]
    work = result["ui_work_ms"]
    panel = [work[name]["p99"] for name in ("block_panel.set_blocks", "channel_grid.set_block", "block_panel.paint",
                                            "channel_grid.paint") if work[name]["p99"] is not None]
    panel_p99 = sum(panel) if panel else None  # an upper bound of one update's cost, at the 99th percentile
    pauses = [bucket["max"] for bucket in result["gc_pause_ms"].values() if bucket["max"] is not None]
    collections = sum(bucket["calls"] for bucket in result["gc_pause_ms"].values())

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} ms"

    def num(value: float | None, digits: int = 2) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    load = result["load_average"]
    rows = [
        ("source fps offered (harness check)", num(result["source_fps"]), f"{fps:g} +/- {SOURCE_FPS_TOLERANCE:.0%}",
         verdict["source_fps"]),
        ("frames displayed / offered", f"{frames['displayed']} / {frames['offered']}", "all",
         verdict["all_frames_displayed"]),
        ("  never taken by the UI", str(frames["never_taken_by_ui"]), "", ""),
        ("  replaced before a paint", str(frames["superseded_before_paint"]), "", ""),
        ("displayed fps", num(result["displayed_fps"]), f">= {fps * (1 - SOURCE_FPS_TOLERANCE / 2):g}",
         verdict["displayed_fps"]),
        ("capture-to-display latency p50", ms(latency["p50"]), "", ""),
        ("capture-to-display latency p99", ms(latency["p99"]), f"< {TARGET_LATENCY_P99_MS:g} ms", verdict["latency_p99"]),
        ("capture-to-display latency max", ms(latency["max"]), "", ""),
        ("UI event-loop stall p99", ms(stalls["p99"]), "", ""),
        ("UI event-loop stall max", ms(stalls["max"]), f"<= {TARGET_MAX_STALL_MS:g} ms", verdict["max_stall"]),
        ("  stalls > 16 / 33 / 50 ms", f"{stalls['over_16ms']} / {stalls['over_33ms']} / {stalls['over_50ms']}", "", ""),
        ("RSS after warm-up -> end", f"{num(rss['first'], 1)} -> {num(rss['last'], 1)} MB", f"< +{TARGET_RSS_GROWTH_MB:g} MB",
         verdict["rss_flat"]),
        ("  RSS slope, 2nd half (whole run)", f"{num(rss['second_half_slope_mb_per_1000_frames'], 3)} "
         f"({num(rss['slope_mb_per_1000_frames'], 3)}) MB/1000 frames",
         f"< {TARGET_RSS_SLOPE_MB_PER_1000:g} (runs >= {RSS_MIN_FRAMES})", ""),
        ("capture-to-prediction latency p50/p99",
         f"{num(prediction['p50'], 1)} / {num(prediction['p99'], 1)} ms", "", ""),
        ("frames classified / offered", f"{frames['classified']} / {frames['offered']}", "", ""),
        *cpu_rows(result, verdict["cpu"]),
        ("block panel probe run / CAM on it", f"{num(result['probe_ms'], 2)} / {num(result['cam_ms'], 3)} ms", "", ""),
        ("UI: block panel update + paint p99", f"{num(panel_p99, 1)} ms (4 Hz)", "", ""),
        ("UI: longest gc pause", f"{num(max(pauses) if pauses else None, 1)} ms ({collections} collections)", "", ""),
    ]
    width = max(len(row[0]) for row in rows)
    value_width = max(len(row[1]) for row in rows)
    target_width = max(len(row[2]) for row in rows)
    source = f"{config['source']} ({config['clip_frames']}-frame MJPG .avi, looped)" if config["source"] == "video" else config["source"]
    lines = [
        f"gui pipeline: {frames['requested']} frames, {config['size'][0]}x{config['size'][1]} at {fps:g} fps, source {source}",
        f"model {Path(config['model']).name} on {config['provider']}, threads {config['threads'] or 'default'}, "
        f"Qt {config['qt_platform']}, video widget {config['video_widget'][0]}x{config['video_widget'][1]}, "
        f"{config['cpus']} CPUs ({config['cpu_model']}), ORT spinning {'on' if config['ort_spinning'] else 'off'}, load average {fmt_load(load['start'])} -> {fmt_load(load['end'])}, "
        f"{result['duration_s']:.0f} s measured" + ("" if result["complete"] else "  (INCOMPLETE: timed out)"),
        "",
        f"{'metric':<{width}}  {'value':<{value_width}}  {'target':<{target_width}}  result",
    ]
    lines += [f"{name:<{width}}  {value:<{value_width}}  {target:<{target_width}}  {res}".rstrip()
              for name, value, target, res in rows]
    return "\n".join(lines)


def cpu_model() -> str:
    """The CPU's model name (lscpu's "Model name"), or the platform's processor string."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def format_interleaved(results: list[dict[str, Any]]) -> str:
    """One row per run of --spinning both: CPU and latency, spinning off and on, in the order they ran."""
    head = f"{'run':>3}  {'ORT spinning':<12}  {'CPU % of core':>13}  {'CPU ms/frame':>12}  {'display p99':>11}  " \
           f"{'prediction p99':>14}  {'probe / CAM ms':>14}  {'load':>5}"
    lines = [head]
    for index, result in enumerate(results, 1):
        cpu, config = app_cpu(result), result["config"]
        lines.append(f"{index:>3}  {'on' if config['ort_spinning'] else 'off':<12}  {cpu['percent_of_one_core']:>13.1f}  "
                     f"{cpu['ms_per_frame']:>12.2f}  {result['latency_ms']['p99']:>9.1f}ms  "
                     f"{result['prediction_latency_ms']['p99']:>12.1f}ms  "
                     f"{num_or_dash(result.get('probe_ms')):>6} / {num_or_dash(result.get('cam_ms'), 3):<5}  "
                     f"{fmt_load(result['load_average']['start']):>5}")
    for mode in (False, True):
        runs = [r for r in results if r["config"]["ort_spinning"] == mode]
        if runs:
            cpu = np.median([app_cpu(r)["percent_of_one_core"] for r in runs])
            p99 = np.median([r["latency_ms"]["p99"] for r in runs])
            pred = np.median([r["prediction_latency_ms"]["p99"] for r in runs])
            lines.append(f"median, spinning {'on' if mode else 'off'}: CPU {cpu:.1f}% of one core, display p99 {p99:.1f} ms, "
                         f"prediction p99 {pred:.1f} ms ({len(runs)} runs)")
    return "\n".join(lines)


def num_or_dash(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def fmt_load(load: Any) -> str:
    return "?" if not load else f"{load[0]:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10000, help="frames to measure after warm-up (default 10000)")
    parser.add_argument("--model", help="an .onnx file or a shipped model's name (default: the app's default model)")
    parser.add_argument("--fps", type=float, default=30.0, help="source frame rate (default 30)")
    parser.add_argument("--json", help="write every number to this JSON file")
    parser.add_argument("--source", default="video", choices=("video", "synthetic"),
                        help="video: a looped MJPG .avi (decoded like any file); synthetic: frames in memory")
    parser.add_argument("--warmup", type=int, default=60, help="frames after the first prediction before measuring")
    parser.add_argument("--clip-frames", type=int, default=300, help="length of the generated .avi (it loops)")
    parser.add_argument("--threads", type=int, help="ONNX Runtime threads (default: the app's default, all cores)")
    parser.add_argument("--provider", default="auto", help="execution provider (default: auto, as the app)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--spinning", choices=("off", "on", "both"), default="off",
                        help="ONNX Runtime thread spinning: off (the app as shipped), on, or both interleaved")
    parser.add_argument("--alone-seconds", type=float, default=ALONE_S,
                        help=f"then measure the app's CPU with every hook removed for this long (default {ALONE_S:g}; 0: skip)")
    parser.add_argument("--rounds", type=int, default=3, help="with --spinning both: runs of each (default 3)")
    args = parser.parse_args(argv)
    progress = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    if args.spinning == "both":
        results = []
        try:
            for round_index in range(args.rounds):
                for spinning in (False, True):
                    if progress:
                        progress(f"round {round_index + 1}/{args.rounds}, spinning {'on' if spinning else 'off'}")
                    results.append(run_benchmark(args.frames, args.fps, args.model, warmup_frames=args.warmup,
                                                 threads=args.threads, source=args.source, clip_frames=args.clip_frames,
                                                 provider=args.provider, spinning=spinning, alone_s=args.alone_seconds))
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        config = results[0]["config"]
        print(f"gui pipeline, spinning off/on interleaved: {args.frames} frames per run at {args.fps:g} fps, "
              f"model {Path(config['model']).name} on {config['provider']}, {config['cpus']} CPUs ({config['cpu_model']})")
        print(format_interleaved(results))
        if args.json:
            write_bytes_atomic(args.json, (json.dumps(results, indent=2) + "\n").encode(), force=True)
        return 0
    try:
        result = run_benchmark(args.frames, args.fps, args.model, warmup_frames=args.warmup, threads=args.threads,
                               source=args.source, clip_frames=args.clip_frames, provider=args.provider,
                               json_path=args.json, progress=progress, alone_s=args.alone_seconds,
                               spinning=args.spinning == "on")
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_table(result))
    if args.json:
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
