"""Frame sources for classify and the app: an image, a folder of images, a video file, a camera index,
or ``demo`` (moving synthetic shapes, for machines with no camera).

Every source yields (frame id, BGR uint8 frame). ``open_source`` picks the kind from the string.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from .errors import UserError
from .images import IMAGE_SUFFIXES, ImageError, list_images, read_image  # also quiets OpenCV's log

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


@dataclass
class Frame:
    id: str  # file name, "frame 12", "camera 0 #12"
    image: np.ndarray  # BGR uint8 (H, W, 3)


class FrameSource:
    kind = "source"
    description = ""
    skipped = 0  # frames that could not be read and were left out

    def __iter__(self) -> Iterator[Frame]:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass


class ImageSource(FrameSource):
    kind = "image"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = str(path)

    def __iter__(self) -> Iterator[Frame]:
        yield Frame(str(self.path), read_image(self.path))


class FolderSource(FrameSource):
    """Images in a folder (recursively), in sorted order; unreadable ones are skipped with a warning."""

    kind = "folder"

    def __init__(self, path: Path) -> None:
        self.files = list_images(path)
        if not self.files:
            raise UserError(f"{path}: no images found ({', '.join(IMAGE_SUFFIXES)})")
        self.root = path
        self.description = f"{path} ({len(self.files)} images)"

    def __iter__(self) -> Iterator[Frame]:
        for path in self.files:
            try:
                image = read_image(path)
            except ImageError as error:
                self.skipped += 1
                print(f"warning: skipping {error}", file=sys.stderr)
                continue
            yield Frame(str(path.relative_to(self.root)), image)


class VideoSource(FrameSource):
    """A video file (OpenCV's FFmpeg backend) or a camera index."""

    def __init__(self, target: str | int, max_frames: int | None = None) -> None:
        self.target = target
        self.max_frames = max_frames
        self.kind = "camera" if isinstance(target, int) else "video"
        self.capture = cv2.VideoCapture(target)
        if not self.capture.isOpened():
            self.capture.release()
            if isinstance(target, int):
                raise UserError(f"camera {target} did not open (no such camera, or it is in use)")
            raise UserError(f"{target}: not a video file OpenCV can open")
        self.fps = self.capture.get(cv2.CAP_PROP_FPS) or 0.0
        self.description = f"camera {target}" if isinstance(target, int) else str(target)

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        while self.max_frames is None or index < self.max_frames:
            ok, image = self.capture.read()
            if not ok or image is None:
                break
            yield Frame(f"frame {index}", image)
            index += 1
        self.close()

    def close(self) -> None:
        self.capture.release()


class DemoSource(FrameSource):
    """Moving coloured shapes on a gradient: a live-looking source on machines without a camera."""

    kind = "demo"
    description = "demo (synthetic moving shapes)"

    def __init__(self, max_frames: int | None = 100, height: int = 480, width: int = 640, seed: int = 0) -> None:
        self.max_frames, self.height, self.width = max_frames, height, width
        rng = np.random.default_rng(seed)
        self.shapes = [(rng.uniform(0, 1, 2), rng.uniform(-0.01, 0.01, 2), int(rng.integers(20, 90)),
                        tuple(int(v) for v in rng.integers(0, 256, 3))) for _ in range(5)]
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        self.background = np.stack([80 + 100 * xs / width, 60 + 120 * ys / height, 140 - 60 * xs / width], -1).astype(np.uint8)

    def render(self, index: int) -> np.ndarray:
        frame = self.background.copy()
        for position, velocity, radius, color in self.shapes:
            x, y = np.abs(((position + velocity * index) % 2.0) - 1.0)  # bounce inside the frame
            cv2.circle(frame, (int(x * self.width), int(y * self.height)), radius, color, -1, cv2.LINE_AA)
        return frame

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        while self.max_frames is None or index < self.max_frames:
            yield Frame(f"demo {index}", self.render(index))
            index += 1


def open_source(spec: str, max_frames: int | None = None) -> FrameSource:
    """``demo`` | camera index (``0``) | image file | folder | video file."""
    if spec == "demo":
        return DemoSource(max_frames=100 if max_frames is None else max_frames)
    if spec.isdigit():
        return VideoSource(int(spec), max_frames=max_frames)
    path = Path(spec)
    if not path.exists():
        raise UserError(f"{path}: no such file or folder (a source is an image, a folder, a video, a camera index or 'demo')")
    if path.is_dir():
        return FolderSource(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageSource(path)
    return VideoSource(str(path), max_frames=max_frames)
