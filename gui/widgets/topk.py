"""The k best classes with probability bars, the "not sure" threshold drawn across them.

Takes a runtime Prediction or a ShownPrediction (gui/confidence.py: smoothed, with ``unsure`` and
``threshold``); when the prediction is "not sure" the bars turn grey under a "not sure" heading.
"""

from __future__ import annotations

import math
import time
from typing import Any

from PySide6.QtCore import QEvent, QPointF, QRect, QSize, Qt, QTimer
from PySide6.QtGui import QColor, QFontMetrics, QPainter, QPaintEvent
from PySide6.QtWidgets import QSizePolicy, QWidget

from resnet_edge.safety import printable

ROW_HEIGHT = 24
REPAINT_S = 0.1  # bars redrawn at most 10 times a second: 30 repaints a second cost CPU and read no better
LATE_MS = 250  # a prediction that came between redraws is drawn by then when no later one comes
HEADING = 20  # the "not sure" / "sure" line above the bars
TRACK = QColor(128, 128, 128, 50)
BEST, OTHERS, GREY, ORANGE = QColor(46, 134, 222), QColor(120, 160, 200), QColor(150, 150, 150), QColor(200, 120, 0)


class TopKBars(QWidget):
    def __init__(self, k: int = 5, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.k = k
        self.prediction: Any = None
        self.placeholder = "no prediction yet"  # shown without a prediction (e.g. "source not delivering")
        self._repaint = QTimer(self, singleShot=True, interval=LATE_MS, timeout=self.update)
        self._requested = float("-inf")  # when a redraw was last asked for (time.monotonic)
        self._widths: dict[str, int] = {}  # text -> width in pixels in the widget's font
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setMinimumHeight(self.k * ROW_HEIGHT + 8 + HEADING)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)  # paintEvent fills it: the group box is not redrawn

    def sizeHint(self) -> QSize:
        return QSize(280, self.k * ROW_HEIGHT + 8 + HEADING)

    def set_prediction(self, prediction: Any, placeholder: str | None = None) -> bool:
        """Show ``prediction``; True when it is drawn at the next paint, False when it waits for the next redraw
        that falls due (the video label's number follows the same beat, so the two agree)."""
        self.prediction = prediction
        if placeholder is not None:
            self.placeholder = placeholder
        now = time.monotonic()
        # A cleared prediction goes at once (never a stale one on screen); otherwise a redraw is asked for
        # with the result that falls due, so it is painted in the same pass as that result's frame rather than
        # on a timer of its own, which would wake the UI thread ten more times a second. The timer only catches
        # the last prediction when no later one comes.
        if prediction is None or now - self._requested >= REPAINT_S:
            self._requested = now
            self._repaint.stop()
            self.update()
            return True
        if not self._repaint.isActive():
            self._repaint.start()
        return False

    @property
    def unsure(self) -> bool:
        return bool(getattr(self.prediction, "unsure", False))

    def heading(self) -> str:
        """The line above the bars."""
        threshold = getattr(self.prediction, "threshold", None)
        if self.prediction is None or not self.prediction.finite or threshold is None:
            return ""
        if self.unsure:
            return f"not sure: top class below {threshold * 100:.0f} %"
        return f"{self.prediction.label} (threshold {threshold * 100:.0f} %)"

    def rows(self) -> list[tuple[str, float]]:
        """(label, probability) as drawn, best first; empty before the first result or for NaN output."""
        if self.prediction is None or not self.prediction.finite:
            return []
        # labels come from the model file: control characters and bidi overrides shown, never obeyed
        return [(printable(label, 64), probability) for label, _index, probability in self.prediction.top[: self.k]]

    def _text_width(self, metrics: QFontMetrics, text: str) -> int:
        """Width of ``text`` in the widget's font, measured once per text (class names come again and again)."""
        width = self._widths.get(text)
        if width is None:
            if len(self._widths) > 512:
                self._widths.clear()
            width = self._widths[text] = metrics.horizontalAdvance(text)
        return width

    def changeEvent(self, event: QEvent) -> None:
        if event.type() == QEvent.Type.FontChange:
            self._widths.clear()  # measured in the old font
        super().changeEvent(event)

    def paintEvent(self, event: QPaintEvent) -> None:
        # plain rectangles and text at points: rounded, antialiased bars and text laid out in boxes drew the same
        # figure at about 1.5 times the CPU (each paint runs after the thread slept, so every code path costs)
        painter = QPainter(self)
        painter.fillRect(self.rect(), self.palette().window())
        rows = self.rows()
        if not rows:
            painter.setPen(self.palette().color(self.foregroundRole()))
            text = printable(self.prediction.label, 64) if self.prediction is not None else self.placeholder
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, text)
            painter.end()
            return
        metrics = painter.fontMetrics()
        label_width = min(self.width() // 3, max(self._text_width(metrics, label) for label, _ in rows) + 8)
        value_width = self._text_width(metrics, "100.0 %") + 6
        bar_width = max(10, self.width() - label_width - value_width - 8)
        ascent, text_height = metrics.ascent(), metrics.height()
        heading = self.heading()
        text_pen = self.palette().color(self.foregroundRole())
        if heading:
            if self._text_width(metrics, heading) > self.width() - 8:
                heading = metrics.elidedText(heading, Qt.TextElideMode.ElideRight, self.width() - 8)
            painter.setPen(ORANGE if self.unsure else text_pen)
            painter.drawText(QPointF(4, (HEADING - text_height) / 2 + ascent), heading)
        painter.setPen(text_pen)
        grey = self.unsure
        for row, (label, probability) in enumerate(rows):
            top = HEADING + 4 + row * ROW_HEIGHT
            baseline = top + (ROW_HEIGHT - 4 - text_height) / 2 + ascent
            if self._text_width(metrics, label) > label_width - 4:  # a long class name: cut, right-aligned
                label = metrics.elidedText(label, Qt.TextElideMode.ElideRight, label_width - 4)
            painter.drawText(QPointF(label_width - 4 - self._text_width(metrics, label), baseline), label)
            painter.drawText(QPointF(label_width + bar_width + 4, baseline), f"{probability * 100:.1f} %")
            track = QRect(label_width, top + 3, bar_width, ROW_HEIGHT - 10)
            painter.fillRect(track, TRACK)
            filled = max(2, round(bar_width * probability)) if math.isfinite(probability) else 2
            painter.fillRect(QRect(label_width, top + 3, min(filled, bar_width), ROW_HEIGHT - 10),
                             GREY if grey else BEST if row == 0 else OTHERS)
        threshold = getattr(self.prediction, "threshold", None)
        if threshold is not None:  # the "not sure" line across the bars
            x = label_width + round(bar_width * threshold)
            painter.fillRect(QRect(x, HEADING + 2, 1, len(rows) * ROW_HEIGHT + 2), ORANGE)
        painter.end()
