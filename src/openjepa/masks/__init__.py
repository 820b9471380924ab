"""Mask samplers: which patches the context encoder sees and which ones the predictor must predict.

- :class:`MultiBlockMaskSampler` (``masks/multiblock.py``): I-JEPA multi-block masks on a 2-D patch grid,
  in ``fixed`` (default) or ``faithful`` (reference-reproducing) mode.
- :func:`mask_statistics`, :func:`save_mask_png` (``masks/stats.py``): measure and draw a sampler.
- ``masks/cli.py``: ``openjepa inspect masks``.

Names are imported lazily so that ``openjepa --help`` (which imports ``masks.cli``) does not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from openjepa.masks.multiblock import MaskBatch, MultiBlockMaskSampler
    from openjepa.masks.stats import mask_statistics, save_mask_png

__all__ = ["MaskBatch", "MultiBlockMaskSampler", "mask_statistics", "save_mask_png"]

_WHERE = {
    "MaskBatch": "openjepa.masks.multiblock",
    "MultiBlockMaskSampler": "openjepa.masks.multiblock",
    "mask_statistics": "openjepa.masks.stats",
    "save_mask_png": "openjepa.masks.stats",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'openjepa.masks' has no attribute {name!r}")
