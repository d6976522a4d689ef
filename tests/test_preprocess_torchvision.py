"""The one preprocessing path against torchvision's evaluation transform on PIL images (Resize(256 or 232),
bilinear with antialiasing, then CenterCrop(224)), and the region of the frame each resize policy shows."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from resnet_edge.errors import UserError
from resnet_edge.preprocess import IMAGENET_MEAN, PreprocessSpec, fit_frame, visible_region

Image = pytest.importorskip("PIL.Image")

from resnet_edge.synthetic import photo_like  # noqa: E402

# photo sizes (width x height) of many aspect ratios, shrinking strongly, mildly, not at all, and growing
SIZES = [(640, 480), (1920, 1080), (300, 500), (257, 257), (1000, 200), (224, 224), (100, 150), (1280, 720),
         (4000, 3000), (400, 300), (512, 384), (350, 350), (480, 270), (600, 800), (290, 290), (233, 350)]


def torchvision_reference(bgr: np.ndarray, resize_size: int, crop: int = 224) -> np.ndarray:
    """torchvision's Resize(resize_size) + CenterCrop(crop) on a PIL image, written out with PIL: the shorter
    side to resize_size, the longer to int(resize_size * long / short), PIL's bilinear (antialiased when
    shrinking), then the crop at int(round((size - crop) / 2.0)). RGB uint8."""
    height, width = bgr.shape[:2]
    if height <= width:
        new_h, new_w = resize_size, int(resize_size * width / height)
    else:
        new_h, new_w = int(resize_size * height / width), resize_size
    resized = np.asarray(Image.fromarray(bgr[:, :, ::-1].copy()).resize((new_w, new_h), Image.BILINEAR))
    top, left = int(round((new_h - crop) / 2.0)), int(round((new_w - crop) / 2.0))
    return resized[top : top + crop, left : left + crop]


@pytest.mark.parametrize("resize_size", [256, 232], ids=["v1-256", "v2-232"])
@pytest.mark.parametrize("width,height", SIZES)
def test_center_crop_matches_torchvision_within_one_level(width, height, resize_size):
    spec = PreprocessSpec((224, 224), resize_size=resize_size)
    image = photo_like(height, width, seed=width * 7 + height)
    ours = fit_frame(image, spec).astype(np.float32)
    reference = torchvision_reference(image, resize_size).astype(np.float32)
    difference = np.abs(ours - reference)
    assert difference.mean() <= 1.0, f"{width}x{height}: mean |diff| {difference.mean():.3f} / 255"
    # the geometry is the same: no shift, so no edge moves by a pixel (a shifted crop differs by tens of levels
    # along every edge of the shapes)
    assert np.percentile(difference, 99) <= 24


def test_the_old_crop_first_path_would_fail_the_same_test():
    """The check can fail: a 0.875 square cut first and then shrunk with INTER_AREA (the old path) is off."""
    image = photo_like(480, 640, seed=1)
    side = round(224 / 0.875 * 480 / 256 * 0.875 * 256 / 224)  # 420: the old crop of a 480-high frame
    old = cv2.resize(image[30 : 30 + side, 110 : 110 + side], (224, 224), interpolation=cv2.INTER_AREA)[:, :, ::-1]
    reference = torchvision_reference(image, 256).astype(np.float32)
    assert np.abs(old.astype(np.float32) - reference).mean() > 2.0


def test_a_ratio_only_spec_is_torchvision_s_v1_geometry():
    """Models exported before resize_size existed (crop_ratio 0.875 at 224) get Resize(256) + CenterCrop(224)."""
    image = photo_like(480, 640, seed=3)
    by_ratio = fit_frame(image, PreprocessSpec((224, 224), crop_ratio=0.875))
    assert np.array_equal(by_ratio, fit_frame(image, PreprocessSpec((224, 224), resize_size=256)))


def test_visible_region_of_each_policy():
    center = PreprocessSpec((224, 224), resize_size=256)
    # 640x480 -> 341x256, crop 224 at (58, 16): 58 * 640 / 341 = 108.86, 16 * 480 / 256 = 30
    x, y, w, h = visible_region(center, 480, 640)
    assert (x, y) == pytest.approx((58 * 640 / 341, 30.0)) and (w, h) == pytest.approx((224 * 640 / 341, 420.0))
    v2 = PreprocessSpec((224, 224), resize_size=232)
    assert visible_region(v2, 1000, 1000) == pytest.approx((4 * 1000 / 232,) * 2 + (224 * 1000 / 232,) * 2)
    assert visible_region(PreprocessSpec((32, 32), resize_policy="stretch"), 480, 640) == (0.0, 0.0, 640.0, 480.0)
    assert visible_region(PreprocessSpec((224, 224), resize_policy="letterbox"), 480, 640) == (0.0, 0.0, 640.0, 480.0)
    # a tall frame under center_crop: 200 wide -> 256, the middle 224 columns (12.5 + 175 + 12.5), the middle rows
    x, y, w, h = visible_region(center, 1000, 200)
    assert x == 12.5 and w == pytest.approx(175.0) and y + h / 2 == pytest.approx(500.0, abs=3)


def test_visible_region_is_what_the_model_sees():
    """Paint the frame outside the visible region red: the center-crop input has no red in it."""
    spec = PreprocessSpec((224, 224), resize_size=256)
    frame = np.full((720, 1280, 3), (0, 200, 0), np.uint8)  # green inside
    x, y, w, h = visible_region(spec, 720, 1280)
    margin = 16 * 1280 / 341  # the antialias filter reaches up to ~2.5 source pixels past the edge
    left, right = int(np.floor(x - margin)), int(np.ceil(x + w + margin))
    frame[:, :left] = frame[:, right:] = (0, 0, 255)
    fitted = fit_frame(frame, spec)  # RGB
    assert fitted[:, :, 0].max() == 0  # no red reached the input
    frame[:, left + int(margin) + 8 : left + int(margin) + 9] = (0, 0, 255)  # a red line just inside: it shows
    assert fit_frame(frame, spec)[:, :, 0].max() > 50


def test_letterbox_fits_the_whole_frame_and_pads_with_the_mean():
    spec = PreprocessSpec((224, 224), resize_policy="letterbox")
    frame = np.full((480, 640, 3), 255, np.uint8)
    fitted = fit_frame(frame, spec)  # 640x480 -> 224x168, 28 rows of padding above and below
    mean = np.round(np.asarray(IMAGENET_MEAN) * 255).astype(np.uint8)
    assert fitted.shape == (224, 224, 3)
    assert np.all(fitted[:28] == mean) and np.all(fitted[-28:] == mean)
    assert np.all(fitted[28:196] == 255)
    tall = fit_frame(np.zeros((300, 100, 3), np.uint8), spec)  # 75 wide, padded left and right
    assert np.all(tall[:, 74:149] == 0) and np.all(tall[:, :74] == mean)


def test_resize_size_smaller_than_the_crop_is_refused():
    with pytest.raises(UserError, match="resize size must be a whole number from the input side"):
        PreprocessSpec((224, 224), resize_size=200)
