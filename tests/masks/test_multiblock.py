"""Multi-block mask sampler: invariants, determinism, the faithful mode against a literal transcription
of the reference algorithm, the reference statistics, and termination / clear errors on small grids."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from openjepa.config import ConfigError, MaskConfig
from openjepa.masks import MultiBlockMaskSampler, mask_statistics
from openjepa.masks import multiblock as mb

VITH_GRID = (16, 16)  # ViT-H/14 at 224 px


def _cfg(**kw) -> MaskConfig:
    return dataclasses.replace(MaskConfig(), **kw)


def _check_invariants(out: dict[str, torch.Tensor], grid: tuple[int, int], cfg: MaskConfig, b: int) -> None:
    ctx, tgt = out["ctx_idx"], out["tgt_idx"]
    n = grid[0] * grid[1]
    assert ctx.dtype == torch.int64 and tgt.dtype == torch.int64
    assert ctx.ndim == 2 and ctx.shape[0] == b
    assert tgt.ndim == 3 and tgt.shape[:2] == (b, cfg.num_targets)
    for idx in (ctx, tgt.reshape(b * cfg.num_targets, -1)):
        assert int(idx.min()) >= 0 and int(idx.max()) < n
        assert bool((idx[:, 1:] > idx[:, :-1]).all()), "rows must be sorted and without repeats"
    k_min = cfg.min_keep + 1 if cfg.mode == "faithful" else max(cfg.min_keep, 1)
    assert ctx.shape[1] >= k_min
    if not cfg.allow_overlap:
        c = np.zeros((b, n), dtype=bool)
        c[np.arange(b)[:, None], ctx.numpy()] = True
        t = np.zeros((b, n), dtype=bool)
        t[np.arange(b)[:, None], tgt.reshape(b, -1).numpy()] = True
        assert not (c & t).any(), "context and targets must be disjoint"


# ----------------------------------------------------------------------------- shapes and invariants


@pytest.mark.parametrize("mode", ["fixed", "faithful"])
@pytest.mark.parametrize("grid", [(16, 16), (14, 14), (12, 20), (20, 12)])
def test_masks_are_disjoint_sorted_and_inside_the_grid(mode: str, grid: tuple[int, int]) -> None:
    cfg = _cfg(mode=mode)
    sampler = MultiBlockMaskSampler(cfg, grid, seed=3)
    assert sampler.grid == grid
    for step in range(10):
        out = sampler(step, range(32), 32)
        assert set(out) == {"ctx_idx", "tgt_idx"}
        _check_invariants(out, grid, cfg, 32)
        # One target size per batch; target blocks are full rectangles inside the grid.
        tgt = out["tgt_idx"].numpy()
        rows, cols = tgt // grid[1], tgt % grid[1]
        h = rows.max(-1) - rows.min(-1) + 1
        w = cols.max(-1) - cols.min(-1) + 1
        assert (h * w == tgt.shape[-1]).all()
        assert len(set(h.ravel().tolist())) == 1 and len(set(w.ravel().tolist())) == 1


def test_targets_have_the_batch_size_drawn_and_cover_h_times_w() -> None:
    sampler = MultiBlockMaskSampler(_cfg(), VITH_GRID)
    batch = sampler.sample(5, range(16), 16)
    th, tw = batch.target_hw
    assert batch.tgt_idx.shape == (16, 4, th * tw)
    assert batch.ctx_full.shape == (16, 16, 16)


def test_allow_overlap_keeps_the_whole_context_block() -> None:
    cfg = _cfg(allow_overlap=True)
    sampler = MultiBlockMaskSampler(cfg, VITH_GRID)
    batch = sampler.sample(0, range(64), 64)
    ch, cw = batch.context_hw
    # No target removed: every context before the cut is exactly the block.
    assert (batch.ctx_full.reshape(64, -1).sum(1) == ch * cw).all()
    _check_invariants(batch.as_dict(), VITH_GRID, cfg, 64)


# ----------------------------------------------------------------------------- determinism


def test_row_streams_do_not_depend_on_how_many_rows_are_drawn() -> None:
    a = mb._uniform_rows(1, 7, mb._FIXED_CTX, 0, 5, 40)
    b = mb._uniform_rows(1, 7, mb._FIXED_CTX, 0, 2048, 40)
    np.testing.assert_array_equal(a, b[:5])
    assert not np.array_equal(a, mb._uniform_rows(1, 8, mb._FIXED_CTX, 0, 5, 40))
    assert not np.array_equal(a, mb._uniform_rows(2, 7, mb._FIXED_CTX, 0, 5, 40))


def test_fixed_mode_is_the_same_however_the_global_batch_is_split() -> None:
    """4 processes x 2 loader workers, shuffled slot order, fresh instances: identical rows."""
    cfg = _cfg()
    g = 64
    whole = MultiBlockMaskSampler(cfg, VITH_GRID, seed=11)(3, range(g), g)
    ctx_parts: dict[int, torch.Tensor] = {}
    tgt_parts: dict[int, torch.Tensor] = {}
    for rank in range(4):
        for worker in range(2):
            sampler = MultiBlockMaskSampler(cfg, VITH_GRID, seed=11)  # a fresh one per worker
            slots = list(range(rank * 16 + worker * 8, rank * 16 + worker * 8 + 8))[::-1]
            out = sampler(3, slots, g)
            for i, s in enumerate(slots):
                ctx_parts[s], tgt_parts[s] = out["ctx_idx"][i], out["tgt_idx"][i]
    assert torch.equal(whole["ctx_idx"], torch.stack([ctx_parts[s] for s in range(g)]))
    assert torch.equal(whole["tgt_idx"], torch.stack([tgt_parts[s] for s in range(g)]))


def test_fixed_mode_cache_does_not_leak_between_steps_or_batches() -> None:
    cfg = _cfg()
    a = MultiBlockMaskSampler(cfg, VITH_GRID)
    b = MultiBlockMaskSampler(cfg, VITH_GRID)
    a(0, range(8), 8)
    a(1, range(8), 32)  # other step and global batch in between
    for step, g in ((0, 8), (1, 32), (0, 16)):
        x, y = a(step, range(8), g), b(step, range(8), g)
        assert torch.equal(x["ctx_idx"], y["ctx_idx"]) and torch.equal(x["tgt_idx"], y["tgt_idx"])


def test_faithful_mode_is_a_function_of_seed_step_slot_before_the_cut() -> None:
    """The cut to the call's minimum depends on the call (as in the reference); everything else does not."""
    cfg = _cfg(mode="faithful")
    whole = MultiBlockMaskSampler(cfg, VITH_GRID, seed=5).sample(9, range(32), 32)
    part = MultiBlockMaskSampler(cfg, VITH_GRID, seed=5).sample(9, [30, 2, 17], 32)
    np.testing.assert_array_equal(part.ctx_full, whole.ctx_full[[30, 2, 17]])
    assert torch.equal(part.tgt_idx, whole.tgt_idx[[30, 2, 17]])
    k = part.ctx_idx.shape[1]
    assert k >= whole.ctx_idx.shape[1]
    for i, s in enumerate([30, 2, 17]):
        first = np.flatnonzero(whole.ctx_full[s])[:k]
        np.testing.assert_array_equal(part.ctx_idx[i].numpy(), first)


@pytest.mark.parametrize("mode", ["fixed", "faithful"])
def test_steps_and_seeds_give_different_masks(mode: str) -> None:
    cfg = _cfg(mode=mode)
    a = MultiBlockMaskSampler(cfg, VITH_GRID, seed=0)(0, range(8), 8)["tgt_idx"]
    b = MultiBlockMaskSampler(cfg, VITH_GRID, seed=0)(1, range(8), 8)["tgt_idx"]
    c = MultiBlockMaskSampler(cfg, VITH_GRID, seed=1)(0, range(8), 8)["tgt_idx"]
    assert not torch.equal(a, b)  # (False too when the batch drew another target size)
    assert not torch.equal(a, c)


def test_bad_slots_and_steps_raise() -> None:
    sampler = MultiBlockMaskSampler(_cfg(), VITH_GRID)
    with pytest.raises(ValueError, match="slots"):
        sampler(0, [8], 8)
    with pytest.raises(ValueError, match="slots"):
        sampler(0, [], 8)
    with pytest.raises(ValueError, match="step"):
        sampler(-1, [0], 8)
    with pytest.raises(ValueError, match="seed"):
        MultiBlockMaskSampler(_cfg(), VITH_GRID, seed=-1)


# ----------------------------------------------------------------------------- faithful = the reference


def _literal_reference(cfg: MaskConfig, grid: tuple[int, int], seed: int, step: int, slots: list[int]):
    """The reference sampler written out literally (loops, while-with-timeout), reading the same uniform
    streams as the vectorized faithful mode (position = int(u * (H - h)), the exclusive upper bound)."""
    height, width = grid
    n_tgt = cfg.num_targets

    def block_size(u: float, scale, aspect) -> tuple[int, int]:
        s = scale[0] + u * (scale[1] - scale[0])
        max_keep = int(height * width * s)
        a = aspect[0] + u * (aspect[1] - aspect[0])
        h = round(math.sqrt(max_keep * a))
        w = round(math.sqrt(max_keep / a))
        while h >= height:
            h -= 1
        while w >= width:
            w -= 1
        return h, w

    u = mb._uniform_rows(seed, step, mb._SIZE, 0, 1, 2)[0]
    th, tw = block_size(float(u[0]), cfg.target_scale, cfg.target_aspect)
    ch, cw = block_size(float(u[1]), cfg.context_scale, cfg.context_aspect)
    rows = max(slots) + 1
    ut = mb._uniform_rows(seed, step, mb._FAITHFUL_TGT, 0, rows, 2 * n_tgt)
    ctx_all, tgt_all = [], []
    min_keep_tgt = min_keep_ctx = height * width
    for slot in slots:
        targets, regions = [], []
        for t in range(n_tgt):
            top, left = int(ut[slot, 2 * t] * (height - th)), int(ut[slot, 2 * t + 1] * (width - tw))
            m = np.zeros((height, width), dtype=bool)
            m[top : top + th, left : left + tw] = True
            idx = np.flatnonzero(m)
            assert len(idx) > cfg.min_keep
            targets.append(idx)
            regions.append(~m)
            min_keep_tgt = min(min_keep_tgt, len(idx))
        acceptable = None if cfg.allow_overlap else regions
        tries, timeout = 0, 20
        while True:
            uc = mb._uniform_rows(seed, step, mb._FAITHFUL_CTX, tries, rows, 40)[slot]
            i = 20 - timeout
            top, left = int(uc[2 * i] * (height - ch)), int(uc[2 * i + 1] * (width - cw))
            m = np.zeros((height, width), dtype=bool)
            m[top : top + ch, left : left + cw] = True
            if acceptable is not None:
                for k in range(max(len(acceptable) - tries, 0)):
                    m &= acceptable[k]
            idx = np.flatnonzero(m)
            if len(idx) > cfg.min_keep:
                break
            timeout -= 1
            if timeout == 0:
                tries += 1
                timeout = 20
        ctx_all.append(idx)
        tgt_all.append(targets)
        min_keep_ctx = min(min_keep_ctx, len(idx))
    ctx = np.stack([c[:min_keep_ctx] for c in ctx_all])
    tgt = np.stack([np.stack([t[:min_keep_tgt] for t in ts]) for ts in tgt_all])
    return ctx, tgt


@pytest.mark.parametrize(
    ("grid", "overrides"),
    [
        ((16, 16), {}),
        ((14, 14), {}),
        ((12, 18), {"allow_overlap": True}),
        # Contexts often keep <= min_keep patches here: exercises the reference's relaxation.
        ((10, 10), {"target_scale": (0.3, 0.4), "min_keep": 20}),
    ],
)
def test_faithful_mode_equals_a_literal_transcription_of_the_reference(grid, overrides) -> None:
    cfg = _cfg(mode="faithful", **overrides)
    sampler = MultiBlockMaskSampler(cfg, grid, seed=2)
    relaxed = 0
    for step in range(6):
        slots = [5, 0, 17, 3, 9, 12, 30, 31, 1, 2, 4, 6]
        batch = sampler.sample(step, slots, 32)
        ctx, tgt = _literal_reference(cfg, grid, 2, step, slots)
        np.testing.assert_array_equal(batch.ctx_idx.numpy(), ctx)
        np.testing.assert_array_equal(batch.tgt_idx.numpy(), tgt)
        relaxed += int(batch.ctx_fallback.sum())
    if "min_keep" in overrides:
        assert relaxed > 0, "the relaxation path should have been exercised"


def test_faithful_statistics_match_the_reference_on_vith14() -> None:
    """spec: context about 110 of 256 patches before the cut, about 70 after; last row/col never covered;
    scale and aspect perfectly correlated; contexts biased to the top of the image."""
    sampler = MultiBlockMaskSampler(_cfg(mode="faithful"), VITH_GRID, seed=0)
    st = mask_statistics(sampler, batches=40, batch_size=128)
    assert 105 <= st["context_size_before_trim_mean"] <= 115
    assert 62 <= st["context_size_mean"] <= 76
    for key in ("context_row_freq", "context_col_freq", "target_row_freq", "target_col_freq"):
        assert st[key][-1] == 0.0, key
        assert min(st[key][:-1]) > 0, key
    assert st["target_scale_aspect_corr"] == pytest.approx(1.0, abs=1e-6)
    rows = st["context_row_freq"]
    assert rows[0] > 0.7 and rows[0] > 3 * rows[12] and rows[1] > rows[13] + 0.4
    # Before the cut the top/bottom asymmetry is far smaller: the cut causes the bias.
    before = st["context_before_trim_row_freq"]
    assert abs(before[1] - before[13]) < 0.15
    assert st["context_target_overlap_fraction"] == 0.0


# ----------------------------------------------------------------------------- fixed mode statistics


def test_fixed_mode_reaches_every_position_without_spatial_bias() -> None:
    cfg = _cfg()
    sampler = MultiBlockMaskSampler(cfg, VITH_GRID, seed=0)
    st = mask_statistics(sampler, batches=150, batch_size=64)
    h, w = VITH_GRID
    for key in ("context_row_freq", "context_col_freq", "target_row_freq", "target_col_freq"):
        freq = np.asarray(st[key])
        assert freq.min() > 0.1, f"{key}: every row/column must be reachable"
        # Mirror symmetry (first vs last row, ...): no top/left preference anywhere.
        assert np.abs(freq - freq[::-1]).max() < 0.03, key
    # The cut to a common length keeps each context patch with the same probability, wherever it is.
    ratio = np.asarray(st["context_row_freq"]) / np.asarray(st["context_before_trim_row_freq"])
    assert ratio.max() - ratio.min() < 0.03
    ratio = np.asarray(st["context_col_freq"]) / np.asarray(st["context_before_trim_col_freq"])
    assert ratio.max() - ratio.min() < 0.03
    assert st["context_size_min"] >= cfg.min_keep
    assert abs(st["target_scale_aspect_corr"]) < 0.25
    assert st["context_target_overlap_fraction"] == 0.0
    assert 100 <= st["context_size_before_trim_mean"] <= 130
    assert h == w == 16


def test_fixed_common_length_is_the_global_batch_minimum() -> None:
    sampler = MultiBlockMaskSampler(_cfg(), VITH_GRID, seed=4)
    batch = sampler.sample(0, range(4), 512)
    everything = sampler.sample(0, range(512), 512)
    counts = everything.ctx_full.reshape(512, -1).sum(1)
    assert batch.ctx_idx.shape[1] == everything.ctx_idx.shape[1] == counts.min()
    # Each kept patch is one of the sample's own context patches.
    for i in range(4):
        assert everything.ctx_full[i].reshape(-1)[batch.ctx_idx[i].numpy()].all()


# ----------------------------------------------------------------------------- termination and errors


@pytest.mark.parametrize("grid", [(4, 4), (5, 7), (7, 5), (7, 7), (8, 8), (3, 9)])
def test_fixed_mode_terminates_on_small_grids_with_default_scales(grid) -> None:
    cfg = _cfg()
    sampler = MultiBlockMaskSampler(cfg, grid, seed=0)
    for step in range(20):
        batch = sampler.sample(step, range(64), 64)
        _check_invariants(batch.as_dict(), grid, cfg, 64)
        ctx = batch.ctx_full.reshape(64, -1)
        assert (ctx.sum(1) >= cfg.min_keep).all()
        # Fallback contexts are exactly the patches outside the targets.
        tgt = np.zeros_like(ctx)
        tgt[np.arange(64)[:, None], batch.tgt_idx.reshape(64, -1).numpy()] = True
        np.testing.assert_array_equal(ctx[batch.ctx_fallback], ~tgt[batch.ctx_fallback])
        stacked = batch.tgt_redraws == mb.PLACEMENT_TRIES
        if stacked.any():
            t = batch.tgt_idx[torch.from_numpy(stacked)]
            assert (t == t[:, :1]).all()


def test_fixed_fallbacks_are_exercised_and_reported() -> None:
    st4 = mask_statistics(MultiBlockMaskSampler(_cfg(), (4, 4)), batches=10, batch_size=64)
    assert st4["target_redraw_fraction"] > 0.3  # 4 targets of up to 2x2 on 16 patches: most need redraws
    st39 = mask_statistics(MultiBlockMaskSampler(_cfg(), (3, 9)), batches=10, batch_size=64)
    assert st39["context_fallback_fraction"] > 0.1  # a 3x5 context block rarely keeps 10 patches
    assert st4["context_size_min"] >= 10 and st39["context_size_min"] >= 10


@pytest.mark.parametrize("grid", [(8, 8), (10, 10)])
def test_faithful_small_grid_with_reachable_min_keep_terminates(grid) -> None:
    cfg = _cfg(mode="faithful", min_keep=4)
    sampler = MultiBlockMaskSampler(cfg, grid)
    for step in range(10):
        _check_invariants(sampler(step, range(32), 32), grid, cfg, 32)


def test_faithful_rejects_configs_on_which_the_reference_loops_forever() -> None:
    with pytest.raises(ConfigError, match=r"mask\.min_keep") as err:
        MultiBlockMaskSampler(_cfg(mode="faithful"), (8, 8))
    msg = str(err.value)
    assert "3x3=9" in msg and "mask.target_scale" in msg and "mask.mode=fixed" in msg and "min_keep<=8" in msg
    # The same grid is fine once the target blocks always exceed min_keep.
    MultiBlockMaskSampler(_cfg(mode="faithful", min_keep=8), (8, 8))
    with pytest.raises(ConfigError, match=r"context block"):
        MultiBlockMaskSampler(_cfg(mode="faithful", min_keep=30, context_scale=(0.1, 0.2)), (16, 16))


@pytest.mark.parametrize(
    ("grid", "overrides", "pattern"),
    [
        ((16, 16), {"num_context": 2}, r"mask\.num_context=2"),
        ((16, 16), {"num_targets": 0}, r"mask\.num_targets"),
        ((16, 16), {"min_keep": -1}, r"mask\.min_keep"),
        ((2, 2), {}, r"mask\.min_keep<=3"),
        ((1, 1), {}, r"finer patch grid"),
        ((4, 4), {"target_scale": (0.5, 0.6)}, r"mask\.target_scale"),
        ((16, 16), {"context_scale": (0.01, 0.02), "min_keep": 10}, r"mask\.context_scale"),
        ((16, 16), {"target_aspect": (2.0, 1.0)}, r"mask\.target_aspect"),
        ((16, 16), {"mode": "other"}, r"mask\.mode"),
    ],
)
def test_unsatisfiable_fixed_configs_raise_config_errors(grid, overrides, pattern) -> None:
    with pytest.raises(ConfigError, match=pattern):
        MultiBlockMaskSampler(_cfg(**overrides), grid)


# ----------------------------------------------------------------------------- block-size enumeration


@pytest.mark.parametrize("seed", range(6))
def test_block_size_enumeration_covers_every_size_a_dense_sweep_finds(seed: int) -> None:
    rng = np.random.default_rng(seed)
    grid = (int(rng.integers(4, 24)), int(rng.integers(4, 24)))
    lo = float(rng.uniform(0.05, 0.6))
    scale = (lo, float(min(1.0, lo + rng.uniform(0, 0.4))))
    alo = float(rng.uniform(0.3, 1.5))
    aspect = (alo, alo + float(rng.uniform(0, 2)))
    u = np.linspace(0, 1, 400_001)[:-1]
    h, w = mb._faithful_block_hw(u, grid, scale, aspect)
    dense = set(zip(h.tolist(), w.tolist(), strict=True))
    found = set(map(tuple, mb.faithful_block_sizes(grid, scale, aspect).tolist()))
    assert dense <= found
    for at, us in (("low", 0.0), ("high", 1.0)):
        h, w = mb._fixed_block_hw(np.full_like(u, us), u, grid, scale, aspect)
        dense = set(zip(h.tolist(), w.tolist(), strict=True))
        assert dense <= set(map(tuple, mb.fixed_block_sizes(grid, scale, aspect, at).tolist()))


def test_fixed_block_sizes_stay_inside_the_grid_and_nonempty() -> None:
    grid = (5, 9)
    u = np.random.default_rng(0).random((2, 10_000))
    h, w = mb._fixed_block_hw(u[0], u[1], grid, (0.001, 1.0), (0.05, 20.0))
    assert h.min() >= 1 and w.min() >= 1 and h.max() <= 5 and w.max() <= 9
    assert h.max() == 5 and w.max() == 9  # the whole grid is a reachable block


def test_sparse_slot_rows_jump_to_the_same_numbers() -> None:
    slots = np.array([2040, 7, 2047, 7, 1000])  # sparse (uses PCG64.advance) and with a repeat
    dense = mb._uniform_rows(4, 2, mb._FIXED_SUBSET, 0, 2048, 33)
    np.testing.assert_array_equal(mb._rows_for(slots, 4, 2, mb._FIXED_SUBSET, 0, 33), dense[slots])


def test_same_masks_with_zero_or_two_loader_workers() -> None:
    """Real DataLoader workers (each with its own sampler copy) give the masks of a single process."""
    from torch.utils.data import DataLoader

    sampler = MultiBlockMaskSampler(_cfg(), (8, 8), seed=7)
    g = 16
    # Each optimizer step's global batch is split into 4 micro-batches of 4 slots.
    plan = [[(step, s) for s in range(q * 4, q * 4 + 4)] for step in range(3) for q in range(4)]

    def collate(items):
        return sampler(items[0][0], [s for _, s in items], g)

    def run(workers: int) -> list[dict[str, torch.Tensor]]:
        data = [ref for refs in plan for ref in refs]
        index = {ref: i for i, ref in enumerate(data)}
        batches = [[index[ref] for ref in refs] for refs in plan]
        return list(DataLoader(data, batch_sampler=batches, collate_fn=collate, num_workers=workers))

    for a, b in zip(run(0), run(2), strict=True):
        assert torch.equal(a["ctx_idx"], b["ctx_idx"]) and torch.equal(a["tgt_idx"], b["tgt_idx"])
