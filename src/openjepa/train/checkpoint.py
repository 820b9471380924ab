"""Checkpoints: atomic writes, safe loading, and export of the evaluation encoder to safetensors.

A checkpoint is a ``torch.save`` file holding only tensors and plain Python values, so it loads with
``weights_only=True`` (nothing is unpickled but data). It is written to a temporary file, fsynced and
renamed over the target, so a crash mid-write never leaves a truncated ``checkpoint-latest.pt``.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from openjepa.config import Config, ConfigError, from_dict
from openjepa.errors import CheckpointError

FORMAT = "openjepa-checkpoint-v1"
LATEST = "checkpoint-latest.pt"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some filesystems do not allow opening a directory; the rename is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to ``path`` through a temporary file + fsync + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Loads a checkpoint safely (``weights_only=True``), on the CPU.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is truncated, corrupt, or not an openjepa checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        path = path / LATEST
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint not found: {path}. Pass a checkpoint file or a run folder holding {LATEST}."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as err:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or incomplete ({type(err).__name__}: {err}). "
            "Use an earlier periodic checkpoint (checkpoint-<step>.pt) of the same run."
        ) from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an openjepa checkpoint (expected format {FORMAT!r})")
    return state


def checkpoint_config(state: dict[str, Any], path: str | Path = "checkpoint") -> Config:
    """The resolved config stored in a checkpoint."""
    try:
        return from_dict(state["config"], origin=str(path))
    except ConfigError as err:
        raise CheckpointError(f"{path}: stored config does not match this version of openjepa: {err}") from err


def rng_state() -> dict[str, Any]:
    """Global torch RNG states (CPU and every CUDA device), for exact resumption."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_method(path: str | Path) -> tuple[nn.Module, Config, dict[str, Any]]:
    """Rebuilds the whole method (encoder, predictor, teacher, ...) of a checkpoint, on the CPU in eval mode.

    Returns ``(method, config, state)``.
    """
    from openjepa.methods.base import build_method

    state = load_checkpoint(path)
    cfg = checkpoint_config(state, path)
    method = build_method(cfg, total_steps=max(int(state.get("total_steps", 1)), 1))
    try:
        missing, unexpected = method.load_state_dict(state["model"], strict=False)
    except RuntimeError as err:  # shape mismatches: a checkpoint of another model or another openjepa version
        raise CheckpointError(f"{path}: weights do not fit the model its config describes: {err}") from err
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match the model of its config "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    return method.eval(), cfg, state


def load_eval_encoder(path: str | Path) -> tuple[nn.Module, Config, dict[str, Any]]:
    """Rebuilds the evaluation encoder (the EMA teacher for JEPA methods) of a checkpoint.

    Returns ``(encoder, config, state)``; the encoder is on the CPU in eval mode.
    """
    method, cfg, state = load_method(path)
    return method.encoder_for_eval().eval(), cfg, state


def export_encoder(ckpt: str | Path, out: str | Path) -> tuple[Path, Path]:
    """Writes the evaluation encoder of ``ckpt`` to ``out`` (safetensors) and its config beside it (JSON).

    Returns the paths of the weights and the config file.
    """
    from safetensors.torch import save_file

    encoder, cfg, state = load_eval_encoder(ckpt)
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ValueError(f"--out {out}: the export file name must end in .safetensors")
    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in encoder.state_dict().items()}
    meta = {"format": "openjepa-encoder-v1", "method": cfg.method, "arch": cfg.model.arch, "step": str(state["step"])}
    save_file(tensors, str(out), metadata=meta)
    config_path = out.with_suffix(".json")
    model_cfg = {
        "format": "openjepa-encoder-v1",
        "class": "openjepa.models.vit.VisionTransformer",
        "arch": cfg.model.arch,
        "method": cfg.method,
        "step": int(state["step"]),
        "kwargs": encoder.config(),  # type: ignore[operator]
        "pooling": "mean over patch tokens",
        "normalize": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    }
    config_path.write_text(json.dumps(model_cfg, indent=2) + "\n")
    return out, config_path


def load_exported_encoder(path: str | Path) -> nn.Module:
    """Loads an encoder written by :func:`export_encoder` (weights + the JSON config beside them)."""
    from safetensors.torch import load_file

    from openjepa.models.vit import VisionTransformer

    path = Path(path)
    config_path = path.with_suffix(".json")
    for p in (path, config_path):
        if not p.is_file():
            raise FileNotFoundError(f"exported encoder file missing: {p} (export writes both .safetensors and .json)")
    kwargs = json.loads(config_path.read_text())["kwargs"]
    model = VisionTransformer(**kwargs)
    model.load_state_dict(load_file(str(path)))
    return model.eval()
