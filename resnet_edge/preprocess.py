"""The one preprocessing path: a BGR uint8 frame of any size -> the model's NCHW float32 input.

Training, calibration, evaluation, the CLI and the GUI all come through here, so a model sees the same
pixels wherever it runs. Two steps, split so training can augment in between:

1. ``fit_frame``: colour conversion and geometry. Any frame (grey, BGR, BGRA) -> uint8 (H, W, 3) at the
   model's input size in the model's colour order. Policy ``center_crop``: torchvision's evaluation
   transform, Resize(resize_size) + CenterCrop(input): scale the shorter side to ``resize_size`` (default
   ``input / crop_ratio``; 256 for torchvision's V1 weights, 232 for V2 resnet50/101/152), the longer one
   to ``int(resize_size * long / short)`` as torchvision does, and cut the centre at
   ``int(round((resized - input) / 2))``; ``stretch``: the whole frame resized to the input ignoring aspect
   ratio; ``letterbox``: the whole frame fitted inside the input, padded with the mean colour (zero
   after normalisation). ``visible_region`` gives the rectangle of the frame the model sees.
2. ``normalize``: uint8 (N, H, W, 3) -> float32 (N, 3, H, W), (x / 255 - mean) / std.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from collections.abc import Sequence
from functools import lru_cache

import cv2
import numpy as np

from .budgets import PREPROCESS_BUDGET_BYTES
from .errors import UserError

RESIZE_POLICIES = ("center_crop", "stretch", "letterbox")
INTERPOLATIONS = ("bilinear_antialias",)  # PIL's bilinear resize, which widens its triangle when shrinking
COLOR_ORDERS = ("RGB", "BGR")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class FrameError(UserError):
    """A frame that cannot be turned into model input (wrong shape, dtype, NaN...)."""


@dataclass(frozen=True)
class PreprocessSpec:
    input_size: tuple[int, int]  # (H, W) the network takes
    mean: tuple[float, float, float] = IMAGENET_MEAN  # per channel, 0..1 scale, in color_order
    std: tuple[float, float, float] = IMAGENET_STD  # per channel, 0..1 scale, in color_order
    color_order: str = "RGB"  # channel order the network was trained on
    resize_policy: str = "center_crop"  # how a frame of another size is brought to input_size
    crop_ratio: float = 1.0  # center_crop only: crop side / resized shorter side (0.875 for ImageNet)
    resize_size: int | None = None  # center_crop only: shorter side before the crop (256; 232 for V2); None: input / crop_ratio
    interpolation: str = "bilinear_antialias"  # how pixels are resampled (torchvision's on PIL images)
    _scale: np.ndarray = field(init=False, repr=False, compare=False)
    _bias: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (len(self.input_size) != 2
                or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in self.input_size)):
            raise UserError(f"input size must be two whole numbers (H, W), got {self.input_size!r}")
        height, width = self.input_size
        if height < 1 or width < 1:
            raise UserError(f"input size must be positive, got {height}x{width}")
        if self.color_order not in COLOR_ORDERS:
            raise UserError(f"color order must be one of {COLOR_ORDERS}, got {self.color_order!r}")
        if self.resize_policy not in RESIZE_POLICIES:
            raise UserError(f"resize policy must be one of {RESIZE_POLICIES}, got {self.resize_policy!r}")
        if not 0.0 < self.crop_ratio <= 1.0:
            raise UserError(f"crop ratio must be in (0, 1], got {self.crop_ratio}")
        if self.resize_size is not None and (
                not isinstance(self.resize_size, (int, np.integer)) or isinstance(self.resize_size, bool)
                or not min(height, width) <= self.resize_size <= 16384):
            raise UserError(f"resize size must be a whole number from the input side ({min(height, width)}) "
                            f"to 16384, got {self.resize_size!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise UserError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        # one description of the centre crop: crop_ratio = input / resize_size, and a ratio that gives a whole
        # shorter side (224 / 0.875 = 256) names that resize size, so equal geometry compares equal
        if self.resize_policy == "center_crop":
            if self.resize_size is not None:
                object.__setattr__(self, "resize_size", int(self.resize_size))
                object.__setattr__(self, "crop_ratio", min(height, width) / self.resize_size)
            else:
                derived = min(height, width) / self.crop_ratio
                if abs(derived - round(derived)) < 1e-9 and round(derived) <= 16384:
                    object.__setattr__(self, "resize_size", int(round(derived)))
                    object.__setattr__(self, "crop_ratio", min(height, width) / self.resize_size)
        try:
            mean = np.asarray(self.mean, dtype=np.float32)
            std = np.asarray(self.std, dtype=np.float32)
        except (TypeError, ValueError):
            raise UserError(f"mean and std need 3 numbers each, got {self.mean!r} / {self.std!r}") from None
        if (mean.shape != (3,) or std.shape != (3,) or not np.all(np.isfinite(mean)) or not np.all(np.isfinite(std))
                or not np.all(std >= 1e-6)):
            raise UserError(f"mean and std need 3 finite values each (std >= 1e-6), got {self.mean} / {self.std}")
        # (x / 255 - mean) / std == x * scale + bias, one fused multiply-add per pixel
        with np.errstate(over="ignore"):  # overflow is checked just below, as one clear error, not a numpy warning
            scale, bias = (1.0 / (255.0 * std)).reshape(1, 3, 1, 1), (-mean / std).reshape(1, 3, 1, 1)
        if not (np.all(np.isfinite(scale)) and np.all(np.isfinite(bias))):  # float32 overflow: huge mean, tiny std
            raise UserError(f"mean and std give non-finite normalisation: {self.mean} / {self.std}")
        object.__setattr__(self, "_scale", scale)
        object.__setattr__(self, "_bias", bias)


def default_spec(layout: str, side: int | None = None) -> PreprocessSpec:
    """The preprocessing a network of this layout is assumed to take when its weights do not say:
    CIFAR-10 statistics at 32x32 for "cifar" nets, ImageNet's (resize, 0.875 centre crop) at 224 otherwise."""
    if layout == "cifar":
        return PreprocessSpec((side or 32, side or 32), CIFAR10_MEAN, CIFAR10_STD, "RGB", "center_crop", 1.0)
    return PreprocessSpec((side or 224, side or 224), IMAGENET_MEAN, IMAGENET_STD, "RGB", "center_crop", 0.875)


def as_bgr_uint8(frame: np.ndarray) -> np.ndarray:
    """Bring a frame to contiguous BGR uint8 (H, W, 3): grey and BGRA converted, floats in 0..1 scaled."""
    if not isinstance(frame, np.ndarray):
        raise FrameError(f"a frame must be a numpy array, got {type(frame).__name__}")
    if not frame.dtype.isnative:  # big-endian data from a file: same values, our byte order
        frame = frame.astype(frame.dtype.newbyteorder("="))
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[2] not in (3, 4)):
        hint = " (channels first? transpose it to (H, W, C))" if frame.ndim == 3 and frame.shape[0] in (1, 3, 4) else ""
        raise FrameError(f"a frame must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got shape {frame.shape}{hint}")
    if frame.shape[0] < 1 or frame.shape[1] < 1:
        raise FrameError(f"empty frame of shape {frame.shape}")
    if frame.dtype != np.uint8:
        if frame.dtype == np.uint16:
            frame = (frame >> 8).astype(np.uint8)
        elif np.issubdtype(frame.dtype, np.floating):
            if not np.all(np.isfinite(frame)):
                raise FrameError("frame contains NaN or Inf values")
            low, high = float(frame.min()), float(frame.max())
            # floats are taken as 0..1; a 0..255 float frame would silently turn white, so say so
            if low < -1e-3 or high > 1.0 + 1e-3:
                raise FrameError(f"a float frame must hold 0..1 values, got {low:g}..{high:g} "
                                 "(divide by 255, or pass uint8)")
            frame = np.clip(frame.astype(np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        elif frame.dtype == np.bool_:
            frame = frame.astype(np.uint8) * np.uint8(255)  # a mask: True is white
        elif np.issubdtype(frame.dtype, np.integer):
            if frame.min() < 0 or frame.max() > 255:
                raise FrameError(f"{frame.dtype} frame has values outside 0..255")
            frame = frame.astype(np.uint8)
        else:
            raise FrameError(f"unsupported frame dtype {frame.dtype} (use uint8, uint16, another integer type or float 0..1)")
    # OpenCV wants each row contiguous; views (flipped, strided, Fortran order) are copied once here
    frame = np.ascontiguousarray(frame)
    if frame.ndim == 2:
        frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    elif frame.shape[2] == 4:
        frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(frame)


@dataclass(frozen=True)
class Geometry:
    """Where a frame's pixels go: the frame resized to (resized_h, resized_w), of which the (out_h, out_w)
    window at (top, left) is kept and placed at (pad_top, pad_left) of the input (letterbox pads around it)."""

    resized_h: int
    resized_w: int
    top: int
    left: int
    out_h: int
    out_w: int
    pad_top: int = 0
    pad_left: int = 0


def resized_size(frame_hw: tuple[int, int], spec: PreprocessSpec) -> tuple[int, int]:
    """center_crop: the frame's size after Resize(resize_size), computed as torchvision computes it (shorter
    side = resize_size, longer = int(resize_size * long / short)); grown where the crop would not fit."""
    frame_h, frame_w = frame_hw
    in_h, in_w = spec.input_size
    side = spec.resize_size if spec.resize_size is not None else min(in_h, in_w) / spec.crop_ratio
    if side == int(side):
        side = int(side)
        if frame_h <= frame_w:
            resized_h, resized_w = side, int(side * frame_w / frame_h)
        else:
            resized_h, resized_w = int(side * frame_h / frame_w), side
    else:  # a crop ratio that gives no whole shorter side: keep the aspect ratio, round
        factor = side / min(frame_h, frame_w)
        resized_h, resized_w = max(1, round(frame_h * factor)), max(1, round(frame_w * factor))
    if resized_h < in_h or resized_w < in_w:  # a non-square input wider than the resized frame: scale up to fit
        factor = max(in_h / frame_h, in_w / frame_w)
        resized_h, resized_w = max(in_h, round(frame_h * factor)), max(in_w, round(frame_w * factor))
    return resized_h, resized_w


def frame_geometry(frame_hw: tuple[int, int], spec: PreprocessSpec) -> Geometry:
    """How ``fit_frame`` maps a frame of this size onto the input under the spec's resize policy."""
    frame_h, frame_w = frame_hw
    in_h, in_w = spec.input_size
    if spec.resize_policy == "stretch":
        return Geometry(in_h, in_w, 0, 0, in_h, in_w)
    if spec.resize_policy == "letterbox":
        factor = min(in_h / frame_h, in_w / frame_w)
        fit_h, fit_w = min(in_h, max(1, round(frame_h * factor))), min(in_w, max(1, round(frame_w * factor)))
        return Geometry(fit_h, fit_w, 0, 0, fit_h, fit_w, (in_h - fit_h) // 2, (in_w - fit_w) // 2)
    resized_h, resized_w = resized_size(frame_hw, spec)
    # torchvision's CenterCrop: int(round((size - crop) / 2.0))
    top, left = int(round((resized_h - in_h) / 2.0)), int(round((resized_w - in_w) / 2.0))
    return Geometry(resized_h, resized_w, top, left, in_h, in_w)


def visible_region(spec: PreprocessSpec, frame_height: int, frame_width: int) -> tuple[float, float, float, float]:
    """(x, y, w, h) in frame pixels of the part of the frame the model sees (the whole frame for stretch and
    letterbox; the centre crop's source rectangle for center_crop), for drawing it over the frame."""
    if spec.resize_policy in ("stretch", "letterbox"):
        return 0.0, 0.0, float(frame_width), float(frame_height)
    g = frame_geometry((frame_height, frame_width), spec)
    scale_y, scale_x = g.resized_h / frame_height, g.resized_w / frame_width
    return g.left / scale_x, g.top / scale_y, g.out_w / scale_x, g.out_h / scale_y


def crop_box(frame_hw: tuple[int, int], spec: PreprocessSpec) -> tuple[int, int, int, int]:
    """(top, left, height, width) of ``visible_region`` rounded to whole frame pixels."""
    x, y, w, h = visible_region(spec, frame_hw[0], frame_hw[1])
    top, left = int(round(y)), int(round(x))
    return top, left, max(1, min(frame_hw[0] - top, int(round(h)))), max(1, min(frame_hw[1] - left, int(round(w))))


# Shrinking by less than this (a scale of 0.75 and up) goes through INTER_AREA on the whole (small) frame;
# more, through a triangle blur and an exact-geometry bilinear warp of only the pixels the crop needs.
# Both were measured against PIL's antialiased bilinear resize (docs/imagenet.md): INTER_AREA is closer
# for mild shrinking, the blur + warp closer (and cheaper) for strong shrinking.
_AREA_FROM_SCALE = 0.75


def _triangle(half_width: float) -> np.ndarray:
    """Normalised taps of a triangle filter of the given half width (in source pixels)."""
    reach = int(np.ceil(half_width))
    offsets = np.arange(-reach, reach + 1, dtype=np.float64)
    taps = np.clip(1.0 - np.abs(offsets) / half_width, 0.0, None)
    return (taps / taps.sum()).astype(np.float32)


def resample(frame: np.ndarray, g: Geometry) -> np.ndarray:
    """The (out_h, out_w) window at (top, left) of ``frame`` resized to (resized_h, resized_w): PIL's bilinear
    with antialiasing (torchvision's Resize on PIL images), computed only for the pixels the window needs."""
    frame_h, frame_w = frame.shape[:2]
    scale_y, scale_x = g.resized_h / frame_h, g.resized_w / frame_w
    if scale_y == 1.0 and scale_x == 1.0:  # no resize: the window itself
        return frame[g.top : g.top + g.out_h, g.left : g.left + g.out_w]
    if _AREA_FROM_SCALE <= min(scale_x, scale_y) < 1.0 and max(scale_x, scale_y) <= 1.0:
        resized = cv2.resize(frame, (g.resized_w, g.resized_h), interpolation=cv2.INTER_AREA)
        return resized[g.top : g.top + g.out_h, g.left : g.left + g.out_w]
    plan = _warp_plan(frame_h, frame_w, g)  # the same for every frame of a source: worked out once
    y0, y1, x0, x1 = plan.window
    region = frame[y0:y1, x0:x1]
    if plan.reduced is not None:
        region = cv2.resize(region, plan.reduced, interpolation=cv2.INTER_AREA)
    if plan.kernels is not None:
        region = cv2.sepFilter2D(region, -1, plan.kernels[1], plan.kernels[0], borderType=cv2.BORDER_REPLICATE)
    return cv2.warpAffine(region, plan.matrix, (g.out_w, g.out_h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


@dataclass(frozen=True)
class _WarpPlan:
    window: tuple[int, int, int, int]  # y0, y1, x0, x1: the source pixels the output needs
    reduced: tuple[int, int] | None  # (width, height) after the k x k box average, None: no box
    kernels: tuple[np.ndarray, np.ndarray] | None  # (vertical, horizontal) triangle taps, None: no blur
    matrix: np.ndarray  # the bilinear warp's inverse map


@lru_cache(maxsize=64)
def _warp_plan(frame_h: int, frame_w: int, g: Geometry) -> _WarpPlan:
    """How ``resample`` shrinks a frame of this size strongly (below a scale of 0.75) or grows it.

    Shrinking, PIL widens its triangle to 1/scale source pixels. Here: only the source rows and columns the
    window needs; when shrinking more than 8x, first an exact k x k box average (INTER_AREA at a whole factor,
    one pass over the pixels, so a 1080p frame to 32x32 costs no 70-tap filter); then a triangle blur of half
    width sqrt(1/scale^2 - 0.5) (PIL's width less part of what the bilinear taps and the box smooth
    themselves; 0.5 measured closest), and a bilinear warp at PIL's exact sample positions,
    (top + j + 0.5) / scale - 0.5 in source pixels."""
    scale_y, scale_x = g.resized_h / frame_h, g.resized_w / frame_w
    first_y = (g.top + 0.5) / scale_y - 0.5
    first_x = (g.left + 0.5) / scale_x - 0.5
    factors = [max(1, int(0.5 / s)) if s < 0.125 else 1 for s in (scale_y, scale_x)]
    reach = [math.ceil(1.0 / s) + 2 * k + 2 if s < 1.0 else 2 for s, k in zip((scale_y, scale_x), factors)]
    y0 = max(0, math.floor(first_y) - reach[0])
    y1 = min(frame_h, math.ceil(first_y + (g.out_h - 1) / scale_y) + reach[0] + 1)
    x0 = max(0, math.floor(first_x) - reach[1])
    x1 = min(frame_w, math.ceil(first_x + (g.out_w - 1) / scale_x) + reach[1] + 1)
    ky, kx = factors
    y1, x1 = y0 + max(1, (y1 - y0) // ky) * ky, x0 + max(1, (x1 - x0) // kx) * kx  # whole boxes
    y1, x1 = min(y1, frame_h), min(x1, frame_w)
    # box k: reduced pixel i is the mean of source pixels y0 + i k .. y0 + i k + k - 1
    reduced = ((x1 - x0) // kx, (y1 - y0) // ky) if ky > 1 or kx > 1 else None
    # in the (reduced) region's pixels: where the first sample lies, and the step between samples
    start_y, start_x = (first_y - y0 - (ky - 1) / 2) / ky, (first_x - x0 - (kx - 1) / 2) / kx
    step_y, step_x = 1.0 / (scale_y * ky), 1.0 / (scale_x * kx)
    # variances (in px^2 of the reduced region): PIL's triangle step^2 / 6 = ours (half^2 / 6) + the box's
    # (1 - 1/k^2) / 12 + about 1/12 of the bilinear taps (measured)
    half = [math.sqrt(max(0.0, step**2 - 0.5 - (1.0 - 1.0 / k**2) / 2)) if step > 1.0 else 0.0
            for step, k in ((step_y, ky), (step_x, kx))]
    kernels = None
    if half[0] > 1.0 or half[1] > 1.0:
        kernels = (_triangle(half[0]) if half[0] > 1.0 else np.ones(1, np.float32),
                   _triangle(half[1]) if half[1] > 1.0 else np.ones(1, np.float32))
        for kernel in kernels:
            kernel.flags.writeable = False  # shared by every frame that uses this plan
    matrix = np.array([[step_x, 0.0, start_x], [0.0, step_y, start_y]])
    matrix.flags.writeable = False
    return _WarpPlan((y0, y1, x0, x1), reduced, kernels, matrix)


def fit_frame(frame: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Any frame -> uint8 (H, W, 3) at the input size, in the model's colour order."""
    frame = as_bgr_uint8(frame)
    g = frame_geometry(frame.shape[:2], spec)
    region = resample(frame, g)
    in_h, in_w = spec.input_size
    if region.shape[:2] != (in_h, in_w):  # letterbox: the fitted frame inside a mean-coloured input
        mean_pixel = np.clip(np.round(np.asarray(spec.mean) * 255.0), 0, 255).astype(np.uint8)  # in color_order
        canvas = np.empty((in_h, in_w, 3), np.uint8)
        canvas[:] = mean_pixel[::-1] if spec.color_order == "RGB" else mean_pixel  # the frame is BGR until below
        canvas[g.pad_top : g.pad_top + g.out_h, g.pad_left : g.pad_left + g.out_w] = region
        region = canvas
    if spec.color_order == "RGB":
        region = cv2.cvtColor(region, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(region)


def normalize(batch: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """uint8 (N, H, W, 3) in model colour order -> float32 (N, 3, H, W) normalised input."""
    if batch.ndim == 3:
        batch = batch[None]
    nchw = batch.transpose(0, 3, 1, 2).astype(np.float32, order="C")  # contiguous: ORT would copy otherwise
    nchw *= spec._scale
    nchw += spec._bias
    return nchw


def check_preprocess_budget(spec: PreprocessSpec, batch: int, source: str = "model") -> None:
    """Refuse, before anything is allocated, a batch whose float32 input would go over the preprocessing
    budget (budgets.PREPROCESS_BUDGET_BYTES): metadata input_size 8192 at batch 8 would be 6.4 GB."""
    height, width = spec.input_size
    needed = int(batch) * 3 * int(height) * int(width) * 4
    if needed > PREPROCESS_BUDGET_BYTES:
        per_frame = 3 * int(height) * int(width) * 4
        hint = (f"; use a batch of at most {PREPROCESS_BUDGET_BYTES // per_frame}" if per_frame <= PREPROCESS_BUDGET_BYTES
                else "")
        raise FrameError(f"{source}: input size {height}x{width} at batch {batch} needs {needed / 2**20:,.0f} MiB to "
                         f"preprocess, over the budget of {PREPROCESS_BUDGET_BYTES / 2**20:,.0f} MiB{hint}")


def preprocess(frames: np.ndarray | Sequence[np.ndarray], spec: PreprocessSpec) -> np.ndarray:
    """One frame (H, W, C) or a list of frames -> model input float32 (N, 3, H, W)."""
    if isinstance(frames, np.ndarray):
        if frames.ndim in (2, 3):
            frames = [frames]
        elif frames.ndim != 4:
            raise FrameError(f"a frame must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got shape {frames.shape}")
    elif isinstance(frames, (str, bytes)) or not isinstance(frames, Sequence):
        frames = [frames]  # as_bgr_uint8 names what it is
    if len(frames) == 0:
        raise FrameError("no frames to preprocess")
    check_preprocess_budget(spec, len(frames), "preprocess")
    return normalize(np.stack([fit_frame(frame, spec) for frame in frames]), spec)
