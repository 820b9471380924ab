"""Multi-block masks for I-JEPA: one context block and several target blocks per image.

The algorithm is the one of ``spec/ijepa.md`` ("Multi-block masking: the algorithm"). Per optimizer step,
one target block size and one context block size are drawn for the whole batch; per sample, the target
blocks are placed at random (they may overlap each other), the context block is placed at random and the
target patches are removed from it, and finally every context is cut to a common length so the batch
stacks.

Two modes (``mask.mode``):

``faithful``
    The reference sampler's behaviour, flaws included: scale and aspect ratio come from one uniform
    number, block positions never reach the last grid row and column, rejected context placements
    relax the "no target patch" constraint one target at a time, and every context keeps its *first*
    ``K`` patches in raster order, ``K`` being the smallest context of the call. Configurations on which
    the reference loops forever raise :class:`~openjepa.config.ConfigError` instead.

``fixed`` (default)
    Independent scale and aspect draws, every grid position reachable, contexts never touch a target,
    and the common length ``K`` is the smallest context of the whole *global* batch, each sample keeping
    a uniformly random subset of ``K`` of its context patches. Termination is guaranteed by bounded
    rejection plus a fallback, and the up-front check in the constructor (see
    :class:`MultiBlockMaskSampler`). ``docs/masks.md`` explains each choice.

Randomness: every draw comes from a numpy stream seeded by ``SeedSequence([seed, step, salt, kind,
attempt])`` and laid out one row per sample, so sample ``slot``'s row is the same whatever the number of
rows drawn. Masks are therefore a pure function of ``(seed, step, slot)`` (plus ``global_batch`` in fixed
mode, whose common length ``K`` depends on the whole batch), whatever the loader workers or processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from openjepa.config import ConfigError, MaskConfig

__all__ = ["PLACEMENT_TRIES", "MaskBatch", "MultiBlockMaskSampler"]

# Separates the mask streams from any other user of SeedSequence([seed, step, ...]) (data order, ...).
_SALT = 0x6D61736B  # "mask"
# Stream kinds. Each kind has its own stream so that drawing more or fewer rows of one never shifts another.
_SIZE, _FAITHFUL_TGT, _FAITHFUL_CTX, _FIXED_TGT, _FIXED_CTX, _FIXED_SUBSET = range(6)
# Placements tried before giving up on a constraint: the reference's timeout, kept for both modes.
PLACEMENT_TRIES = 20


# ----------------------------------------------------------------------------- random streams


def _uniform_rows(seed: int, step: int, kind: int, attempt: int, rows: int, cols: int) -> np.ndarray:
    """Uniform numbers in [0, 1) of shape ``[rows, cols]``; row ``i`` depends only on the key and ``i``.

    ``Generator.random`` turns each 64-bit output into one double, in C order, so the first ``n`` rows
    are identical whether ``n`` or ``n + 1000`` rows are drawn. This is what makes a sample's mask
    independent of how the batch is split between workers.
    """
    seq = np.random.SeedSequence([seed, step, _SALT, kind, attempt])
    return np.random.Generator(np.random.PCG64(seq)).random((rows, cols))


def _rows_for(slots: np.ndarray, seed: int, step: int, kind: int, attempt: int, cols: int) -> np.ndarray:
    """The rows of ``_uniform_rows`` belonging to ``slots`` (shape ``[len(slots), cols]``).

    When the slots are sparse (a late process's share of a large global batch), the generator jumps from
    row to row with ``PCG64.advance`` (one 64-bit output per double) instead of drawing every row before.
    """
    rows = int(slots.max()) + 1
    if rows <= 2 * slots.size:
        return _uniform_rows(seed, step, kind, attempt, rows, cols)[slots]
    bitgen = np.random.PCG64(np.random.SeedSequence([seed, step, _SALT, kind, attempt]))
    gen = np.random.Generator(bitgen)
    unique, inverse = np.unique(slots, return_inverse=True)
    out = np.empty((unique.size, cols))
    position = 0  # doubles drawn so far
    for i, slot in enumerate(unique.tolist()):
        bitgen.advance(slot * cols - position)
        out[i] = gen.random(cols)
        position = (slot + 1) * cols
    return out[inverse.reshape(-1)]


# ----------------------------------------------------------------------------- block sizes


def _lerp(bounds: tuple[float, float], u: float) -> float:
    """``low + u * (high - low)``: a uniform draw mapped onto a config range."""
    return float(bounds[0] + u * (bounds[1] - bounds[0]))


def _faithful_block_hw(
    u: np.ndarray | float, grid: tuple[int, int], scale: tuple[float, float], aspect: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Block height and width as the reference computes them from ONE uniform number ``u``.

    The same ``u`` sets the scale and the aspect ratio (flaw 1), the patch budget is truncated to an
    integer before the square roots, and the clipping leaves at most ``H - 1`` rows and ``W - 1``
    columns (part of flaw 2). ``np.rint`` rounds half to even, like Python's ``round``.
    """
    height, width = grid
    u = np.asarray(u, dtype=np.float64)
    s = scale[0] + u * (scale[1] - scale[0])
    max_keep = np.floor(height * width * s)  # int() of a positive number
    a = aspect[0] + u * (aspect[1] - aspect[0])
    h = np.minimum(np.rint(np.sqrt(max_keep * a)), height - 1).astype(np.int64)
    w = np.minimum(np.rint(np.sqrt(max_keep / a)), width - 1).astype(np.int64)
    return h, w


def _fixed_block_hw(
    u_scale: np.ndarray | float,
    u_aspect: np.ndarray | float,
    grid: tuple[int, int],
    scale: tuple[float, float],
    aspect: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """Block height and width from independent scale and aspect draws, clipped to ``[1, H] x [1, W]``."""
    height, width = grid
    area = height * width * (scale[0] + np.asarray(u_scale, dtype=np.float64) * (scale[1] - scale[0]))
    a = aspect[0] + np.asarray(u_aspect, dtype=np.float64) * (aspect[1] - aspect[0])
    h = np.clip(np.rint(np.sqrt(area * a)), 1, height).astype(np.int64)
    w = np.clip(np.rint(np.sqrt(area / a)), 1, width).astype(np.int64)
    return h, w


def _probe_points(breaks: np.ndarray) -> np.ndarray:
    """Points of [0, 1) that visit every piece of a piecewise-constant function with these breakpoints.

    Each breakpoint, its two floating-point neighbours and every midpoint between consecutive breakpoints
    are returned, so no piece is missed even when a computed breakpoint is off by rounding.
    """
    b = np.unique(np.clip(np.concatenate([[0.0, 1.0], np.ravel(breaks)]), 0.0, 1.0))
    pts = np.concatenate([b, (b[:-1] + b[1:]) / 2, np.nextafter(b, -1.0), np.nextafter(b, 2.0)])
    return pts[(pts >= 0.0) & (pts < 1.0)]


def _aspect_breaks(area: np.ndarray, aspect: tuple[float, float], side: int) -> np.ndarray:
    """Values of the aspect uniform where ``rint(sqrt(area*a))`` or ``rint(sqrt(area/a))`` changes.

    Only sides up to ``side`` matter: larger ones are clipped away.
    """
    if aspect[1] == aspect[0]:
        return np.empty(0)
    area = np.asarray(area, dtype=np.float64).reshape(-1, 1)
    area = area[area[:, 0] > 0]
    half = np.arange(side + 1, dtype=np.float64)[None, :] + 0.5
    a = np.concatenate([(half**2 / area).ravel(), (area / half**2).ravel()])
    return (a - aspect[0]) / (aspect[1] - aspect[0])


def faithful_block_sizes(
    grid: tuple[int, int], scale: tuple[float, float], aspect: tuple[float, float]
) -> np.ndarray:
    """Every ``(h, w)`` the faithful size draw can return, as an ``[n, 2]`` array (exact enumeration).

    The size is a piecewise-constant function of the uniform ``u``; its breakpoints are where the
    integer patch budget changes and where either rounded side changes, so evaluating it on both sides
    of every breakpoint and between them finds every value it takes.
    """
    height, width = grid
    n = height * width
    lo, hi = int(np.floor(n * scale[0])), int(np.floor(n * scale[1]))
    budgets = np.arange(lo, hi + 1, dtype=np.float64)
    breaks = [_aspect_breaks(budgets, aspect, max(height, width))]
    if scale[1] > scale[0]:
        breaks.append((budgets[1:] / n - scale[0]) / (scale[1] - scale[0]))
    h, w = _faithful_block_hw(_probe_points(np.concatenate(breaks)), grid, scale, aspect)
    return np.unique(np.stack([h, w], axis=1), axis=0)


def fixed_block_sizes(
    grid: tuple[int, int], scale: tuple[float, float], aspect: tuple[float, float], at: str
) -> np.ndarray:
    """Every ``(h, w)`` the fixed size draw reaches at the low (``at="low"``) or high end of the scale range.

    Both sides grow with the scale, so the smallest blocks are at the low end and the largest at the
    high end (its supremum: the draw never quite reaches it, which only makes the checks safer).
    """
    u_scale = 0.0 if at == "low" else 1.0
    area = grid[0] * grid[1] * (scale[0] + u_scale * (scale[1] - scale[0]))
    u_aspect = _probe_points(_aspect_breaks(np.array([area]), aspect, max(grid)))
    h, w = _fixed_block_hw(np.full_like(u_aspect, u_scale), u_aspect, grid, scale, aspect)
    return np.unique(np.stack([h, w], axis=1), axis=0)


# ----------------------------------------------------------------------------- block geometry


def _block_masks(tops: np.ndarray, lefts: np.ndarray, h: int, w: int, grid: tuple[int, int]) -> np.ndarray:
    """Boolean masks ``[..., H, W]`` of ``h x w`` blocks whose top-left corners are ``(tops, lefts)``."""
    rows = np.arange(grid[0])
    cols = np.arange(grid[1])
    in_rows = (rows >= tops[..., None]) & (rows < tops[..., None] + h)
    in_cols = (cols >= lefts[..., None]) & (cols < lefts[..., None] + w)
    return in_rows[..., :, None] & in_cols[..., None, :]


def _integral(masks: np.ndarray) -> np.ndarray:
    """Summed-area tables ``[..., H + 1, W + 1]``: any rectangle's count in four look-ups.

    Built as ``L @ M @ U`` with triangular matrices of ones: batched float32 matmuls are several times
    faster than ``cumsum`` along two axes here, and exact (counts stay far below 2**24).
    """
    height, width = masks.shape[-2:]
    lower = np.tril(np.ones((height + 1, height), dtype=np.float32), -1)  # row i sums mask rows < i
    upper = np.triu(np.ones((width, width + 1), dtype=np.float32), 1)  # column j sums mask columns < j
    return np.rint(lower @ masks.astype(np.float32) @ upper).astype(np.int32)


def _union_masks(tops: np.ndarray, lefts: np.ndarray, h: int, w: int, grid: tuple[int, int]) -> np.ndarray:
    """Union ``[n, H, W]`` of the ``h x w`` blocks at ``tops, lefts [n, T]``.

    The sum over blocks of (row indicator) x (column indicator) is one batched matmul, several times
    faster than materializing ``[n, T, H, W]``.
    """
    rows = np.arange(grid[0])
    cols = np.arange(grid[1])
    in_rows = ((rows >= tops[..., None]) & (rows < tops[..., None] + h)).astype(np.float32)  # [n, T, H]
    in_cols = ((cols >= lefts[..., None]) & (cols < lefts[..., None] + w)).astype(np.float32)  # [n, T, W]
    return (np.swapaxes(in_rows, -1, -2) @ in_cols) > 0


def _rect_sums(table: np.ndarray, tops: np.ndarray, lefts: np.ndarray, h: int, w: int) -> np.ndarray:
    """Counts inside ``h x w`` rectangles: ``table [n, H+1, W+1]``, ``tops, lefts [n, k]`` -> ``[n, k]``."""
    n = np.arange(table.shape[0])[:, None]
    bottom, right = tops + h, lefts + w
    return table[n, bottom, right] - table[n, tops, right] - table[n, bottom, lefts] + table[n, tops, lefts]


def _target_indices(tops: np.ndarray, lefts: np.ndarray, h: int, w: int, width: int) -> np.ndarray:
    """Raster indices ``[..., h * w]`` (ascending) of the blocks at ``(tops, lefts)``."""
    offsets = (np.arange(h)[:, None] * width + np.arange(w)[None, :]).ravel()
    return (tops * width + lefts)[..., None] + offsets


def _first_true(valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: whether any entry is true, and the index of the first true entry (0 when none)."""
    return valid.any(axis=1), valid.argmax(axis=1)


# ----------------------------------------------------------------------------- the sampler


@dataclass
class MaskBatch:
    """Masks of one call plus what the statistics need.

    Attributes:
        ctx_idx: ``LongTensor[b, K_ctx]``, context patch indices (raster order, ascending per row).
        tgt_idx: ``LongTensor[b, num_targets, K_tgt]``, target patch indices (ascending per block).
        ctx_full: ``bool[b, H, W]``, each context before it was cut to ``K_ctx`` patches.
        ctx_fallback: ``bool[b]``; faithful: the reference relaxed the "no target patch" constraint
            (the context may then overlap targets); fixed: no context placement kept ``min_keep``
            patches, so the context is every patch outside the targets.
        tgt_redraws: ``int[b]``, fixed mode: how many times the targets were redrawn because they left
            fewer than ``min_keep`` free patches (``PLACEMENT_TRIES``: all targets were stacked on the
            first one); always 0 in faithful mode.
        target_hw: the batch's target block ``(h, w)``.
        context_hw: the batch's context block ``(h, w)``.
        draws: the batch-level uniform-derived values (target/context scale and aspect).
    """

    ctx_idx: torch.Tensor
    tgt_idx: torch.Tensor
    ctx_full: np.ndarray
    ctx_fallback: np.ndarray
    tgt_redraws: np.ndarray
    target_hw: tuple[int, int]
    context_hw: tuple[int, int]
    draws: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, torch.Tensor]:
        """The two index tensors, as the collate function puts them in the batch."""
        return {"ctx_idx": self.ctx_idx, "tgt_idx": self.tgt_idx}


@dataclass
class _FixedStep:
    """Everything fixed mode computes for all samples of one global batch (cached per step)."""

    ctx: np.ndarray  # bool [G, H, W] context before subsampling
    tgt_tops: np.ndarray  # int [G, T]
    tgt_lefts: np.ndarray  # int [G, T]
    target_hw: tuple[int, int]
    context_hw: tuple[int, int]
    fallback: np.ndarray  # bool [G]
    redraws: np.ndarray  # int [G]
    k_ctx: int
    draws: dict[str, float]


class MultiBlockMaskSampler:
    """I-JEPA multi-block mask sampler (``mask.mode`` = ``fixed`` or ``faithful``).

    Guarantees, checked up front so that sampling always terminates:

    - both modes: ``mask.num_context == 1`` and ``mask.num_targets >= 1``; targets lie inside the grid
      and have the same ``h x w`` patches within a batch; rows are sorted raster indices.
    - ``faithful``: every target block and every context block the size draw can produce (enumerated
      exactly over the uniform's range) holds more than ``mask.min_keep`` patches, which is when the
      reference sampler terminates. Every context then has more than ``min_keep`` patches.
    - ``fixed``: with ``k = max(mask.min_keep, 1)``, the largest target block ``A`` leaves
      ``H*W - A >= k`` patches (so stacking all targets on one block always leaves room; not needed with
      ``allow_overlap``), and the largest context block holds at least ``k`` patches. Every context
      then has at least ``k`` patches, never shares a patch with a target (unless
      ``mask.allow_overlap``), and every grid position can be covered.

    Args:
        cfg: the ``mask`` section of the config.
        grid: ``(H, W)`` in patches.
        seed: base seed (``train.seed``); must be >= 0.

    Raises:
        ConfigError: the configuration cannot be sampled; the message names the ``mask.*`` keys and a fix.
    """

    def __init__(self, cfg: MaskConfig, grid: tuple[int, int], seed: int = 0) -> None:
        self.cfg = cfg
        self.grid: tuple[int, int] = (int(grid[0]), int(grid[1]))
        if int(seed) < 0:
            raise ValueError(f"seed must be >= 0, got {seed} (set train.seed to a non-negative integer)")
        self.seed = int(seed)
        self.mode = cfg.mode
        self.bounds: dict[str, Any] = {}
        self._validate()
        self._cache: tuple[tuple[int, int], _FixedStep] | None = None

    # ------------------------------------------------------------------ validation

    def _validate(self) -> None:
        cfg = self.cfg
        height, width = self.grid
        if height < 1 or width < 1:
            raise ConfigError(f"mask grid {self.grid} needs positive sides (image_size // patch_size)")
        if cfg.mode not in ("fixed", "faithful"):
            raise ConfigError(f"mask.mode={cfg.mode!r} is not one of 'fixed', 'faithful'")
        if cfg.num_context != 1:
            raise ConfigError(
                f"mask.num_context={cfg.num_context}: the multi-block sampler supports exactly one context "
                "block. Set mask.num_context=1."
            )
        if cfg.num_targets < 1:
            raise ConfigError(f"mask.num_targets={cfg.num_targets}: need at least one target block.")
        if cfg.min_keep < 0:
            raise ConfigError(f"mask.min_keep={cfg.min_keep}: must be >= 0.")
        for key in ("context_scale", "target_scale"):
            lo, hi = getattr(cfg, key)
            if not 0 < lo <= hi <= 1:
                raise ConfigError(f"mask.{key}={[lo, hi]}: need 0 < low <= high <= 1")
        for key in ("context_aspect", "target_aspect"):
            lo, hi = getattr(cfg, key)
            if not 0 < lo <= hi:
                raise ConfigError(f"mask.{key}={[lo, hi]}: need 0 < low <= high")
        if cfg.mode == "faithful":
            self._validate_faithful()
        else:
            self._validate_fixed()

    def _validate_faithful(self) -> None:
        cfg = self.cfg
        height, width = self.grid
        where = f"mask.mode=faithful on a {height}x{width} grid"
        for name, scale, aspect, why in (
            ("target", cfg.target_scale, cfg.target_aspect, "a target block is never accepted"),
            ("context", cfg.context_scale, cfg.context_aspect,
             "even with every target constraint relaxed the context block is never accepted"),
        ):
            sizes = faithful_block_sizes(self.grid, scale, aspect)
            areas = sizes[:, 0] * sizes[:, 1]
            small = int(areas.argmin())
            self.bounds[f"{name}_block_area"] = [int(areas.min()), int(areas.max())]
            if areas[small] <= cfg.min_keep:
                h, w = (int(x) for x in sizes[small])
                lower = f"set mask.min_keep<={h * w - 1}, " if h * w > 0 else ""
                raise ConfigError(
                    f"{where}: a {name} block can be as small as {h}x{w}={h * w} patches "
                    f"(mask.{name}_scale={list(scale)}, mask.{name}_aspect={list(aspect)}), which is not "
                    f"more than mask.min_keep={cfg.min_keep}, so {why} and the reference sampler loops "
                    "forever. "
                    f"Fix: {lower}raise mask.{name}_scale, or use mask.mode=fixed."
                )
        self.bounds["min_context"] = cfg.min_keep + 1

    def _validate_fixed(self) -> None:
        cfg = self.cfg
        height, width = self.grid
        n = height * width
        k = max(cfg.min_keep, 1)
        where = f"mask.mode=fixed on a {height}x{width} grid"
        tgt = fixed_block_sizes(self.grid, cfg.target_scale, cfg.target_aspect, "high")
        tgt_area = tgt[:, 0] * tgt[:, 1]
        big = int(tgt_area.argmax())
        ctx_hi = fixed_block_sizes(self.grid, cfg.context_scale, cfg.context_aspect, "high")
        ctx_lo = fixed_block_sizes(self.grid, cfg.context_scale, cfg.context_aspect, "low")
        ctx_hi_area = ctx_hi[:, 0] * ctx_hi[:, 1]
        tgt_lo = fixed_block_sizes(self.grid, cfg.target_scale, cfg.target_aspect, "low")
        self.bounds.update(
            target_block_area=[int((tgt_lo[:, 0] * tgt_lo[:, 1]).min()), int(tgt_area.max())],
            context_block_area=[int((ctx_lo[:, 0] * ctx_lo[:, 1]).min()), int(ctx_hi_area.max())],
            min_context=k,
        )
        if not cfg.allow_overlap and n - tgt_area[big] < k:
            h, w = (int(x) for x in tgt[big])
            fixes = [f"set mask.min_keep<={n - h * w}", "lower mask.target_scale"] if n - h * w >= 1 else []
            fixes.append("use a finer patch grid (larger data.image_size / model.patch_size)")
            raise ConfigError(
                f"{where}: a target block can be {h}x{w}={h * w} of the {n} patches "
                f"(mask.target_scale={list(cfg.target_scale)}, "
                f"mask.target_aspect={list(cfg.target_aspect)}), leaving {n - h * w} < "
                f"max(mask.min_keep, 1)={k} patches for the context. "
                f"Fix: {', or '.join(fixes)}."
            )
        if ctx_hi_area.max() < k:
            h, w = (int(x) for x in ctx_hi[int(ctx_hi_area.argmax())])
            raise ConfigError(
                f"{where}: the largest context block is {h}x{w}={h * w} patches "
                f"(mask.context_scale={list(cfg.context_scale)}), fewer than mask.min_keep={cfg.min_keep}. "
                f"Fix: raise mask.context_scale or set mask.min_keep<={h * w}."
            )

    # ------------------------------------------------------------------ public API

    def __call__(self, step: int, slots: Sequence[int], global_batch: int) -> dict[str, torch.Tensor]:
        """Masks for the samples ``slots`` of optimizer step ``step``.

        Args:
            step: global optimizer step (>= 0).
            slots: positions of this call's samples in the step's global batch.
            global_batch: number of samples in the step's global batch (all processes, all workers).

        Returns:
            ``{"ctx_idx": LongTensor[b, K_ctx], "tgt_idx": LongTensor[b, num_targets, K_tgt]}``,
            ``b = len(slots)``, raster patch indices (``row * W + col``), each row ascending.
        """
        return self.sample(step, slots, global_batch).as_dict()

    def sample(self, step: int, slots: Sequence[int], global_batch: int) -> MaskBatch:
        """Like ``__call__`` but returns a :class:`MaskBatch` with the extra per-sample information."""
        slot_arr = np.asarray(list(slots), dtype=np.int64).reshape(-1)
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if slot_arr.size == 0:
            raise ValueError("slots is empty: ask for at least one sample")
        if slot_arr.min() < 0 or slot_arr.max() >= global_batch:
            raise ValueError(f"slots must lie in [0, global_batch={global_batch}), got {slot_arr.tolist()}")
        if self.mode == "faithful":
            return self._sample_faithful(int(step), slot_arr)
        return self._sample_fixed(int(step), slot_arr, int(global_batch))

    # ------------------------------------------------------------------ faithful mode

    def _sample_faithful(self, step: int, slots: np.ndarray) -> MaskBatch:
        cfg = self.cfg
        height, width = self.grid
        n_tgt = cfg.num_targets
        b = slots.size
        # Target size first, then context size, as in the reference.
        u = _uniform_rows(self.seed, step, _SIZE, 0, 1, 2)[0]
        th, tw = (int(x) for x in _faithful_block_hw(u[0], self.grid, cfg.target_scale, cfg.target_aspect))
        ch, cw = (int(x) for x in _faithful_block_hw(u[1], self.grid, cfg.context_scale, cfg.context_aspect))

        # Exclusive upper bound: a block never starts at row H - h, so the last row/column stay uncovered.
        ut = _rows_for(slots, self.seed, step, _FAITHFUL_TGT, 0, 2 * n_tgt).reshape(b, n_tgt, 2)
        tgt_tops = np.floor(ut[..., 0] * (height - th)).astype(np.int64)
        tgt_lefts = np.floor(ut[..., 1] * (width - tw)).astype(np.int64)
        # Targets are unconstrained and the constructor checked th*tw > min_keep: never rejected.

        # covered[:, j] = union of the first j targets: the reference's constraint after dropping regions.
        blocks = _block_masks(tgt_tops, tgt_lefts, th, tw, self.grid)  # [b, T, H, W]
        covered = np.zeros((b, n_tgt + 1, height, width), dtype=bool)
        for j in range(n_tgt):  # a short loop: logical_or.accumulate along axis 1 is far slower
            covered[:, j + 1] = covered[:, j] | blocks[:, j]

        ctx_top = np.zeros(b, dtype=np.int64)
        ctx_left = np.zeros(b, dtype=np.int64)
        used = np.zeros(b, dtype=np.int64)  # number of target constraints the accepted context obeys
        pending = np.arange(b)
        # Level L obeys the first T - L targets (all of them, unless allow_overlap); each level gets the
        # reference's 20 tries. At the last level the block alone holds > min_keep patches (checked).
        first_level = n_tgt if cfg.allow_overlap else 0
        for level in range(first_level, n_tgt + 1):
            n_regions = n_tgt - level
            # Stream index = relaxation count, like the reference's ``tries`` (0 first, even with overlap).
            uc = _rows_for(slots, self.seed, step, _FAITHFUL_CTX, level - first_level, 2 * PLACEMENT_TRIES)
            uc = uc[pending].reshape(-1, PLACEMENT_TRIES, 2)
            tops = np.floor(uc[..., 0] * (height - ch)).astype(np.int64)
            lefts = np.floor(uc[..., 1] * (width - cw)).astype(np.int64)
            kept = ch * cw - _rect_sums(_integral(covered[pending, n_regions]), tops, lefts, ch, cw)
            ok, first = _first_true(kept > cfg.min_keep)
            done = pending[ok]
            ctx_top[done] = tops[ok, first[ok]]
            ctx_left[done] = lefts[ok, first[ok]]
            used[done] = n_regions
            pending = pending[~ok]
            if pending.size == 0:
                break
        assert pending.size == 0, "faithful context placement must terminate (constructor check)"

        ctx = _block_masks(ctx_top, ctx_left, ch, cw, self.grid) & ~covered[np.arange(b), used]
        flat = ctx.reshape(b, -1)
        k_ctx = int(flat.sum(axis=1).min())
        # Step 4 of the reference: keep the first k_ctx indices in raster order (the top-of-image bias).
        keep = flat & (np.cumsum(flat, axis=1) <= k_ctx)
        ctx_idx = np.nonzero(keep)[1].reshape(b, k_ctx)
        tgt_idx = _target_indices(tgt_tops, tgt_lefts, th, tw, width)
        return MaskBatch(
            ctx_idx=torch.from_numpy(ctx_idx.astype(np.int64, copy=False)),
            tgt_idx=torch.from_numpy(tgt_idx.astype(np.int64, copy=False)),
            ctx_full=ctx,
            ctx_fallback=used < (0 if cfg.allow_overlap else n_tgt),
            tgt_redraws=np.zeros(b, dtype=np.int64),
            target_hw=(th, tw),
            context_hw=(ch, cw),
            draws=self._faithful_draws(u),
        )

    def _faithful_draws(self, u: np.ndarray) -> dict[str, float]:
        cfg = self.cfg
        # One uniform per block for both scale and aspect: the reference's correlated draw.
        return {
            "target_scale": _lerp(cfg.target_scale, u[0]),
            "target_aspect": _lerp(cfg.target_aspect, u[0]),
            "context_scale": _lerp(cfg.context_scale, u[1]),
            "context_aspect": _lerp(cfg.context_aspect, u[1]),
        }

    # ------------------------------------------------------------------ fixed mode

    def _sample_fixed(self, step: int, slots: np.ndarray, global_batch: int) -> MaskBatch:
        height, width = self.grid
        key = (step, global_batch)
        if self._cache is None or self._cache[0] != key:
            # Loader workers and gradient-accumulation micro-batches ask for the same step several times.
            self._cache = (key, self._fixed_step(step, global_batch))
        st = self._cache[1]
        b = slots.size
        ctx = st.ctx[slots].reshape(b, -1)
        # A uniformly random subset of k_ctx context patches: the k_ctx smallest keys among context patches
        # (non-context patches get key 2 > any uniform). No spatial preference, unlike the raster cut.
        keys = _rows_for(slots, self.seed, step, _FIXED_SUBSET, 0, height * width)
        keys[~ctx] = 2.0
        chosen = np.argpartition(keys, st.k_ctx - 1, axis=1)[:, : st.k_ctx]
        ctx_idx = np.sort(chosen, axis=1)
        th, tw = st.target_hw
        tgt_idx = _target_indices(st.tgt_tops[slots], st.tgt_lefts[slots], th, tw, width)
        return MaskBatch(
            ctx_idx=torch.from_numpy(ctx_idx.astype(np.int64, copy=False)),
            tgt_idx=torch.from_numpy(tgt_idx.astype(np.int64, copy=False)),
            ctx_full=st.ctx[slots],
            ctx_fallback=st.fallback[slots],
            tgt_redraws=st.redraws[slots],
            target_hw=st.target_hw,
            context_hw=st.context_hw,
            draws=dict(st.draws),
        )

    def _fixed_step(self, step: int, global_batch: int) -> _FixedStep:
        """Masks of all ``global_batch`` samples of ``step`` before subsampling (vectorized)."""
        cfg = self.cfg
        height, width = self.grid
        n = height * width
        k_min = max(cfg.min_keep, 1)
        g = global_batch
        u = _uniform_rows(self.seed, step, _SIZE, 0, 1, 4)[0]
        tgt_hw = _fixed_block_hw(u[0], u[1], self.grid, cfg.target_scale, cfg.target_aspect)
        ctx_hw = _fixed_block_hw(u[2], u[3], self.grid, cfg.context_scale, cfg.context_aspect)
        (th, tw), (ch, cw) = (int(x) for x in tgt_hw), (int(x) for x in ctx_hw)
        draws = {
            "target_scale": _lerp(cfg.target_scale, u[0]),
            "target_aspect": _lerp(cfg.target_aspect, u[1]),
            "context_scale": _lerp(cfg.context_scale, u[2]),
            "context_aspect": _lerp(cfg.context_aspect, u[3]),
        }

        tops, lefts, union, redraws = self._fixed_targets(step, g, th, tw, k_min)
        avoid = np.zeros_like(union) if cfg.allow_overlap else union

        # Bounded rejection of context placements that keep fewer than k_min patches.
        uc = _uniform_rows(self.seed, step, _FIXED_CTX, 0, g, 2 * PLACEMENT_TRIES)
        uc = uc.reshape(g, PLACEMENT_TRIES, 2)
        c_tops = np.floor(uc[..., 0] * (height - ch + 1)).astype(np.int64)  # inclusive: every row reachable
        c_lefts = np.floor(uc[..., 1] * (width - cw + 1)).astype(np.int64)
        # The first placement almost always suffices: test it directly, the other tries only where needed.
        ctx = _block_masks(c_tops[:, 0], c_lefts[:, 0], ch, cw, self.grid) & ~avoid
        ok = ctx.reshape(g, n).sum(axis=1) >= k_min
        bad = np.flatnonzero(~ok)
        if bad.size:
            kept = ch * cw - _rect_sums(_integral(avoid[bad]), c_tops[bad], c_lefts[bad], ch, cw)
            has, first = _first_true(kept >= k_min)
            block = _block_masks(c_tops[bad, first], c_lefts[bad, first], ch, cw, self.grid)
            # Fallback: every patch outside the targets; _fixed_targets left at least k_min of them.
            ctx[bad] = np.where(has[:, None, None], block, True) & ~avoid[bad]
            ok[bad] = has
        k_ctx = int(ctx.reshape(g, n).sum(axis=1).min())
        return _FixedStep(
            ctx=ctx,
            tgt_tops=tops,
            tgt_lefts=lefts,
            target_hw=(th, tw),
            context_hw=(ch, cw),
            fallback=~ok,
            redraws=redraws,
            k_ctx=k_ctx,
            draws=draws,
        )

    def _fixed_targets(
        self, step: int, g: int, th: int, tw: int, k_min: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Target corners ``[g, T]`` (x2), their union ``[g, H, W]`` and the redraw count ``[g]``.

        Targets that leave fewer than ``k_min`` free patches (no context could fit) are redrawn up to
        ``PLACEMENT_TRIES - 1`` times; then all of the sample's targets are stacked on its first one,
        which leaves ``H*W - th*tw >= k_min`` free patches (constructor check). Only tiny grids need it.
        """
        cfg = self.cfg
        height, width = self.grid
        n = height * width
        n_tgt = cfg.num_targets

        def place(rows: np.ndarray, attempt: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            ut = _rows_for(rows, self.seed, step, _FIXED_TGT, attempt, 2 * n_tgt).reshape(-1, n_tgt, 2)
            t = np.floor(ut[..., 0] * (height - th + 1)).astype(np.int64)
            le = np.floor(ut[..., 1] * (width - tw + 1)).astype(np.int64)
            return t, le, _union_masks(t, le, th, tw, self.grid)

        all_rows = np.arange(g)
        tops, lefts, union = place(all_rows, 0)
        redraws = np.zeros(g, dtype=np.int64)
        if cfg.allow_overlap:
            return tops, lefts, union, redraws
        bad = all_rows[n - union.reshape(g, n).sum(axis=1) < k_min]
        for attempt in range(1, PLACEMENT_TRIES):
            if bad.size == 0:
                break
            t, le, un = place(bad, attempt)
            ok = n - un.reshape(bad.size, n).sum(axis=1) >= k_min
            fixed = bad[ok]
            tops[fixed], lefts[fixed], union[fixed] = t[ok], le[ok], un[ok]
            redraws[fixed] = attempt
            bad = bad[~ok]
        if bad.size:
            tops[bad] = tops[bad, :1]
            lefts[bad] = lefts[bad, :1]
            union[bad] = _block_masks(tops[bad, 0], lefts[bad, 0], th, tw, self.grid)
            redraws[bad] = PLACEMENT_TRIES
        return tops, lefts, union, redraws
