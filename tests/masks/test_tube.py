"""Random tube masks (VideoMAE / SALT Table 9) and, on a 2-D grid, MAE's random patch masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from openjepa.errors import ConfigError
from openjepa.masks import TubeMaskSampler

VJEPA_GRID = (8, 14, 14)


def test_tubes_are_constant_over_time_with_the_right_counts() -> None:
    sampler = TubeMaskSampler(VJEPA_GRID, ratio=0.9, seed=1)
    m = round(0.9 * 14 * 14)  # 176 tubes
    assert sampler.num_tubes == m
    for step in range(3):
        mb = sampler.sample(step, range(6), 6)
        out = mb.as_dict()
        assert out["ctx_idx"].shape == (6, 8 * (196 - m)) and out["tgt_idx"].shape == (6, 1, 8 * m)
        assert out["ctx_idx"].dtype == torch.int64
        tgt = np.zeros((6, 8 * 196), dtype=bool)
        tgt[np.arange(6)[:, None], out["tgt_idx"][:, 0].numpy()] = True
        ctx = np.zeros_like(tgt)
        ctx[np.arange(6)[:, None], out["ctx_idx"].numpy()] = True
        assert not (ctx & tgt).any() and (ctx | tgt).all(), "context = complement of the tubes"
        tgt = tgt.reshape(6, *VJEPA_GRID)
        assert (tgt == tgt[:, :1]).all(), "a tube covers its position in every frame"
        np.testing.assert_array_equal(tgt, mb.tgt_full)
        for idx in (out["ctx_idx"], out["tgt_idx"][:, 0]):
            assert bool((idx[:, 1:] > idx[:, :-1]).all())
        assert mb.block_thw == (8, 1, 1) and mb.starts.shape == (6, m, 3)
        assert (mb.starts[..., 0] == 0).all()
        np.testing.assert_array_equal(mb.tgt_full[:, 0].reshape(6, -1).sum(1), m)
    # Different samples get different tubes.
    assert not torch.equal(out["tgt_idx"][0], out["tgt_idx"][1])


def test_every_position_is_masked_at_the_ratio() -> None:
    sampler = TubeMaskSampler((2, 8, 8), ratio=0.75, seed=0)
    freq = np.zeros((8, 8))
    for step in range(50):
        freq += sampler.sample(step, range(32), 32).tgt_full[:, 0].sum(0)
    freq /= 50 * 32
    assert abs(freq.mean() - 0.75) < 1e-9  # exactly 48 of 64 per sample
    assert freq.min() > 0.68 and freq.max() < 0.82  # uniform: binomial noise only (sd 0.011)


def test_two_dimensional_grid_is_mae_random_patch_masking() -> None:
    sampler = TubeMaskSampler((14, 14), ratio=0.75, seed=3)
    mb = sampler.sample(0, range(4), 4)
    assert mb.ctx_idx.shape == (4, 49) and mb.tgt_idx.shape == (4, 1, 147)
    assert int(mb.tgt_idx.max()) < 196 and mb.tgt_full.shape == (4, 14, 14)
    assert mb.block_thw == (1, 1, 1)


def test_deterministic_in_seed_step_slot_whatever_the_split() -> None:
    sampler = TubeMaskSampler(VJEPA_GRID, seed=2, stream=1)
    whole = sampler(5, range(8), 8)
    split = TubeMaskSampler(VJEPA_GRID, seed=2, stream=1)(5, [6, 7], 1024)  # global batch does not matter
    assert torch.equal(split["tgt_idx"], whole["tgt_idx"][6:])
    assert torch.equal(split["ctx_idx"], whole["ctx_idx"][6:])
    for other in (TubeMaskSampler(VJEPA_GRID, seed=2, stream=0), TubeMaskSampler(VJEPA_GRID, seed=3, stream=1)):
        assert not torch.equal(other(5, range(8), 8)["tgt_idx"], whole["tgt_idx"])
    assert not torch.equal(sampler(6, range(8), 8)["tgt_idx"], whole["tgt_idx"])


@pytest.mark.parametrize(
    ("grid", "ratio", "pattern"),
    [
        (VJEPA_GRID, 0.0, r"mask\.tube_ratio=0\.0"),
        (VJEPA_GRID, 1.0, r"mask\.tube_ratio"),
        (VJEPA_GRID, 1.5, r"mask\.tube_ratio"),
        ((4, 2, 2), 0.1, r"masks 0 of 4 positions.*target empty.*Fix"),
        ((4, 2, 2), 0.9, r"masks 4 of 4 positions.*context empty"),
        ((4, 0, 2), 0.5, r"positive sides"),
        ((1, 2, 3, 4), 0.5, r"grid"),
    ],
)
def test_bad_configs_raise_config_errors(grid, ratio: float, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        TubeMaskSampler(grid, ratio=ratio)


def test_bad_calls_raise() -> None:
    sampler = TubeMaskSampler(VJEPA_GRID)
    with pytest.raises(ValueError, match="slots"):
        sampler(0, [4], 4)
    with pytest.raises(ValueError, match="step"):
        sampler(-1, [0], 4)
    with pytest.raises(ValueError, match="seed"):
        TubeMaskSampler(VJEPA_GRID, seed=-2)
