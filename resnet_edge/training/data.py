"""Training data: an image folder decoded once into memory, a seeded per-class split, batch augmentation.

Small images (CIFAR's 32x32) fit in memory as uint8: 45,000 x 32 x 32 x 3 = 138 MB. Decoding goes
through the runtime's own ``fit_frame`` so training sees exactly the pixels inference will see.
Augmentation (random crop with zero padding, horizontal flip) is drawn per image, on whole batches,
with one gather: no per-image Python loop in the training step.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..errors import UserError
from ..images import ImageError, ImageFolder, read_image
from ..preprocess import PreprocessSpec, fit_frame


@dataclass
class InMemorySplit:
    images: torch.Tensor  # uint8 (N, H, W, 3) in the model's colour order
    labels: torch.Tensor  # int64 (N,)
    files: list[str]  # source file of each row, relative to the folder root

    def __len__(self) -> int:
        return len(self.labels)


def split_per_class(labels: list[int], holdout: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, val): a seeded share of every class held out. ``holdout`` >= 1 is a count per
    class (500 -> 500 images of each class), < 1 a fraction of each class."""
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    train, val = [], []
    for label, members in sorted(by_class.items()):
        count = int(holdout) if holdout >= 1 else int(round(len(members) * holdout))
        if count >= len(members):
            raise UserError(f"class {label} has {len(members)} images; cannot hold out {count} for validation")
        chosen = set(rng.choice(len(members), size=count, replace=False).tolist())
        for position, index in enumerate(members):
            (val if position in chosen else train).append(index)
    return sorted(train), sorted(val)


def load_split(
    folder: ImageFolder, indices: list[int], spec: PreprocessSpec, desc: str, show_progress: bool = True
) -> tuple[InMemorySplit, int]:
    """Decode the chosen samples into memory. Unreadable images are skipped and counted."""
    height, width = spec.input_size
    images = np.empty((len(indices), height, width, 3), dtype=np.uint8)
    labels, files, skipped, kept = [], [], 0, 0
    for index in tqdm(indices, desc=desc, unit="img", disable=not show_progress, file=sys.stderr, leave=False):
        path, label = folder.samples[index]
        try:
            images[kept] = fit_frame(read_image(path), spec)
        except ImageError as error:
            skipped += 1
            print(f"warning: skipping {error}", file=sys.stderr)
            continue
        labels.append(label)
        files.append(str(Path(path).relative_to(folder.root)))
        kept += 1
    split = InMemorySplit(torch.from_numpy(images[:kept]), torch.tensor(labels, dtype=torch.int64), files)
    return split, skipped


def augment_batch(images: torch.Tensor, padding: int, generator: torch.Generator, cutout: int = 0,
                  fill: tuple[int, int, int] = (0, 0, 0)) -> torch.Tensor:
    """Per-image random crop (zero padding) and horizontal flip of uint8 (B, H, W, 3), one gather; then, with
    ``cutout`` > 0, a cutout x cutout square per image set to ``fill`` (DeVries & Taylor 2017: its centre is
    anywhere in the image, so the square may be cut off at the border)."""
    batch, height, width, _ = images.shape
    padded = torch.nn.functional.pad(images, (0, 0, padding, padding, padding, padding))  # (B, H+2p, W+2p, 3)
    dy = torch.randint(0, 2 * padding + 1, (batch, 1), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (batch, 1), generator=generator)
    flip = torch.rand(batch, 1, generator=generator) < 0.5
    rows = dy + torch.arange(height)  # (B, H)
    cols_forward = torch.arange(width)
    cols = dx + torch.where(flip, cols_forward.flip(0), cols_forward)  # (B, W), reversed where flipped
    batch_index = torch.arange(batch)[:, None, None]
    out = padded[batch_index, rows[:, :, None], cols[:, None, :]]  # (B, H, W, 3)
    if cutout > 0:  # drawn only when asked, so runs without it keep their random stream
        cy = torch.randint(0, height, (batch, 1), generator=generator)
        cx = torch.randint(0, width, (batch, 1), generator=generator)
        top, left = cy - cutout // 2, cx - cutout // 2  # may be negative: the square is clipped by the border
        inside_rows = (torch.arange(height) >= top) & (torch.arange(height) < top + cutout)  # (B, H)
        inside_cols = (torch.arange(width) >= left) & (torch.arange(width) < left + cutout)  # (B, W)
        square = inside_rows[:, :, None] & inside_cols[:, None, :]  # (B, H, W)
        out[square] = torch.tensor(fill, dtype=out.dtype)
    return out


def to_input(images: torch.Tensor, spec: PreprocessSpec, device: torch.device) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> normalised float (B, 3, H, W) in channels_last memory, on ``device``.

    The same arithmetic as ``preprocess.normalize`` (x * scale + bias), done in torch on the device."""
    scale = torch.as_tensor(spec._scale, device=device)
    bias = torch.as_tensor(spec._bias, device=device)
    x = images.to(device, non_blocking=True).permute(0, 3, 1, 2).float()  # NHWC storage = channels_last
    return (x * scale + bias).contiguous(memory_format=torch.channels_last)
