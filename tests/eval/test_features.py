"""Feature extraction: shapes, pooling, labels, determinism, the encoder left as it was found; video clips;
unreadable items; the on-disk cache."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from openjepa.data.scenes import SEG_CLASSES, ScenesDataset, patch_labels
from openjepa.data.transforms import eval_transform
from openjepa.errors import CorruptFileError, DataError
from openjepa.eval.cache import FeatureCache, extract_cached
from openjepa.eval.features import extract_features
from openjepa.models.vit import VisionTransformer, build_vit

IMAGE_SIZE, PATCH = 32, 8


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny models: extra OpenMP threads only add contention on a shared CPU.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def encoder() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_vit("vit_pico", img_size=IMAGE_SIZE, patch_size=PATCH)


@pytest.fixture(scope="module")
def dataset() -> ScenesDataset:
    return ScenesDataset("val", size=10, image_size=IMAGE_SIZE, max_objects=3, seed=0)


@pytest.fixture(scope="module")
def feats(encoder, dataset) -> dict:
    return extract_features(encoder, dataset, batch_size=4, device="cpu", progress=False)


def test_shapes_and_dtypes(feats, dataset, encoder):
    n, grid = len(dataset), (IMAGE_SIZE // PATCH) ** 2
    assert feats["pooled"].shape == (n, encoder.embed_dim) and feats["pooled"].dtype == torch.float32
    assert feats["patches"].shape == (n, grid, encoder.embed_dim) and feats["patches"].dtype == torch.float16
    assert feats["patch_labels"].shape == (n, grid) and feats["patch_labels"].dtype == torch.long
    assert feats["index"].tolist() == list(range(n))
    assert set(feats["labels"]) == set(dataset.tasks)


def test_pooled_is_the_mean_of_the_encoder_patch_tokens(feats, dataset, encoder):
    transform = eval_transform(IMAGE_SIZE)
    images = torch.stack([transform(dataset[i]["image"]) for i in range(len(dataset))])
    with torch.no_grad():
        tokens = encoder.eval()(images)
    torch.testing.assert_close(feats["pooled"], tokens.mean(1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(feats["patches"].float(), tokens, rtol=1e-2, atol=1e-2)
    # Same statement on the returned tensors alone (up to float16 rounding of the patches).
    torch.testing.assert_close(feats["patches"].float().mean(1), feats["pooled"], rtol=1e-2, atol=2e-3)


def test_labels_come_from_the_dataset(feats, dataset):
    for i in range(len(dataset)):
        item = dataset[i]
        for task, value in item["labels"].items():
            assert feats["labels"][task][i] == value
        expected = patch_labels(item["seg"], PATCH).reshape(-1)
        assert feats["patch_labels"][i].tolist() == expected.tolist()
    assert int(feats["patch_labels"].max()) < SEG_CLASSES


def test_deterministic_and_independent_of_batch_size_and_workers(feats, encoder, dataset):
    again = extract_features(encoder, dataset, batch_size=4, device="cpu", progress=False)
    assert torch.equal(again["pooled"], feats["pooled"])
    assert torch.equal(again["patches"], feats["patches"])
    other = extract_features(encoder, dataset, batch_size=3, device="cpu", num_workers=1, progress=False)
    torch.testing.assert_close(other["pooled"], feats["pooled"], rtol=1e-4, atol=1e-5)
    assert torch.equal(other["patch_labels"], feats["patch_labels"])


def test_encoder_mode_is_restored_and_gradients_are_off(encoder, dataset):
    encoder.train()
    out = extract_features(encoder, dataset, batch_size=5, device="cpu", patch_tokens=False, progress=False)
    assert encoder.training
    assert "patches" not in out and "patch_labels" in out
    assert not out["pooled"].requires_grad


class _TensorImages(Dataset):
    """Items that are already tensors and carry neither labels nor a segmentation map."""

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(i)
        return {"image": torch.randn(3, IMAGE_SIZE, IMAGE_SIZE, generator=g), "index": i}


def test_generic_dataset_without_labels(encoder):
    out = extract_features(encoder, _TensorImages(), batch_size=4, device="cpu", progress=False)
    assert out["pooled"].shape == (6, encoder.embed_dim)
    assert out["labels"] == {} and "patch_labels" not in out


def test_seg_is_pooled_onto_the_token_grid_of_resized_images(encoder, dataset):
    # 32 px scenes seen at 64 px: 8x8 tokens of patch 8 from a 32x32 seg map pooled in 4x4 cells.
    out = extract_features(
        encoder, dataset, batch_size=5, device="cpu", progress=False, transform=eval_transform(64)
    )
    assert out["patches"].shape[1] == 64
    expected = patch_labels(np.asarray(dataset[0]["seg"]), 4).reshape(-1)
    assert out["patch_labels"][0].tolist() == expected.tolist()


# ----------------------------------------------------------------------------- video items (multi-clip)


class _FakeVideos(Dataset):
    """In-memory clips: item ``i`` shows frames of brightness ``i``; clip ``c`` adds ``10 * c``.

    Follows the evaluator's video interface: ``video`` uint8 ``[T, H, W, 3]`` items and
    ``eval_clips(i, n) -> [n, T, H, W, 3]``; item ``broken`` raises like an unreadable file.
    """

    def __init__(self, n: int = 5, frames: int = 4, size: int = 16, broken: int | None = None):
        self.n, self.frames, self.size, self.broken = n, frames, size, broken
        self.tasks = {"parity": 2}

    def __len__(self) -> int:
        return self.n

    def _clip(self, i: int, c: int) -> np.ndarray:
        if i == self.broken:
            raise CorruptFileError(f"video{i}.mp4", "moov atom not found")
        g = np.random.default_rng([i, c])
        return (g.integers(0, 40, (self.frames, self.size, self.size, 3)) + 3 * i + 10 * c).astype(np.uint8)

    def __getitem__(self, i: int) -> dict:
        return {"video": self._clip(i, 0), "labels": {"parity": i % 2}, "index": i, "path": f"video{i}.mp4"}

    def eval_clips(self, i: int, num_clips: int) -> np.ndarray:
        return np.stack([self._clip(i, c) for c in range(num_clips)])


def _video_transform(clip: np.ndarray) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> float [3, T, H, W] (a stand-in for VideoEvalTransform)."""
    return torch.from_numpy(clip).float().div(255).sub(0.5).permute(3, 0, 1, 2).contiguous()


@pytest.fixture(scope="module")
def video_encoder() -> torch.nn.Module:
    torch.manual_seed(0)
    return VisionTransformer(img_size=16, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_frames=4)


def test_multi_clip_video_features(video_encoder):
    ds = _FakeVideos()
    out = extract_features(
        video_encoder, ds, batch_size=2, device="cpu", progress=False, transform=_video_transform, num_clips=3
    )
    assert out["patches"].shape == (5, 3, 8, 32)  # 3 clips of 2x2x2 tubelet tokens
    clips = torch.stack([torch.stack([_video_transform(c) for c in ds.eval_clips(i, 3)]) for i in range(5)])
    with torch.no_grad():
        tokens = video_encoder.eval()(clips.flatten(0, 1)).unflatten(0, (5, 3))
    # The pooled feature of a video is the mean over its clips of each clip's mean token.
    torch.testing.assert_close(out["pooled"], tokens.mean(2).mean(1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["patches"].float(), tokens, rtol=1e-2, atol=1e-2)
    assert out["labels"]["parity"].tolist() == [0, 1, 0, 1, 0]
    one = extract_features(video_encoder, ds, batch_size=2, device="cpu", progress=False, transform=_video_transform)
    assert one["patches"].shape == (5, 1, 8, 32)


def test_an_unreadable_video_is_dropped_and_reported(video_encoder):
    out = extract_features(
        video_encoder, _FakeVideos(broken=2), batch_size=2, device="cpu", progress=False,
        transform=_video_transform, num_clips=2,
    )
    assert out["index"].tolist() == [0, 1, 3, 4]
    assert out["skipped"] == ["video2.mp4: moov atom not found"]


def test_multi_clip_needs_eval_clips(video_encoder):
    class NoClips(_FakeVideos):
        eval_clips = None  # type: ignore[assignment]

    with pytest.raises(DataError, match="eval_clips"):
        extract_features(video_encoder, NoClips(), batch_size=2, device="cpu", progress=False,
                         transform=_video_transform, num_clips=2)
    with pytest.raises(ValueError, match="num_clips=2 is for video"):
        extract_features(build_vit("vit_pico", 32, 8), _TensorImages(), batch_size=2, device="cpu", num_clips=2)


# ----------------------------------------------------------------------------- the feature cache


def _counting(encoder: torch.nn.Module) -> list[int]:
    calls = [0]
    forward = encoder.forward

    def counted(*args, **kwargs):
        calls[0] += 1
        return forward(*args, **kwargs)

    encoder.forward = counted  # type: ignore[method-assign]
    return calls


def test_cached_features_do_not_run_the_encoder_again(encoder, dataset, tmp_path):
    cache = FeatureCache(tmp_path)
    calls = _counting(encoder)
    kwargs = {"batch_size": 4, "device": "cpu", "progress": False}
    first = extract_cached(encoder, dataset, cache, **kwargs)
    assert calls[0] == 3 and not first["cache"]["hit"]
    second = extract_cached(encoder, dataset, cache, **kwargs)
    assert calls[0] == 3 and second["cache"]["hit"] and second["cache"]["key"] == first["cache"]["key"]
    for name in ("pooled", "patches", "patch_labels", "index"):
        assert torch.equal(first[name], second[name]), name
    assert second["labels"].keys() == first["labels"].keys() and second["skipped"] == []
    # Other data, other settings or other weights: a miss.
    other = ScenesDataset("val", size=10, image_size=IMAGE_SIZE, max_objects=3, seed=1)
    assert not extract_cached(encoder, other, cache, **kwargs)["cache"]["hit"]
    assert not extract_cached(encoder, dataset, cache, patch_tokens=False, **kwargs)["cache"]["hit"]
    changed = copy.deepcopy(encoder)
    with torch.no_grad():
        changed.norm.bias.add_(1e-3)
    assert not extract_cached(changed, dataset, cache, **kwargs)["cache"]["hit"]
    assert len(list((tmp_path / "features").glob("*.safetensors"))) == 4


def test_datasets_without_a_fingerprint_are_not_cached(encoder, tmp_path):
    with pytest.warns(UserWarning, match="not cached"):
        out = extract_cached(encoder, _TensorImages(), FeatureCache(tmp_path), batch_size=4, device="cpu",
                             progress=False)
    assert out["cache"] == {"hit": False, "key": None}
    assert not (tmp_path / "features").exists()
