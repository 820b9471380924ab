"""Encoders from files: openjepa training checkpoints, exported safetensors, official JEPA checkpoints.

:func:`load_encoder` is the one public way to get an encoder from any file openjepa can read; it needs only
:mod:`openjepa.models` (rebuilding a whole *method* from a training checkpoint is
:func:`openjepa.methods.load.load_method`, one layer up). A training checkpoint records where its
evaluation encoder sits in the method's weights (``encoder.prefix``) and how to rebuild it
(``encoder.kwargs``), so no method code runs here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from openjepa.checkpoints.io import checkpoint_config, load_checkpoint, read_torch_file, resolve_checkpoint_path
from openjepa.config import Config
from openjepa.errors import CheckpointError
from openjepa.models.vit import VisionTransformer

__all__ = ["ENCODER_FORMAT", "LoadedEncoder", "export_encoder", "load_encoder", "read_encoder", "save_encoder"]

ENCODER_FORMAT = "openjepa-encoder-v1"
NORMALIZE = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


@dataclass
class LoadedEncoder:
    """An encoder read from a file, with what is known about where it came from.

    Attributes:
        encoder: the :class:`VisionTransformer`, on the CPU, in eval mode.
        source: ``openjepa-run``, ``openjepa-export`` or the official format's name (``ijepa``, ``jepa``, ...).
        path: the file read.
        config: the training run's config (openjepa training checkpoints only).
        step: the training step of the weights, when known.
        meta: anything else the file said (method, arch, which encoder of an official checkpoint...).
    """

    encoder: VisionTransformer
    source: str
    path: Path
    config: Config | None = None
    step: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def _build(
    kwargs: dict[str, Any], weights: dict[str, torch.Tensor], path: Path, overrides: dict[str, Any]
) -> VisionTransformer:
    """A VisionTransformer from constructor arguments and its weights, with clear errors on a mismatch."""
    args = {**kwargs, **overrides}
    try:
        model = VisionTransformer(**args)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot build the encoder it describes ({args}): {err}") from None
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise CheckpointError(
            f"{path}: the weights do not fit the encoder described beside them ({first}). If you passed overrides "
            "(e.g. num_heads), check them; otherwise the file is damaged or from another version"
        ) from None
    return model.eval()


def _from_training_state(state: dict[str, Any], path: Path, overrides: dict[str, Any]) -> LoadedEncoder:
    cfg = checkpoint_config(state, path)
    info = state.get("encoder")
    if info is None:  # openjepa-checkpoint-v1: the evaluation encoder is the EMA teacher, or the encoder itself
        from openjepa.models.build import build_encoder

        kwargs = build_encoder(cfg).config()
        prefixes = ["teacher.model.", "encoder."]
    else:
        kwargs, prefixes = dict(info["kwargs"]), [info["prefix"]]
    model_state = state["model"]
    for prefix in prefixes:
        weights = {k[len(prefix) :]: v for k, v in model_state.items() if k.startswith(prefix)}
        if weights:
            break
    else:
        raise CheckpointError(f"{path}: no encoder weights found under {prefixes} in the checkpoint's model")
    if "pos" in kwargs and kwargs["pos"] == "sincos":
        weights.pop("pos_embed", None)
    encoder = _build(kwargs, weights, path, overrides)
    meta = {"method": cfg.method, "arch": cfg.model.arch}
    return LoadedEncoder(encoder, "openjepa-run", path, cfg, int(state["step"]), meta)


def _from_export(path: Path, overrides: dict[str, Any]) -> LoadedEncoder:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config_path = path.with_suffix(".json")
    if not config_path.is_file():
        raise CheckpointError(
            f"{path}: the model description {config_path.name} is missing beside it (export writes both files). "
            "Copy the .json with the .safetensors"
        )
    try:
        meta = json.loads(config_path.read_text())
        kwargs = meta["kwargs"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(
            f"{config_path}: not an openjepa encoder description ({err}); re-export the encoder"
        ) from None
    try:
        weights = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err}); re-export the encoder") from None
    encoder = _build(kwargs, weights, path, overrides)
    step = meta.get("step")
    return LoadedEncoder(encoder, "openjepa-export", path, None, int(step) if step is not None else None, meta)


def read_encoder(path: str | Path, which: str = "target", **overrides: Any) -> LoadedEncoder:
    """Reads an encoder and what is known about it from any file openjepa can read.

    Args:
        path: an openjepa training checkpoint or run folder; an exported ``.safetensors`` (with its
            ``.json``); or a checkpoint in an official format (facebookresearch/ijepa, jepa, vjepa2).
        which: for official checkpoints, ``"target"`` (the EMA target encoder, default) or ``"encoder"``
            (the context encoder). openjepa files hold one evaluation encoder; ``which`` is ignored there.
        **overrides: constructor arguments the weights cannot tell (e.g. ``num_heads``, ``img_size``).

    Raises:
        FileNotFoundError: nothing at ``path``.
        CheckpointError: unreadable, corrupt or unknown file (one line naming the file and what to do).
    """
    if which not in ("target", "encoder"):
        raise ValueError(f"which={which!r}: choose 'target' (the EMA target encoder) or 'encoder'")
    p = Path(path)
    if p.suffix == ".safetensors":
        if not p.is_file():
            raise FileNotFoundError(f"encoder file not found: {p}")
        return _from_export(p, overrides)
    p = resolve_checkpoint_path(p)
    state = read_torch_file(p)
    if isinstance(state, dict) and str(state.get("format", "")).startswith("openjepa-checkpoint"):
        return _from_training_state(load_checkpoint(p), p, overrides)
    from openjepa.checkpoints.official import convert_official

    # The converter applies the overrides itself: some decide how the weights are read (format, num_frames).
    converted = convert_official(state, p, which=which, overrides=overrides)
    encoder = _build(converted.kwargs, converted.weights, p, {})
    meta = {"format": converted.format, "which": which, **converted.meta}
    return LoadedEncoder(encoder, converted.format, p, None, converted.step, meta)


def load_encoder(path: str | Path, which: str = "target", **overrides: Any) -> VisionTransformer:
    """An eval-mode encoder (on the CPU) from any file openjepa can read; see :func:`read_encoder`.

    Example:
        >>> import openjepa
        >>> enc = openjepa.load_encoder("runs/demo-ijepa")          # doctest: +SKIP
        >>> tokens = enc(images)                                    # doctest: +SKIP
    """
    return read_encoder(path, which=which, **overrides).encoder


def _world_readable(path: Path) -> None:
    # safetensors writes through a private temporary file (mode 0600); exports are meant to be shared.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def save_encoder(encoder: nn.Module, out: str | Path, meta: dict[str, Any]) -> tuple[Path, Path]:
    """Writes ``encoder`` to ``out`` (safetensors) and its description beside it (``.json``).

    Returns:
        The paths of the weights and of the description.
    """
    from safetensors.torch import save_file

    out = Path(out)
    if out.suffix != ".safetensors":
        raise ValueError(f"--out {out}: the export file name must end in .safetensors")
    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in encoder.state_dict().items()}
    save_file(tensors, str(out), metadata={k: str(v) for k, v in meta.items() if isinstance(v, (str, int, float))})
    _world_readable(out)
    description = {
        "format": ENCODER_FORMAT,
        "class": "openjepa.models.vit.VisionTransformer",
        **meta,
        "kwargs": encoder.config(),  # type: ignore[operator]
        "pooling": "mean over patch tokens",
        "normalize": NORMALIZE,
    }
    config_path = out.with_suffix(".json")
    config_path.write_text(json.dumps(description, indent=2) + "\n")
    return out, config_path


def export_encoder(src: str | Path, out: str | Path, which: str = "target") -> tuple[Path, Path]:
    """Writes the evaluation encoder of ``src`` (any file :func:`read_encoder` reads) to ``out``.

    Returns:
        The paths of the weights (``.safetensors``) and of the description (``.json``).
    """
    if Path(out).suffix != ".safetensors":
        raise ValueError(f"--out {out}: the export file name must end in .safetensors")
    loaded = read_encoder(src, which=which)
    meta: dict[str, Any] = {"source": loaded.source, **loaded.meta}
    if loaded.step is not None:
        meta["step"] = loaded.step
    return save_encoder(loaded.encoder, out, meta)
