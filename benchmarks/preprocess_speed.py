"""Preprocessing: cost per frame and closeness to torchvision's PIL transform, today's path vs the previous one.

    python benchmarks/preprocess_speed.py                 # 640x480 frames, 300 rounds
    python benchmarks/preprocess_speed.py --rounds 100 --accuracy
    python benchmarks/preprocess_speed.py --input-side 32 --width 1920 --height 1080    # a CIFAR net, 1080p frames

Speed: ``preprocess`` (geometry + colour + normalisation, one frame, as the app calls it) for an ImageNet
model (224, Resize 256) on a 640x480 frame, against the previous path (a 0.875 square cut first, then
INTER_AREA), interleaved: each round runs every path once, in turn, so machine load hits all alike. Prints
p50/p99 per path and the ratio of medians (the issue's budget: at most +10%).

--accuracy also prints, per frame size, the mean |difference| (0..255 levels) of each candidate resampler
against PIL's bilinear resize (which antialiases when shrinking, as torchvision's Resize does on PIL images)
followed by the centre crop: the previous path, OpenCV INTER_LINEAR and INTER_AREA on the whole frame at the
exact geometry, and ours. Needs Pillow.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resnet_edge.preprocess import (PreprocessSpec, as_bgr_uint8, fit_frame, frame_geometry,  # noqa: E402
                                    normalize, preprocess)
from resnet_edge.synthetic import photo_like  # noqa: E402

SPEC = PreprocessSpec((224, 224), crop_ratio=224 / 256, resize_size=256)


def previous_fit(frame: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """The path before torchvision's geometry: a crop_ratio square cut from the frame, then INTER_AREA."""
    ratio = spec.crop_ratio
    frame = as_bgr_uint8(frame)
    frame_h, frame_w = frame.shape[:2]
    in_h, in_w = spec.input_size
    scale = min(frame_h / in_h, frame_w / in_w) * ratio
    crop_h, crop_w = max(1, min(frame_h, round(in_h * scale))), max(1, min(frame_w, round(in_w * scale)))
    top, left = (frame_h - crop_h) // 2, (frame_w - crop_w) // 2
    region = frame[top : top + crop_h, left : left + crop_w]
    interpolation = cv2.INTER_AREA if crop_h > in_h else cv2.INTER_LINEAR
    region = cv2.resize(region, (in_w, in_h), interpolation=interpolation)
    return np.ascontiguousarray(cv2.cvtColor(region, cv2.COLOR_BGR2RGB))


def whole_frame(interpolation: int):
    def fit(frame: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
        g = frame_geometry(frame.shape[:2], spec)
        resized = cv2.resize(frame, (g.resized_w, g.resized_h), interpolation=interpolation)
        return cv2.cvtColor(resized[g.top : g.top + g.out_h, g.left : g.left + g.out_w], cv2.COLOR_BGR2RGB)
    return fit


def pil_reference(bgr: np.ndarray, resize_size: int = 256, crop: int = 224) -> np.ndarray:
    from PIL import Image

    height, width = bgr.shape[:2]
    new_h, new_w = ((resize_size, int(resize_size * width / height)) if height <= width
                    else (int(resize_size * height / width), resize_size))
    resized = np.asarray(Image.fromarray(bgr[:, :, ::-1].copy()).resize((new_w, new_h), Image.BILINEAR))
    top, left = int(round((new_h - crop) / 2.0)), int(round((new_w - crop) / 2.0))
    return resized[top : top + crop, left : left + crop]


def speed(rounds: int, height: int, width: int, side: int) -> None:
    frame = photo_like(height, width, seed=0)
    spec = SPEC if side == 224 else PreprocessSpec((side, side), crop_ratio=1.0)  # CIFAR nets: no margin cut
    paths = {f"previous ({spec.crop_ratio:g} square, INTER_AREA)": lambda f: normalize(previous_fit(f, spec)[None], spec),
             "ours (torchvision geometry)": lambda f: preprocess(f, spec)}
    times: dict[str, list[float]] = {name: [] for name in paths}
    for run in paths.values():  # warm-up
        run(frame)
    for _ in range(rounds):
        for name, run in paths.items():  # round robin: load changes hit every path alike
            start = time.perf_counter()
            run(frame)
            times[name].append(time.perf_counter() - start)
    print(f"preprocess one {width}x{height} frame -> 1x3x{side}x{side}, {rounds} interleaved rounds")
    print(f"{'path':<38}{'p50 ms':>9}{'p99 ms':>9}")
    for name, values in times.items():
        print(f"{name:<38}{1e3 * np.percentile(values, 50):>9.3f}{1e3 * np.percentile(values, 99):>9.3f}")
    previous, ours = (np.median(v) for v in times.values())
    print(f"ours / previous (median): {ours / previous:.2f}x")


def accuracy() -> None:
    sizes = [(640, 480), (1920, 1080), (300, 500), (257, 257), (1000, 200), (224, 224), (100, 150), (1280, 720),
             (4000, 3000), (400, 300), (512, 384), (350, 350), (600, 800), (290, 290)]
    candidates = {"previous": previous_fit, "INTER_LINEAR": whole_frame(cv2.INTER_LINEAR),
                  "INTER_AREA": whole_frame(cv2.INTER_AREA), "ours": fit_frame}
    print("\nmean |difference| to PIL's antialiased bilinear + centre crop (levels of 255; Resize 256, crop 224)")
    print(f"{'frame':<11}" + "".join(f"{name:>14}" for name in candidates))
    worst = dict.fromkeys(candidates, 0.0)
    for width, height in sizes:
        image = photo_like(height, width, seed=width * 7 + height)
        reference = pil_reference(image).astype(np.float32)
        row = f"{f'{width}x{height}':<11}"
        for name, fit in candidates.items():
            value = float(np.abs(fit(image, SPEC).astype(np.float32) - reference).mean())
            worst[name] = max(worst[name], value)
            row += f"{value:>14.3f}"
        print(row)
    print(f"{'worst':<11}" + "".join(f"{value:>14.3f}" for value in worst.values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--input-side", type=int, default=224, help="224: ImageNet (Resize 256); else a CIFAR-style net")
    parser.add_argument("--accuracy", action="store_true", help="also compare each resampler with PIL (needs Pillow)")
    args = parser.parse_args()
    cv2.setNumThreads(1)  # as the app's inference worker runs it: one frame at a time
    speed(args.rounds, args.height, args.width, args.input_side)
    if args.accuracy:
        accuracy()


if __name__ == "__main__":
    main()
