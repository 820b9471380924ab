"""Mask samplers: which patches the context encoder sees and which ones the predictor must predict.

- :class:`MultiBlockMaskSampler` (``masks/multiblock.py``): I-JEPA multi-block masks on a 2-D patch grid,
  in ``fixed`` (default) or ``faithful`` (reference-reproducing) mode.
- :class:`MultiBlock3DMaskSampler` (``masks/multiblock3d.py``): one V-JEPA mask generator on a ``(T, H, W)``
  tubelet grid (V-JEPA uses two per batch), ``fixed`` or ``faithful``; its ``sample()`` returns a
  :class:`VideoMaskBatch`.
- :class:`TubeMaskSampler` (``masks/tube.py``): random tube masks (VideoMAE), MAE's random patch masks on a
  2-D grid.
- :func:`mask_statistics`, :func:`save_mask_png` (``masks/stats.py``): measure and draw a 2-D sampler;
  :func:`video_mask_statistics`, :func:`save_video_mask_png`: the same for video samplers.
- ``masks/cli.py``: ``openjepa inspect masks``.

Names are imported lazily so that ``openjepa --help`` (which imports ``masks.cli``) does not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from openjepa.masks.multiblock import MaskBatch, MultiBlockMaskSampler
    from openjepa.masks.multiblock3d import MultiBlock3DMaskSampler, VideoMaskBatch
    from openjepa.masks.stats import mask_statistics, save_mask_png, save_video_mask_png, video_mask_statistics
    from openjepa.masks.tube import TubeMaskSampler

__all__ = [
    "MaskBatch",
    "MultiBlock3DMaskSampler",
    "MultiBlockMaskSampler",
    "TubeMaskSampler",
    "VideoMaskBatch",
    "mask_statistics",
    "save_mask_png",
    "save_video_mask_png",
    "video_mask_statistics",
]

_WHERE = {
    "MaskBatch": "openjepa.masks.multiblock",
    "MultiBlockMaskSampler": "openjepa.masks.multiblock",
    "MultiBlock3DMaskSampler": "openjepa.masks.multiblock3d",
    "VideoMaskBatch": "openjepa.masks.multiblock3d",
    "TubeMaskSampler": "openjepa.masks.tube",
    "mask_statistics": "openjepa.masks.stats",
    "save_mask_png": "openjepa.masks.stats",
    "save_video_mask_png": "openjepa.masks.stats",
    "video_mask_statistics": "openjepa.masks.stats",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'openjepa.masks' has no attribute {name!r}")
