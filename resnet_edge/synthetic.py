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
