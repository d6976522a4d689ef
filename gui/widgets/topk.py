"""The k best classes with probability bars."""

from __future__ import annotations

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPaintEvent
from PySide6.QtWidgets import QSizePolicy, QWidget

from resnet_edge.runtime import Prediction
from resnet_edge.safety import printable

ROW_HEIGHT = 24


class TopKBars(QWidget):
    def __init__(self, k: int = 5, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.k = k
        self.prediction: Prediction | None = None
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setMinimumHeight(self.k * ROW_HEIGHT + 8)

    def sizeHint(self) -> QSize:
        return QSize(280, self.k * ROW_HEIGHT + 8)

    def set_prediction(self, prediction: Prediction | None) -> None:
        self.prediction = prediction
        self.update()

    def rows(self) -> list[tuple[str, float]]:
        """(label, probability) as drawn, best first; empty before the first result or for NaN output."""
        if self.prediction is None or not self.prediction.finite:
            return []
        # labels come from the model file: control characters and bidi overrides shown, never obeyed
        return [(printable(label, 64), probability) for label, _index, probability in self.prediction.top[: self.k]]

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rows = self.rows()
        if not rows:
            painter.setPen(self.palette().color(self.foregroundRole()))
            text = printable(self.prediction.label, 64) if self.prediction is not None else "no prediction yet"
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, text)
            painter.end()
            return
        metrics = painter.fontMetrics()
        label_width = min(self.width() // 3, max(metrics.horizontalAdvance(label) for label, _ in rows) + 8)
        value_width = metrics.horizontalAdvance("100.0 %") + 6
        bar_width = max(10, self.width() - label_width - value_width - 8)
        for row, (label, probability) in enumerate(rows):
            top = 4 + row * ROW_HEIGHT
            text_pen = self.palette().color(self.foregroundRole())
            painter.setPen(text_pen)
            painter.drawText(QRectF(0, top, label_width - 4, ROW_HEIGHT - 4),
                             Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, label)
            track = QRectF(label_width, top + 3, bar_width, ROW_HEIGHT - 10)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(QColor(128, 128, 128, 50))
            painter.drawRoundedRect(track, 3, 3)
            painter.setBrush(QColor(46, 134, 222) if row == 0 else QColor(120, 160, 200))
            painter.drawRoundedRect(QRectF(track.left(), track.top(), max(2.0, bar_width * probability), track.height()), 3, 3)
            painter.setPen(text_pen)
            painter.drawText(QRectF(label_width + bar_width + 4, top, value_width, ROW_HEIGHT - 4),
                             Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, f"{probability * 100:.1f} %")
        painter.end()
