"""Image transforms on PIL images and numpy generators (no torchvision).

Random transforms take the random generator as an argument: the caller (the loader) derives it from the
run seed and the sample, so augmentations are the same whatever the number of loader workers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


class RandomResizedCrop:
    """Crop a random area and aspect ratio, then resize it to ``size`` x ``size`` (bicubic).

    Same sampling as torchvision's ``RandomResizedCrop``: up to 10 tries of an area fraction uniform in
    ``scale`` and an aspect ratio log-uniform in ``ratio``; if none fits, a central crop with the aspect
    ratio clamped into ``ratio``. I-JEPA uses ``scale=(0.3, 1.0)``.

    Args:
        size: output side in pixels.
        scale: range of the crop area as a fraction of the image area.
        ratio: range of the crop aspect ratio (width / height).
    """

    def __init__(
        self,
        size: int,
        scale: tuple[float, float] = (0.3, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
    ):
        if size < 1:
            raise ValueError(f"RandomResizedCrop size={size} must be >= 1")
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"RandomResizedCrop scale={scale}: need 0 < low <= high <= 1")
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"RandomResizedCrop ratio={ratio}: need 0 < low <= high")
        self.size = int(size)
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))

    def get_params(self, width: int, height: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """The crop box ``(left, top, crop_width, crop_height)`` for an image of the given size."""
        area = width * height
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target_area = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            w = round(math.sqrt(target_area * aspect))
            h = round(math.sqrt(target_area / aspect))
            if 0 < w <= width and 0 < h <= height:
                top = int(rng.integers(0, height - h + 1))
                left = int(rng.integers(0, width - w + 1))
                return left, top, w, h
        # Fallback: the largest central crop whose aspect ratio lies in range.
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, round(width / self.ratio[0])
        elif in_ratio > self.ratio[1]:
            w, h = round(height * self.ratio[1]), height
        else:
            w, h = width, height
        return (width - w) // 2, (height - h) // 2, w, h

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        """Returns the random crop of ``img`` resized to ``size`` x ``size``."""
        left, top, w, h = self.get_params(img.width, img.height, rng)
        # ``box`` lets PIL resample straight from the crop region, with no intermediate copy.
        box = (left, top, left + w, top + h)
        return img.resize((self.size, self.size), Image.Resampling.BICUBIC, box=box)

    def __repr__(self) -> str:
        return f"RandomResizedCrop(size={self.size}, scale={self.scale}, ratio={self.ratio})"


def to_tensor(
    img: Image.Image, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> torch.Tensor:
    """A PIL image as a normalized float tensor.

    Args:
        img: image (converted to RGB if needed).
        mean: per-channel mean on the [0, 1] scale.
        std: per-channel standard deviation on the [0, 1] scale.

    Returns:
        float32 [3, H, W] holding ``(pixel / 255 - mean) / std``.
    """
    if img.mode != "RGB":
        img = img.convert("RGB")
    x = torch.from_numpy(np.asarray(img, dtype=np.float32).copy())  # copy: PIL buffers are read-only
    m = torch.tensor(mean, dtype=torch.float32) * 255.0
    s = torch.tensor(std, dtype=torch.float32) * 255.0
    return ((x - m) / s).permute(2, 0, 1).contiguous()


def resize_shorter(img: Image.Image, size: int) -> Image.Image:
    """Resize (bicubic) so that the shorter side is ``size``; no-op when it already is."""
    w, h = img.size
    if min(w, h) == size:
        return img
    new = (size, max(1, round(h * size / w))) if w <= h else (max(1, round(w * size / h)), size)
    return img.resize(new, Image.Resampling.BICUBIC)


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """The central ``size`` x ``size`` crop (the image must be at least that large)."""
    w, h = img.size
    if (w, h) == (size, size):
        return img
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


class EvalTransform:
    """Resize the shorter side to ``size``, take the central square, normalize.

    A class rather than a closure so that it pickles into loader worker processes.

    Args:
        size: output side in pixels.
        mean: per-channel mean for :func:`to_tensor`.
        std: per-channel standard deviation for :func:`to_tensor`.
    """

    def __init__(self, size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.size = int(size)
        self.mean = tuple(mean)
        self.std = tuple(std)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        """Returns the normalized float32 [3, size, size] tensor."""
        return to_tensor(center_crop(resize_shorter(img, self.size), self.size), self.mean, self.std)

    def __repr__(self) -> str:
        return f"EvalTransform(size={self.size})"


def eval_transform(size: int) -> EvalTransform:
    """The evaluation transform: resize shorter side, center crop, normalize (see :class:`EvalTransform`).

    For scenes generated at ``size`` this is only the normalization.
    """
    return EvalTransform(size)


class TrainTransform:
    """Random resized crop, optional horizontal flip, then normalize: the I-JEPA pretraining augmentation.

    Args:
        size: output side in pixels.
        scale: crop area range (``data.crop_scale``).
        ratio: crop aspect-ratio range (``data.crop_aspect``).
        hflip: flip horizontally with probability 1/2 (``data.hflip``); drawn after the crop, so turning
            it on does not change which crops are drawn.
    """

    def __init__(
        self,
        size: int,
        scale: tuple[float, float] = (0.3, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: bool = False,
    ):
        self.crop = RandomResizedCrop(size, scale, ratio)
        self.hflip = hflip

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> torch.Tensor:
        """Returns the normalized float32 [3, size, size] crop."""
        out = self.crop(img, rng)
        if self.hflip and rng.random() < 0.5:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return to_tensor(out)

    def __repr__(self) -> str:
        return f"TrainTransform({self.crop!r}, hflip={self.hflip})"
