"""The residual block panel: what each block receives (x_l), what it adds (F(x_l)), and how much.

One column per block, grouped by stage ("layer1", "layer2"...). Heatmaps show the mean |activation|
over channels with one colour scale per stage (x_l and F(x_l) share it, so their brightness compares);
the bars below show ||F(x_l)|| / ||x_l||. Clicking a column shows that block's channels in ChannelGrid.

A caption names the model's form (metadata "form"): pre-activation x_{l+1} = x_l + F(x_l), post-activation
x_{l+1} = relu(x_l + F(x_l)), or plain. Where the model hands out every block's output (x_{l+1}: the next
block's x, the last block's exported "block_output"), a row under the heatmaps shows per block how exactly
that formula holds on the frame: max |x_{l+1} - x_l - F(x_l)| (post-activation: - relu(x_l + F(x_l))),
"n/a" where the shortcut changes the shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QPoint, QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QImage, QMouseEvent, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from resnet_edge.runtime import BlockActivation

from .colormap import DIVERGING, VIRIDIS, colorize, colorized_images, gradient, rgba_to_qimage

LEFT = 70  # row labels
RIGHT = 62  # colour bar
CAPTION = 18  # the form's formula, above everything
HEADER = CAPTION + 36  # caption + stage header + block name rows
IDENTITY_ROW = 16  # max |x_{l+1} - x_l - F(x_l)| per block, under the heatmaps (when the model has the outputs)
STAGE_GAP = 12
COLUMN_GAP = 4
BAR_AREA = 96  # ratio bar chart, value labels included


@dataclass
class BlockSummary:
    name: str  # "layer2.1"
    stage: str  # "layer2"
    x_map: np.ndarray  # mean |x_l| over channels, (H, W)
    f_map: np.ndarray  # mean |F(x_l)| over channels, (H', W')
    ratio: float  # ||F(x_l)|| / ||x_l||


CAPTIONS = {
    "pre-activation": "pre-activation: xₗ₊₁ = xₗ + F(xₗ), nothing after the sum;  |Δ| = max |xₗ₊₁ − xₗ − F(xₗ)| on this frame",
    "post-activation": "post-activation: xₗ₊₁ = relu(xₗ + F(xₗ));  |Δ| = max |xₗ₊₁ − relu(xₗ + F(xₗ))| on this frame",
    "plain": "plain net (no shortcut): xₗ₊₁ is computed from F(xₗ) alone",
}
UNKNOWN_FORM = "xₗ₊₁ = shortcut(xₗ) + F(xₗ), then the block's own activation (the model file does not name its form)"


def caption_for(form: str | None) -> str:
    """The panel's caption for a model's form (metadata "form"; None when the file does not say)."""
    return CAPTIONS.get(form or "", UNKNOWN_FORM)


def format_gap(gap: float | None, narrow: bool = False) -> str:
    """max |Δ| for the identity row: "0", "3e-07" (narrow columns: "e-07"), "n/a" where it cannot be checked."""
    if gap is None:
        return "n/a"
    if gap == 0.0:
        return "0"
    text = f"{gap:.0e}"
    return text[text.index("e"):] if narrow else text


def stage_of(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else name


def summarize_blocks(blocks: list[BlockActivation]) -> tuple[list[BlockSummary], dict[str, float]]:
    """Per block its two heatmaps and ratio; per stage the largest heatmap value (the shared scale)."""
    summaries = [BlockSummary(block.name, stage_of(block.name), np.abs(block.x).mean(axis=0),
                              np.abs(block.residual).mean(axis=0), block.ratio) for block in blocks]
    stage_max: dict[str, float] = {}
    for summary in summaries:
        peak = float(max(summary.x_map.max(initial=0.0), summary.f_map.max(initial=0.0)))
        stage_max[summary.stage] = max(stage_max.get(summary.stage, 0.0), peak if math.isfinite(peak) else 0.0)
    return summaries, stage_max


class BlockPanel(QWidget):
    blockClicked = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.blocks: list[BlockActivation] = []
        self.summaries: list[BlockSummary] = []
        self.stage_max: dict[str, float] = {}
        self.selected: int | None = None
        self.form: str | None = None  # the model's form, from its blocks (runtime.BlockActivation.form)
        self.caption = caption_for(None)
        self.identity_gaps: list[float | None] = []  # per block, BlockActivation.identity_gap
        self.updates = 0  # how many probes have been drawn (tests and the status line read it)
        self.note = "waiting for the first probe…"
        self._tiles: list[tuple[QImage, QImage]] = []
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumHeight(HEADER + 2 * 24 + IDENTITY_ROW + BAR_AREA + 20)
        self.setMouseTracking(False)
        self.setCursor(Qt.CursorShape.PointingHandCursor)

    def sizeHint(self) -> QSize:
        return QSize(900, 330)

    def set_note(self, note: str) -> None:
        """Text shown instead of the panel (no probes in this model, waiting...)."""
        self.note = note
        self.blocks, self.summaries, self._tiles = [], [], []
        self.update()

    def set_blocks(self, blocks: list[BlockActivation]) -> None:
        names_changed = [b.name for b in blocks] != [b.name for b in self.blocks]
        self.blocks = blocks
        self.summaries, self.stage_max = summarize_blocks(blocks)
        self.form = blocks[0].form if blocks else None
        self.caption = caption_for(self.form)
        self.identity_gaps = [block.identity_gap for block in blocks]
        maps = [m for s in self.summaries for m in (s.x_map, s.f_map)]
        images = colorized_images(maps, [self.stage_max[s.stage] for s in self.summaries for _ in range(2)])
        self._tiles = list(zip(images[0::2], images[1::2]))
        if names_changed:  # another model: the old selection means nothing
            self.selected = None
        self.updates += 1
        self.update()

    def select(self, index: int | None) -> None:
        self.selected = index
        self.update()
        if index is not None:
            self.blockClicked.emit(index)

    # --- geometry ---------------------------------------------------------------------------------

    @property
    def shows_identity(self) -> bool:
        """Whether the identity row is drawn: a residual form and at least one block it can be checked on."""
        return any(gap is not None for gap in self.identity_gaps)

    def _geometry(self) -> tuple[list[QRectF], float]:
        """One rect per block column (x tile at its top, F tile below), and the tile side."""
        count = len(self.summaries)
        stages = len({s.stage for s in self.summaries})
        available = self.width() - LEFT - RIGHT - (stages - 1) * STAGE_GAP
        column = max(12.0, available / max(count, 1))
        row = IDENTITY_ROW if self.shows_identity else 0
        tile = max(10.0, min(column - COLUMN_GAP, (self.height() - HEADER - BAR_AREA - row - 16) / 2))
        rects, x, stage = [], float(LEFT), None
        for summary in self.summaries:
            if stage is not None and summary.stage != stage:
                x += STAGE_GAP
            stage = summary.stage
            rects.append(QRectF(x, HEADER, column, 2 * tile + 6))
            x += column
        return rects, tile

    def block_center(self, index: int) -> QPoint:
        """Where to click to select block ``index`` (for tests and keyboard-free automation)."""
        rects, _tile = self._geometry()
        return rects[index].center().toPoint()

    def block_at(self, point: QPointF) -> int | None:
        rects, _tile = self._geometry()
        for index, rect in enumerate(rects):
            if rect.left() <= point.x() < rect.right() and 0 <= point.y() < self.height():
                return index
        return None

    def mousePressEvent(self, event: QMouseEvent) -> None:
        index = self.block_at(event.position())
        if index is not None:
            self.select(index)

    # --- drawing ----------------------------------------------------------------------------------

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        text = self.palette().color(self.foregroundRole())
        if not self.summaries:
            painter.setPen(text)
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self.note)
            painter.end()
            return
        rects, tile = self._geometry()
        small = QFont(self.font())
        small.setPointSizeF(max(7.0, self.font().pointSizeF() - 1.5))
        painter.setFont(small)
        painter.setPen(text)
        caption = painter.fontMetrics().elidedText(self.caption, Qt.TextElideMode.ElideRight, self.width() - 8)
        painter.drawText(QRectF(4, 1, self.width() - 8, CAPTION - 2), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                         caption)
        self._draw_row_labels(painter, tile, text)
        self._draw_stage_headers(painter, rects, text)
        for index, (summary, rect, (x_image, f_image)) in enumerate(zip(self.summaries, rects, self._tiles)):
            left = rect.left() + (rect.width() - tile) / 2
            painter.setPen(text)
            painter.drawText(QRectF(rect.left(), CAPTION + 18, rect.width(), 16), Qt.AlignmentFlag.AlignCenter,
                             summary.name.split(".")[-1] if rect.width() < 40 else summary.name)
            # nearest-neighbour scaling: an 8x8 map shows as 8x8 cells, not as a blur
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
            painter.drawImage(QRectF(left, HEADER, tile, tile), x_image)
            painter.drawImage(QRectF(left, HEADER + tile + 6, tile, tile), f_image)
            if index == self.selected:
                painter.setPen(QPen(QColor(255, 140, 0), 2))
                painter.setBrush(Qt.BrushStyle.NoBrush)
                painter.drawRect(QRectF(left - 2, HEADER - 2, tile + 4, 2 * tile + 10))
        bars_top = HEADER + 2 * tile + 12
        if self.shows_identity:
            self._draw_identity_row(painter, rects, bars_top - 2, text)
            bars_top += IDENTITY_ROW
        self._draw_bars(painter, rects, bars_top, text)
        self._draw_colour_bar(painter, HEADER, 2 * tile + 6, text)
        painter.end()

    def _draw_identity_row(self, painter: QPainter, rects: list[QRectF], top: float, text: QColor) -> None:
        """Per block max |Δ| as text; in narrow columns the power of ten only ("e-07")."""
        painter.setPen(text)
        metrics = painter.fontMetrics()
        for gap, rect in zip(self.identity_gaps, rects):
            label = format_gap(gap)
            if metrics.horizontalAdvance(label) > rect.width() - 2:
                label = metrics.elidedText(format_gap(gap, narrow=True), Qt.TextElideMode.ElideRight, int(rect.width()))
            painter.drawText(QRectF(rect.left(), top, rect.width(), IDENTITY_ROW), Qt.AlignmentFlag.AlignCenter, label)

    def _draw_row_labels(self, painter: QPainter, tile: float, text: QColor) -> None:
        painter.setPen(text)
        align = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
        two_lines = tile >= 2.2 * painter.fontMetrics().height()  # small tiles (many blocks): one line each
        painter.drawText(QRectF(0, HEADER, LEFT - 8, tile), align, "xₗ\n(input)" if two_lines else "xₗ")
        painter.drawText(QRectF(0, HEADER + tile + 6, LEFT - 8, tile), align,
                         "F(xₗ)\n(residual)" if two_lines else "F(xₗ)")
        bars_top = HEADER + 2 * tile + 12
        if self.shows_identity:
            painter.drawText(QRectF(0, bars_top - 2, LEFT - 8, IDENTITY_ROW), align, "|Δ|")
            bars_top += IDENTITY_ROW
        painter.drawText(QRectF(0, bars_top, LEFT - 8, self.height() - bars_top - 4), align, "‖F‖ / ‖x‖")

    def _draw_stage_headers(self, painter: QPainter, rects: list[QRectF], text: QColor) -> None:
        spans: dict[str, tuple[float, float]] = {}
        for summary, rect in zip(self.summaries, rects):
            left, right = spans.get(summary.stage, (rect.left(), rect.right()))
            spans[summary.stage] = (min(left, rect.left()), max(right, rect.right()))
        for stage, (left, right) in spans.items():
            box = QRectF(left + 1, CAPTION + 2, right - left - 2, 15)
            painter.fillRect(box, QColor(128, 128, 128, 45))
            painter.setPen(text)
            label = f"{stage}  scale 0–{self.stage_max[stage]:.3g}"
            elided = painter.fontMetrics().elidedText(label, Qt.TextElideMode.ElideRight, int(box.width()) - 4)
            painter.drawText(box, Qt.AlignmentFlag.AlignCenter, elided)

    def _draw_bars(self, painter: QPainter, rects: list[QRectF], top: float, text: QColor) -> None:
        bottom = self.height() - 6
        label_room = 14
        height = max(10.0, bottom - top - label_room)
        finite = [s.ratio for s in self.summaries if math.isfinite(s.ratio)]
        peak = max([1.0, *finite]) * 1.1  # the 1.0 line (a correction as large as the input) always shows
        base = bottom

        def y_of(value: float) -> float:
            return base - height * min(value, peak) / peak

        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(QPen(QColor(128, 128, 128), 1, Qt.PenStyle.DashLine))
        painter.drawLine(QPointF(LEFT - 4, y_of(1.0)), QPointF(rects[-1].right(), y_of(1.0)))
        painter.setPen(text)
        painter.drawText(QRectF(rects[-1].right() + 2, y_of(1.0) - 8, 30, 16), Qt.AlignmentFlag.AlignVCenter, "1")
        painter.drawLine(QPointF(LEFT - 4, base), QPointF(rects[-1].right(), base))
        for index, (summary, rect) in enumerate(zip(self.summaries, rects)):
            width = min(rect.width() * 0.6, 30.0)
            value = summary.ratio if math.isfinite(summary.ratio) else 0.0
            bar = QRectF(rect.center().x() - width / 2, y_of(value), width, base - y_of(value))
            painter.fillRect(bar, QColor(255, 140, 0) if index == self.selected else QColor(46, 134, 222))
            painter.setPen(text)
            shown = f"{summary.ratio:.2f}" if math.isfinite(summary.ratio) else "NaN"
            if painter.fontMetrics().horizontalAdvance(shown) > rect.width():  # 27 blocks: 1 decimal, or none
                shown = f"{summary.ratio:.1f}" if math.isfinite(summary.ratio) else "NaN"
            if painter.fontMetrics().horizontalAdvance(shown) <= rect.width():  # never over the neighbour's
                painter.drawText(QRectF(rect.left(), bar.top() - label_room, rect.width(), label_room),
                                 Qt.AlignmentFlag.AlignCenter, shown)

    def _draw_colour_bar(self, painter: QPainter, top: float, height: float, text: QColor) -> None:
        left = self.width() - RIGHT + 10
        painter.drawImage(QRectF(left, top, 12, height), gradient(VIRIDIS, 12, max(1, int(height))))
        painter.setPen(text)
        painter.drawText(QRectF(left + 15, top - 2, RIGHT - 25, 28), Qt.AlignmentFlag.AlignLeft, "stage\nmax")
        painter.drawText(QRectF(left + 15, top + height - 14, RIGHT - 25, 16), Qt.AlignmentFlag.AlignLeft, "0")


class ChannelGrid(QWidget):
    """Every channel of one block's x_l and F(x_l): signed values, one symmetric scale per grid (99th pct of |v|)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.block: BlockActivation | None = None
        self._mosaics: list[tuple[str, QImage, int, int]] = []  # (title, image, columns, rows)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(220, 160)

    def sizeHint(self) -> QSize:
        return QSize(420, 330)

    def set_block(self, block: BlockActivation | None) -> None:
        self.block = block
        self._mosaics = []
        if block is not None:
            for title, values in (("xₗ", block.x), ("F(xₗ)", block.residual)):
                self._mosaics.append(self._mosaic(title, values))
        self.update()

    @staticmethod
    def _mosaic(title: str, values: np.ndarray) -> tuple[str, QImage, int, int]:
        """All channels side by side in one image, 1-pixel gaps, ready to scale up."""
        channels, height, width = values.shape
        columns = math.ceil(math.sqrt(channels))
        rows = math.ceil(channels / columns)
        # the 99th percentile, not the max: one outlier would otherwise wash every other channel out
        peak = float(np.nanpercentile(np.abs(values), 99)) if values.size else 0.0
        peak = peak if math.isfinite(peak) and peak > 0 else 1.0
        coloured = colorize(values.reshape(channels * height, width), -peak, peak, DIVERGING).reshape(channels, height, width, 3)
        # RGBA with transparent gaps and empty cells: the widget's background shows between the tiles
        mosaic = np.zeros((rows * (height + 1) - 1, columns * (width + 1) - 1, 4), dtype=np.uint8)
        for channel in range(channels):
            row, column = divmod(channel, columns)
            cell = mosaic[row * (height + 1): row * (height + 1) + height, column * (width + 1): column * (width + 1) + width]
            cell[..., :3], cell[..., 3] = coloured[channel], 255
        label = f"{title}: {channels} × {height}×{width}, ±{peak:.3g}"
        return label, rgba_to_qimage(mosaic), columns, rows

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        text = self.palette().color(self.foregroundRole())
        painter.setPen(text)
        if self.block is None:
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                             "click a block in the panel\nto see its channels")
            painter.end()
            return
        gap = self.block.identity_gap
        exact = f"    |Δ| = {format_gap(gap)}" if gap is not None else ""
        painter.drawText(QRectF(4, 2, self.width() - 8, 18), Qt.AlignmentFlag.AlignLeft,
                         f"{self.block.name}    ‖F‖ / ‖x‖ = {self.block.ratio:.3f}{exact}")
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
        side_by_side = self.width() >= self.height()
        count = len(self._mosaics)
        for index, (title, image, _columns, _rows) in enumerate(self._mosaics):
            if side_by_side:
                area = QRectF(4 + index * self.width() / count, 22, self.width() / count - 8, self.height() - 26)
            else:
                area = QRectF(4, 22 + index * (self.height() - 22) / count, self.width() - 8, (self.height() - 22) / count - 4)
            elided = painter.fontMetrics().elidedText(title, Qt.TextElideMode.ElideRight, int(area.width()))
            painter.drawText(QRectF(area.left(), area.top(), area.width(), 16), Qt.AlignmentFlag.AlignLeft, elided)
            room = QRectF(area.left(), area.top() + 18, area.width(), area.height() - 18)
            scale = min(room.width() / image.width(), room.height() / image.height())
            painter.drawImage(QRectF(room.left(), room.top(), image.width() * scale, image.height() * scale), image)
        painter.end()
