"""Random tube masks (VideoMAE; SALT's Table 9 ablation) and, on a 2-D grid, MAE's random patch masks.

Per sample, ``round(ratio * H * W)`` spatial positions are drawn uniformly without replacement and masked
through every time step: the **target** is those tubes (``T * m`` tokens), the **context** is the other
``T * (H*W - m)`` tokens. Every sample has the same counts, so nothing is cut and the masks do not depend on
the rest of the batch: they are a pure function of ``(seed, step, slot)``.

On a 2-D grid ``(H, W)`` a tube is one patch, so the sampler is MAE's random patch masking (ratio 0.75 in
MAE). The call API is the one of the multi-block samplers: ``{"ctx_idx": [b, K_ctx], "tgt_idx":
[b, 1, K_tgt]}`` with raster indices (``t*H*W + h*W + w``, or ``h*W + w`` on a 2-D grid), and
:meth:`TubeMaskSampler.sample` returns a :class:`~openjepa.masks.multiblock3d.VideoMaskBatch` in which
each tube is a ``T x 1 x 1`` block.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from openjepa.errors import ConfigError
from openjepa.masks import _streams
from openjepa.masks.multiblock3d import VideoMaskBatch

__all__ = ["TubeMaskSampler"]

_POSITIONS = 0  # the one draw kind of this family: a uniform key per spatial position


class TubeMaskSampler:
    """Random tube masking: the same random spatial positions are masked in every frame.

    Args:
        grid: ``(T, H, W)`` in tubelets, or ``(H, W)`` in patches (then: MAE's random patch masking).
        ratio: fraction of the spatial positions masked (``mask.tube_ratio``), in (0, 1); the number of
            tubes is ``round(ratio * H * W)`` (half to even) and must leave at least one position on each
            side.
        seed: base seed (``train.seed``), >= 0.
        stream: separates this sampler's random stream from other generators of the same batch.

    Raises:
        ConfigError: a grid or ratio that leaves the context or the target empty; the message names
            ``mask.tube_ratio`` and a fix.
    """

    kind = "tube"
    mode = "fixed"  # no reference quirks to reproduce: one behaviour

    def __init__(self, grid: tuple[int, ...], ratio: float = 0.9, seed: int = 0, stream: int = 0) -> None:
        grid = tuple(int(x) for x in grid)
        if len(grid) not in (2, 3) or min(grid) < 1:
            raise ConfigError(
                f"tube masks need a (T, H, W) tubelet grid or an (H, W) patch grid with positive sides, got {grid}"
            )
        self.grid: tuple[int, ...] = grid
        self._grid3: tuple[int, int, int] = (1, *grid) if len(grid) == 2 else grid  # type: ignore[assignment]
        if int(seed) < 0:
            raise ValueError(f"seed must be >= 0, got {seed} (set train.seed to a non-negative integer)")
        self.seed = int(seed)
        if not 0 <= int(stream) <= _streams.MAX_STREAM:
            raise ValueError(f"stream must be in [0, {_streams.MAX_STREAM}], got {stream}")
        self.stream = int(stream)
        self.ratio = float(ratio)
        self.min_keep = 1
        duration, height, width = self._grid3
        positions = height * width
        if not 0 < self.ratio < 1:
            raise ConfigError(f"mask.tube_ratio={ratio}: need 0 < ratio < 1 (fraction of positions masked), e.g. 0.9.")
        self.num_tubes = round(self.ratio * positions)
        if not 1 <= self.num_tubes <= positions - 1:
            side = "target" if self.num_tubes < 1 else "context"
            raise ConfigError(
                f"mask.tube_ratio={ratio} on a {height}x{width} spatial grid masks {self.num_tubes} of "
                f"{positions} positions, which leaves the {side} empty. Fix: set mask.tube_ratio in "
                f"[{1 / positions:.4g}, {1 - 1 / positions:.4g}] or use a finer grid."
            )
        self.num_tokens = duration * positions
        self.bounds: dict[str, Any] = {
            "block_volume": [duration, duration],
            "min_context": duration * (positions - self.num_tubes),
        }

    def describe(self) -> dict[str, Any]:
        """The sampler's settings, as the statistics report them (JSON-serializable)."""
        return {
            "sampler": self.kind,
            "mode": self.mode,
            "grid": list(self.grid),
            "seed": self.seed,
            "stream": self.stream,
            "ratio": self.ratio,
            "num_blocks": self.num_tubes,
            "bounds": self.bounds,
        }

    def __call__(self, step: int, slots: Sequence[int], global_batch: int) -> dict[str, torch.Tensor]:
        """Masks for the samples ``slots`` of optimizer step ``step``.

        Args:
            step: global optimizer step (>= 0).
            slots: positions of this call's samples in the step's global batch.
            global_batch: number of samples in the step's global batch (only checked: tube masks do not
                depend on the rest of the batch).

        Returns:
            ``{"ctx_idx": LongTensor[b, T*(H*W - m)], "tgt_idx": LongTensor[b, 1, T*m]}``, ``m`` the number
            of tubes, raster token indices, each row ascending.
        """
        return self.sample(step, slots, global_batch).as_dict()

    def sample(self, step: int, slots: Sequence[int], global_batch: int) -> VideoMaskBatch:
        """Like ``__call__`` but returns a :class:`VideoMaskBatch` (each tube a ``T x 1 x 1`` block)."""
        slot_arr = _streams.check_call(step, slots, global_batch)
        duration, height, width = self._grid3
        b, m = slot_arr.size, self.num_tubes
        code = _streams.kind_code(_streams.FAMILY_TUBE, _POSITIONS, self.stream)
        keys = _streams.rows(slot_arr, self.seed, int(step), code, 0, height * width)
        # The m smallest keys: a uniformly random m-subset of the positions.
        tubes = np.sort(np.argpartition(keys, m - 1, axis=1)[:, :m], axis=1)  # [b, m] spatial indices
        spatial = np.zeros((b, height * width), dtype=bool)
        spatial[np.arange(b)[:, None], tubes] = True
        tgt = np.broadcast_to(spatial[:, None, :], (b, duration, height * width)).reshape(b, -1)
        ctx = ~tgt
        # Every row has the same count, so the nonzero columns reshape directly (ascending per row).
        ctx_idx = np.nonzero(ctx)[1].reshape(b, -1)
        tgt_idx = np.nonzero(tgt)[1].reshape(b, 1, -1)
        starts = np.stack([np.zeros_like(tubes), tubes // width, tubes % width], axis=-1)
        return VideoMaskBatch(
            ctx_idx=torch.from_numpy(ctx_idx.astype(np.int64, copy=False)),
            tgt_idx=torch.from_numpy(tgt_idx.astype(np.int64, copy=False)),
            ctx_full=ctx.reshape(b, *self.grid),
            tgt_full=tgt.reshape(b, *self.grid),
            block_thw=(duration, 1, 1),
            starts=starts,
            redraws=np.zeros(b, dtype=np.int64),
            fallback=np.zeros(b, dtype=bool),
            draws={"ratio": self.ratio},
        )
