"""V-JEPA multi-block masks on a ``(T, H, W)`` tubelet grid (``spec/salt-vjepa.md``).

One :class:`MultiBlock3DMaskSampler` is one *mask generator*. V-JEPA uses two per batch, each giving its own
(context, target) pair: short-range (8 blocks of spatial scale 0.15) and long-range (2 blocks of spatial
scale 0.7), both with temporal scale 1.0 (every block spans the whole clip) and aspect (0.75, 1.5).

Per optimizer step and generator: one block size ``t x h x w`` is drawn for the whole batch; per sample,
``num_blocks`` blocks are placed at random (they may overlap); the **target** is the union of the blocks
(one sequence, ``tgt_idx [b, 1, K_tgt]``) and the **context** is everything else. Samples whose context
keeps fewer than ``max(min_keep, 1)`` tokens redraw all their blocks. Context and target are then cut
to common lengths so that the batch stacks.

Two modes (``mask.mode``):

``faithful``
    The reference sampler (facebookresearch/jepa ``src/masks/multiblock3d.py``): three uniforms for
    temporal scale, spatial scale and aspect, the spatial budget truncated to an integer before the
    square roots, start positions uniform over every valid offset, blocks redrawn while the context is
    empty, and both the context and the target cut to their smallest length *within the call* by keeping
    the **first** ``K`` indices in raster order. Raster order is time-major, so the cut drops the last
    frames' tokens: contexts and targets are biased towards the start of the clip (and the top of the
    last frame kept). The two generators of a batch share their three size uniforms, as in the
    reference (both seed their size generator with the same call counter).

``fixed`` (default)
    Sides rounded rather than truncated and clipped to ``[1, side]`` (never an empty block), each
    generator with its own size stream, common lengths taken over the whole *global* batch, and each
    sample keeping a uniformly random subset of ``K`` of its context (and target) tokens. Bounded
    redraws plus a fallback guarantee termination and ``max(min_keep, 1)`` context tokens.

Both modes: masks are a pure function of ``(seed, step, slot)`` (plus ``global_batch`` in fixed mode)
before the cut, whatever the loader workers or processes; ``docs/masks.md`` ("Video masks") explains
each choice and what differs from the reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from openjepa.errors import ConfigError
from openjepa.masks import _streams
from openjepa.masks.multiblock import (
    PLACEMENT_TRIES,
    _aspect_breaks,
    _fixed_block_hw,
    _lerp,
    _probe_points,
    fixed_block_sizes,
)

__all__ = [
    "FAITHFUL_TRIES",
    "BlockGenerator",
    "MultiBlock3DMaskSampler",
    "VideoMaskBatch",
    "faithful_block_shapes",
    "fixed_block_shapes",
]

# Draw kinds of this family; each has its own stream so drawing more of one never shifts another.
_SIZE, _PLACE, _CTX_SUBSET, _TGT_SUBSET = range(4)
# The reference redraws an empty context without bound. We stop after this many draws (then the fallback
# of fixed mode): on the V-JEPA configs a draw fails with probability <= 0.08, so 0.08**200 is never seen.
FAITHFUL_TRIES = 200


class BlockGenerator(Protocol):
    """What the sampler reads from one mask generator's config (``mask.generators[i]``)."""

    num_blocks: int
    spatial_scale: tuple[float, float]
    temporal_scale: tuple[float, float]
    aspect: tuple[float, float]


@dataclass(frozen=True)
class _Spec:
    """A validated copy of a :class:`BlockGenerator` (tuples of floats, whatever the config gave)."""

    num_blocks: int
    spatial_scale: tuple[float, float]
    temporal_scale: tuple[float, float]
    aspect: tuple[float, float]


@dataclass
class VideoMaskBatch:
    """Masks of one call of a video sampler plus what the statistics need.

    Attributes:
        ctx_idx: ``LongTensor[b, K_ctx]``, context token indices (raster ``t*H*W + h*W + w``, ascending).
        tgt_idx: ``LongTensor[b, 1, K_tgt]``, target token indices (one sequence: the union of the blocks).
        ctx_full: ``bool[b, *grid]``, each context before the cut to ``K_ctx`` tokens.
        tgt_full: ``bool[b, *grid]``, each target (union of the blocks) before the cut to ``K_tgt`` tokens.
        block_thw: the batch's block size ``(t, h, w)`` (tube masks: ``(T, 1, 1)``).
        starts: ``int[b, num_blocks, 3]``, each block's first ``(t, h, w)`` position: block ``j`` of sample
            ``i`` covers ``starts[i, j] + [0, block_thw)`` on each axis.
        redraws: ``int[b]``, rejected block sets before the accepted one (the context was too small);
            equals the try limit for a fallback.
        fallback: ``bool[b]``, no draw within the try limit kept enough context tokens, so all blocks were
            stacked on the first one (the context is then the complement of one block).
        draws: the batch-level values drawn (``temporal_scale``, ``spatial_scale``, ``aspect``; tube:
            ``ratio``).
    """

    ctx_idx: torch.Tensor
    tgt_idx: torch.Tensor
    ctx_full: np.ndarray
    tgt_full: np.ndarray
    block_thw: tuple[int, int, int]
    starts: np.ndarray
    redraws: np.ndarray
    fallback: np.ndarray
    draws: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, torch.Tensor]:
        """The two index tensors, as the collate function puts them in the batch."""
        return {"ctx_idx": self.ctx_idx, "tgt_idx": self.tgt_idx}


@dataclass
class _Placement:
    """Accepted blocks of ``n`` samples."""

    starts: np.ndarray  # int [n, B, 3]
    union: np.ndarray  # bool [n, T, H, W]
    covered: np.ndarray  # int [n], tokens in the union
    redraws: np.ndarray  # int [n]
    fallback: np.ndarray  # bool [n]


@dataclass
class _FixedStep:
    """Fixed mode's blocks for the whole global batch of one step (cached: workers ask several times)."""

    placement: _Placement
    thw: tuple[int, int, int]
    draws: dict[str, float]
    k_ctx: int
    k_tgt: int


# ----------------------------------------------------------------------------- block sizes


def _faithful_hw(budget: np.ndarray, aspect: np.ndarray, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Block sides as the reference computes them from an integer token budget and an aspect ratio.

    ``round`` is half-to-even in Python and ``np.rint`` alike; the sides are clipped to the grid from
    above only, so a budget below 1 gives an empty block (refused up front).
    """
    h = np.minimum(np.rint(np.sqrt(budget * aspect)), hw[0]).astype(np.int64)
    w = np.minimum(np.rint(np.sqrt(budget / aspect)), hw[1]).astype(np.int64)
    return h, w


def _faithful_thw(u: np.ndarray, grid: tuple[int, int, int], spec: _Spec) -> tuple[int, int, int]:
    """The reference's block size from three uniforms (temporal scale, spatial scale, aspect, in that order)."""
    duration, height, width = grid
    t = max(1, int(duration * _lerp(spec.temporal_scale, float(u[0]))))
    budget = np.floor(height * width * _lerp(spec.spatial_scale, float(u[1])))  # int() of a positive float
    h, w = _faithful_hw(budget, np.float64(_lerp(spec.aspect, float(u[2]))), (height, width))
    return t, int(h), int(w)


def _fixed_t(u: np.ndarray | float, duration: int, scale: tuple[float, float]) -> np.ndarray:
    """Block duration rounded from ``duration * scale`` and clipped to ``[1, duration]``."""
    s = scale[0] + np.asarray(u, dtype=np.float64) * (scale[1] - scale[0])
    return np.clip(np.rint(duration * s), 1, duration).astype(np.int64)


def _fixed_thw(u: np.ndarray, grid: tuple[int, int, int], spec: _Spec) -> tuple[int, int, int]:
    """Fixed mode's block size: the 2-D fixed sides (rounded, in ``[1, side]``) and a rounded duration."""
    t = _fixed_t(u[0], grid[0], spec.temporal_scale)
    h, w = _fixed_block_hw(u[1], u[2], grid[1:], spec.spatial_scale, spec.aspect)
    return int(t), int(h), int(w)


def faithful_block_shapes(grid: tuple[int, int, int], gen: BlockGenerator) -> np.ndarray:
    """Every ``(t, h, w)`` the faithful size draw can return, as an ``[n, 3]`` array (exact enumeration).

    The duration and the sides come from independent uniforms, so the shapes are the product of the
    reachable durations and the reachable ``(h, w)``. For each integer budget the sides are
    piecewise-constant in the aspect uniform; probing both sides of every breakpoint finds every value.
    The high end of each range is included although a draw in ``[0, 1)`` never quite reaches it: the
    checks that use this list are then conservative.
    """
    spec = _as_spec(gen, "gen")
    duration, height, width = grid
    lo, hi = spec.temporal_scale
    durations = np.arange(max(1, int(duration * lo)), max(1, int(duration * hi)) + 1)
    n = height * width
    pairs = []
    for budget in range(int(np.floor(n * spec.spatial_scale[0])), int(np.floor(n * spec.spatial_scale[1])) + 1):
        u = _probe_points(_aspect_breaks(np.array([float(budget)]), spec.aspect, max(height, width)))
        a = spec.aspect[0] + u * (spec.aspect[1] - spec.aspect[0])
        h, w = _faithful_hw(np.float64(budget), a, (height, width))
        pairs.append(np.stack([h, w], axis=1))
    hw = np.unique(np.concatenate(pairs), axis=0)
    return _product(durations, hw)


def fixed_block_shapes(grid: tuple[int, int, int], gen: BlockGenerator, at: str) -> np.ndarray:
    """Every ``(t, h, w)`` the fixed size draw reaches at the low (``at="low"``) or high end of the scales.

    Duration and sides all grow with their scale, so the smallest blocks are at the low end and the
    largest at the high end.
    """
    spec = _as_spec(gen, "gen")
    u = 0.0 if at == "low" else 1.0
    durations = np.unique(_fixed_t(np.array([u]), grid[0], spec.temporal_scale))
    hw = fixed_block_sizes(grid[1:], spec.spatial_scale, spec.aspect, at)
    return _product(durations, hw)


def _product(durations: np.ndarray, hw: np.ndarray) -> np.ndarray:
    """All ``(t, h, w)`` rows with ``t`` from ``durations`` and ``(h, w)`` from the rows of ``hw``."""
    t = np.repeat(durations, len(hw))
    return np.column_stack([t, np.tile(hw, (len(durations), 1))]).astype(np.int64)


# ----------------------------------------------------------------------------- block geometry


def _starts_from_uniforms(u: np.ndarray, thw: tuple[int, int, int], grid: tuple[int, int, int]) -> np.ndarray:
    """First positions ``[..., B, 3]``, uniform over every offset that keeps a block inside the grid."""
    room = np.asarray(grid) - np.asarray(thw) + 1  # inclusive upper bound: every position is reachable
    return np.floor(u * room).astype(np.int64)


def _axis_cover(starts: np.ndarray, size: int, length: int) -> np.ndarray:
    """``float32[..., length]``: 1 where a block starting at ``starts`` with this size covers the position."""
    pos = np.arange(length)
    return ((pos >= starts[..., None]) & (pos < starts[..., None] + size)).astype(np.float32)


def _block_union(
    starts: np.ndarray, thw: tuple[int, int, int], grid: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Union ``bool[n, T, H, W]`` of the blocks at ``starts [n, B, 3]`` and its token count ``int[n]``.

    The union may be a read-only broadcast view (blocks spanning the whole clip).

    Each block is (time x row) (x) column indicators, so the count of blocks covering each token is one
    batched matmul ``[n, T*H, B] @ [n, B, W]``: far cheaper than materializing ``[n, B, T, H, W]``.
    """
    n, n_blocks = starts.shape[:2]
    duration, height, width = grid
    in_h = _axis_cover(starts[..., 1], thw[1], height)  # [n, B, H]
    in_w = _axis_cover(starts[..., 2], thw[2], width)  # [n, B, W]
    if thw[0] == duration:
        # Every block spans the clip (V-JEPA's temporal scale 1.0): one frame's union, the same in each frame.
        frame = (np.swapaxes(in_h, -1, -2) @ in_w) > 0  # [n, H, W]
        counts = duration * np.count_nonzero(frame.reshape(n, -1), axis=1)
        return np.broadcast_to(frame[:, None], (n, duration, height, width)), counts
    in_t = _axis_cover(starts[..., 0], thw[0], duration)  # [n, B, T]
    time_rows = (in_t[..., :, None] * in_h[..., None, :]).reshape(n, n_blocks, duration * height)
    union = (np.swapaxes(time_rows, -1, -2) @ in_w > 0).reshape(n, duration, height, width)  # [n, T*H, W] first
    return union, np.count_nonzero(union.reshape(n, -1), axis=1)


def _first_k(mask: np.ndarray, k: int) -> np.ndarray:
    """``[b, k]``: the first ``k`` true positions of each row of ``mask [b, N]`` (the reference's cut)."""
    keep = mask & (np.cumsum(mask, axis=1) <= k)
    return np.nonzero(keep)[1].reshape(mask.shape[0], k)


def _random_k(mask: np.ndarray, k: int, keys: np.ndarray) -> np.ndarray:
    """``[b, k]``: a uniformly random ``k``-subset of each row's true positions, ascending.

    The subset is the ``k`` smallest uniform keys among the true positions (the others get key 2, above
    every uniform), so every true position is kept with the same probability wherever it is.
    """
    keys = np.where(mask, keys, 2.0)
    chosen = np.argpartition(keys, k - 1, axis=1)[:, :k]
    return np.sort(chosen, axis=1)


# ----------------------------------------------------------------------------- config reading


def _pair(value: Any, key: str) -> tuple[float, float]:
    """A ``[low, high]`` config value as a float pair, or a ConfigError naming ``key``."""
    try:
        if isinstance(value, str):  # "12" would otherwise unpack into (1.0, 2.0)
            raise TypeError(value)
        lo, hi = (float(x) for x in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={value!r}: need a pair [low, high] of numbers") from None
    return lo, hi


def _as_spec(gen: BlockGenerator, where: str) -> _Spec:
    """Reads and validates a generator config; errors name ``{where}.<field>``."""
    num_blocks = gen.num_blocks
    if isinstance(num_blocks, bool) or not isinstance(num_blocks, (int, np.integer)) or num_blocks < 1:
        raise ConfigError(f"{where}.num_blocks={num_blocks!r}: need an integer >= 1 (blocks per sample).")
    spec = _Spec(
        num_blocks=int(num_blocks),
        spatial_scale=_pair(gen.spatial_scale, f"{where}.spatial_scale"),
        temporal_scale=_pair(gen.temporal_scale, f"{where}.temporal_scale"),
        aspect=_pair(gen.aspect, f"{where}.aspect"),
    )
    for name in ("spatial_scale", "temporal_scale"):
        lo, hi = getattr(spec, name)
        if not 0 < lo <= hi <= 1:
            raise ConfigError(
                f"{where}.{name}={[lo, hi]}: need 0 < low <= high <= 1 (a fraction of the "
                f"{'frame area' if name == 'spatial_scale' else 'clip duration'}), e.g. [0.15, 0.15]."
            )
    lo, hi = spec.aspect
    if not 0 < lo <= hi:
        raise ConfigError(f"{where}.aspect={[lo, hi]}: need 0 < low <= high (height / width), e.g. [0.75, 1.5].")
    return spec


# ----------------------------------------------------------------------------- the sampler


class MultiBlock3DMaskSampler:
    """V-JEPA multiblock3d mask generator (``mask.mode`` = ``fixed`` or ``faithful``).

    Guarantees, checked up front so that sampling always terminates (``k = max(min_keep, 1)``):

    - both modes: the largest block the size draw can produce leaves at least ``k`` of the ``T*H*W``
      tokens uncovered, so a sample whose blocks all sit on one spot always has a valid context. Then
      every context has at least ``k`` tokens, never shares a token with its target, and rows are sorted
      raster indices without repeats. Samples with fewer than ``k`` context tokens redraw their blocks
      (the reference redraws empty contexts: ``min_keep=1`` is the reference); after the try limit
      (``FAITHFUL_TRIES`` / ``PLACEMENT_TRIES``) all blocks are stacked on the first one. Block starts
      are uniform over every offset, so every grid position can be in a block and in a context.
    - ``faithful``: no block the size draw can produce is empty (a spatial budget below one token gives a
      zero side in the reference, hence empty targets).
    - ``fixed``: blocks are never empty (sides clipped to at least 1), and the cut keeps a uniformly random
      subset of each context and target, with lengths that do not depend on how the batch is split.

    Args:
        gen: the generator's config: ``num_blocks``, ``spatial_scale``, ``temporal_scale``, ``aspect``
            (``mask.generators[stream]``; any object with these attributes).
        grid: ``(T, H, W)`` in tubelets: ``(num_frames // tubelet_size, size // patch, size // patch)``.
        mode: ``"fixed"`` or ``"faithful"`` (``mask.mode``).
        seed: base seed (``train.seed``), >= 0.
        min_keep: fewest context tokens a sample may have (``mask.min_keep``); values below 1 mean 1.
        stream: separates the random streams of the generators of one batch; also the index ``i`` that
            error messages name (``mask.generators[i]``). Use the generator's position in the list.

    Raises:
        ConfigError: the configuration cannot be sampled; the message names the key and a fix.
    """

    kind = "multiblock3d"

    def __init__(
        self,
        gen: BlockGenerator,
        grid: tuple[int, int, int],
        mode: str = "fixed",
        seed: int = 0,
        min_keep: int = 1,
        stream: int = 0,
    ) -> None:
        if len(tuple(grid)) != 3:
            raise ConfigError(f"multiblock3d needs a (T, H, W) tubelet grid, got {tuple(grid)}")
        self.grid: tuple[int, int, int] = tuple(int(x) for x in grid)  # type: ignore[assignment]
        if not 0 <= int(stream) <= _streams.MAX_STREAM:
            raise ValueError(f"stream must be in [0, {_streams.MAX_STREAM}], got {stream}")
        self.stream = int(stream)
        self.where = f"mask.generators[{self.stream}]"
        if int(seed) < 0:
            raise ValueError(f"seed must be >= 0, got {seed} (set train.seed to a non-negative integer)")
        self.seed = int(seed)
        if mode not in ("fixed", "faithful"):
            raise ConfigError(f"mask.mode={mode!r} is not one of 'fixed', 'faithful'")
        self.mode = mode
        if int(min_keep) < 0:
            raise ConfigError(f"mask.min_keep={min_keep}: must be >= 0.")
        self.min_keep = int(min_keep)
        if min(self.grid) < 1:
            raise ConfigError(
                f"mask grid {self.grid} needs positive sides (data.num_frames // model.tubelet_size, "
                "data.image_size // model.patch_size)"
            )
        self.spec = _as_spec(gen, self.where)
        self.num_tokens = int(np.prod(self.grid))
        self.bounds: dict[str, Any] = {}
        self._validate()
        self._cache: tuple[tuple[int, int], _FixedStep] | None = None

    # ------------------------------------------------------------------ validation

    def _validate(self) -> None:
        spec, where = self.spec, self.where
        k = max(self.min_keep, 1)
        n = self.num_tokens
        grid_txt = "x".join(str(x) for x in self.grid)
        config_txt = (
            f"{where}.spatial_scale={list(spec.spatial_scale)}, {where}.temporal_scale="
            f"{list(spec.temporal_scale)}, {where}.aspect={list(spec.aspect)}"
        )
        if self.mode == "faithful":
            shapes = faithful_block_shapes(self.grid, spec)
            smallest = shapes
            empty = shapes[(shapes[:, 1] == 0) | (shapes[:, 2] == 0)]
            if len(empty):
                budget = int(np.floor(self.grid[1] * self.grid[2] * spec.spatial_scale[0]))
                raise ConfigError(
                    f"{where} with mask.mode=faithful on a {grid_txt} grid: the spatial budget "
                    f"int(H*W*spatial_scale) can be {budget} tokens, which the reference turns into a "
                    f"{empty[0, 1]}x{empty[0, 2]} block, i.e. an empty target ({config_txt}). "
                    f"Fix: raise {where}.spatial_scale, use a finer grid, or use mask.mode=fixed."
                )
        else:
            shapes = fixed_block_shapes(self.grid, spec, "high")
            smallest = fixed_block_shapes(self.grid, spec, "low")
        volumes = shapes.prod(axis=1)
        big = int(volumes.argmax())
        t, h, w = (int(x) for x in shapes[big])
        self.bounds = {
            "block_volume": [int(smallest.prod(axis=1).min()), int(volumes.max())],
            "min_context": k,
        }
        if n - t * h * w < k:
            lower = f"set mask.min_keep<={n - t * h * w}, or " if n - t * h * w >= 1 else ""
            loops = " (the reference sampler loops forever on such a batch)" if self.mode == "faithful" else ""
            raise ConfigError(
                f"{where} on a {grid_txt} grid: a block can be {t}x{h}x{w}={t * h * w} of the {n} tokens "
                f"({config_txt}), leaving {n - t * h * w} < max(mask.min_keep, 1)={k} tokens for the "
                f"context even with every block on the same spot{loops}. "
                f"Fix: {lower}lower {where}.spatial_scale or {where}.temporal_scale."
            )

    # ------------------------------------------------------------------ public API

    def describe(self) -> dict[str, Any]:
        """The generator's settings, as the statistics report them (JSON-serializable)."""
        return {
            "sampler": self.kind,
            "mode": self.mode,
            "grid": list(self.grid),
            "seed": self.seed,
            "stream": self.stream,
            "min_keep": self.min_keep,
            "num_blocks": self.spec.num_blocks,
            "spatial_scale": list(self.spec.spatial_scale),
            "temporal_scale": list(self.spec.temporal_scale),
            "aspect": list(self.spec.aspect),
            "bounds": self.bounds,
        }

    def __call__(self, step: int, slots: Sequence[int], global_batch: int) -> dict[str, torch.Tensor]:
        """Masks for the samples ``slots`` of optimizer step ``step``.

        Args:
            step: global optimizer step (>= 0).
            slots: positions of this call's samples in the step's global batch.
            global_batch: number of samples in the step's global batch (all processes, all workers).

        Returns:
            ``{"ctx_idx": LongTensor[b, K_ctx], "tgt_idx": LongTensor[b, 1, K_tgt]}``, ``b = len(slots)``,
            raster token indices (``t*H*W + h*W + w``), each row ascending.
        """
        return self.sample(step, slots, global_batch).as_dict()

    def sample(self, step: int, slots: Sequence[int], global_batch: int) -> VideoMaskBatch:
        """Like ``__call__`` but returns a :class:`VideoMaskBatch` with the extra per-sample information."""
        slot_arr = _streams.check_call(step, slots, global_batch)
        if self.mode == "faithful":
            return self._sample_faithful(int(step), slot_arr)
        return self._sample_fixed(int(step), slot_arr, int(global_batch))

    # ------------------------------------------------------------------ block placement (both modes)

    def _code(self, kind: int, shared: bool = False) -> int:
        return _streams.kind_code(_streams.FAMILY_MULTIBLOCK3D, kind, None if shared else self.stream)

    def _draw_starts(self, ids: np.ndarray, step: int, attempt: int, thw: tuple[int, int, int]) -> np.ndarray:
        """Block starts ``[len(ids), B, 3]`` of draw ``attempt`` for the sample rows ``ids``."""
        n_blocks = self.spec.num_blocks
        u = _streams.rows(ids, self.seed, step, self._code(_PLACE), attempt, 3 * n_blocks)
        return _starts_from_uniforms(u.reshape(-1, n_blocks, 3), thw, self.grid)

    def _place(self, step: int, ids: np.ndarray, thw: tuple[int, int, int], tries: int) -> _Placement:
        """Blocks for the sample rows ``ids``: draw ``a`` of a sample is row ``ids[i]`` of stream ``a``.

        A draw is accepted when the context keeps at least ``k`` tokens; rejected samples are redrawn
        (vectorized over the samples still pending), and after ``tries`` draws every block of the sample
        goes on its first draw's first block, which leaves ``T*H*W - t*h*w >= k`` tokens (constructor).
        """
        n = ids.size
        k = max(self.min_keep, 1)
        # The first draw, for every sample: most are accepted, and its arrays become the result.
        starts = self._draw_starts(ids, step, 0, thw)
        union, covered = _block_union(starts, thw, self.grid)
        redraws = np.zeros(n, dtype=np.int64)
        fallback = np.zeros(n, dtype=bool)
        pending = np.flatnonzero(self.num_tokens - covered < k)
        if pending.size == 0:
            return _Placement(starts=starts, union=union, covered=covered, redraws=redraws, fallback=fallback)
        union = np.array(union)  # a writable copy of the (possibly broadcast) first draw
        for attempt in range(1, tries):
            st = self._draw_starts(ids[pending], step, attempt, thw)
            un, cov = _block_union(st, thw, self.grid)
            ok = self.num_tokens - cov >= k
            done = pending[ok]
            starts[done], union[done], covered[done], redraws[done] = st[ok], un[ok], cov[ok], attempt
            pending = pending[~ok]
            if pending.size == 0:
                break
        if pending.size:
            st = self._draw_starts(ids[pending], step, 0, thw)
            st[:] = st[:, :1]
            starts[pending], (union[pending], covered[pending]) = st, _block_union(st, thw, self.grid)
            redraws[pending], fallback[pending] = tries, True
        return _Placement(starts=starts, union=union, covered=covered, redraws=redraws, fallback=fallback)

    def _draws(self, u: np.ndarray) -> dict[str, float]:
        spec = self.spec
        return {
            "temporal_scale": _lerp(spec.temporal_scale, float(u[0])),
            "spatial_scale": _lerp(spec.spatial_scale, float(u[1])),
            "aspect": _lerp(spec.aspect, float(u[2])),
        }

    # ------------------------------------------------------------------ faithful mode

    def _sample_faithful(self, step: int, slots: np.ndarray) -> VideoMaskBatch:
        # One size stream shared by every generator of the batch: the reference seeds each generator's size
        # RNG with its own call counter, and those counters move in lockstep.
        u = _streams.table(self.seed, step, self._code(_SIZE, shared=True), 0, 1, 3)[0]
        thw = _faithful_thw(u, self.grid, self.spec)
        pl = self._place(step, slots, thw, FAITHFUL_TRIES)
        b = slots.size
        tgt = pl.union.reshape(b, -1)
        ctx = ~tgt
        # The reference cuts both to the smallest length of the call, keeping the first K raster indices:
        # time-major order, so the last frames lose their tokens first.
        k_ctx = int(self.num_tokens - pl.covered.max())
        k_tgt = int(pl.covered.min())
        return self._batch(_first_k(ctx, k_ctx), _first_k(tgt, k_tgt), pl, thw, self._draws(u))

    # ------------------------------------------------------------------ fixed mode

    def _sample_fixed(self, step: int, slots: np.ndarray, global_batch: int) -> VideoMaskBatch:
        key = (step, global_batch)
        if self._cache is None or self._cache[0] != key:
            # Loader workers and gradient-accumulation micro-batches ask for the same step several times.
            self._cache = (key, self._fixed_step(step, global_batch))
        st = self._cache[1]
        pl = st.placement
        pl = _Placement(pl.starts[slots], pl.union[slots], pl.covered[slots], pl.redraws[slots], pl.fallback[slots])
        b = slots.size
        tgt = pl.union.reshape(b, -1)
        ctx = ~tgt
        n = self.num_tokens
        ctx_keys = _streams.rows(slots, self.seed, step, self._code(_CTX_SUBSET), 0, n)
        tgt_keys = _streams.rows(slots, self.seed, step, self._code(_TGT_SUBSET), 0, n)
        ctx_idx = _random_k(ctx, st.k_ctx, ctx_keys)
        tgt_idx = _random_k(tgt, st.k_tgt, tgt_keys)
        return self._batch(ctx_idx, tgt_idx, pl, st.thw, dict(st.draws))

    def _fixed_step(self, step: int, global_batch: int) -> _FixedStep:
        """Blocks of all ``global_batch`` samples of ``step`` and the common lengths (global minima)."""
        u = _streams.table(self.seed, step, self._code(_SIZE), 0, 1, 3)[0]
        thw = _fixed_thw(u, self.grid, self.spec)
        pl = self._place(step, np.arange(global_batch), thw, PLACEMENT_TRIES)
        return _FixedStep(
            placement=pl,
            thw=thw,
            draws=self._draws(u),
            k_ctx=int(self.num_tokens - pl.covered.max()),
            k_tgt=int(pl.covered.min()),
        )

    def _batch(
        self,
        ctx_idx: np.ndarray,
        tgt_idx: np.ndarray,
        pl: _Placement,
        thw: tuple[int, int, int],
        draws: dict[str, float],
    ) -> VideoMaskBatch:
        b = ctx_idx.shape[0]
        union = np.ascontiguousarray(pl.union)  # never hand out a read-only broadcast view
        return VideoMaskBatch(
            ctx_idx=torch.from_numpy(ctx_idx.astype(np.int64, copy=False)),
            tgt_idx=torch.from_numpy(tgt_idx.astype(np.int64, copy=False).reshape(b, 1, -1)),
            ctx_full=~union,
            tgt_full=union,
            block_thw=thw,
            starts=pl.starts,
            redraws=pl.redraws,
            fallback=pl.fallback,
            draws=draws,
        )
