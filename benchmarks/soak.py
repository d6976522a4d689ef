"""Long runs: resident memory, file handles and threads stay flat while frames keep coming.

    python benchmarks/soak.py                                           # the real run: 100,000 + 10,000 frames
    python benchmarks/soak.py --runtime-frames 2000 --app-frames 300    # a quick look
    python benchmarks/soak.py --app-frames 0 --threads 1 --json soak.json

Two parts, in one process, one after the other:

 - runtime: the default model (resnet_edge.modelzoo, cifar10-resnet20) through Classifier.classify at batch 1,
   on frames of varying size (32x32 up to 1280x720) from a synthetic FrameSource, as `resnet-edge classify`
   runs them;
 - app: the real MainWindow (offscreen unless QT_QPA_PLATFORM says otherwise) with its own capture, inference
   and display, on the demo source unpaced (as fast as the capture thread can draw it), as
   benchmarks/gui_pipeline.py drives it; frames counted are the ones the inference thread classified.

Each part first runs a warm-up (--warmup frames; default a tenth of the run, at least 100, at most 2,000), then
measures: VmRSS, open file descriptors (/proc/self/fd), Python threads (threading.active_count()) and OS
threads (/proc/self/status Threads) after the warm-up and at the end of the run (after gc.collect(), so
garbage waiting for the collector is not counted as a leak). The app's workers are QThreads, which
threading.active_count() does not see: the OS thread count is the one that catches them. Once the window is
closed, every one of its worker threads must have finished (joined, not terminated); the OS thread count
before the window opened and after it closed is shown beside that check.

Checks (issue #8): RSS at the end within 5% of RSS after warm-up; no more file descriptors or threads at the
end than after warm-up; no worker thread of the window still running after it closed. Exit status 0 when every check
passes, 1 otherwise. Linux only for the /proc numbers (elsewhere they read n/a and do not fail).
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
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from resnet_edge.errors import UserError  # noqa: E402
from resnet_edge.modelzoo import resolve_model  # noqa: E402
from resnet_edge.sources import Frame, FrameSource  # noqa: E402
from resnet_edge.synthetic import synthetic_frame  # noqa: E402

RSS_GROWTH_LIMIT_PCT = 5.0
# (height, width): thumbnails to 720p, odd sizes included, so preprocessing allocates differently every frame
SIZES = [(32, 32), (240, 320), (480, 640), (720, 1280), (97, 131), (360, 480), (600, 800), (17, 23)]
FRAMES_PER_SIZE = 3
APP_TIMEOUT_S_PER_FRAME = 0.5  # a last resort against a hang: the app part gives up after this much per frame


# --- what is measured ------------------------------------------------------------------------------


def _status_field(name: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))  # the listing's own descriptor counts every time, so it cancels out
    except OSError:
        return None


@dataclass
class Snapshot:
    rss_kb: int | None
    fds: int | None
    py_threads: int
    os_threads: int | None

    @classmethod
    def take(cls) -> "Snapshot":
        gc.collect()
        return cls(_status_field("VmRSS"), open_fds(), threading.active_count(), _status_field("Threads"))


@dataclass
class PartResult:
    part: str
    frames: int
    seconds: float
    warm: Snapshot
    end: Snapshot
    notes: dict = field(default_factory=dict)

    @property
    def growth_pct(self) -> float | None:
        if self.warm.rss_kb is None or self.end.rss_kb is None:
            return None
        return 100.0 * (self.end.rss_kb - self.warm.rss_kb) / self.warm.rss_kb


# --- the runtime part ------------------------------------------------------------------------------


class VaryingSizeSource(FrameSource):
    """Synthetic frames cycling through SIZES, endlessly (rendered once up front: the soak is about the runtime)."""

    kind = "demo"
    description = "synthetic frames of varying size"

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.images = [synthetic_frame(rng, h, w) for h, w in SIZES for _ in range(FRAMES_PER_SIZE)]
        order = rng.permutation(len(self.images))  # sizes interleaved, not in runs
        self.images = [np.ascontiguousarray(self.images[i]) for i in order]

    def __iter__(self) -> Iterator[Frame]:
        for index in itertools.count():
            yield Frame(f"frame {index}", self.images[index % len(self.images)])


def soak_runtime(model: Path, frames: int, warmup: int, threads: int | None, provider: str) -> PartResult:
    from resnet_edge.runtime import Classifier

    classifier = Classifier.load(model, provider=provider, threads=threads, quiet=True)
    source = VaryingSizeSource()
    stream = iter(source)
    invalid = 0
    for _ in range(warmup):
        invalid += not classifier.classify(next(stream).image)[0].finite
    warm = Snapshot.take()
    start = time.perf_counter()
    for _ in range(frames):
        invalid += not classifier.classify(next(stream).image)[0].finite
    seconds = time.perf_counter() - start
    end = Snapshot.take()
    return PartResult("runtime", frames, seconds, warm, end,
                      {"provider": classifier.provider, "invalid_outputs": invalid, "sizes": len(SIZES)})


# --- the app part ----------------------------------------------------------------------------------


def soak_app(model: Path, frames: int, warmup: int, threads: int | None, provider: str) -> PartResult:
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from resnet_edge_gui.app import MainWindow
    from resnet_edge.sources import DemoSource

    from PySide6.QtCore import QEvent

    app = QApplication.instance() or QApplication([sys.argv[0]])
    before_os_threads = _status_field("Threads")
    state: dict = {"warm": None, "start": 0.0, "base": 0, "end": None, "seconds": 0.0, "error": None}
    with tempfile.TemporaryDirectory(prefix="soak-app.") as tmp:
        loop = QEventLoop()
        # unpaced: the capture thread publishes as fast as it can draw, the inference thread takes the newest
        window = MainWindow(model=str(model), source="demo", source_factory=lambda: DemoSource(max_frames=None),
                            provider=provider, threads=threads, scan_cameras=False, output_dir=Path(tmp) / "out",
                            capture_options={"pace": lambda _source: None})
        window.inference.modelFailed.connect(lambda message: (state.update(error=message), loop.quit()))

        def check() -> None:
            results = window.inference.results
            if state["warm"] is None:
                if results >= warmup:
                    state["warm"] = Snapshot.take()
                    state["base"] = window.inference.results
                    state["start"] = time.perf_counter()
                return
            if results - state["base"] >= frames:
                state["seconds"] = time.perf_counter() - state["start"]
                state["measured"] = results - state["base"]
                state["end"] = Snapshot.take()
                loop.quit()

        poll = QTimer(interval=20, timeout=check)
        limit_ms = int((frames + warmup) * APP_TIMEOUT_S_PER_FRAME * 1000 + 300_000)
        deadline = QTimer(singleShot=True, interval=limit_ms,
                          timeout=lambda: (state.update(error=f"timed out after {limit_ms / 1000:.0f} s"), loop.quit()))
        try:
            window.show()
            poll.start()
            deadline.start()
            loop.exec()
        finally:
            poll.stop()
            deadline.stop()
            notes = {"provider": window.model_info.provider if window.model_info else None,
                     "captured": window.capture.frames, "dropped": window.inference.dropped,
                     "qt_platform": app.platformName()}
            window.shutdown()
            window.close()
            workers = window.worker_threads()
            notes["workers_running_after_close"] = [t.objectName() for t in workers if t.isRunning()]
            notes["workers"] = len(workers)
            window.deleteLater()
            app.sendPostedEvents(None, QEvent.Type.DeferredDelete.value)  # processEvents() alone leaves it alive
            app.processEvents()
    if state["error"] or state["end"] is None:
        raise RuntimeError(f"the app part did not finish: {state['error'] or 'no end snapshot'} "
                           f"({window.inference.results} predictions)")
    gc.collect()
    notes["os_threads_before_window"] = before_os_threads
    notes["os_threads_after_close"] = _status_field("Threads")
    return PartResult("app", state["measured"], state["seconds"], state["warm"], state["end"], notes)


# --- report ----------------------------------------------------------------------------------------


def checks(result: PartResult) -> list[tuple[str, str, bool | None]]:
    """(check, measured, PASS/FAIL/None for n/a) for one part."""
    rows: list[tuple[str, str, bool | None]] = []
    growth = result.growth_pct
    rows.append(("RSS growth after warm-up", "n/a" if growth is None else
                 f"{growth:+.2f}% (limit {RSS_GROWTH_LIMIT_PCT:g}%)", None if growth is None else growth <= RSS_GROWTH_LIMIT_PCT))
    for name, warm, end in (("open file descriptors", result.warm.fds, result.end.fds),
                            ("Python threads", result.warm.py_threads, result.end.py_threads),
                            ("OS threads", result.warm.os_threads, result.end.os_threads)):
        if warm is None or end is None:
            rows.append((name, "n/a", None))
        else:
            rows.append((name, f"{warm} -> {end}", end <= warm))
    if "workers_running_after_close" in result.notes:
        running, notes = result.notes["workers_running_after_close"], result.notes
        rows.append(("worker threads after the window closed",
                     f"{notes['workers'] - len(running)} of {notes['workers']} finished"
                     + (f" (still running: {', '.join(running)})" if running else "")
                     + f"; OS threads {_pair(notes['os_threads_before_window'], notes['os_threads_after_close'])} "
                       f"before the window / after it closed", not running))
    return rows


def _mb(kb: int | None) -> str:
    return "n/a" if kb is None else f"{kb / 1024:.1f}"


def _pair(a: int | None, b: int | None) -> str:
    return "n/a" if a is None or b is None else f"{a} / {b}"


def format_report(results: list[PartResult], header: str) -> str:
    columns = ["part", "frames", "seconds", "frames/s", "RSS warm MB", "RSS end MB", "growth %", "fds start/end",
               "py threads start/end", "OS threads start/end"]
    rows = []
    for r in results:
        growth = r.growth_pct
        rows.append([r.part, f"{r.frames:,}", f"{r.seconds:.1f}", f"{r.frames / max(r.seconds, 1e-9):.0f}",
                     _mb(r.warm.rss_kb), _mb(r.end.rss_kb), "n/a" if growth is None else f"{growth:+.2f}",
                     _pair(r.warm.fds, r.end.fds), _pair(r.warm.py_threads, r.end.py_threads),
                     _pair(r.warm.os_threads, r.end.os_threads)])
    widths = [max(len(columns[i]), *(len(row[i]) for row in rows)) for i in range(len(columns))]
    line = lambda cells: "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))) + " |"  # noqa: E731
    out = [header, "", line(columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(row) for row in rows]
    out.append("")
    for r in results:
        for name, measured, ok in checks(r):
            verdict = "n/a" if ok is None else "PASS" if ok else "FAIL"
            out.append(f"{verdict:4}  {r.part}: {name}: {measured}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtime-frames", type=int, default=100_000, help="frames through the runtime (0: skip)")
    parser.add_argument("--app-frames", type=int, default=10_000, help="frames classified in the app (0: skip)")
    parser.add_argument("--warmup", type=int, help="warm-up frames per part (default: a tenth, 100..2000)")
    parser.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: all cores)")
    parser.add_argument("--model", help="model file or shipped name (default: the shipped default model)")
    parser.add_argument("--provider", default="auto")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    args = parser.parse_args(argv)
    if args.runtime_frames < 0 or args.app_frames < 0 or (args.warmup is not None and args.warmup < 0):
        print("soak: frame counts must be 0 or more", file=sys.stderr)
        return 2
    try:
        model = resolve_model(args.model)
        if not model.is_file():
            raise UserError(f"{model}: no such model file")
    except UserError as error:
        print(f"soak: {error}", file=sys.stderr)
        return 2

    def warmup_for(frames: int) -> int:
        return args.warmup if args.warmup is not None else max(100, min(2000, frames // 10))

    results = []
    if args.runtime_frames:
        results.append(soak_runtime(model, args.runtime_frames, warmup_for(args.runtime_frames), args.threads, args.provider))
    if args.app_frames:
        results.append(soak_app(model, args.app_frames, warmup_for(args.app_frames), args.threads, args.provider))
    header = (f"soak: {model.name}, threads {args.threads or 'all'}, {os.cpu_count()} CPUs, Python "
              f"{platform.python_version()}, {platform.system()} {platform.machine()}; "
              + "; ".join(f"{r.part}: {', '.join(f'{k} {v}' for k, v in r.notes.items() if not k.startswith(('os_threads', 'workers')))}"
                          for r in results))
    print(format_report(results, header))
    verdicts = [ok for r in results for _name, _measured, ok in checks(r)]
    if args.json:
        from resnet_edge.atomicio import write_text_atomic

        payload = {"model": str(model), "threads": args.threads,
                   "parts": [{**asdict(r), "growth_pct": r.growth_pct,
                              "checks": [{"check": n, "measured": m, "pass": ok} for n, m, ok in checks(r)]}
                             for r in results]}
        write_text_atomic(args.json, json.dumps(payload, indent=2) + "\n", force=True)
    return 0 if all(ok is not False for ok in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
