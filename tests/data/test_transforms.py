"""Transforms: random resized crop (size, determinism, bounds, fallback), to_tensor, eval transform."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from openjepa.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RandomResizedCrop,
    TrainTransform,
    eval_transform,
    to_tensor,
)


def _random_image(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize(("w", "h"), [(64, 64), (100, 50), (37, 90)])
def test_random_resized_crop_output_size(w, h):
    crop = RandomResizedCrop(32)
    out = crop(_random_image(w, h), np.random.default_rng(0))
    assert out.size == (32, 32) and out.mode == "RGB"


def test_random_resized_crop_is_determined_by_the_rng():
    img, crop = _random_image(64, 64), RandomResizedCrop(48)
    a = crop(img, np.random.default_rng(7))
    b = crop(img, np.random.default_rng(7))
    c = crop(img, np.random.default_rng(8))
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()


def test_random_resized_crop_boxes_respect_scale_and_ratio():
    crop = RandomResizedCrop(32, scale=(0.3, 1.0), ratio=(3 / 4, 4 / 3))
    rng = np.random.default_rng(0)
    areas = []
    for _ in range(500):
        left, top, w, h = crop.get_params(80, 60, rng)
        assert left >= 0 and left + w <= 80 and top >= 0 and top + h <= 60
        areas.append(w * h / (80 * 60))
        # Rounding the sides to pixels moves the ratio a little beyond the sampled range.
        assert 0.7 <= w / h <= 1.4
    assert min(areas) >= 0.28 and max(areas) <= 1.0
    assert np.mean(areas) < 0.8  # not always the fallback


def test_random_resized_crop_falls_back_to_a_central_crop():
    # A 1000x10 strip: no crop with ratio <= 4/3 and area >= 90% exists; torchvision's fallback applies.
    crop = RandomResizedCrop(16, scale=(0.9, 1.0))
    assert crop.get_params(1000, 10, np.random.default_rng(0)) == (493, 0, 13, 10)
    assert crop.get_params(10, 1000, np.random.default_rng(0)) == (0, 493, 10, 13)


def test_random_resized_crop_rejects_bad_arguments():
    with pytest.raises(ValueError, match="scale"):
        RandomResizedCrop(32, scale=(0.5, 0.2))
    with pytest.raises(ValueError, match="ratio"):
        RandomResizedCrop(32, ratio=(0, 1))


def test_to_tensor_normalizes_each_channel():
    values = (10, 128, 250)
    img = Image.new("RGB", (5, 3), values)
    x = to_tensor(img)
    assert x.shape == (3, 3, 5) and x.dtype == torch.float32
    for c in range(3):
        expected = (values[c] / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        assert torch.allclose(x[c], torch.full((3, 5), expected), atol=1e-5)
    # Layout: pixel (row 1, col 4) lands at [:, 1, 4].
    pixels = np.zeros((3, 5, 3), dtype=np.uint8)
    pixels[1, 4] = (255, 0, 51)
    y = to_tensor(Image.fromarray(pixels), mean=(0, 0, 0), std=(1, 1, 1))
    assert y[:, 1, 4].tolist() == pytest.approx([1.0, 0.0, 0.2])
    assert y.sum().item() == pytest.approx(1.2)


def test_eval_transform_resizes_and_center_crops():
    out = eval_transform(64)(_random_image(120, 80))
    assert out.shape == (3, 64, 64)
    native = _random_image(64, 64, seed=3)
    assert torch.equal(eval_transform(64)(native), to_tensor(native))  # native size: only normalization


def test_train_transform_combines_crop_and_normalize():
    img = _random_image(64, 64)
    t = TrainTransform(32, scale=(0.5, 1.0))
    x = t(img, np.random.default_rng(1))
    assert x.shape == (3, 32, 32)
    assert torch.equal(x, t(img, np.random.default_rng(1)))
