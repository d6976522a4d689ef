"""Reading image files safely, and listing image folders (class-folder layout).

Files are untrusted: the format is recognised from its magic bytes before any decoder sees it, the
pixel count is read from the header and capped before anything is allocated, and truncated files are
refused rather than decoded into half a picture.
"""

from __future__ import annotations

import os
import re
import stat
import struct
import zlib
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
MAX_SIDE = 1 << 20  # OpenCV's own limit per side (CV_IO_MAX_IMAGE_WIDTH/HEIGHT): refused here, in our words


class ImageError(UserError):
    """An image file that is missing, not a supported format, too large or damaged."""


DECODED_FORMATS = ("jpeg", "png", "bmp", "webp")  # what read_image decodes itself (OpenCV, after the checks)
HEAD_BYTES = 64 * 1024  # enough for every header below but TIFF's, whose directories may lie anywhere


def sniff_format(head: bytes) -> str | None:
    """Format from the first bytes of a file: 'jpeg', 'png', 'bmp', 'webp' (the ones we decode), the other image
    formats OpenCV or FFmpeg would open ('gif', 'tiff', 'pnm', 'pam', 'pfm', 'qoi', 'psd', 'sgi', 'sunras', 'dds',
    'hdr', 'jp2', 'j2k', 'jxl', 'exr', 'heif', 'pcx'), or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"BM") and len(head) >= 26:
        return "bmp"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if len(head) >= 3 and head[0:1] == b"P" and head[1:2] in b"123456" and head[2:3] in b" \t\r\n#":
        return "pnm"
    if head[:3] == b"P7\n":
        return "pam"
    if head[:3] in (b"PF\n", b"Pf\n", b"PF\r", b"Pf\r"):
        return "pfm"
    if head[:4] == b"qoif":
        return "qoi"
    if head[:4] == b"8BPS":
        return "psd"
    if head[:2] == b"\x01\xda":
        return "sgi"
    if head[:4] == b"\x59\xa6\x6a\x95":
        return "sunras"
    if head[:4] == b"DDS ":
        return "dds"
    if head.startswith((b"#?RADIANCE", b"#?RGBE")):
        return "hdr"
    if head[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n":
        return "jp2"
    if head[:4] == b"\xff\x4f\xff\x51":
        return "j2k"
    if head[:2] == b"\xff\x0a" or head[:12] == b"\x00\x00\x00\x0cJXL \r\n\x87\n":
        return "jxl"
    if head[:4] == b"\x76\x2f\x31\x01":
        return "exr"
    if head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis", b"heic", b"heix", b"hevc", b"mif1", b"msf1"):
        return "heif"
    if len(head) >= 128 and head[0] == 0x0A and head[1] in (0, 2, 3, 4, 5) and head[2] == 1:
        return "pcx"
    return None


# Video containers FFmpeg opens, by their magic bytes: a file that is neither one of these nor an image we can
# read the size of is refused rather than left to FFmpeg's probing (which would decode it to learn its size).
def sniff_container(head: bytes) -> str | None:
    """'mp4', 'matroska', 'avi', 'asf', 'flv', 'ogg', 'mpeg-ps', 'mpeg-ts', 'mpeg-es', 'h26x', 'y4m', ... or None."""
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot"):
        return "mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX", b"AMV "):
        return "avi"
    if head[:16] == b"\x30\x26\xb2\x75\x8e\x66\xcf\x11\xa6\xd9\x00\xaa\x00\x62\xce\x6c":
        return "asf"
    if head[:3] == b"FLV":
        return "flv"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"\x00\x00\x01\xba":
        return "mpeg-ps"
    if head[:4] == b"\x00\x00\x01\xb3":
        return "mpeg-es"
    if len(head) > 376 and head[0] == 0x47 and head[188] == 0x47 and head[376] == 0x47:
        return "mpeg-ts"
    if head[:4] == b"\x00\x00\x00\x01" or head[:3] == b"\x00\x00\x01":
        return "h26x"
    if head[:10] == b"YUV4MPEG2 ":
        return "y4m"
    if head[:4] == b".RMF":
        return "realmedia"
    if head[:8] == b"nut/multimedia container":
        return "nut"
    return None


_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}  # colour type -> bit depths


def _png_size(data: bytes) -> tuple[int, int] | None:
    # signature (8) + IHDR length (4) + b"IHDR" (4) + width (4) + height (4), big-endian
    if len(data) < 33 or data[12:16] != b"IHDR" or data[8:12] != b"\x00\x00\x00\x0d":
        return None
    width, height, depth, color, compression, filtering, interlace = struct.unpack(">IIBBBBB", data[16:29])
    # a header that breaks the PNG rules is damaged, however small it says the image is: OpenCV's decoder took
    # 2.8 GB for a 45-byte PNG of 16x27705 pixels at bit depth 234 (found by scripts/fuzz.py)
    if (depth not in _PNG_DEPTHS.get(color, ()) or compression != 0 or filtering != 0 or interlace > 1
            or struct.unpack(">I", data[29:33])[0] != zlib.crc32(data[12:29])):
        return None
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


def _gif_size(data: bytes) -> tuple[int, int] | None:
    # logical screen: the canvas every frame is drawn on (a frame larger than it is clipped by decoders)
    return struct.unpack("<HH", data[6:10]) if len(data) >= 10 else None


def _pnm_tokens(data: bytes, count: int) -> list[int] | None:
    # "P6 # comment\n 640 480 255": whitespace-separated decimal tokens after the magic, comments skipped
    text = re.sub(rb"#[^\n\r]*", b" ", data[2:4096])
    tokens = text.split()[:count]
    if len(tokens) < count or not all(t.isdigit() and len(t) <= 9 for t in tokens):
        return None
    return [int(t) for t in tokens]


def _pnm_size(data: bytes) -> tuple[int, int] | None:
    tokens = _pnm_tokens(data, 2)
    return (tokens[0], tokens[1]) if tokens else None


def _pam_size(data: bytes) -> tuple[int, int] | None:
    head = data[:4096]
    width, height = re.search(rb"\nWIDTH\s+(\d{1,9})", head), re.search(rb"\nHEIGHT\s+(\d{1,9})", head)
    return (int(width.group(1)), int(height.group(1))) if width and height else None


def _pfm_size(data: bytes) -> tuple[int, int] | None:
    tokens = data[3:4096].split()[:2]
    return (int(tokens[0]), int(tokens[1])) if len(tokens) == 2 and all(t.isdigit() and len(t) <= 9 for t in tokens) else None


def _hdr_size(data: bytes) -> tuple[int, int] | None:
    # header lines up to an empty line, then "-Y 480 +X 640" (or another axis order)
    match = re.search(rb"\n\n([-+][YX]) (\d{1,9}) ([-+][YX]) (\d{1,9})", data[:HEAD_BYTES])
    if not match:
        return None
    first, second = int(match.group(2)), int(match.group(4))
    return (second, first) if match.group(1).endswith(b"Y") else (first, second)


def _jp2_size(data: bytes) -> tuple[int, int] | None:
    at = data.find(b"ihdr", 0, HEAD_BYTES)  # image header box: height, width (big-endian)
    if at < 0 or at + 12 > len(data):
        return None
    height, width = struct.unpack(">II", data[at + 4 : at + 12])
    return width, height


def _j2k_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 24:  # SIZ marker: Xsiz, Ysiz, XOsiz, YOsiz
        return None
    xsiz, ysiz, xo, yo = struct.unpack(">IIII", data[8:24])
    return xsiz - xo, ysiz - yo


def _heif_size(data: bytes) -> tuple[int, int] | None:
    # the largest 'ispe' (image spatial extents) box: version/flags, width, height
    sizes = []
    for match in re.finditer(rb"ispe", data[:HEAD_BYTES]):
        at = match.start()
        if at + 16 <= len(data):
            sizes.append(struct.unpack(">II", data[at + 8 : at + 16]))
    return max(sizes, key=lambda s: s[0] * s[1]) if sizes else None


def _pcx_size(data: bytes) -> tuple[int, int] | None:
    xmin, ymin, xmax, ymax = struct.unpack("<HHHH", data[4:12])
    return xmax - xmin + 1, ymax - ymin + 1


def _tiff_size(read) -> tuple[int, int] | None:
    """The largest width x height over the first image file directories (every page; a decoder may read any).
    ``read(offset, count)`` reads the file, so directories at the end of a big file cost no more than a seek."""
    head = read(0, 16)
    little = head[:2] == b"II"
    order = "<" if little else ">"
    big = struct.unpack(order + "H", head[2:4])[0] == 43  # BigTIFF: 8-byte offsets
    offset = struct.unpack(order + "Q", head[8:16])[0] if big else struct.unpack(order + "I", head[4:8])[0]
    largest, seen = None, set()
    for _ in range(64):  # directories are a linked list; a loop in it must not be followed forever
        if offset == 0 or offset in seen:
            break
        seen.add(offset)
        count_bytes = read(offset, 8 if big else 2)
        if len(count_bytes) < (8 if big else 2):
            return None
        count = struct.unpack(order + ("Q" if big else "H"), count_bytes)[0]
        entry_size = 20 if big else 12
        if count > 4096:
            return None
        entries = read(offset + len(count_bytes), count * entry_size + (8 if big else 4))
        if len(entries) < count * entry_size:
            return None
        width = height = None
        for index in range(count):
            entry = entries[index * entry_size : (index + 1) * entry_size]
            tag, kind = struct.unpack(order + "HH", entry[:4])
            if tag in (256, 257):
                value_at = 12 if big else 8
                value = (struct.unpack(order + "H", entry[value_at : value_at + 2])[0] if kind == 3
                         else struct.unpack(order + "I", entry[value_at : value_at + 4])[0])
                width, height = (value, height) if tag == 256 else (width, value)
        if width is None or height is None:
            return None
        if largest is None or width * height > largest[0] * largest[1]:
            largest = (width, height)
        tail = entries[count * entry_size :]
        offset = struct.unpack(order + ("Q" if big else "I"), tail)[0] if len(tail) == (8 if big else 4) else 0
    return largest


_SIZE_READERS = {"png": _png_size, "jpeg": _jpeg_size, "bmp": _bmp_size, "webp": _webp_size, "gif": _gif_size,
                 "pnm": _pnm_size, "pam": _pam_size, "pfm": _pfm_size, "hdr": _hdr_size, "jp2": _jp2_size,
                 "j2k": _j2k_size, "heif": _heif_size, "pcx": _pcx_size,
                 "qoi": lambda d: struct.unpack(">II", d[4:12]) if len(d) >= 12 else None,
                 "psd": lambda d: tuple(reversed(struct.unpack(">II", d[14:22]))) if len(d) >= 22 else None,
                 "sgi": lambda d: struct.unpack(">HH", d[6:10]) if len(d) >= 10 else None,
                 "sunras": lambda d: struct.unpack(">II", d[4:12]) if len(d) >= 12 else None,
                 "dds": lambda d: tuple(reversed(struct.unpack("<II", d[12:20]))) if len(d) >= 20 else None}


def header_size(fmt: str, head: bytes, read=None) -> tuple[int, int] | None:
    """(width, height) from a header, or None when the header does not say (damaged, or a format - JPEG XL,
    OpenEXR - whose size we do not read: refused, since the decoder would allocate first)."""
    try:
        if fmt == "tiff":
            return _tiff_size(read or (lambda offset, count: head[offset : offset + count]))
        reader = _SIZE_READERS.get(fmt)
        return reader(head) if reader else None
    except (struct.error, ValueError, OverflowError):
        return None


def check_pixels(fmt: str, size: tuple[int, int] | None, name: str) -> tuple[int, int]:
    """The size, if it is within MAX_PIXELS; ImageError otherwise (no size means no decoding)."""
    if size is None:
        raise ImageError(f"{name}: the {fmt.upper()} header is damaged (no image size in it)")
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError(f"{name}: image header gives an empty size {width}x{height}")
    if width * height > MAX_PIXELS:
        raise ImageError(f"{name}: {width}x{height} pixels is over the limit of {MAX_PIXELS:,}")
    if max(width, height) > MAX_SIDE:
        raise ImageError(f"{name}: {width}x{height} pixels: a side over {MAX_SIDE:,} pixels")
    return width, height


def check_media_file(path: str | os.PathLike) -> str:
    """Vet a file given as a source before OpenCV or FFmpeg opens it, from its bytes, not its name: an image
    (any format they read) within the pixel cap -> its format; a video container we know -> 'video'.
    ImageError for anything else, for an image over the cap, and for what is not a regular file (a FIFO would
    block the open forever; devices other than cameras are not images)."""
    path = Path(path)
    with open_regular(path) as handle:
        head = handle.read(HEAD_BYTES)

        def read(offset: int, count: int) -> bytes:
            handle.seek(offset)
            return handle.read(min(count, 1 << 20))

        fmt = sniff_format(head[:32]) or sniff_format(head)
        if fmt is not None:
            check_pixels(fmt, header_size(fmt, head, read), str(path))
            return fmt
    container = sniff_container(head)
    if container is None:
        raise ImageError(f"{path}: not an image or a video format we recognise from its contents")
    return "video"


def _file_kind(mode: int) -> str:
    return ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")


def open_regular(path: Path):
    """Open ``path`` for reading without blocking, refusing what is not a regular file (FIFO, socket, device,
    folder): one line, not a hang."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ImageError(f"{path}: no such image file") from None
    except OSError as error:
        raise ImageError(f"{path}: cannot be read ({error.strerror or error})") from None
    if not stat.S_ISREG(mode):
        raise ImageError(f"{path} is {_file_kind(mode)}, not an image file")
    try:  # non-blocking: should a FIFO appear under this name after the check, the open still returns at once
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise ImageError(f"{path}: no such image file") from None
    except OSError as error:
        raise ImageError(f"{path}: cannot be read ({error.strerror or error})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise ImageError(f"{path} is {_file_kind(mode)}, not an image file")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _png_chunks_fit(data: bytes) -> bool:
    """Every chunk's stated length lies inside the file: OpenCV's reader allocates what a chunk header states
    before reading it (2 GB for a 45-byte file whose second chunk claims 3.6 GB, found by scripts/fuzz.py)."""
    pos = 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        if length > len(data) - pos - 12:
            return False
        if data[pos + 4 : pos + 8] == b"IEND":
            return True
        pos += 12 + length
    return False


def _is_truncated(fmt: str, data: bytes) -> bool:
    tail = data.rstrip(b"\x00")[-12:]
    if fmt == "jpeg":
        return not tail.endswith(b"\xff\xd9")
    if fmt == "png":
        return b"IEND" not in tail or not _png_chunks_fit(data)
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
    if fmt not in DECODED_FORMATS:
        raise ImageError(f"{name}: not a JPEG, PNG, BMP or WebP image")
    # no size we can check before decoding means no decoding: the decoder would allocate first
    check_pixels(fmt, header_size(fmt, data), name)
    if _is_truncated(fmt, data):
        raise ImageError(f"{name}: the {fmt.upper()} file is truncated")
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as error:  # OpenCV's own header checks (its side limits, asserts on odd fields)
        reason = (str(error).strip().splitlines() or [""])[-1].split(") ", 1)[-1][:120]
        raise ImageError(f"{name}: the {fmt.upper()} data could not be decoded ({reason})") from None
    if image is None:
        raise ImageError(f"{name}: the {fmt.upper()} data could not be decoded")
    if image.shape[0] * image.shape[1] > MAX_PIXELS:
        raise ImageError(f"{name}: {image.shape[1]}x{image.shape[0]} pixels is over the limit")
    return image


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as BGR uint8 (H, W, 3). Raises ImageError with a one-line reason."""
    path = Path(path)
    with open_regular(path) as handle:  # a FIFO or device is refused, not waited on
        size = os.fstat(handle.fileno()).st_size
        if size > MAX_FILE_BYTES:
            raise ImageError(f"{path}: file is larger than {MAX_FILE_BYTES // 2**20} MiB")
        try:
            # the size the file has, not the cap: read(n) allocates n bytes first (200 MiB for every small image)
            data = handle.read(size + 1)
        except OSError as error:  # an I/O error on a bad disk or a share gone away: this file, not the run
            raise ImageError(f"{path}: cannot be read ({error.strerror or error})") from None
    return decode_image_bytes(data, str(path))


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
