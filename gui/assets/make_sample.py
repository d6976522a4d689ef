"""Draw gui/assets/sample.png: the image the app's --self-test classifies (and the bundle ships).

A synthetic picture made by code (a plane-like silhouette against a sky gradient), not data from any
data set. Run it again only to change the picture: python gui/assets/make_sample.py
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def draw_sample(size: int = 96) -> np.ndarray:
    """A BGR uint8 (size, size, 3) picture: blue sky, darker at the top, a grey plane across it."""
    ys = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None]
    sky = np.empty((size, size, 3), np.float32)
    sky[:, :, 0] = 235 - 40 * (1 - ys)  # B
    sky[:, :, 1] = 200 - 60 * (1 - ys)  # G
    sky[:, :, 2] = 150 - 80 * (1 - ys)  # R
    image = np.ascontiguousarray(sky.astype(np.uint8))
    s = size / 96.0
    grey, dark = (170, 170, 175), (110, 110, 120)

    def pts(*xy: tuple[float, float]) -> np.ndarray:
        return np.array([[round(x * s), round(y * s)] for x, y in xy], np.int32)

    cv2.fillPoly(image, [pts((40, 46), (58, 46), (36, 76), (28, 76))], dark, cv2.LINE_AA)  # far wing
    cv2.ellipse(image, (round(48 * s), round(46 * s)), (round(36 * s), round(6 * s)), -8, 0, 360, grey, -1, cv2.LINE_AA)
    cv2.fillPoly(image, [pts((44, 44), (60, 44), (42, 18), (34, 18))], grey, cv2.LINE_AA)  # near wing
    cv2.fillPoly(image, [pts((14, 48), (22, 46), (12, 30), (7, 30))], grey, cv2.LINE_AA)  # tail fin
    cv2.circle(image, (round(80 * s), round(41 * s)), max(1, round(2 * s)), dark, -1, cv2.LINE_AA)  # cockpit
    return image


if __name__ == "__main__":
    out = Path(__file__).resolve().parent / "sample.png"
    cv2.imwrite(str(out), draw_sample(), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {out} ({out.stat().st_size} bytes)")
