"""Statistics and pictures of a mask sampler: how big the contexts are and where masks fall on the grid.

These are the numbers that expose the reference sampler's flaws (``spec/ijepa.md``): the context shrinking
from about 110 to about 70 of 256 patches, the empty last row and column, the top-of-image bias, and the
perfect correlation between the target scale and aspect ratio.

Video samplers (``multiblock3d``, ``tube``; one generator or the list a batch uses) have their own pair,
:func:`video_mask_statistics` and :func:`save_video_mask_png`: context and target sizes before and after the
cut to a common length, the effective masking ratio, per-token frequencies over ``(t, h, w)`` (where the
faithful mode's time-major raster cut shows as a bias towards the first frames), redraws and fallbacks.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from openjepa.masks.multiblock import PLACEMENT_TRIES, MaskBatch, MultiBlockMaskSampler
from openjepa.masks.multiblock3d import VideoMaskBatch

__all__ = ["mask_statistics", "save_mask_png", "save_video_mask_png", "video_mask_statistics"]


def _membership(idx: np.ndarray, num_patches: int) -> np.ndarray:
    """``bool[b, num_patches]``: which patches appear in each row of ``idx [b, ...]``."""
    b = idx.shape[0]
    out = np.zeros((b, num_patches), dtype=bool)
    out[np.arange(b)[:, None], idx.reshape(b, -1)] = True
    return out


def _rounded(values: np.ndarray, digits: int = 4) -> list[float]:
    return [round(float(v), digits) for v in values]


def mask_statistics(
    sampler: MultiBlockMaskSampler,
    batches: int,
    batch_size: int,
    start_step: int = 0,
    global_batch: int | None = None,
) -> dict[str, Any]:
    """Measures a sampler over ``batches`` consecutive steps of ``batch_size`` samples each.

    Each step asks for slots ``0 .. batch_size - 1`` of a global batch of ``global_batch`` samples
    (default ``batch_size``). In faithful mode the common context length is the minimum over the call,
    i.e. over ``batch_size`` samples (the reference's per-GPU batch); in fixed mode it is the minimum over
    the global batch.

    Args:
        sampler: the sampler to measure.
        batches: number of steps.
        batch_size: samples per step.
        start_step: first step.
        global_batch: global batch size passed to the sampler (fixed mode); defaults to ``batch_size``.

    Returns:
        A JSON-serializable dict. Sizes are in patches. ``context_size_mean`` counts context patches per
        sample after the cut to a common length, ``context_size_before_trim_mean`` before it;
        ``target_size_mean`` counts patches per target block. ``{context,target}_{row,col}_freq[i]`` is the
        fraction of row/column ``i``'s patches in the context / in any target, averaged over samples
        (``context_before_trim_{row,col}_freq``: the context before the cut).
        Also: mode, grid, the fraction of contexts overlapping a target, of fallback contexts, of
        redrawn targets and of targets stacked on one block (fixed mode's last resort), the correlation
        of the target scale and aspect draws, the target block sizes seen, and the mean sampling time
        per step.
    """
    if batches < 1 or batch_size < 1:
        raise ValueError(f"need batches >= 1 and batch_size >= 1, got {batches} and {batch_size}")
    global_batch = batch_size if global_batch is None else global_batch
    if global_batch < batch_size:
        raise ValueError(f"global_batch={global_batch} must be >= batch_size={batch_size}")
    height, width = sampler.grid
    n = height * width
    slots = list(range(batch_size))
    ctx_grid = np.zeros((height, width))
    full_grid = np.zeros((height, width))
    tgt_grid = np.zeros((height, width))
    ctx_sizes, full_sizes, tgt_sizes, union_sizes = [], [], [], []
    overlap = fallback = redrawn = stacked = 0
    hw_counts: dict[str, int] = {}
    scale_draws, aspect_draws = [], []
    seconds = 0.0
    for step in range(start_step, start_step + batches):
        t0 = time.perf_counter()
        mb: MaskBatch = sampler.sample(step, slots, global_batch)
        seconds += time.perf_counter() - t0
        ctx = _membership(mb.ctx_idx.numpy(), n)
        tgt = _membership(mb.tgt_idx.numpy(), n)
        ctx_grid += ctx.reshape(-1, height, width).sum(axis=0)
        tgt_grid += tgt.reshape(-1, height, width).sum(axis=0)
        full_grid += mb.ctx_full.sum(axis=0)
        ctx_sizes.append(mb.ctx_idx.shape[1])
        full_sizes.append(mb.ctx_full.reshape(batch_size, -1).sum(axis=1))
        tgt_sizes.append(mb.tgt_idx.shape[2])
        union_sizes.append(tgt.sum(axis=1))
        # Before the cut: the reference's relaxation lets contexts take target patches (a leak).
        overlap += int((mb.ctx_full.reshape(batch_size, -1) & tgt).any(axis=1).sum())
        fallback += int(mb.ctx_fallback.sum())
        redrawn += int((mb.tgt_redraws > 0).sum())
        stacked += int((mb.tgt_redraws >= PLACEMENT_TRIES).sum())
        key = f"{mb.target_hw[0]}x{mb.target_hw[1]}"
        hw_counts[key] = hw_counts.get(key, 0) + 1
        scale_draws.append(mb.draws["target_scale"])
        aspect_draws.append(mb.draws["target_aspect"])
    samples = batches * batch_size
    ctx_freq = ctx_grid / samples
    tgt_freq = tgt_grid / samples
    full_freq = full_grid / samples
    full = np.concatenate(full_sizes)
    corr = None
    if batches > 2 and np.std(scale_draws) > 0 and np.std(aspect_draws) > 0:
        corr = round(float(np.corrcoef(scale_draws, aspect_draws)[0, 1]), 4)
    return {
        "mode": sampler.mode,
        "grid": [height, width],
        "seed": sampler.seed,
        "batches": batches,
        "batch_size": batch_size,
        "global_batch": global_batch,
        "start_step": start_step,
        "num_targets": sampler.cfg.num_targets,
        "min_keep": sampler.cfg.min_keep,
        "context_size_mean": round(float(np.mean(ctx_sizes)), 3),
        "context_size_min": int(np.min(ctx_sizes)),
        "context_size_max": int(np.max(ctx_sizes)),
        "context_size_before_trim_mean": round(float(full.mean()), 3),
        "context_size_before_trim_min": int(full.min()),
        "target_size_mean": round(float(np.mean(tgt_sizes)), 3),
        "target_union_size_mean": round(float(np.concatenate(union_sizes).mean()), 3),
        "context_row_freq": _rounded(ctx_freq.mean(axis=1)),
        "context_col_freq": _rounded(ctx_freq.mean(axis=0)),
        "context_before_trim_row_freq": _rounded(full_freq.mean(axis=1)),
        "context_before_trim_col_freq": _rounded(full_freq.mean(axis=0)),
        "target_row_freq": _rounded(tgt_freq.mean(axis=1)),
        "target_col_freq": _rounded(tgt_freq.mean(axis=0)),
        "context_target_overlap_fraction": round(overlap / samples, 5),
        "context_fallback_fraction": round(fallback / samples, 5),
        "target_redraw_fraction": round(redrawn / samples, 5),
        "target_stacked_fraction": round(stacked / samples, 5),
        "target_scale_aspect_corr": corr,
        "target_block_hw_counts": dict(sorted(hw_counts.items())),
        "bounds": sampler.bounds,
        "ms_per_batch": round(1e3 * seconds / batches, 3),
    }


# A fixed palette (RGB in [0, 1]) so pictures from different runs compare at a glance.
_BACKGROUND = (0.93, 0.93, 0.93)
_CONTEXT = (0.16, 0.40, 0.75)
_CONTEXT_DROPPED = (0.67, 0.80, 0.95)
_TARGETS = ((0.95, 0.55, 0.10), (0.20, 0.65, 0.25), (0.85, 0.20, 0.20), (0.55, 0.35, 0.75),
            (0.60, 0.45, 0.30), (0.90, 0.45, 0.70), (0.50, 0.50, 0.50), (0.75, 0.75, 0.15))
_OVERLAP = (0.0, 0.0, 0.0)


def _mask_image(mb: MaskBatch, i: int, grid: tuple[int, int]) -> np.ndarray:
    """RGB picture ``[H, W, 3]`` of sample ``i``: kept context, cut-away context, targets, overlaps."""
    height, width = grid
    img = np.empty((height * width, 3))
    img[:] = _BACKGROUND
    img[mb.ctx_full[i].reshape(-1)] = _CONTEXT_DROPPED
    ctx = mb.ctx_idx[i].numpy()
    img[ctx] = _CONTEXT
    for t, block in enumerate(mb.tgt_idx[i].numpy()):
        img[block] = _TARGETS[t % len(_TARGETS)]
    in_ctx = np.zeros(height * width, dtype=bool)
    in_ctx[ctx] = True
    in_tgt = np.zeros(height * width, dtype=bool)
    in_tgt[mb.tgt_idx[i].numpy().reshape(-1)] = True
    img[in_ctx & in_tgt] = _OVERLAP
    return img.reshape(height, width, 3)


def save_mask_png(
    sampler: MultiBlockMaskSampler,
    path: str | Path,
    n: int = 8,
    step: int = 0,
    stats: dict[str, Any] | None = None,
) -> Path:
    """Saves a PNG of ``n`` example masks of ``step`` and the row/column frequency bar plots.

    Dark blue: context patches kept; light blue: context patches cut away to reach the common length;
    one colour per target block; black: a context patch that is also a target (only when the reference's
    relaxation or ``allow_overlap`` allowed it).

    Args:
        sampler: the sampler to draw from.
        path: where to write the PNG (parent folders are created).
        n: number of example masks: slots ``0 .. n - 1`` of a batch of ``stats["batch_size"]`` samples
            (at least ``n``) in a global batch of ``stats["global_batch"]``.
        step: the step whose masks are shown.
        stats: a :func:`mask_statistics` result for the bar plots; by default 32 batches of
            ``max(n, 64)`` samples are measured.

    Returns:
        The path written.
    """
    from matplotlib.figure import Figure  # lazy: matplotlib is slow to import; Figure needs no pyplot state

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if stats is None:
        stats = mask_statistics(sampler, batches=32, batch_size=max(n, 64), start_step=step)
    height, width = sampler.grid
    # The examples are the first n samples of a batch like the measured ones, so that the cut to a common
    # length (over the call in faithful mode, over the global batch in fixed mode) is the real one.
    batch = max(n, int(stats.get("batch_size", n)))
    mb = sampler.sample(step, range(batch), max(batch, int(stats.get("global_batch", batch))))
    cols = min(n, 8)
    rows = -(-n // cols)
    fig = Figure(figsize=(2.0 * cols, 2.1 * rows + 2.6), layout="constrained")
    spec = fig.add_gridspec(rows + 1, cols, height_ratios=[1.0] * rows + [1.25])
    for i in range(n):
        ax = fig.add_subplot(spec[i // cols, i % cols])
        ax.imshow(_mask_image(mb, i, sampler.grid), interpolation="nearest")
        ax.set_title(f"ctx {mb.ctx_idx.shape[1]}/{int(mb.ctx_full[i].sum())}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    bottom = spec[rows, :].subgridspec(1, 2)
    for j, (axis, size) in enumerate((("row", height), ("col", width))):
        ax = fig.add_subplot(bottom[0, j])
        pos = np.arange(size)
        ax.bar(pos - 0.2, stats[f"context_{axis}_freq"], width=0.4, color=_CONTEXT, label="context")
        ax.bar(pos + 0.2, stats[f"target_{axis}_freq"], width=0.4, color=_TARGETS[0], label="any target")
        ax.set_xlabel(f"grid {axis}")
        ax.set_ylabel("fraction of patches")
        ax.set_ylim(0, 1)
        if j == 0:
            ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(
        f"mode={stats['mode']} grid={height}x{width} step={step}: context {stats['context_size_mean']:.1f} "
        f"(before cut {stats['context_size_before_trim_mean']:.1f}), target {stats['target_size_mean']:.1f} "
        f"patches per block; bars over {stats['batches']}x{stats['batch_size']} samples",
        fontsize=9,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


# ============================================================================= video samplers


class VideoSampler(Protocol):
    """What the video statistics need from a sampler (``MultiBlock3DMaskSampler``, ``TubeMaskSampler``)."""

    grid: tuple[int, ...]
    num_tokens: int

    def sample(self, step: int, slots: Sequence[int], global_batch: int) -> VideoMaskBatch: ...

    def describe(self) -> dict[str, Any]: ...


def _as_list(samplers: VideoSampler | Sequence[VideoSampler]) -> list[VideoSampler]:
    """One sampler or a list of them (the generators of one batch, which must share a grid)."""
    out = list(samplers) if isinstance(samplers, Sequence) else [samplers]
    if not out:
        raise ValueError("need at least one sampler")
    grids = {tuple(s.grid) for s in out}
    if len(grids) != 1:
        raise ValueError(f"the generators of one batch must share a grid, got {sorted(grids)}")
    return out


def _grid3(grid: Sequence[int]) -> tuple[int, int, int]:
    """A 2-D grid ``(H, W)`` as ``(1, H, W)``: the statistics always speak of (time, row, column)."""
    g = tuple(int(x) for x in grid)
    return (1, *g) if len(g) == 2 else g  # type: ignore[return-value]


class _VideoAccumulator:
    """Running sums of one generator's masks over the measured steps."""

    def __init__(self, grid3: tuple[int, int, int]) -> None:
        self.grid3 = grid3
        self.n = int(np.prod(grid3))
        self.sums = {name: np.zeros(grid3) for name in ("context", "context_before_trim", "target",
                                                        "target_before_trim")}
        self.k_ctx: list[int] = []
        self.k_tgt: list[int] = []
        self.ctx_before: list[np.ndarray] = []
        self.tgt_before: list[np.ndarray] = []
        self.redrawn = self.fallback = self.samples = 0
        self.thw_counts: dict[str, int] = {}
        self.draws: dict[str, list[float]] = {}
        self.seconds = 0.0

    def add(self, mb: VideoMaskBatch, seconds: float) -> None:
        b = mb.ctx_idx.shape[0]
        ctx_full = mb.ctx_full.reshape(b, -1)
        tgt_full = mb.tgt_full.reshape(b, -1)
        for name, mask in (("context", _membership(mb.ctx_idx.numpy(), self.n)), ("context_before_trim", ctx_full),
                           ("target", _membership(mb.tgt_idx.numpy(), self.n)), ("target_before_trim", tgt_full)):
            self.sums[name] += mask.reshape(b, *self.grid3).sum(axis=0)
        self.k_ctx.append(mb.ctx_idx.shape[1])
        self.k_tgt.append(mb.tgt_idx.shape[2])
        self.ctx_before.append(ctx_full.sum(axis=1))
        self.tgt_before.append(tgt_full.sum(axis=1))
        self.redrawn += int((mb.redraws > 0).sum())
        self.fallback += int(mb.fallback.sum())
        self.samples += b
        key = "x".join(str(x) for x in mb.block_thw)
        self.thw_counts[key] = self.thw_counts.get(key, 0) + 1
        for name, value in mb.draws.items():
            self.draws.setdefault(name, []).append(float(value))
        self.seconds += seconds

    def summary(self, sampler: VideoSampler) -> dict[str, Any]:
        """The generator's statistics (see :func:`video_mask_statistics`)."""
        out: dict[str, Any] = dict(sampler.describe())
        ctx_before = np.concatenate(self.ctx_before)
        tgt_before = np.concatenate(self.tgt_before)
        ctx_mean = float(np.mean(self.k_ctx))
        out.update(
            context_size_mean=round(ctx_mean, 3),
            context_size_min=int(np.min(self.k_ctx)),
            context_size_max=int(np.max(self.k_ctx)),
            context_size_before_trim_mean=round(float(ctx_before.mean()), 3),
            context_size_before_trim_min=int(ctx_before.min()),
            target_size_mean=round(float(np.mean(self.k_tgt)), 3),
            target_size_min=int(np.min(self.k_tgt)),
            target_size_max=int(np.max(self.k_tgt)),
            target_size_before_trim_mean=round(float(tgt_before.mean()), 3),
            target_size_before_trim_min=int(tgt_before.min()),
            masking_ratio=round(1.0 - ctx_mean / self.n, 4),
            masking_ratio_before_trim=round(1.0 - float(ctx_before.mean()) / self.n, 4),
        )
        for name, total in self.sums.items():
            freq = total / self.samples
            for axis_name, axes in (("time", (1, 2)), ("row", (0, 2)), ("col", (0, 1))):
                out[f"{name}_{axis_name}_freq"] = _rounded(freq.mean(axis=axes))
        for name in ("context", "target"):
            freq = self.sums[name] / self.samples
            out[f"{name}_freq"] = np.round(freq, 4).tolist()
            out[f"{name}_freq_range"] = [round(float(freq.min()), 4), round(float(freq.max()), 4)]
        out.update(
            redraw_fraction=round(self.redrawn / self.samples, 5),
            fallback_fraction=round(self.fallback / self.samples, 5),
            block_thw_counts=dict(sorted(self.thw_counts.items())),
            ms_per_batch=round(1e3 * self.seconds / len(self.k_ctx), 3),
        )
        return out


def _draw_correlations(accs: list[_VideoAccumulator]) -> dict[str, float | None]:
    """Per size draw: correlation between the first two generators' values over the steps.

    1.0 in faithful mode, where the generators share their size uniforms as in the reference; near 0 in
    fixed mode. ``None`` when a draw is constant (e.g. V-JEPA's fixed spatial scale) or too few steps.
    """
    if len(accs) < 2:
        return {}
    out: dict[str, float | None] = {}
    for name in sorted(set(accs[0].draws) & set(accs[1].draws)):
        a, b = np.asarray(accs[0].draws[name]), np.asarray(accs[1].draws[name])
        ok = a.size > 2 and np.ptp(a) > 0 and np.ptp(b) > 0  # np.std of a constant can be 1e-17, not 0
        out[name] = round(float(np.corrcoef(a, b)[0, 1]), 4) if ok else None
    return out


def video_mask_statistics(
    samplers: VideoSampler | Sequence[VideoSampler],
    batches: int,
    batch_size: int,
    start_step: int = 0,
    global_batch: int | None = None,
) -> dict[str, Any]:
    """Measures video mask generators over ``batches`` consecutive steps of ``batch_size`` samples each.

    Each step asks every generator for slots ``0 .. batch_size - 1`` of a global batch of
    ``global_batch`` samples (default ``batch_size``). In faithful mode the common lengths are minima
    over the call (the reference's per-GPU batch); in fixed mode over the global batch.

    Args:
        samplers: one generator or the list a batch uses (same grid), e.g. V-JEPA's short- and
            long-range pair.
        batches: number of steps.
        batch_size: samples per step.
        start_step: first step.
        global_batch: global batch size passed to the samplers; defaults to ``batch_size``.

    Returns:
        A JSON-serializable dict: ``grid``, ``num_tokens``, the run's sizes, ``generators`` (one dict per
        generator, below), ``effective_masking_ratio`` (mean over the generators of ``masking_ratio``:
        the fraction of the clip's tokens the encoder does not see), ``effective_masking_ratio_before_trim``,
        ``size_draw_corr`` (per size draw, correlation between the first two generators over the steps)
        and ``ms_per_batch`` (all generators). Per generator: its settings (``describe()``),
        ``context_size_{mean,min,max}`` (tokens after the cut), ``context_size_before_trim_{mean,min}``,
        the same for ``target_*``, ``masking_ratio`` (``1 - context_size_mean / num_tokens``) and
        ``masking_ratio_before_trim``; ``{context,target}[_before_trim]_{time,row,col}_freq``: per time
        step / row / column, the fraction of its tokens in the context / target, averaged over samples;
        ``{context,target}_freq``: the per-token frequency ``[T][H][W]`` after the cut and its
        ``_range``; ``redraw_fraction``, ``fallback_fraction``, ``block_thw_counts`` and ``ms_per_batch``.
    """
    gens = _as_list(samplers)
    if batches < 1 or batch_size < 1:
        raise ValueError(f"need batches >= 1 and batch_size >= 1, got {batches} and {batch_size}")
    global_batch = batch_size if global_batch is None else global_batch
    if global_batch < batch_size:
        raise ValueError(f"global_batch={global_batch} must be >= batch_size={batch_size}")
    grid3 = _grid3(gens[0].grid)
    accs = [_VideoAccumulator(grid3) for _ in gens]
    slots = list(range(batch_size))
    for step in range(start_step, start_step + batches):
        for sampler, acc in zip(gens, accs, strict=True):
            t0 = time.perf_counter()
            mb = sampler.sample(step, slots, global_batch)
            acc.add(mb, time.perf_counter() - t0)
    per_gen = [acc.summary(s) for s, acc in zip(gens, accs, strict=True)]
    return {
        "kind": "video",
        "grid": list(gens[0].grid),
        "num_tokens": int(np.prod(grid3)),
        "batches": batches,
        "batch_size": batch_size,
        "global_batch": global_batch,
        "start_step": start_step,
        "generators": per_gen,
        "effective_masking_ratio": round(float(np.mean([g["masking_ratio"] for g in per_gen])), 4),
        "effective_masking_ratio_before_trim": round(
            float(np.mean([g["masking_ratio_before_trim"] for g in per_gen])), 4
        ),
        "size_draw_corr": _draw_correlations(accs),
        "ms_per_batch": round(sum(g["ms_per_batch"] for g in per_gen), 3),
    }


_TARGET_DROPPED = (0.98, 0.80, 0.60)


def _video_frames(mb: VideoMaskBatch, i: int, grid3: tuple[int, int, int]) -> np.ndarray:
    """RGB pictures ``[T, H, W, 3]`` of sample ``i``: context kept / cut away, target kept / cut away."""
    n = int(np.prod(grid3))
    img = np.empty((n, 3))
    img[:] = _BACKGROUND
    img[mb.ctx_full[i].reshape(-1)] = _CONTEXT_DROPPED
    img[mb.tgt_full[i].reshape(-1)] = _TARGET_DROPPED
    img[mb.ctx_idx[i].numpy()] = _CONTEXT
    img[mb.tgt_idx[i].numpy().reshape(-1)] = _TARGETS[0]
    return img.reshape(*grid3, 3)


def save_video_mask_png(
    samplers: VideoSampler | Sequence[VideoSampler],
    path: str | Path,
    n: int = 4,
    step: int = 0,
    stats: dict[str, Any] | None = None,
) -> Path:
    """Saves a PNG of ``n`` example clips per generator (rows) frame by frame (columns), and frequency plots.

    Dark blue: context tokens kept; light blue: context tokens cut away to reach the common length;
    orange: target tokens kept; light orange: target tokens cut away; grey: neither (only where a cut
    happened). Below, per generator, the fraction of each time step's tokens in the context and in the
    target, after the cut (solid) and before it (dashed): the faithful mode's raster cut shows as a
    decline over time, fixed mode stays flat.

    Args:
        samplers: one generator or the list a batch uses (same grid).
        path: where to write the PNG (parent folders are created).
        n: example clips per generator: slots ``0 .. n - 1`` of a batch of ``stats["batch_size"]``
            samples (at least ``n``) in a global batch of ``stats["global_batch"]``.
        step: the step whose masks are shown.
        stats: a :func:`video_mask_statistics` result for the plots; by default 16 batches of
            ``max(n, 32)`` samples are measured.

    Returns:
        The path written.
    """
    from matplotlib.figure import Figure  # lazy: matplotlib is slow to import; Figure needs no pyplot state

    gens = _as_list(samplers)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if stats is None:
        stats = video_mask_statistics(gens, batches=16, batch_size=max(n, 32), start_step=step)
    grid3 = _grid3(gens[0].grid)
    duration = grid3[0]
    batch = max(n, int(stats.get("batch_size", n)))
    global_batch = max(batch, int(stats.get("global_batch", batch)))
    rows = len(gens) * n
    # At least 7 inches wide so that the title and the plots fit even for a single frame (2-D grids).
    fig = Figure(figsize=(max(1.15 * duration + 1.6, 7.0), 1.15 * rows + 2.8), layout="constrained")
    spec = fig.add_gridspec(rows + 1, duration, height_ratios=[1.0] * rows + [2.2])
    for g, sampler in enumerate(gens):
        mb = sampler.sample(step, range(batch), global_batch)
        info = sampler.describe()
        for i in range(n):
            frames = _video_frames(mb, i, grid3)
            r = g * n + i
            for t in range(duration):
                ax = fig.add_subplot(spec[r, t])
                ax.imshow(frames[t], interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(f"t={t}", fontsize=8)
                if t == 0:
                    ax.set_ylabel(f"gen {g} #{i}\n{info['sampler']}", fontsize=7)
    bottom = spec[rows, :].subgridspec(1, len(gens))
    steps = np.arange(duration)
    for g, gen_stats in enumerate(stats["generators"][: len(gens)]):
        ax = fig.add_subplot(bottom[0, g])
        ax.plot(steps, gen_stats["context_time_freq"], color=_CONTEXT, marker="o", label="context")
        ax.plot(steps, gen_stats["context_before_trim_time_freq"], color=_CONTEXT, ls="--", label="before cut")
        ax.plot(steps, gen_stats["target_time_freq"], color=_TARGETS[0], marker="o", label="target")
        ax.plot(steps, gen_stats["target_before_trim_time_freq"], color=_TARGETS[0], ls="--")
        ax.set_ylim(0, 1)
        ax.set_xticks(steps)
        ax.set_xlabel("time step")
        ax.set_ylabel("fraction of tokens")
        ax.set_title(
            f"gen {g}: {gen_stats['sampler']} {gen_stats['mode']}, masking {gen_stats['masking_ratio']:.3f}",
            fontsize=8,
        )
        if g == 0:
            ax.legend(fontsize=7, loc="center right")
    grid_txt = "x".join(str(x) for x in stats["grid"])
    fig.suptitle(
        f"grid={grid_txt} step={step}: effective masking {stats['effective_masking_ratio']:.3f} "
        f"(before cut {stats['effective_masking_ratio_before_trim']:.3f}); "
        f"plots over {stats['batches']}x{stats['batch_size']} samples (global batch {stats['global_batch']})",
        fontsize=9,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
