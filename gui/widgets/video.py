"""The live frame, scaled to fit, with the current prediction and any source trouble drawn over it."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPaintEvent
from PySide6.QtWidgets import QSizePolicy, QWidget

from resnet_edge.runtime import Prediction
from resnet_edge.safety import printable

from .colormap import bgr_to_qimage


class VideoView(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.image: QImage | None = None
        self.prediction: Prediction | None = None
        self.message: str | None = None  # source trouble, shown as a banner until frames come again
        self.paused = False
        self.frames_shown = 0
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(320, 240)

    def sizeHint(self) -> QSize:
        return QSize(640, 480)

    def set_frame(self, frame: np.ndarray) -> None:
        self.image = bgr_to_qimage(frame)
        self.frames_shown += 1
        self.update()

    def set_prediction(self, prediction: Prediction | None) -> None:
        self.prediction = prediction
        self.update()

    def set_message(self, message: str | None) -> None:
        if message != self.message:
            self.message = message
            self.update()

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        self.update()

    def image_rect(self) -> QRectF:
        """Where the frame is drawn: as large as fits, aspect ratio kept, centred."""
        if self.image is None or self.image.isNull():
            return QRectF(self.rect())
        scale = min(self.width() / self.image.width(), self.height() / self.image.height())
        width, height = self.image.width() * scale, self.image.height() * scale
        return QRectF((self.width() - width) / 2, (self.height() - height) / 2, width, height)

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(24, 24, 24))
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        if self.image is not None:
            painter.drawImage(self.image_rect(), self.image)
        else:
            painter.setPen(QColor(170, 170, 170))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "waiting for frames…")
        self._draw_prediction(painter)
        if self.paused:
            self._draw_tag(painter, "PAUSED", right=True)
        if self.message:
            self._draw_banner(painter, self.message)
        painter.end()

    def _draw_prediction(self, painter: QPainter) -> None:
        if self.prediction is None:
            return
        if self.prediction.finite:
            text = f"{printable(self.prediction.label, 64)}  {self.prediction.probability * 100:.1f} %"
        else:
            text = printable(self.prediction.label, 64)
        self._draw_tag(painter, text, right=False)

    def _draw_tag(self, painter: QPainter, text: str, right: bool) -> None:
        font = QFont(self.font())
        font.setPointSizeF(max(11.0, min(22.0, self.height() / 22)))
        font.setBold(True)
        painter.setFont(font)
        metrics = painter.fontMetrics()
        width, height = metrics.horizontalAdvance(text) + 20, metrics.height() + 10
        x = self.width() - width - 10 if right else 10
        box = QRectF(x, 10, width, height)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(0, 0, 0, 160))
        painter.drawRoundedRect(box, 6, 6)
        painter.setPen(QColor(255, 255, 255))
        painter.drawText(box, Qt.AlignmentFlag.AlignCenter, text)

    def _draw_banner(self, painter: QPainter, text: str) -> None:
        font = QFont(self.font())
        font.setPointSizeF(11.0)
        painter.setFont(font)
        box = QRectF(10, self.height() - 44, self.width() - 20, 34)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(150, 30, 30, 210))
        painter.drawRoundedRect(box, 6, 6)
        painter.setPen(QColor(255, 255, 255))
        elided = painter.fontMetrics().elidedText(text, Qt.TextElideMode.ElideRight, int(box.width()) - 16)
        painter.drawText(box, Qt.AlignmentFlag.AlignCenter, elided)
