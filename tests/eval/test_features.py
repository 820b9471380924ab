"""Feature extraction: shapes, pooling, labels, determinism, and the encoder left as it was found."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from openjepa.data.scenes import SEG_CLASSES, ScenesDataset, patch_labels
from openjepa.data.transforms import eval_transform
from openjepa.eval.features import extract_features
from openjepa.models.vit import build_vit

IMAGE_SIZE, PATCH = 32, 8


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
