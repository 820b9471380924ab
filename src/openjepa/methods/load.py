"""A whole method (encoder, predictor, teacher, ...) rebuilt from an openjepa training checkpoint.

This sits above :mod:`openjepa.methods` because it needs the registry; reading only an *encoder* from a
file is :func:`openjepa.checkpoints.load_encoder`, one layer below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from openjepa.checkpoints import checkpoint_config, load_checkpoint
from openjepa.config import Config
from openjepa.errors import CheckpointError, ConfigError
from openjepa.methods import Method, build_method


def load_method(path: str | Path) -> tuple[Method, Config, dict[str, Any]]:
    """Rebuilds the method of a training checkpoint, on the CPU in eval mode.

    Returns:
        ``(method, config, state)``.

    Raises:
        CheckpointError: unreadable file, or weights that do not fit the method its config describes.
    """
    state = load_checkpoint(path)
    cfg = checkpoint_config(state, path)
    try:
        method = build_method(cfg, total_steps=max(int(state.get("total_steps", 1)), 1))
    except ConfigError as err:
        raise CheckpointError(f"{path}: its config cannot be built by this version of openjepa: {err}") from None
    try:
        missing, unexpected = method.load_state_dict(state["model"], strict=False)
    except RuntimeError as err:  # shape mismatches: a checkpoint of another model or another openjepa version
        raise CheckpointError(f"{path}: weights do not fit the model its config describes: {err}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match the model of its config "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    return method.eval(), cfg, state
