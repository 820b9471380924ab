"""Linear, k-NN and dense probes on synthetic features whose answer is known."""

from __future__ import annotations

import math

import pytest
import torch

from openjepa.eval.probes import (
    DEFAULT_LRS,
    confusion_matrix,
    dense_probe,
    iou_per_class,
    knn_classify,
    linear_probe,
    standardization_stats,
)


def _clusters(n: int, num_classes: int, dim: int, spread: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian blobs around well separated class centres."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(123)) * 3.0
    y = torch.randint(num_classes, (n,), generator=g)
    return centres[y] + spread * torch.randn(n, dim, generator=g), y


def test_linear_probe_separates_separable_classes():
    # An offset and a wild per-feature scale: the probe standardizes, so neither matters.
    x, y = _clusters(600, 5, 24, spread=1.0, seed=0)
    x = x * torch.logspace(-2, 2, 24) + 50.0
    res = linear_probe(x[:400], y[:400], x[400:], y[400:], num_classes=5, epochs=30, seed=0)
    assert res["best_acc"] >= 0.98
    assert set(res["accs_per_lr"]) == set(DEFAULT_LRS) == {1e-3, 3e-3, 1e-2, 3e-2}
    assert res["best_acc"] == max(res["accs_per_lr"].values())
    assert res["accs_per_lr"][res["best_lr"]] == res["best_acc"]


def test_linear_probe_is_at_chance_on_random_labels():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1400, 32, generator=g)
    y = torch.randint(4, (1400,), generator=g)
    res = linear_probe(x[:1000], y[:1000], x[1000:], y[1000:], num_classes=4, epochs=30, seed=0)
    # Chance is 0.25; the max over four lrs of 400 val samples stays within a few standard errors.
    assert 0.15 <= res["best_acc"] <= 0.35


def test_linear_probe_is_deterministic_given_the_seed():
    x, y = _clusters(300, 3, 8, spread=3.0, seed=2)
    args = (x[:200], y[:200], x[200:], y[200:])
    a = linear_probe(*args, num_classes=3, epochs=5, seed=7)
    b = linear_probe(*args, num_classes=3, epochs=5, seed=7)
    assert a == b


def test_linear_probe_rejects_bad_inputs():
    x, y = _clusters(50, 3, 4, spread=1.0, seed=0)
    with pytest.raises(ValueError, match="num_classes=2"):
        linear_probe(x, y, x, y, num_classes=2, epochs=1)
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        linear_probe(x, y[:10], x, y, num_classes=3, epochs=1)


def test_standardization_stats_match_torch_and_survive_constant_features():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 6, generator=g) * 4 + 2
    x[:, 3] = 5.0  # zero variance
    mean, std = standardization_stats(x.half())
    assert torch.allclose(mean, x.half().float().mean(0), atol=1e-3)
    expected = x.half().float().std(0, unbiased=False)
    expected[3] = 1.0
    assert torch.allclose(std, expected, atol=1e-3)


def test_knn_classifies_clustered_points():
    x, y = _clusters(500, 6, 16, spread=0.5, seed=3)
    assert knn_classify(x[:400], y[:400], x[400:], y[400:], k=20, num_classes=6) == 1.0
    # Labels are inferred when num_classes is omitted; chunking does not change the answer.
    assert knn_classify(x[:400], y[:400], x[400:], y[400:], k=5, chunk_size=7) == 1.0


def test_knn_votes_are_weighted_by_similarity():
    # One very similar neighbour of class 0 against two dissimilar neighbours of class 1.
    train_x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    train_y = torch.tensor([0, 1, 1])
    query, target = torch.tensor([[1.0, 0.05]]), torch.tensor([0])
    assert knn_classify(train_x, train_y, query, target, k=3, temperature=0.07, num_classes=2) == 1.0
    # With a huge temperature the weights are equal and the majority (class 1) wins.
    assert knn_classify(train_x, train_y, query, target, k=3, temperature=1e6, num_classes=2) == 0.0


def test_knn_uses_cosine_similarity():
    # Scaling a query or a reference point does not change its neighbours.
    x, y = _clusters(300, 4, 8, spread=0.5, seed=4)
    scale = torch.rand(300, 1, generator=torch.Generator().manual_seed(0)) * 10 + 0.1
    a = knn_classify(x[:200], y[:200], x[200:], y[200:], k=10)
    b = knn_classify(x[:200] * scale[:200], y[:200], x[200:] * scale[200:], y[200:], k=10)
    assert a == b


def test_iou_per_class_by_hand():
    target = torch.tensor([0, 0, 0, 1, 1, 2])
    pred = torch.tensor([0, 0, 1, 1, 0, 2])
    conf = confusion_matrix(target, pred, 4)
    assert conf.tolist() == [[2, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    iou = iou_per_class(conf)
    assert iou[:3].tolist() == pytest.approx([2 / 4, 1 / 3, 1.0])
    assert math.isnan(iou[3])  # absent from targets and predictions: no IoU, left out of the mean


def _linear_patch_task(n: int, patches: int, dim: int, num_classes: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, num_classes, generator=torch.Generator().manual_seed(99))
    x = torch.randn(n, patches, dim, generator=g)
    # Favour class 0 like background does, while keeping the labels a linear function of the features.
    logits = x @ w
    logits[..., 0] += 6.0
    return x.half(), logits.argmax(-1)


def test_dense_probe_learns_a_linear_patch_labelling():
    x, y = _linear_patch_task(300, 16, 12, 7, seed=0)
    res = dense_probe(
        x[:200], y[:200], x[200:], y[200:], num_classes=7, lrs=(1e-2, 3e-2), epochs=10, batch_size=128, seed=0
    )
    assert res["acc"] >= 0.9
    assert res["miou"] >= 0.75
    assert len(res["per_class_iou"]) == 7
    assert 0.3 < res["background_frac"] < 0.9
    assert res["acc"] > res["background_frac"]
    assert res["miou"] == max(res["mious_per_lr"].values())


def test_dense_probe_on_noise_is_no_better_than_predicting_background():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(200, 16, 8, generator=g)
    y = torch.where(torch.rand(200, 16, generator=g) < 0.8, 0, torch.randint(1, 7, (200, 16), generator=g))
    res = dense_probe(x[:150], y[:150], x[150:], y[150:], num_classes=7, epochs=5, seed=0)
    assert res["acc"] <= res["background_frac"] + 0.02
    assert res["miou"] < 0.25  # all-background scores ~0.8 / 7


def test_dense_probe_checks_shapes():
    x, y = _linear_patch_task(10, 4, 3, 7, seed=0)
    with pytest.raises(ValueError, match=r"\[N, P, D\]"):
        dense_probe(x, y[:, :3], x, y)
