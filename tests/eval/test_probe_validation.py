"""Probes report validation accuracy (issue 14), through their public signatures only.

The training features are clustered by their label, so a probe fits its training set almost perfectly; the
validation features come from the same clusters but carry labels drawn at random. A probe that reports
validation accuracy is then at chance, and one that reports its training accuracy (or scores the training
labels) is near 1.
"""

from __future__ import annotations

import math

import torch

from openjepa.eval.probes import knn_classify, linear_probe

CLASSES = 4
CHANCE = 1 / CLASSES
N_VAL = 800


def _features(n: int, labels: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    centres = 4.0 * torch.randn(CLASSES, 16, generator=torch.Generator().manual_seed(11))
    return centres[labels] + 0.5 * torch.randn(n, 16, generator=g)


def _split():
    g = torch.Generator().manual_seed(3)
    train_y = torch.randint(CLASSES, (300,), generator=g)
    train_x = _features(300, train_y, g)
    clusters = torch.randint(CLASSES, (N_VAL,), generator=g)
    val_x = _features(N_VAL, clusters, g)
    val_y = torch.randint(CLASSES, (N_VAL,), generator=g)  # independent of the features
    return train_x, train_y, val_x, val_y


def _near_chance(acc: float, comparisons: int = 1) -> bool:
    """Within 4.5 binomial standard errors of chance (Bonferroni-widened for a max over ``comparisons``)."""
    se = math.sqrt(CHANCE * (1 - CHANCE) / N_VAL)
    return abs(acc - CHANCE) <= (4.5 + math.log(comparisons)) * se


def test_linear_probe_on_random_validation_labels_reports_chance():
    train_x, train_y, val_x, val_y = _split()
    fit = linear_probe(train_x, train_y, train_x, train_y, num_classes=CLASSES, epochs=10, seed=0)
    assert fit["best_acc"] >= 0.95  # the probe does fit its training set
    res = linear_probe(train_x, train_y, val_x, val_y, num_classes=CLASSES, epochs=10, seed=0)
    lrs = len(res["accs_per_lr"])
    assert _near_chance(res["best_acc"], lrs), res
    assert all(_near_chance(acc, lrs) for acc in res["accs_per_lr"].values()), res


def test_knn_on_random_validation_labels_reports_chance():
    train_x, train_y, val_x, val_y = _split()
    assert knn_classify(train_x, train_y, train_x, train_y, k=10, num_classes=CLASSES) >= 0.95
    assert _near_chance(knn_classify(train_x, train_y, val_x, val_y, k=10, num_classes=CLASSES))
    # And with the validation labels that match the clusters, the same features are classified correctly:
    # the chance result above comes from the labels, not from features k-NN cannot use.
    clusters = torch.cdist(val_x, 4.0 * torch.randn(CLASSES, 16, generator=torch.Generator().manual_seed(11)))
    assert knn_classify(train_x, train_y, val_x, clusters.argmin(1), k=10, num_classes=CLASSES) >= 0.95
