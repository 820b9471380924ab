"""Datasets and transforms: the built-in ``scenes`` generator, readers for user images, export.

Public names are imported lazily (PEP 562) so that ``openjepa.data.cli``, loaded to build the command
line parser, does not pull in torch.

- :mod:`openjepa.data.scenes`: :class:`ScenesDataset`, :func:`patch_labels`, ``SEG_CLASSES``.
- :mod:`openjepa.data.images`: :func:`load_image`, :class:`ImageFolderDataset`,
  :class:`JsonlImageDataset`, :class:`SkipCorrupt`, :class:`CorruptImageError`, :func:`build_dataset`.
- :mod:`openjepa.data.transforms`: :class:`RandomResizedCrop`, :func:`to_tensor`, :func:`eval_transform`.
- :mod:`openjepa.data.export`: :func:`export_scenes`.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "scenes": ("ScenesDataset", "Scene", "SceneObject", "SHAPES", "COLORS", "SEG_CLASSES", "patch_labels"),
    "images": (
        "CorruptImageError",
        "ImageFolderDataset",
        "JsonlImageDataset",
        "SkipCorrupt",
        "build_dataset",
        "load_image",
        "IMAGE_EXTENSIONS",
    ),
    "transforms": (
        "IMAGENET_MEAN",
        "IMAGENET_STD",
        "RandomResizedCrop",
        "TrainTransform",
        "EvalTransform",
        "eval_transform",
        "to_tensor",
    ),
    "export": ("export_scenes",),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'openjepa.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"openjepa.data.{module}"), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
