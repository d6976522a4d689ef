"""The one preprocessing path: a BGR uint8 frame of any size -> the model's NCHW float32 input.

Training, calibration, evaluation, the CLI and the GUI all come through here, so a model sees the same
pixels wherever it runs. Two steps, split so training can augment in between:

1. ``fit_frame``: colour conversion and geometry. Any frame (grey, BGR, BGRA) -> uint8 (H, W, 3) at the
   model's input size in the model's colour order. Policy ``center_crop``: scale the shorter side to
   ``input / crop_ratio`` and cut the centre (torchvision's Resize(256) + CenterCrop(224) is ratio
   0.875); ``stretch``: resize to the input size ignoring aspect ratio.
2. ``normalize``: uint8 (N, H, W, 3) -> float32 (N, 3, H, W), (x / 255 - mean) / std.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Sequence

import cv2
import numpy as np

from .errors import UserError

RESIZE_POLICIES = ("center_crop", "stretch")
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


def crop_box(frame_hw: tuple[int, int], spec: PreprocessSpec) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the region of a frame that the model sees (center_crop policy)."""
    frame_h, frame_w = frame_hw
    in_h, in_w = spec.input_size
    if spec.resize_policy == "stretch":
        return 0, 0, frame_h, frame_w
    # region of the frame, in frame pixels, that maps onto the input after resize + crop
    scale = min(frame_h / in_h, frame_w / in_w) * spec.crop_ratio
    crop_h = max(1, min(frame_h, round(in_h * scale)))
    crop_w = max(1, min(frame_w, round(in_w * scale)))
    return (frame_h - crop_h) // 2, (frame_w - crop_w) // 2, crop_h, crop_w


def fit_frame(frame: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Any frame -> uint8 (H, W, 3) at the input size, in the model's colour order."""
    frame = as_bgr_uint8(frame)
    top, left, crop_h, crop_w = crop_box(frame.shape[:2], spec)
    region = frame[top : top + crop_h, left : left + crop_w]
    in_h, in_w = spec.input_size
    if region.shape[:2] != (in_h, in_w):
        shrinking = crop_h > in_h or crop_w > in_w
        # INTER_AREA averages the pixels it drops (no aliasing from 640x480 down to 32x32)
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        region = cv2.resize(region, (in_w, in_h), interpolation=interpolation)
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
    from .budgets import PREPROCESS_BUDGET_BYTES

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
