"""Mask generators from the ``mask`` config section: the one place that maps ``mask.kind`` to samplers.

Every generator has the same call: ``generator(step, slots, global_batch) -> {"ctx_idx": LongTensor[b, Kc],
"tgt_idx": LongTensor[b, T, Kt]}`` (``T`` target sequences per sample), a pure function of
``(seed, step, slot)`` and the global batch size. A batch carries one such pair per generator, in order,
under ``batch["masks"]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from openjepa.config import ConfigError, MaskConfig

MaskGenerator = Callable[[int, Sequence[int], int], dict[str, torch.Tensor]]

__all__ = ["MaskGenerator", "build_mask_generators", "num_mask_generators"]


def num_mask_generators(cfg: MaskConfig) -> int:
    """How many (context, target) pairs a batch carries for ``cfg`` (one learned mask token each)."""
    return len(cfg.generators) if cfg.kind == "multiblock3d" else 1


def build_mask_generators(cfg: MaskConfig, grid: tuple[int, ...], seed: int) -> list[MaskGenerator]:
    """The generators of ``cfg.kind`` for a token grid ``(H, W)`` or ``(T, H, W)``.

    Raises:
        ConfigError: the kind does not fit the grid (2-D masks on video or the reverse), or the settings
            cannot be sampled (the message names the ``mask.*`` key and the fix).
    """
    grid = tuple(int(g) for g in grid)
    if cfg.kind == "multiblock":
        if len(grid) != 2:
            raise ConfigError(
                f"mask.kind=multiblock samples 2-D image blocks but the encoder's token grid is {grid} (video): "
                "use mask.kind=multiblock3d or mask.kind=tube for clips"
            )
        from openjepa.masks.multiblock import MultiBlockMaskSampler

        return [MultiBlockMaskSampler(cfg, grid, seed=seed)]  # type: ignore[arg-type]
    if cfg.kind == "multiblock3d":
        if len(grid) != 3:
            raise ConfigError(
                f"mask.kind=multiblock3d samples (time, height, width) blocks but the token grid is {grid} "
                "(images): use mask.kind=multiblock, or set data.num_frames > 1 for video"
            )
        if not cfg.generators:
            raise ConfigError("mask.generators is empty: multiblock3d needs at least one mask generator")
        from openjepa.masks.multiblock3d import MultiBlock3DMaskSampler

        return [
            MultiBlock3DMaskSampler(gen, grid, mode=cfg.mode, seed=seed, min_keep=cfg.min_keep, stream=i)  # type: ignore[arg-type]
            for i, gen in enumerate(cfg.generators)
        ]
    if cfg.kind == "tube":
        from openjepa.masks.tube import TubeMaskSampler

        return [TubeMaskSampler(grid, ratio=cfg.tube_ratio, seed=seed)]
    raise ConfigError(f"mask.kind={cfg.kind!r}: choose multiblock, multiblock3d or tube")
