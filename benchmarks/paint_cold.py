"""What the live view's paints cost when they run as the app runs them: right after the UI thread slept.

    python benchmarks/paint_cold.py                  # 150 paints per row, 30 ms sleep before each
    python benchmarks/paint_cold.py --paints 300 --sleep-ms 33

Each row paints one thing into an offscreen image, once back to back and once after a sleep of a frame
interval, and prints the median thread CPU of both. On a machine whose caches go cold while a thread sleeps
(a VM on a shared host above all), the second column is what each frame really pays, and it can be many times
the first: work is cheap there when it touches few code paths, not when it does few operations. The rows:

- ``QPainter begin/end``: the floor of any paint;
- ``video: frame``: the video widget with a 640x480 frame, nothing over it;
- ``video: frame + label, number moving``: a label whose percentage changes every frame, its number redrawn
  with the top-5 bars (every third frame at 30 fps, as in the app);
- ``video: frame + label, made every frame``: the same label with no refresh limit (every paint makes it anew);
- ``top-5 bars``: the bars with new values at every paint.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PySide6.QtGui import QImage, QPainter  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from resnet_edge_gui.widgets import video as video_module  # noqa: E402
from resnet_edge_gui.widgets.topk import TopKBars  # noqa: E402
from resnet_edge.providers import cpu_name  # noqa: E402
from resnet_edge.sources import live_opencv_threads  # noqa: E402

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def median_cpu_us(paint: Callable[[int], None], paints: int, sleep_s: float) -> float:
    """Median thread CPU of ``paint(i)`` in microseconds, each call after ``sleep_s`` of sleep (0: none)."""
    costs = []
    for index in range(paints):
        if sleep_s:
            time.sleep(sleep_s)
        start = time.thread_time_ns()
        paint(index)
        costs.append(time.thread_time_ns() - start)
    return float(np.median(costs)) / 1000.0


def prediction(index: int) -> SimpleNamespace:
    """A prediction whose class stays and whose probability moves, as a live source's does."""
    return SimpleNamespace(label="automobile", probability=0.90 + (index % 90) / 1000, finite=True, unsure=False)


def top5(index: int) -> SimpleNamespace:
    p = np.random.default_rng(index).dirichlet(np.full(len(CLASSES), 0.5))
    order = np.argsort(-p)[:5]
    return SimpleNamespace(top=[(CLASSES[i], int(i), float(p[i])) for i in order], finite=True, unsure=False,
                           threshold=0.5, label=CLASSES[order[0]], probability=float(p[order[0]]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--paints", type=int, default=150, help="paints per row and column (default 150)")
    parser.add_argument("--sleep-ms", type=float, default=30.0, help="sleep before each cold paint (default 30)")
    args = parser.parse_args()
    app = QApplication.instance() or QApplication([sys.argv[0]])
    live_opencv_threads()
    target = QImage(412, 356, QImage.Format.Format_RGB32)
    frame = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8), (15, 15), 5)
    view = video_module.VideoView()
    view.resize(412, 356)
    bars = TopKBars()
    bars.resize(300, 150)

    def empty(_index: int) -> None:
        QPainter(target).end()

    def video(label: bool, limited: bool) -> Callable[[int], None]:
        def paint(index: int) -> None:
            view.set_frame(frame)
            # the app redraws the number with the bars, at most 10 times a second: every third frame at 30 fps
            view.set_prediction(prediction(index) if label else None, with_next_frame=True,
                                numbers_due=not limited or index % 3 == 0)
            view.render(target)
        return paint

    def topk(index: int) -> None:
        bars.prediction = top5(index)
        bars.render(target)

    rows = [("QPainter begin/end", empty), ("video: frame", video(False, True)),
            ("video: frame + label, number moving", video(True, True)),
            ("video: frame + label, made every frame", video(True, False)), ("top-5 bars", topk)]
    print(f"paint cost, median thread CPU of {args.paints} paints, {cpu_name()}, {os.cpu_count()} CPUs, "
          f"Qt {app.platformName()}")
    print(f"{'paint':42s} {'back to back':>14s} {f'after {args.sleep_ms:g} ms sleep':>20s} {'ratio':>7s}")
    for name, paint in rows:
        for index in range(10):  # glyphs, fonts and buffers made before either column is measured
            paint(index)
        hot = median_cpu_us(paint, args.paints, 0.0)
        cold = median_cpu_us(paint, args.paints, args.sleep_ms / 1000.0)
        print(f"{name:42s} {hot:11.1f} us {cold:17.1f} us {cold / hot:6.1f}x")
    del app


if __name__ == "__main__":
    main()
