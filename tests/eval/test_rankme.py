"""RankMe on matrices whose effective rank is known by construction."""

from __future__ import annotations

import math

import pytest
import torch

from openjepa.metrics import rankme


def test_rank_one_matrix_has_rankme_one():
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(200, 1, generator=g), torch.randn(1, 64, generator=g)
    assert rankme(u @ v) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("dim", [1, 8, 64])
def test_identity_has_full_rankme(dim):
    # Equal singular values: p_k = 1/D, entropy log D.
    assert rankme(torch.eye(dim)) == pytest.approx(dim, rel=1e-4)


def test_orthogonal_rank_k_matrix_has_rankme_k():
    g = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(300, 5, generator=g, dtype=torch.float64))
    w, _ = torch.linalg.qr(torch.randn(40, 5, generator=g, dtype=torch.float64))
    assert rankme(q @ w.T) == pytest.approx(5.0, rel=1e-4)


def test_rankme_is_invariant_to_scale_and_between_one_and_min_dim():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(100, 32, generator=g) * torch.linspace(0.1, 3.0, 32)
    r = rankme(x)
    assert 1.0 < r < 32.0
    assert rankme(1000.0 * x) == pytest.approx(r, rel=1e-6)
    assert rankme(1e-3 * x) == pytest.approx(r, rel=1e-6)


def test_rankme_counts_at_most_min_of_rows_and_columns():
    g = torch.Generator().manual_seed(3)
    assert rankme(torch.randn(4, 50, generator=g)) <= 4.0 + 1e-6


def test_rankme_accepts_low_precision_and_ignores_autograd():
    x = torch.eye(16, requires_grad=True)
    assert rankme(x) == pytest.approx(16, rel=1e-4)
    assert rankme(torch.eye(16, dtype=torch.bfloat16)) == pytest.approx(16, rel=1e-4)
    assert rankme(torch.eye(16, dtype=torch.float16)) == pytest.approx(16, rel=1e-4)


def test_degenerate_inputs():
    assert rankme(torch.zeros(10, 4)) == pytest.approx(1.0, abs=1e-3)  # total collapse
    bad = torch.eye(4)
    bad[0, 0] = math.nan
    assert math.isnan(rankme(bad))
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        rankme(torch.ones(2, 3, 4))
