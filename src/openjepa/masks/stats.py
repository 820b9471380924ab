"""Statistics and pictures of a mask sampler: how big the contexts are and where masks fall on the grid.

These are the numbers that expose the reference sampler's flaws (``spec/ijepa.md``): the context shrinking
from about 110 to about 70 of 256 patches, the empty last row and column, the top-of-image bias, and the
perfect correlation between the target scale and aspect ratio.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from openjepa.masks.multiblock import PLACEMENT_TRIES, MaskBatch, MultiBlockMaskSampler

__all__ = ["mask_statistics", "save_mask_png"]


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
