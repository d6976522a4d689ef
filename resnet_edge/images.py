"""Reading image files safely, and listing image folders (class-folder layout).

Files are untrusted: the format is recognised from its magic bytes before any decoder sees it, the
pixel count is read from the header and capped before anything is allocated, and truncated files are
refused rather than decoded into half a picture.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import UserError

# OpenCV logs its own warnings (V4L2 probing, libjpeg complaints) on stderr; we report problems ourselves,
# in one line, so only its errors get through.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MAX_PIXELS = 50_000_000  # 50 MP: larger than any camera frame we expect; refuses decompression bombs
MAX_FILE_BYTES = 200 * 1024 * 1024


class ImageError(UserError):
    """An image file that is missing, not a supported format, too large or damaged."""


def sniff_format(head: bytes) -> str | None:
    """Format from the first bytes of a file: 'jpeg', 'png', 'bmp', 'webp' or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"BM") and len(head) >= 26:
        return "bmp"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def _png_size(data: bytes) -> tuple[int, int] | None:
    # signature (8) + IHDR length (4) + b"IHDR" (4) + width (4) + height (4), big-endian
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    # walk the marker segments up to the first start-of-frame (SOF0..SOF15 but DHT/JPG/DAC)
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if pos + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        pos += 2 + length
    return None


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 26:
        return None
    (header_size,) = struct.unpack("<I", data[14:18])
    if header_size == 12:  # OS/2 BITMAPCOREHEADER: 16-bit unsigned sizes
        return struct.unpack("<HH", data[18:22])
    width, height = struct.unpack("<ii", data[18:26])
    return abs(width), abs(height)


def _webp_size(data: bytes) -> tuple[int, int] | None:
    # RIFF header (12) + first chunk: VP8X (extended), VP8L (lossless) or "VP8 " (lossy)
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
        return width, height
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None


def _is_truncated(fmt: str, data: bytes) -> bool:
    tail = data.rstrip(b"\x00")[-12:]
    if fmt == "jpeg":
        return not tail.endswith(b"\xff\xd9")
    if fmt == "png":
        return b"IEND" not in tail
    if fmt == "webp":
        (riff_size,) = struct.unpack("<I", data[4:8])
        return len(data) < riff_size + 8
    if fmt == "bmp":
        # the file header states the file size; OpenCV would otherwise fill the missing rows
        (file_size,) = struct.unpack("<I", data[2:6])
        (pixel_offset,) = struct.unpack("<I", data[10:14])
        return len(data) < file_size or len(data) <= pixel_offset
    return False


def decode_image_bytes(data: bytes, name: str = "image") -> np.ndarray:
    """Decode JPEG/PNG/BMP/WebP bytes to a BGR uint8 array (H, W, 3), refusing anything suspect."""
    fmt = sniff_format(data[:32])
    if fmt is None:
        raise ImageError(f"{name}: not a JPEG, PNG, BMP or WebP image")
    size = {"png": _png_size, "jpeg": _jpeg_size, "bmp": _bmp_size, "webp": _webp_size}[fmt](data)
    if size is None:
        # no size we can check before decoding means no decoding: the decoder would allocate first
        raise ImageError(f"{name}: the {fmt.upper()} header is damaged (no image size in it)")
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError(f"{name}: image header gives an empty size {width}x{height}")
    if width * height > MAX_PIXELS:
        raise ImageError(f"{name}: {width}x{height} pixels is over the limit of {MAX_PIXELS:,}")
    if _is_truncated(fmt, data):
        raise ImageError(f"{name}: the {fmt.upper()} file is truncated")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageError(f"{name}: the {fmt.upper()} data could not be decoded")
    if image.shape[0] * image.shape[1] > MAX_PIXELS:
        raise ImageError(f"{name}: {image.shape[1]}x{image.shape[0]} pixels is over the limit")
    return image


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as BGR uint8 (H, W, 3). Raises ImageError with a one-line reason."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such image file")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ImageError(f"{path}: file is larger than {MAX_FILE_BYTES // 2**20} MiB")
    return decode_image_bytes(path.read_bytes(), str(path))


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly in ``folder`` and below, sorted (for classify/calibration sources)."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if is_image_file(p))


@dataclass
class ImageFolder:
    """A folder of class folders (torchvision's ImageFolder layout): root/<class>/<image>."""

    root: Path
    classes: list[str]  # sorted class-folder names: the label order
    samples: list[tuple[Path, int]]  # (image path, class index), sorted by class then name

    @classmethod
    def scan(cls, root: str | os.PathLike, min_classes: int = 2) -> "ImageFolder":
        root = Path(root)
        if not root.is_dir():
            raise UserError(f"{root}: no such folder")
        class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not class_dirs:
            raise UserError(f"{root}: no class folders inside (expected {root}/<class>/<image files>)")
        samples: list[tuple[Path, int]] = []
        for index, class_dir in enumerate(class_dirs):
            files = list_images(class_dir)
            if not files:
                raise UserError(f"{class_dir}: class folder has no images ({', '.join(IMAGE_SUFFIXES)})")
            samples += [(path, index) for path in files]
        if len(class_dirs) < min_classes:
            raise UserError(f"{root}: found {len(class_dirs)} class folder(s); at least {min_classes} are needed")
        return cls(root, [d.name for d in class_dirs], samples)
