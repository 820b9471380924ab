"""Datasets and transforms: the built-in ``scenes`` generator, readers for user images, export.

Public names are imported lazily (PEP 562) so that ``openjepa.data.cli``, loaded to build the command
line parser, does not pull in torch.

- :mod:`openjepa.data.scenes`: :class:`ScenesDataset`, :func:`patch_labels`, ``SEG_CLASSES``.
- :mod:`openjepa.data.images`: :func:`load_image`, :class:`ImageFolderDataset`,
  :class:`JsonlImageDataset`, :class:`SkipCorrupt`, :class:`CorruptImageError`.
- :mod:`openjepa.data.sources`: :func:`build_dataset` (``data.source`` -> dataset), :func:`source_kind`.
- :mod:`openjepa.data.pipeline`: the pretraining loader built from what a method needs.
- :mod:`openjepa.data.transforms`: :class:`RandomResizedCrop`, :func:`to_tensor`, :func:`eval_transform`.
- :mod:`openjepa.data.sprites`: :class:`SpritesDataset` (built-in videos with motion labels).
- :mod:`openjepa.data.video`: :class:`VideoFileDataset` (PyAV), :func:`read_frames`, :func:`write_video`.
- :mod:`openjepa.data.video_transforms`: :class:`VideoRandomResizedCrop`, :class:`VideoEvalTransform`.
- :mod:`openjepa.data.export`: :func:`export_scenes`, :func:`export_sprites`; :mod:`openjepa.data.manifest`.
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
    "export": ("export_scenes", "export_sprites"),
    "manifest": ("check_export",),
    "sprites": ("SpritesDataset",),
    "video": ("VideoFileDataset", "CorruptVideoError", "read_frames", "write_video"),
    "video_transforms": ("VideoRandomResizedCrop", "VideoEvalTransform"),
    "sources": ("build_dataset", "source_kind"),
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
