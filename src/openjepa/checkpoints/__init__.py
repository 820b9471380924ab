"""Checkpoint files: atomic writes, safe loads, encoders from any format, exports.

A neutral module: the training loop, the evaluators, a frozen teacher, scripts and the CLI all import
it, and it imports nothing above :mod:`openjepa.models`.
"""

from openjepa.checkpoints.encoders import LoadedEncoder, export_encoder, load_encoder, read_encoder, save_encoder
from openjepa.checkpoints.io import (
    FORMAT,
    LATEST,
    atomic_save,
    checkpoint_config,
    load_checkpoint,
    resolve_checkpoint_path,
    rng_state,
    set_rng_state,
)

__all__ = [
    "FORMAT",
    "LATEST",
    "LoadedEncoder",
    "atomic_save",
    "checkpoint_config",
    "export_encoder",
    "load_checkpoint",
    "load_encoder",
    "read_encoder",
    "resolve_checkpoint_path",
    "rng_state",
    "save_encoder",
    "set_rng_state",
]
