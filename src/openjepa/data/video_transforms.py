"""Clip transforms: ``uint8 [T, H, W, 3]`` frames in, normalized ``float32 [3, T, S, S]`` tensors out.

Every frame of a clip gets the same crop box and the same flip decision: a per-frame crop would make
the content jump between frames, which is motion the model would then have to predict. All frames are
resized in one ``F.interpolate`` call, in uint8 and antialiased (like PIL's resize when shrinking).

Random transforms take the generator as an argument, as in :mod:`openjepa.data.transforms`: the loader
derives it from (seed, step, slot), so clips are the same whatever the number of loader workers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from openjepa.data.transforms import IMAGENET_MEAN, IMAGENET_STD, RandomResizedCrop

__all__ = ["VideoEvalTransform", "VideoRandomResizedCrop"]

_MODES = ("bilinear", "bicubic")


def _check_frames(frames: np.ndarray | torch.Tensor, what: str) -> torch.Tensor:
    """The frames as a uint8 CPU tensor ``[..., T, H, W, 3]`` (no copy for contiguous numpy input)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if x.dtype != torch.uint8 or x.ndim < 4 or x.shape[-1] != 3 or x.device.type != "cpu":
        raise ValueError(
            f"{what} expects uint8 CPU frames [T, H, W, 3] (or [clips, T, H, W, 3]), got {x.dtype} "
            f"{tuple(x.shape)} on {x.device}"
        )
    return x


def _resize(frames: torch.Tensor, height: int, width: int, mode: str) -> torch.Tensor:
    """Resizes uint8 ``[N, h, w, 3]`` frames to uint8 ``[N, 3, height, width]`` (channels-last memory).

    Stays in uint8: PyTorch's antialiased uint8 kernels for channels-last input are about 10x faster on
    the CPU than the float ones, and round to the nearest level and clip as PIL does (so bicubic cannot
    overshoot). Antialiasing matters when shrinking; enlarging is plain interpolation.
    """
    nchw = frames.permute(0, 3, 1, 2)  # the NHWC memory seen as channels-last NCHW: no copy
    if tuple(frames.shape[1:3]) == (height, width):
        return nchw
    # A crop of a larger frame is not dense; the fast kernels want dense channels-last input.
    nchw = nchw.contiguous(memory_format=torch.channels_last)
    return F.interpolate(nchw, size=(height, width), mode=mode, align_corners=False, antialias=True)


def _to_normalized(
    frames: torch.Tensor, clips: int | None, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """uint8 ``[clips * T, 3, S, S]`` -> normalized float32 ``[3, T, S, S]`` (``clips`` None) or
    ``[clips, 3, T, S, S]``: ``(pixel / 255 - mean) / std``.

    Reordering the axes, converting to float and normalizing happen in one pass over the pixels.
    """
    grouped = frames.unflatten(0, (clips or 1, -1)).permute(0, 2, 1, 3, 4)  # [clips, 3, T, S, S] view
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=torch.float32).view(3, 1, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(mean, std)], dtype=torch.float32).view(3, 1, 1, 1)
    out = torch.empty(grouped.shape, dtype=torch.float32)
    torch.addcmul(shift, grouped, scale, out=out)  # shift + pixel * scale: one pass, uint8 read directly
    return out[0] if clips is None else out


class VideoRandomResizedCrop:
    """One random resized crop (and optional flip) for all frames of a clip, then normalize.

    The crop box is drawn by :meth:`RandomResizedCrop.get_params` (area fraction uniform in ``scale``,
    aspect ratio log-uniform in ``ratio``, the torchvision sampling); then, when ``hflip``, one uniform
    draw decides the flip. SALT and V-JEPA use ``scale=(0.3, 1.0)``, ``ratio=(0.75, 1.35)``.

    Args:
        size: output side in pixels.
        scale: range of the crop area as a fraction of the frame area.
        ratio: range of the crop aspect ratio (width / height).
        hflip: flip the whole clip horizontally with probability 1/2 (``data.hflip``).
        interpolation: ``"bicubic"`` (default, as the image transforms) or ``"bilinear"``.
        mean: per-channel mean on the [0, 1] scale.
        std: per-channel standard deviation on the [0, 1] scale.
    """

    def __init__(
        self,
        size: int,
        scale: tuple[float, float] = (0.3, 1.0),
        ratio: tuple[float, float] = (0.75, 1.35),
        hflip: bool = True,
        interpolation: str = "bicubic",
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ):
        if interpolation not in _MODES:
            raise ValueError(f"interpolation={interpolation!r}: choose one of {', '.join(_MODES)}")
        self.crop = RandomResizedCrop(size, scale, ratio)
        self.size = self.crop.size
        self.hflip = bool(hflip)
        self.interpolation = interpolation
        self.mean, self.std = tuple(mean), tuple(std)

    def get_params(self, width: int, height: int, rng: np.random.Generator) -> tuple[int, int, int, int, bool]:
        """``(left, top, crop_width, crop_height, flip)`` for frames of the given size."""
        left, top, w, h = self.crop.get_params(width, height, rng)
        flip = bool(rng.random() < 0.5) if self.hflip else False
        return left, top, w, h, flip

    def __call__(self, frames: np.ndarray | torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """Returns the normalized float32 ``[3, T, size, size]`` crop of uint8 ``[T, H, W, 3]`` frames."""
        x = _check_frames(frames, "VideoRandomResizedCrop")
        if x.ndim != 4:
            raise ValueError(f"VideoRandomResizedCrop expects one clip [T, H, W, 3], got {tuple(x.shape)}")
        height, width = x.shape[1:3]
        left, top, w, h, flip = self.get_params(width, height, rng)
        out = _resize(x[:, top : top + h, left : left + w], self.size, self.size, self.interpolation)
        if flip:
            out = out.flip(-1)
        return _to_normalized(out, None, self.mean, self.std)

    def __repr__(self) -> str:
        return (
            f"VideoRandomResizedCrop(size={self.size}, scale={self.crop.scale}, ratio={self.crop.ratio}, "
            f"hflip={self.hflip}, interpolation={self.interpolation!r})"
        )


class VideoEvalTransform:
    """Resize the shorter side to ``size``, take the central square, normalize: for one clip or several.

    Accepts uint8 ``[T, H, W, 3]`` (returns ``[3, T, size, size]``) or ``[num_clips, T, H, W, 3]``
    (returns ``[num_clips, 3, T, size, size]``). Frames already ``size`` x ``size`` are only normalized.

    Args:
        size: output side in pixels.
        interpolation: ``"bicubic"`` (default) or ``"bilinear"``.
        mean: per-channel mean on the [0, 1] scale.
        std: per-channel standard deviation on the [0, 1] scale.
    """

    def __init__(
        self,
        size: int,
        interpolation: str = "bicubic",
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ):
        if size < 1:
            raise ValueError(f"VideoEvalTransform size={size} must be >= 1")
        if interpolation not in _MODES:
            raise ValueError(f"interpolation={interpolation!r}: choose one of {', '.join(_MODES)}")
        self.size = int(size)
        self.interpolation = interpolation
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Returns normalized float32 ``[3, T, S, S]`` or ``[num_clips, 3, T, S, S]``."""
        x = _check_frames(frames, "VideoEvalTransform")
        if x.ndim not in (4, 5):
            raise ValueError(f"VideoEvalTransform expects [T, H, W, 3] or [clips, T, H, W, 3], got {tuple(x.shape)}")
        clips = x.shape[0] if x.ndim == 5 else None
        height, width = x.shape[-3:-1]
        # The rounding of the image EvalTransform's resize_shorter, so one frame gets the same size.
        if width <= height:
            new_w, new_h = self.size, max(1, round(height * self.size / width))
        else:
            new_w, new_h = max(1, round(width * self.size / height)), self.size
        out = _resize(x.reshape(-1, height, width, 3), new_h, new_w, self.interpolation)
        top, left = (new_h - self.size) // 2, (new_w - self.size) // 2
        out = out[:, :, top : top + self.size, left : left + self.size]
        return _to_normalized(out, clips, self.mean, self.std)

    def __repr__(self) -> str:
        return f"VideoEvalTransform(size={self.size}, interpolation={self.interpolation!r})"
