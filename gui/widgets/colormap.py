"""Colour maps as 256-entry lookup tables, and numpy arrays -> QImage."""

from __future__ import annotations

import sys
from functools import lru_cache

import numpy as np
from PySide6.QtGui import QImage

# viridis (sequential, for magnitudes) and a red-blue diverging map (for signed channel values),
# sampled at a few points; perceptually close enough for a live view
VIRIDIS_ANCHORS = [(68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141),
                   (39, 173, 129), (92, 200, 99), (170, 220, 50), (253, 231, 37)]
DIVERGING_ANCHORS = [(5, 48, 97), (67, 147, 195), (209, 229, 240), (247, 247, 247), (253, 219, 199),
                     (214, 96, 77), (103, 0, 31)]


def make_lut(anchors: list[tuple[int, int, int]]) -> np.ndarray:
    """(256, 3) uint8 RGB, linear between evenly spaced anchors."""
    points = np.linspace(0.0, 1.0, len(anchors))
    ramp = np.linspace(0.0, 1.0, 256)
    table = np.stack([np.interp(ramp, points, [color[c] for color in anchors]) for c in range(3)], axis=1)
    return np.round(table).astype(np.uint8)


VIRIDIS = make_lut(VIRIDIS_ANCHORS)
DIVERGING = make_lut(DIVERGING_ANCHORS)


def colorize(values: np.ndarray, low: float, high: float, lut: np.ndarray = VIRIDIS) -> np.ndarray:
    """2-D values -> (H, W, 3) uint8 RGB, ``low``..``high`` spread over the table (clipped outside)."""
    span = high - low if high > low else 1.0
    return lut[_levels((np.asarray(values, dtype=np.float32) - low) / span)]


def _levels(scaled: np.ndarray) -> np.ndarray:
    """0..1 values (NaN as 0, infinities clipped) -> the table's 256 levels."""
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(scaled * 255.0 + 0.5, 0, 255).astype(np.uint8)


def colorized_images(maps: list[np.ndarray], highs: list[float], lut: np.ndarray = VIRIDIS) -> list[QImage]:
    """2-D maps -> QImages coloured from 0..high each, made as Qt's RGB32 where the byte order allows (drawn
    without a conversion at every paint). Maps of one shape are coloured in one numpy pass."""
    images: list[QImage | None] = [None] * len(maps)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for index, values in enumerate(maps):
        by_shape.setdefault(np.shape(values), []).append(index)
    for indices in by_shape.values():
        stack = np.stack([np.asarray(maps[i], dtype=np.float32) for i in indices])
        spans = np.array([highs[i] if highs[i] > 0 else 1.0 for i in indices], np.float32).reshape(-1, 1, 1)
        levels = _levels(stack / spans)
        for position, index in enumerate(indices):
            images[index] = table_image(levels[position], lut)
    return images  # type: ignore[return-value]


def table_image(levels: np.ndarray, lut: np.ndarray) -> QImage:
    """Levels (uint8 indices into ``lut``) -> a QImage that owns its pixels: Qt's RGB32 (BGRA bytes) on
    little-endian machines, drawn without a conversion at every paint; RGB888 elsewhere."""
    if sys.byteorder == "little":
        bgra = np.ascontiguousarray(_bgra(lut)[levels])
        height, width = bgra.shape[:2]
        return QImage(bgra.data, width, height, 4 * width, QImage.Format.Format_RGB32).copy()
    return rgb_to_qimage(lut[levels])


@lru_cache(maxsize=8)
def _bgra_table(key: bytes) -> np.ndarray:
    rgb = np.frombuffer(key, np.uint8).reshape(256, 3)
    return np.concatenate([rgb[:, ::-1], np.full((256, 1), 255, np.uint8)], axis=1)


def _bgra(lut: np.ndarray) -> np.ndarray:
    return _bgra_table(np.ascontiguousarray(lut, np.uint8).tobytes())


def rgb_to_qimage(rgb: np.ndarray) -> QImage:
    """(H, W, 3) uint8 RGB -> a QImage that owns a copy of the pixels."""
    rgb = np.ascontiguousarray(rgb)
    height, width = rgb.shape[:2]
    return QImage(rgb.data, width, height, 3 * width, QImage.Format.Format_RGB888).copy()


def rgba_to_qimage(rgba: np.ndarray) -> QImage:
    """(H, W, 4) uint8 RGBA -> a QImage that owns a copy of the pixels."""
    rgba = np.ascontiguousarray(rgba)
    height, width = rgba.shape[:2]
    return QImage(rgba.data, width, height, 4 * width, QImage.Format.Format_RGBA8888).copy()


def bgr_to_qimage(image: np.ndarray) -> QImage:
    """A BGR, BGRA or grey uint8 frame -> a QImage that owns a copy of the pixels."""
    image = np.ascontiguousarray(image)
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    height, width = image.shape[:2]
    if image.ndim == 2:
        return QImage(image.data, width, height, width, QImage.Format.Format_Grayscale8).copy()
    if image.shape[2] == 4:
        image = np.ascontiguousarray(image[:, :, :3])
    return QImage(image.data, width, height, 3 * width, QImage.Format.Format_BGR888).copy()


def gradient(lut: np.ndarray, width: int, height: int, vertical: bool = True) -> QImage:
    """The table as a colour bar: high values at the top (vertical) or right (made once per size)."""
    return _gradient(np.ascontiguousarray(lut, np.uint8).tobytes(), width, height, vertical)


@lru_cache(maxsize=16)
def _gradient(key: bytes, width: int, height: int, vertical: bool) -> QImage:
    lut = np.frombuffer(key, np.uint8).reshape(256, 3)
    ramp = np.arange(256, dtype=np.uint8)[::-1] if vertical else np.arange(256, dtype=np.uint8)
    levels = ramp[:, None] if vertical else ramp[None, :]
    return table_image(levels, lut).scaled(width, height)
