"""V-JEPA multiblock3d masks: invariants, block shapes, determinism, the faithful mode against a literal
transcription of the reference algorithm, fixed mode's reach and cut, termination and clear errors."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from openjepa.errors import ConfigError
from openjepa.masks import MultiBlock3DMaskSampler, VideoMaskBatch, _streams
from openjepa.masks import multiblock3d as m3

VJEPA_GRID = (8, 14, 14)  # 16 frames / tubelet 2, 224 px / patch 16
DEMO_GRID = (4, 8, 8)


@dataclass
class Gen:
    """Stands in for the config's BlockGeneratorConfig (same field names)."""

    num_blocks: int = 8
    spatial_scale: tuple[float, float] = (0.15, 0.15)
    temporal_scale: tuple[float, float] = (1.0, 1.0)
    aspect: tuple[float, float] = (0.75, 1.5)


SHORT = Gen(8, (0.15, 0.15))
LONG = Gen(2, (0.7, 0.7))
GENS = {"short": SHORT, "long": LONG}


def _membership(idx: np.ndarray, n: int) -> np.ndarray:
    b = idx.shape[0]
    out = np.zeros((b, n), dtype=bool)
    out[np.arange(b)[:, None], idx.reshape(b, -1)] = True
    return out


def _blocks_from_starts(mb: VideoMaskBatch, grid: tuple[int, int, int]) -> np.ndarray:
    """Union ``bool[b, T, H, W]`` rebuilt with plain slicing from ``starts`` and ``block_thw``."""
    b = mb.starts.shape[0]
    t, h, w = mb.block_thw
    out = np.zeros((b, *grid), dtype=bool)
    for i in range(b):
        for t0, h0, w0 in mb.starts[i]:
            out[i, t0 : t0 + t, h0 : h0 + h, w0 : w0 + w] = True
    return out


def _check_invariants(mb: VideoMaskBatch, grid: tuple[int, int, int], b: int, min_context: int) -> None:
    n = int(np.prod(grid))
    ctx, tgt = mb.ctx_idx, mb.tgt_idx
    assert ctx.dtype == torch.int64 and tgt.dtype == torch.int64
    assert ctx.ndim == 2 and ctx.shape[0] == b
    assert tgt.ndim == 3 and tgt.shape[:2] == (b, 1)
    for idx in (ctx, tgt[:, 0]):
        assert int(idx.min()) >= 0 and int(idx.max()) < n
        assert bool((idx[:, 1:] > idx[:, :-1]).all()), "rows must be ascending without repeats"
    assert ctx.shape[1] >= min_context
    c, t = _membership(ctx.numpy(), n), _membership(tgt.numpy(), n)
    assert not (c & t).any(), "context and target must be disjoint"
    # Kept tokens come from the full masks; the full masks partition the grid into blocks and the rest.
    full_t = mb.tgt_full.reshape(b, -1)
    full_c = mb.ctx_full.reshape(b, -1)
    assert not (c & ~full_c).any() and not (t & ~full_t).any()
    assert (full_t ^ full_c).all()
    np.testing.assert_array_equal(mb.tgt_full, _blocks_from_starts(mb, grid))


# ----------------------------------------------------------------------------- shapes and invariants


@pytest.mark.parametrize("mode", ["fixed", "faithful"])
@pytest.mark.parametrize("gen", ["short", "long"])
@pytest.mark.parametrize("grid", [VJEPA_GRID, DEMO_GRID])
def test_masks_are_disjoint_sorted_inside_the_grid_and_made_of_the_blocks(mode, gen, grid) -> None:
    sampler = MultiBlock3DMaskSampler(GENS[gen], grid, mode=mode, seed=3, stream=1)
    assert sampler.grid == grid and sampler.num_tokens == int(np.prod(grid))
    for step in range(6):
        mb = sampler.sample(step, range(16), 16)
        _check_invariants(mb, grid, 16, 1)
        assert mb.starts.shape == (16, GENS[gen].num_blocks, 3)
        assert set(sampler(step, range(2), 16)) == {"ctx_idx", "tgt_idx"}


@pytest.mark.parametrize("mode", ["fixed", "faithful"])
def test_block_sizes_follow_the_scales_and_temporal_scale_one_spans_the_clip(mode: str) -> None:
    t_all, h_all, w_all = VJEPA_GRID
    for gen, scale in ((SHORT, 0.15), (LONG, 0.7)):
        sampler = MultiBlock3DMaskSampler(gen, VJEPA_GRID, mode=mode, seed=1)
        seen = set()
        for step in range(25):
            mb = sampler.sample(step, range(4), 4)
            t, h, w = mb.block_thw
            seen.add((h, w))
            assert t == t_all and (mb.starts[..., 0] == 0).all(), "temporal scale 1.0: every block spans the clip"
            # Every target is constant over time: the same spatial pattern in each frame.
            assert (mb.tgt_full == mb.tgt_full[:, :1]).all()
            assert mb.draws["spatial_scale"] == pytest.approx(scale)
            a = mb.draws["aspect"]
            assert 0.75 <= a <= 1.5
            # The sides are the drawn area split by the drawn aspect ratio; faithful first truncates the
            # area to an integer budget, as the reference does.
            area = h_all * w_all * scale if mode == "fixed" else int(h_all * w_all * scale)
            assert (h, w) == (min(round(math.sqrt(area * a)), h_all), min(round(math.sqrt(area / a)), w_all))
        assert len(seen) > 1, "the aspect ratio must vary between steps"


def test_temporal_scale_below_one_gives_shorter_blocks_at_every_start() -> None:
    gen = Gen(2, (0.3, 0.3), (0.5, 0.75))
    sampler = MultiBlock3DMaskSampler(gen, DEMO_GRID, seed=0)
    durations, starts = set(), set()
    for step in range(40):
        mb = sampler.sample(step, range(8), 8)
        durations.add(mb.block_thw[0])
        starts.update(mb.starts[..., 0].ravel().tolist())
        _check_invariants(mb, DEMO_GRID, 8, 1)
    assert durations == {2, 3}  # rint(4 * [0.5, 0.75])
    assert starts == {0, 1, 2}


# ----------------------------------------------------------------------------- determinism


def test_fixed_mode_is_the_same_however_the_global_batch_is_split() -> None:
    sampler = MultiBlock3DMaskSampler(LONG, VJEPA_GRID, seed=5, stream=1)
    whole = sampler(7, range(12), 12)
    fresh = MultiBlock3DMaskSampler(LONG, VJEPA_GRID, seed=5, stream=1)  # another worker's copy
    parts = [fresh(7, [8, 9, 10, 11], 12), sampler(7, range(4), 12), fresh(7, [4, 5, 6, 7], 12)]
    for key in ("ctx_idx", "tgt_idx"):
        joined = torch.cat([parts[1][key], parts[2][key], parts[0][key]])
        assert torch.equal(joined, whole[key]), key
    assert torch.equal(sampler(7, [3], 12)["ctx_idx"], whole["ctx_idx"][3:4])


def test_faithful_mode_is_a_function_of_seed_step_slot_before_the_cut() -> None:
    sampler = MultiBlock3DMaskSampler(SHORT, VJEPA_GRID, mode="faithful", seed=2)
    a = sampler.sample(3, [0, 1, 2, 3, 4, 5], 64)
    b = sampler.sample(3, [4, 5, 40], 64)
    np.testing.assert_array_equal(a.tgt_full[4:6], b.tgt_full[:2])
    np.testing.assert_array_equal(a.starts[4:6], b.starts[:2])
    # The cut is per call (the reference's per-GPU minimum), so the kept tokens may differ.
    assert a.ctx_idx.shape[1] == int(a.ctx_full.reshape(6, -1).sum(1).min())
    assert b.ctx_idx.shape[1] == int(b.ctx_full.reshape(3, -1).sum(1).min())


@pytest.mark.parametrize("mode", ["fixed", "faithful"])
def test_same_key_same_masks_and_streams_seeds_steps_differ(mode: str) -> None:
    def masks(stream=0, seed=0, step=0) -> torch.Tensor:
        return MultiBlock3DMaskSampler(SHORT, VJEPA_GRID, mode=mode, seed=seed, stream=stream)(step, range(8), 8)[
            "tgt_idx"
        ]

    base = masks()
    assert torch.equal(base, masks())
    for other in (masks(stream=1), masks(seed=1), masks(step=1)):
        assert other.shape != base.shape or not torch.equal(other, base)


def test_faithful_generators_share_their_size_draws_fixed_ones_do_not() -> None:
    """The reference seeds both generators' size RNG with the same call counter."""
    for mode, shared in (("faithful", True), ("fixed", False)):
        short = MultiBlock3DMaskSampler(SHORT, VJEPA_GRID, mode=mode, stream=0)
        long = MultiBlock3DMaskSampler(LONG, VJEPA_GRID, mode=mode, stream=1)
        same = [short.sample(s, [0], 1).draws["aspect"] == long.sample(s, [0], 1).draws["aspect"] for s in range(10)]
        assert all(same) if shared else not any(same), mode


def test_same_masks_with_zero_or_two_loader_workers() -> None:
    """Real DataLoader workers (each with its own sampler copy) give the masks of a single process."""
    from torch.utils.data import DataLoader

    sampler = MultiBlock3DMaskSampler(SHORT, DEMO_GRID, seed=7)
    g = 8
    plan = [[(step, s) for s in range(q * 4, q * 4 + 4)] for step in range(2) for q in range(2)]

    def collate(items):
        return sampler(items[0][0], [s for _, s in items], g)

    def run(workers: int) -> list[dict[str, torch.Tensor]]:
        data = [ref for refs in plan for ref in refs]
        index = {ref: i for i, ref in enumerate(data)}
        batches = [[index[ref] for ref in refs] for refs in plan]
        return list(DataLoader(data, batch_sampler=batches, collate_fn=collate, num_workers=workers))

    for a, b in zip(run(0), run(2), strict=True):
        assert torch.equal(a["ctx_idx"], b["ctx_idx"]) and torch.equal(a["tgt_idx"], b["tgt_idx"])


# ----------------------------------------------------------------------------- faithful = the reference


def _literal_reference(gen: Gen, grid, seed: int, step: int, slots: list[int], stream: int):
    """The reference generator written out with loops (per sample: draw every block, multiply the
    "keep" masks, redraw while the context is empty; then cut both lists to the call's shortest, keeping
    the first indices), reading the same uniform streams as the vectorized faithful mode."""
    duration, height, width = grid
    u = _streams.table(seed, step, _streams.kind_code(_streams.FAMILY_MULTIBLOCK3D, m3._SIZE, None), 0, 1, 3)[0]
    t = max(1, int(duration * (gen.temporal_scale[0] + u[0] * (gen.temporal_scale[1] - gen.temporal_scale[0]))))
    keep = int(height * width * (gen.spatial_scale[0] + u[1] * (gen.spatial_scale[1] - gen.spatial_scale[0])))
    ar = gen.aspect[0] + u[2] * (gen.aspect[1] - gen.aspect[0])
    h = min(round(math.sqrt(keep * ar)), height)
    w = min(round(math.sqrt(keep / ar)), width)
    code = _streams.kind_code(_streams.FAMILY_MULTIBLOCK3D, m3._PLACE, stream)
    enc, pred = [], []
    for slot in slots:
        attempt = 0
        while True:
            draw = _streams.rows(np.array([slot]), seed, step, code, attempt, 3 * gen.num_blocks)[0]
            keep_mask = np.ones(grid, dtype=np.int32)
            for j in range(gen.num_blocks):
                start = int(draw[3 * j] * (duration - t + 1))
                top = int(draw[3 * j + 1] * (height - h + 1))
                left = int(draw[3 * j + 2] * (width - w + 1))
                block = np.ones(grid, dtype=np.int32)
                block[start : start + t, top : top + h, left : left + w] = 0
                keep_mask *= block
            flat = keep_mask.ravel()
            if np.count_nonzero(flat) > 0:
                break
            attempt += 1
        enc.append(np.flatnonzero(flat))
        pred.append(np.flatnonzero(flat == 0))
    k_enc, k_pred = min(map(len, enc)), min(map(len, pred))
    return np.stack([e[:k_enc] for e in enc]), np.stack([p[:k_pred] for p in pred])


@pytest.mark.parametrize(
    ("gen", "grid"),
    [
        (SHORT, VJEPA_GRID),
        (LONG, VJEPA_GRID),  # about 8% of the draws cover the whole frame: exercises the redraw loop
        (Gen(3, (0.2, 0.5), (0.4, 0.9), (0.5, 2.0)), DEMO_GRID),
        (Gen(8, (0.5, 0.5), (1.0, 1.0), (1.0, 1.0)), (2, 4, 4)),  # 62% of the draws leave nothing: redraws
    ],
)
def test_faithful_mode_equals_a_literal_transcription_of_the_reference(gen: Gen, grid) -> None:
    sampler = MultiBlock3DMaskSampler(gen, grid, mode="faithful", seed=4, stream=1)
    redrawn = 0
    for step in range(5):
        slots = [5, 0, 17, 3, 9, 12, 30, 31, 1, 2]
        mb = sampler.sample(step, slots, 32)
        ctx, tgt = _literal_reference(gen, grid, 4, step, slots, 1)
        np.testing.assert_array_equal(mb.ctx_idx.numpy(), ctx)
        np.testing.assert_array_equal(mb.tgt_idx[:, 0].numpy(), tgt)
        redrawn += int((mb.redraws > 0).sum())
        assert not mb.fallback.any()
    if gen.spatial_scale[0] >= 0.5:
        assert redrawn > 0, "the redraw path should have been exercised"


def test_faithful_block_shape_enumeration_covers_a_dense_sweep() -> None:
    gen = Gen(1, (0.1, 0.6), (0.3, 1.0), (0.5, 2.0))
    grid = (8, 9, 11)
    listed = {tuple(x) for x in m3.faithful_block_shapes(grid, gen).tolist()}
    rng = np.random.default_rng(0)
    for u in rng.random((3000, 3)):
        assert m3._faithful_thw(u, grid, m3._as_spec(gen, "g")) in listed


# ----------------------------------------------------------------------------- fixed mode


def test_fixed_common_lengths_are_global_batch_minima_with_random_subsets() -> None:
    sampler = MultiBlock3DMaskSampler(SHORT, VJEPA_GRID, seed=4)
    everything = sampler.sample(0, range(64), 64)
    part = sampler.sample(0, range(8), 64)
    ctx_counts = everything.ctx_full.reshape(64, -1).sum(1)
    tgt_counts = everything.tgt_full.reshape(64, -1).sum(1)
    assert part.ctx_idx.shape[1] == ctx_counts.min() and part.tgt_idx.shape[2] == tgt_counts.min()
    # Not the raster-first cut: some sample keeps a token after its first K context tokens.
    n = int(np.prod(VJEPA_GRID))
    full = part.ctx_full.reshape(8, -1)
    first = np.stack([np.flatnonzero(full[i])[: part.ctx_idx.shape[1]] for i in range(8)])
    assert not np.array_equal(first, part.ctx_idx.numpy())
    assert (_membership(part.ctx_idx.numpy(), n) <= full).all()


def test_fixed_mode_reaches_every_position() -> None:
    gen = Gen(2, (0.2, 0.4), (0.5, 1.0), (0.75, 1.5))
    sampler = MultiBlock3DMaskSampler(gen, DEMO_GRID, seed=0)
    n = int(np.prod(DEMO_GRID))
    in_ctx = np.zeros(n, dtype=bool)
    in_tgt = np.zeros(n, dtype=bool)
    for step in range(60):
        mb = sampler.sample(step, range(16), 16)
        in_ctx |= _membership(mb.ctx_idx.numpy(), n).any(0)
        in_tgt |= _membership(mb.tgt_idx.numpy(), n).any(0)
    assert in_ctx.all() and in_tgt.all()


@pytest.mark.parametrize("mode", ["fixed", "faithful"])
def test_redraws_and_fallbacks_terminate_and_keep_min_keep_tokens(mode: str) -> None:
    """Four 3x3 blocks on a 4x4 frame, min_keep = what one block leaves: only stacked blocks qualify."""
    gen = Gen(4, (0.5, 0.5), (1.0, 1.0), (1.0, 1.0))
    grid = (2, 4, 4)
    sampler = MultiBlock3DMaskSampler(gen, grid, mode=mode, seed=0, min_keep=14)
    fallbacks = redraws = 0
    for step in range(20):
        mb = sampler.sample(step, range(16), 16)
        _check_invariants(mb, grid, 16, 14)
        assert (mb.ctx_full.reshape(16, -1).sum(1) >= 14).all()
        fallbacks += int(mb.fallback.sum())
        redraws += int((mb.redraws > 0).sum())
        stacked = mb.starts[mb.fallback]
        assert (stacked == stacked[:, :1]).all(), "a fallback stacks every block on the first one"
    assert redraws > 0
    if mode == "fixed":
        assert fallbacks > 0, "20 tries fail often here: the fallback must have been used"


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("gen", "kwargs", "pattern"),
    [
        (Gen(0), {}, r"mask\.generators\[0\]\.num_blocks"),
        (Gen(spatial_scale=(0.0, 0.2)), {}, r"mask\.generators\[0\]\.spatial_scale"),
        (Gen(spatial_scale=(0.3, 0.2)), {}, r"spatial_scale"),
        (Gen(temporal_scale=(0.5, 1.5)), {"stream": 1}, r"mask\.generators\[1\]\.temporal_scale"),
        (Gen(aspect=(-1.0, 1.0)), {}, r"mask\.generators\[0\]\.aspect"),
        (Gen(aspect=(2.0, 1.0)), {}, r"aspect"),
        (Gen(spatial_scale="12"), {}, r"spatial_scale.*pair"),
        (Gen(spatial_scale=(0.1, 0.2, 0.3)), {}, r"spatial_scale.*pair"),
        (SHORT, {"mode": "exact"}, r"mask\.mode"),
        (SHORT, {"min_keep": -1}, r"mask\.min_keep"),
        # A block can cover every token: no context is possible (the reference loops forever).
        (Gen(2, (1.0, 1.0), (1.0, 1.0), (1.0, 1.0)), {"stream": 1},
         r"mask\.generators\[1\]\.spatial_scale.*Fix: lower"),
        (Gen(2, (1.0, 1.0), (1.0, 1.0), (1.0, 1.0)), {"mode": "faithful"}, r"loops forever"),
        # The long-range block (up to 8x12x12) leaves 416 tokens: min_keep 500 cannot be met.
        (LONG, {"min_keep": 500}, r"set mask\.min_keep<=416"),
    ],
)
def test_bad_configs_raise_config_errors_naming_the_key(gen: Gen, kwargs, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        MultiBlock3DMaskSampler(gen, VJEPA_GRID, **kwargs)


def test_faithful_refuses_empty_blocks_that_fixed_mode_clips() -> None:
    tiny = Gen(1, (0.1, 0.1), (1.0, 1.0), (1.0, 1.0))  # int(3*3*0.1) = 0 tokens: a 0x0 block
    with pytest.raises(ConfigError, match=r"empty target.*mask\.generators\[0\]\.spatial_scale"):
        MultiBlock3DMaskSampler(tiny, (2, 3, 3), mode="faithful")
    mb = MultiBlock3DMaskSampler(tiny, (2, 3, 3)).sample(0, range(4), 4)
    assert mb.block_thw == (2, 1, 1)


def test_bad_grids_slots_and_seeds_raise() -> None:
    with pytest.raises(ConfigError, match=r"\(T, H, W\)"):
        MultiBlock3DMaskSampler(SHORT, (14, 14))
    with pytest.raises(ConfigError, match="num_frames"):
        MultiBlock3DMaskSampler(SHORT, (0, 14, 14))
    with pytest.raises(ValueError, match="seed"):
        MultiBlock3DMaskSampler(SHORT, VJEPA_GRID, seed=-1)
    sampler = MultiBlock3DMaskSampler(SHORT, VJEPA_GRID)
    with pytest.raises(ValueError, match="slots"):
        sampler(0, [8], 8)
    with pytest.raises(ValueError, match="slots"):
        sampler(0, [], 8)
    with pytest.raises(ValueError, match="step"):
        sampler(-1, [0], 8)
