"""Image-like test frames made from nothing: smooth colour gradients, shapes, texture and noise.

Used for export parity ("real-looking" inputs next to random tensors), the demo source that works
without a camera, and tests. Deterministic for a given seed; no data files needed.
"""

from __future__ import annotations

import cv2
import numpy as np


def synthetic_frame(rng: np.random.Generator, height: int = 240, width: int = 320) -> np.ndarray:
    """One BGR uint8 frame (height, width, 3) with the statistics of a photo more than of noise."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    frame = np.empty((height, width, 3), dtype=np.float32)
    for channel in range(3):  # a random linear gradient per channel
        a, b, c = rng.uniform(-1, 1, size=3)
        frame[:, :, channel] = 128 + 90 * np.tanh(a * xs / width + b * ys / height + c)
    frame = frame.astype(np.uint8)
    for _ in range(int(rng.integers(2, 7))):  # filled shapes in random colours
        color = tuple(int(v) for v in rng.integers(0, 256, size=3))
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        size = int(rng.integers(max(2, min(height, width) // 10), max(3, min(height, width) // 2)))
        if rng.random() < 0.5:
            cv2.circle(frame, (cx, cy), size, color, thickness=-1, lineType=cv2.LINE_AA)
        else:
            cv2.rectangle(frame, (cx - size, cy - size // 2), (cx + size, cy + size // 2), color, thickness=-1)
    noise = rng.normal(0, 8, size=frame.shape).astype(np.float32)
    frame = np.clip(frame.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return cv2.GaussianBlur(frame, (3, 3), 0)


def synthetic_frames(count: int, seed: int = 0, height: int = 240, width: int = 320) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [synthetic_frame(rng, height, width) for _ in range(count)]


# Classes no shipped model was trained on: shapes and textures in random colours, sizes, places and
# angles, on a random background. The benchmark of `resnet-edge teach` and the Teach tab's tests learn them.
NOVEL_CLASSES = ("circle", "square", "triangle", "ring", "cross", "stripes", "checker", "dots", "star", "waves")


def _random_color(rng: np.random.Generator, avoid: np.ndarray | None = None) -> tuple[int, int, int]:
    while True:
        color = rng.integers(0, 256, size=3)
        if avoid is None or np.abs(color.astype(int) - avoid.astype(int)).sum() > 150:  # stands out from the background
            return tuple(int(v) for v in color)


def novel_frame(rng: np.random.Generator, kind: str, height: int = 64, width: int = 64) -> np.ndarray:
    """One BGR uint8 frame of a novel class (one of NOVEL_CLASSES)."""
    if kind not in NOVEL_CLASSES:
        raise ValueError(f"unknown novel class {kind!r}; expected one of {NOVEL_CLASSES}")
    background = rng.integers(0, 256, size=3)
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[:] = background.astype(np.uint8)
    color = _random_color(rng, background)
    side = min(height, width)
    cx, cy = (int(v) for v in (rng.uniform(0.35, 0.65) * width, rng.uniform(0.35, 0.65) * height))
    radius = int(rng.uniform(0.2, 0.35) * side)
    angle = rng.uniform(0, 2 * np.pi)
    thick = max(1, side // 12)
    aa = cv2.LINE_AA

    def polygon(points: int, inner: float | None = None) -> np.ndarray:
        corners = []
        for i in range(points * (2 if inner else 1)):
            r = radius if (inner is None or i % 2 == 0) else radius * inner
            a = angle + i * np.pi * 2 / (points * (2 if inner else 1))
            corners.append((cx + r * np.cos(a), cy + r * np.sin(a)))
        return np.array(corners, dtype=np.int32)

    if kind == "circle":
        cv2.circle(frame, (cx, cy), radius, color, -1, aa)
    elif kind == "ring":
        cv2.circle(frame, (cx, cy), radius, color, thick, aa)
    elif kind == "square":
        cv2.fillPoly(frame, [polygon(4)], color, aa)
    elif kind == "triangle":
        cv2.fillPoly(frame, [polygon(3)], color, aa)
    elif kind == "star":
        cv2.fillPoly(frame, [polygon(5, inner=0.4)], color, aa)
    elif kind == "cross":
        for a in (angle, angle + np.pi / 2):
            dx, dy = radius * np.cos(a), radius * np.sin(a)
            cv2.line(frame, (int(cx - dx), int(cy - dy)), (int(cx + dx), int(cy + dy)), color, thick, aa)
    else:  # textures over the whole frame
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        period = rng.uniform(0.15, 0.3) * side
        u = (xs * np.cos(angle) + ys * np.sin(angle)) / period
        v = (-xs * np.sin(angle) + ys * np.cos(angle)) / period
        phase = rng.uniform(0, 1, size=2)
        if kind == "stripes":
            mask = ((u + phase[0]) % 1.0) < 0.5
        elif kind == "checker":
            mask = (np.floor(u + phase[0]) + np.floor(v + phase[1])) % 2 == 0
        elif kind == "dots":
            mask = (((u + phase[0]) % 1.0 - 0.5) ** 2 + ((v + phase[1]) % 1.0 - 0.5) ** 2) < 0.09
        else:  # waves
            mask = ((u + 0.25 * np.sin(2 * np.pi * (v + phase[1])) + phase[0]) % 1.0) < 0.5
        frame[mask] = color
    noise = rng.normal(0, 10, size=frame.shape)
    return np.clip(frame.astype(np.float32) + noise, 0, 255).astype(np.uint8)
OUTSIDE_KINDS = ("texture", "shapes", "noise", "colour")


def outside_frame(kind: str, rng: np.random.Generator, height: int = 64, width: int = 64) -> np.ndarray:
    """One BGR uint8 frame that shows no object class: a texture (oriented gratings and blurred noise at a few
    scales), shapes on a gradient (synthetic_frame), pixel noise, or a colour field (flat or a smooth gradient)."""
    if kind == "shapes":
        return synthetic_frame(rng, height, width)
    if kind == "noise":
        if rng.random() < 0.5:
            return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        return np.clip(rng.normal(128, rng.uniform(20, 80), size=(height, width, 3)), 0, 255).astype(np.uint8)
    if kind == "colour":
        colour = rng.integers(0, 256, size=3).astype(np.float32)
        frame = np.broadcast_to(colour, (height, width, 3)).astype(np.float32)
        if rng.random() < 0.5:  # a smooth gradient towards a second colour
            ramp = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
            frame = frame * (1 - ramp) + rng.integers(0, 256, size=3).astype(np.float32) * ramp
        return np.clip(frame + rng.normal(0, 2, size=frame.shape), 0, 255).astype(np.uint8)
    if kind == "texture":
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        frame = np.zeros((height, width, 3), dtype=np.float32)
        for _ in range(int(rng.integers(1, 4))):  # oriented gratings
            angle, period = rng.uniform(0, np.pi), rng.uniform(3, 16)
            phase = (xs * np.cos(angle) + ys * np.sin(angle)) * 2 * np.pi / period
            frame += np.sin(phase)[:, :, None] * rng.uniform(-60, 60, size=3)
        blur = int(rng.choice([1, 3, 5]))
        noise = rng.normal(0, rng.uniform(10, 50), size=(height, width, 3)).astype(np.float32)
        frame += cv2.GaussianBlur(noise, (blur, blur), 0) if blur > 1 else noise
        return np.clip(frame + rng.uniform(60, 200, size=3), 0, 255).astype(np.uint8)
    raise ValueError(f"unknown kind {kind!r}; one of {OUTSIDE_KINDS}")


def outside_frames(count: int, seed: int = 0, height: int = 64, width: int = 64) -> list[tuple[str, np.ndarray]]:
    """``count`` (kind, frame) pairs, the kinds taken in turn."""
    rng = np.random.default_rng(seed)
    return [(OUTSIDE_KINDS[i % len(OUTSIDE_KINDS)], outside_frame(OUTSIDE_KINDS[i % len(OUTSIDE_KINDS)], rng, height, width))
            for i in range(count)]


def photo_like(height: int, width: int, seed: int) -> np.ndarray:
    """BGR uint8: smooth colour gradients, fine texture, anti-aliased shapes with hard edges, and a patch of
    near-Nyquist stripes (where a resampler without antialiasing differs most)."""
    rng = np.random.default_rng(seed)
    image = cv2.resize(rng.uniform(0, 255, (6, 8, 3)).astype(np.float32), (width, height),
                       interpolation=cv2.INTER_CUBIC)
    image += cv2.GaussianBlur(rng.normal(0, 40, (height, width, 3)).astype(np.float32), (0, 0), 1.0)
    for _ in range(12):
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.circle(image, centre, int(rng.integers(5, max(6, min(height, width) // 4))), colour, -1, cv2.LINE_AA)
    yy, xx = np.mgrid[:height, :width]
    image += (40 * np.sin(xx * 0.9 + yy * 0.3) * ((xx > width // 2) & (yy > height // 2)))[..., None]
    return np.clip(image, 0, 255).astype(np.uint8)
