"""The live frame, scaled to fit, with what the model sees and where it looks drawn over it.

Over the frame: the region the model sees (its crop box, dashed), the class activation map of the shown class
(optional, in that region), the prediction ("not sure" below the threshold, nothing while the source is not
delivering), the file name for still images, and any source trouble as a banner.
"""

from __future__ import annotations

import math
import sys
from collections import OrderedDict
from functools import lru_cache
from typing import Any

import cv2
import numpy as np
from PySide6.QtCore import QPoint, QPointF, QRect, QRectF, QSize, Qt, QTimer
from PySide6.QtGui import QColor, QFont, QFontMetrics, QImage, QPainter, QPaintEvent
from PySide6.QtWidgets import QSizePolicy, QWidget

from resnet_edge.safety import printable
from .colormap import bgr_to_qimage, make_lut
from .topk import LATE_MS

# a "jet"-like table for the activation map: blue (little evidence) to red (most)
CAM_LUT = make_lut([(0, 0, 143), (0, 0, 255), (0, 255, 255), (255, 255, 0), (255, 0, 0), (128, 0, 0)])
UNSURE_COLOUR = QColor(120, 120, 120)
BACKGROUND = QColor(24, 24, 24)
TAG_BACKGROUND = QColor(0, 0, 0, 160)
WHITE = QColor(255, 255, 255)
# While frames flow, the app redraws the label's number only with the top-5 bars (at most 10 times a second, see
# set_prediction's numbers_due): read at 30 changes a second it is a blur, and making the label is the costliest
# part of a frame's paint (a label made before is an image, one blend). A new class, "not sure" coming or going and
# a still image show at once; the last number is drawn LATE_MS after the last result at the latest, when the bars
# catch up too (one constant: the two must not drift apart).
TAG_CACHE = 8  # tags (label, PAUSED) kept as images: a tag drawn again is one blend, not text shaping


def _cam_alpha(opacity: float) -> np.ndarray:
    """Alpha per level of the map: rising with the evidence, never 0 (the map's region stays visible)."""
    levels = np.arange(256) / 255.0
    return np.clip(255 * opacity * (0.25 + 0.75 * levels), 0, 255).astype(np.uint8)


@lru_cache(maxsize=8)
def _premultiplied_cam_table(opacity: float) -> np.ndarray:
    """(256, 4) premultiplied BGRA per level of the map: made once per opacity, so a map costs one lookup."""
    alpha = _cam_alpha(opacity)
    bgr = (CAM_LUT[:, ::-1].astype(np.uint16) * alpha[:, None].astype(np.uint16) + 127) // 255
    table = np.concatenate([bgr.astype(np.uint8), alpha[:, None]], axis=1)
    table.flags.writeable = False
    return table


def cam_overlay(heat: np.ndarray, opacity: float, width: int, height: int) -> tuple[np.ndarray, QImage]:
    """The map as drawn over the frame: premultiplied BGRA (Qt's ARGB32_Premultiplied on little-endian, the
    format the painter blends without a conversion), made at the map's own size and scaled to (width, height)
    by OpenCV (bilinear; on premultiplied colours, which is how they interpolate correctly). Returns the buffer
    and the QImage that borrows it."""
    index = np.clip(heat * 255 + 0.5, 0, 255).astype(np.uint8)
    small = _premultiplied_cam_table(round(float(opacity), 3))[index]
    bgra = cv2.resize(small, (max(1, width), max(1, height)), interpolation=cv2.INTER_LINEAR)
    image = QImage(bgra.data, bgra.shape[1], bgra.shape[0], 4 * bgra.shape[1], QImage.Format.Format_ARGB32_Premultiplied)
    return bgra, image


def _label_class(text: str) -> str:
    """A label's text less its percentage ("cat  93 %" -> "cat"; "not sure  (maybe cat ...": kept apart)."""
    head, _, tail = text.rpartition("  ")
    return head if tail.endswith("%") or tail.endswith("%)") else text


class VideoView(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.image: QImage | None = None
        self._pixels: np.ndarray | None = None  # the BGRA buffer self.image borrows (little-endian BGR frames)
        self.frame_size: tuple[int, int] | None = None  # (H, W) of the frame shown
        self.prediction: Any = None  # a ShownPrediction (gui/confidence.py) or a runtime Prediction
        self.message: str | None = None  # source trouble, shown as a banner until frames come again
        self.caption: str | None = None  # a still image's file name
        self.region: tuple[int, int, int, int] | None = None  # (x, y, w, h) of the frame the model sees
        self.show_region = True
        self.cam: np.ndarray | None = None  # 0..1 over the region, at the region's resolution or coarser
        self.cam_opacity = 0.5
        self._cam_scaled: QImage | None = None  # the map at its on-screen size (cam_overlay), until it changes
        self._cam_pixels: np.ndarray | None = None  # the buffer _cam_scaled borrows
        self.paused = False
        self.smooth = False  # always scale the frame smoothly (snapshots for docs); else only when enlarging
        self.frames_shown = 0
        self.label_pending = False  # a prediction set to be drawn with the next frame, not drawn yet
        self.label_shown: str | None = None  # the label as last drawn (its number may wait for the bars' next redraw)
        self._label_exact = True  # draw the prediction's own text at the next paint
        self._label_late = QTimer(self, singleShot=True, interval=LATE_MS, timeout=self._label_catch_up)
        self._tags: OrderedDict[tuple, QImage] = OrderedDict()  # drawn tags by (text, colour, font, room, ratio)
        self._tag_fonts: tuple[float, QFont, QFontMetrics] | None = None  # (point size, font, metrics)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(200, 150)
        # paintEvent covers every pixel: without this Qt repaints the splitter and panels behind the video first
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)

    def sizeHint(self) -> QSize:
        return QSize(640, 480)

    def set_frame(self, frame: np.ndarray) -> None:
        if frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8 and sys.byteorder == "little":
            # BGRA bytes are Qt's RGB32 on little-endian machines: drawn as a plain blit, where a BGR888 image
            # is converted (in Qt's thread pool) on every paint
            height, width = frame.shape[:2]
            pixels = self._pixels
            if pixels is None or pixels.shape[:2] != (height, width) or self.image is None:
                pixels = self._pixels = np.empty((height, width, 4), np.uint8)
                self.image = QImage(pixels.data, width, height, 4 * width, QImage.Format.Format_RGB32)
            # one buffer and one QImage over it, kept while the size stays: the UI thread converts each frame into
            # it and paints it before the next (no 1.2 MB allocation and no QImage per frame)
            cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA, dst=pixels)
        else:
            self.image, self._pixels = bgr_to_qimage(frame), None
        self.frame_size = (int(frame.shape[0]), int(frame.shape[1]))
        self.frames_shown += 1
        self.update()

    def set_prediction(self, prediction: Any, with_next_frame: bool = False, numbers_due: bool = True) -> None:
        """None clears the label (no model, or the source is not delivering: never a stale prediction).
        ``with_next_frame``: frames are flowing, so draw it with the next one (within a frame interval) instead of
        painting the widget a second time per frame; ``flush_label`` draws it if that frame does not come.
        ``numbers_due`` False: while the class stays, keep the number drawn before (the bars are not redrawn with
        this prediction either)."""
        self.prediction = prediction
        self._label_exact = self._label_exact or numbers_due  # until a paint draws it
        if with_next_frame and prediction is not None:
            self.label_pending = True
            return
        self.flush_label()

    def flush_label(self) -> None:
        """Repaint the label's band only (a prediction lands a few ms after its frame was painted)."""
        self.label_pending = False
        self.update(0, 0, self.width(), int(max(10.0, min(22.0, self.height() / 22)) * 2.2) + 24)

    def _label_catch_up(self) -> None:
        """No result came since a number was held back: draw the last one (the bars catch up on the same beat)."""
        if self.label_shown != self.prediction_text():
            self._label_exact = True
            self.flush_label()

    def set_message(self, message: str | None) -> None:
        if message != self.message:
            self.message = message
            self.update()

    def set_caption(self, caption: str | None) -> None:
        if caption != self.caption:
            self.caption = caption
            self.update()

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        self.update()

    def set_region(self, region: tuple[int, int, int, int] | None) -> None:
        if region != self.region:
            self.region = region
            self.update()

    def set_cam(self, heat: np.ndarray | None, opacity: float | None = None) -> None:
        """The activation map (0..1, over the region the model sees); None hides it."""
        if opacity is not None:
            self.cam_opacity = opacity
        self.cam = heat
        self._cam_scaled = None  # made at its on-screen size at the next paint
        self.update()

    # --- geometry ---------------------------------------------------------------------------------

    def image_rect(self) -> QRectF:
        """Where the frame is drawn: as large as fits, aspect ratio kept, centred."""
        if self.image is None or self.image.isNull():
            return QRectF(self.rect())
        scale = min(self.width() / self.image.width(), self.height() / self.image.height())
        width, height = self.image.width() * scale, self.image.height() * scale
        return QRectF((self.width() - width) / 2, (self.height() - height) / 2, width, height)

    def region_rect(self) -> QRectF | None:
        """The region the model sees, in widget coordinates (None before a frame or without a model)."""
        if self.region is None or self.image is None or self.image.isNull():
            return None
        shown = self.image_rect()
        scale = shown.width() / self.image.width()
        x, y, w, h = self.region
        return QRectF(shown.left() + x * scale, shown.top() + y * scale, w * scale, h * scale)

    # --- drawing ----------------------------------------------------------------------------------

    def paintEvent(self, event: QPaintEvent) -> None:
        self.label_pending = False
        painter = QPainter(self)
        target = self.image_rect() if self.image is not None else None
        self._fill_around(painter, target)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        if target is not None:
            # smooth (bilinear) scaling of every frame keeps Qt's thread pool busy at every paint; a live
            # frame shown near its own size looks the same without it, a small picture blown up needs it
            upscaled = target.width() > 1.5 * self.image.width()
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, upscaled or self.smooth)
            painter.drawImage(target, self.image)
            # the map below is drawn at its own size: with SmoothPixmapTransform on, Qt would still send that
            # unscaled blend through its transform path and its thread pool, waking two threads every frame
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
            region = self.region_rect()
            if region is not None and self.cam is not None:
                size = region.toRect().size()
                if self._cam_scaled is None or self._cam_scaled.size() != size:  # 4 times a second, not 30
                    self._cam_pixels, self._cam_scaled = cam_overlay(self.cam, self.cam_opacity, size.width(),
                                                                     size.height())
                painter.drawImage(region.toRect().topLeft(), self._cam_scaled)
            if region is not None and self.show_region:
                self._draw_box(painter, region.toRect())
        else:
            painter.setPen(QColor(170, 170, 170))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "waiting for frames…")
        self._draw_prediction(painter)
        if self.paused:
            self._draw_tag(painter, "PAUSED", right=True)
        if self.caption:
            self._draw_caption(painter, self.caption)
        if self.message:
            self._draw_banner(painter, self.message)
        painter.end()

    def _fill_around(self, painter: QPainter, target: QRectF | None) -> None:
        """The background: only the bands the frame leaves (filling the whole widget first would write every
        pixel twice a frame)."""
        if target is None:
            painter.fillRect(self.rect(), BACKGROUND)
            return
        inner = target.toAlignedRect().adjusted(1, 1, -1, -1)  # overlaps the frame's fractional edges: no seam
        width, height = self.width(), self.height()
        for band in (QRect(0, 0, width, inner.top()), QRect(0, inner.bottom() + 1, width, height - inner.bottom() - 1),
                     QRect(0, inner.top(), inner.left(), inner.height()),
                     QRect(inner.right() + 1, inner.top(), width - inner.right() - 1, inner.height())):
            if band.width() > 0 and band.height() > 0:
                painter.fillRect(band, BACKGROUND)

    @staticmethod
    def _draw_box(painter: QPainter, box: QRect) -> None:
        """The crop box: a white line with dark edges, as filled strips (stroking a pen cost more than the frame)."""
        for inset, thickness, colour in ((0, 4, QColor(0, 0, 0)), (1, 2, QColor(255, 255, 255))):
            outer = box.adjusted(inset, inset, -inset, -inset)
            left, top, width, height = outer.left(), outer.top(), outer.width(), outer.height()
            for strip in (QRect(left, top, width, thickness), QRect(left, top + height - thickness, width, thickness),
                          QRect(left, top, thickness, height), QRect(left + width - thickness, top, thickness, height)):
                painter.fillRect(strip, colour)

    def prediction_text(self) -> str | None:
        """The label drawn over the video (None: nothing drawn)."""
        prediction = self.prediction
        if prediction is None:
            return None
        if not prediction.finite:
            return printable(prediction.label, 64)
        # whole percent, rounded down (never "100 %" for 99.6): the bars give the decimals; a number that moves
        # less is easier to read and is drawn again less often
        percent = max(0, min(100, int(prediction.probability * 100 + 1e-6)))  # 0.29 * 100 = 28.999...96
        text = f"{printable(prediction.label, 64)}  {percent} %"
        if getattr(prediction, "unsure", False):
            return f"not sure  (maybe {text})"
        return text

    def _label_text(self, text: str) -> str:
        """The text to draw for the prediction's ``text``: the one drawn before while only its number moved and
        that number is not due, else ``text`` itself."""
        shown, exact, self._label_exact = self.label_shown, self._label_exact, False
        if shown is not None and text != shown and not exact and _label_class(shown) == _label_class(text):
            if not self._label_late.isActive():
                self._label_late.start()  # no later result may come (the source paused or ended)
            return shown
        self.label_shown = text
        if self._label_late.isActive():
            self._label_late.stop()
        return text

    def _draw_prediction(self, painter: QPainter) -> None:
        text = self.prediction_text()
        if text is None:
            self.label_shown = None
            return
        unsure = bool(getattr(self.prediction, "unsure", False))
        self._draw_tag(painter, self._label_text(text), right=False,
                       background=UNSURE_COLOUR if unsure else TAG_BACKGROUND)

    def _tag_font(self) -> tuple[QFont, QFontMetrics]:
        """The label's bold font for this widget height, made once per height (not at every paint)."""
        size = max(10.0, min(22.0, self.height() / 22))
        if self._tag_fonts is None or self._tag_fonts[0] != size:
            font = QFont(self.font())
            font.setPointSizeF(size)
            font.setBold(True)
            self._tag_fonts = (size, font, QFontMetrics(font))
        return self._tag_fonts[1], self._tag_fonts[2]

    def _tag_image(self, text: str, background: QColor) -> QImage:
        """The tag (rounded box, white bold text) as a premultiplied image: made once per text and size, so a tag
        drawn again costs one blend instead of shaping text and filling an antialiased path."""
        font, metrics = self._tag_font()
        room, ratio = max(40, self.width() - 40), self.devicePixelRatioF()
        key = (text, background.rgba(), font.pointSizeF(), room, ratio)
        image = self._tags.get(key)
        if image is not None:
            self._tags.move_to_end(key)
            return image
        advance = metrics.horizontalAdvance(text)
        if advance > room:
            text = metrics.elidedText(text, Qt.TextElideMode.ElideRight, room)
            advance = metrics.horizontalAdvance(text)
        width, height = advance + 20, metrics.height() + 10
        image = QImage(math.ceil(width * ratio), math.ceil(height * ratio), QImage.Format.Format_ARGB32_Premultiplied)
        image.setDevicePixelRatio(ratio)
        image.fill(Qt.GlobalColor.transparent)
        painter = QPainter(image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(background)
        painter.drawRoundedRect(QRectF(0, 0, width, height), 6, 6)
        painter.setPen(WHITE)
        painter.setFont(font)
        painter.drawText(QPointF(10, 5 + metrics.ascent()), text)  # at a point: no layout pass
        painter.end()
        self._tags[key] = image
        if len(self._tags) > TAG_CACHE:
            self._tags.popitem(last=False)
        return image

    def _draw_tag(self, painter: QPainter, text: str, right: bool, background: QColor | None = None) -> None:
        image = self._tag_image(text, background or TAG_BACKGROUND)
        width = math.ceil(image.width() / image.devicePixelRatio())
        painter.drawImage(QPoint(self.width() - width - 10 if right else 10, 10), image)

    def _draw_caption(self, painter: QPainter, text: str) -> None:
        font = QFont(self.font())
        font.setPointSizeF(10.0)
        painter.setFont(font)
        metrics = painter.fontMetrics()
        text = metrics.elidedText(text, Qt.TextElideMode.ElideMiddle, max(40, self.width() - 40))
        box = QRectF(10, self.height() - 44 - (40 if self.message else 0), metrics.horizontalAdvance(text) + 16, 26)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(0, 0, 0, 160))
        painter.drawRoundedRect(box, 5, 5)
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
