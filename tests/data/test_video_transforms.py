"""Clip transforms: one crop box and one flip for every frame, normalization values, multi-clip eval."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from openjepa.data.transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform, RandomResizedCrop
from openjepa.data.video_transforms import VideoEvalTransform, VideoRandomResizedCrop

MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)


def clip_with_offsets(t: int = 6, h: int = 40, w: int = 56, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Frames = one random image + a per-frame constant: any shared crop/resize keeps the offsets flat."""
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 200, (h, w, 3))
    offsets = rng.integers(-40, 40, t)
    return (base[None] + offsets[:, None, None, None]).astype(np.uint8), offsets


def unnormalize(x: torch.Tensor) -> torch.Tensor:
    """[3, T, S, S] normalized -> pixel values 0..255."""
    return (x * STD + MEAN) * 255.0


def test_one_crop_box_for_every_frame():
    frames, offsets = clip_with_offsets()
    transform = VideoRandomResizedCrop(24, interpolation="bilinear")  # bilinear: no overshoot clamping
    for seed in range(5):
        out = transform(frames, np.random.default_rng(seed))
        assert out.shape == (3, 6, 24, 24) and out.dtype == torch.float32
        pixels = unnormalize(out)
        # Same box for all frames: frame t minus frame 0 is the constant offset difference everywhere (up
        # to the uint8 resize kernel's fixed-point rounding: a level, on a few pixels).
        want = torch.tensor(offsets - offsets[0], dtype=torch.float32).view(1, -1, 1, 1)
        error = (pixels - pixels[:, :1] - want).abs()
        assert error.max() <= 1.0 + 1e-3 and (error > 1e-3).float().mean() < 0.005


def test_crop_box_follows_the_image_crop_and_flip_is_one_extra_draw():
    frames, _ = clip_with_offsets(t=3, h=48, w=64)
    flips = VideoRandomResizedCrop(16, scale=(0.3, 1.0), ratio=(0.75, 1.35))
    plain = VideoRandomResizedCrop(16, scale=(0.3, 1.0), ratio=(0.75, 1.35), hflip=False)
    image_crop = RandomResizedCrop(16, (0.3, 1.0), (0.75, 1.35))
    flipped_seen = set()
    for seed in range(12):
        box = image_crop.get_params(64, 48, np.random.default_rng(seed))
        params = flips.get_params(64, 48, np.random.default_rng(seed))
        assert params[:4] == box
        a = flips(frames, np.random.default_rng(seed))
        b = plain(frames, np.random.default_rng(seed))
        flipped_seen.add(params[4])
        assert torch.equal(a, b.flip(-1) if params[4] else b)
    assert flipped_seen == {True, False}


def test_normalization_values_and_determinism():
    frames = np.full((4, 30, 30, 3), (255, 128, 0), dtype=np.uint8)
    out = VideoRandomResizedCrop(8)(frames, np.random.default_rng(0))
    want = (torch.tensor([255.0, 128.0, 0.0]) / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(out, want.view(3, 1, 1, 1).expand_as(out), atol=1e-5)
    clip, _ = clip_with_offsets(seed=3)
    transform = VideoRandomResizedCrop(20)
    assert torch.equal(transform(clip, np.random.default_rng(9)), transform(clip, np.random.default_rng(9)))
    assert not torch.equal(transform(clip, np.random.default_rng(9)), transform(clip, np.random.default_rng(10)))


def test_eval_transform_single_and_multi_clip():
    rng = np.random.default_rng(1)
    clips = rng.integers(0, 256, (3, 4, 36, 52, 3), dtype=np.uint8)
    transform = VideoEvalTransform(24)
    multi = transform(clips)
    assert multi.shape == (3, 3, 4, 24, 24)
    for k in range(3):
        assert torch.allclose(multi[k], transform(clips[k]), atol=1e-6)
    # Resize shorter side + centre crop, like the image EvalTransform (PIL bicubic and torch's antialiased
    # uint8 bicubic agree to a level on a few pixels).
    image = EvalTransform(24)(Image.fromarray(clips[0, 2]))
    assert image.shape == (3, 24, 24)
    assert (multi[0, :, 2] - image).abs().mean() < 0.005
    # Frames already at the size are only normalized.
    square = rng.integers(0, 256, (2, 24, 24, 3), dtype=np.uint8)
    pixels = unnormalize(transform(square))
    assert torch.allclose(pixels, torch.from_numpy(square).permute(3, 0, 1, 2).float(), atol=1e-3)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="uint8 CPU frames"):
        VideoRandomResizedCrop(8)(np.zeros((4, 8, 8, 3), dtype=np.float32), np.random.default_rng(0))
    with pytest.raises(ValueError, match="one clip"):
        VideoRandomResizedCrop(8)(np.zeros((2, 4, 8, 8, 3), dtype=np.uint8), np.random.default_rng(0))
    with pytest.raises(ValueError, match="interpolation"):
        VideoEvalTransform(8, interpolation="nearest")
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        VideoEvalTransform(8)(np.zeros((8, 8, 3), dtype=np.uint8))
