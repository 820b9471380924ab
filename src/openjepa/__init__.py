"""openjepa: joint-embedding predictive pretraining (I-JEPA, TC-JEPA, V-JEPA, SALT) for vision encoders.

``openjepa.load_encoder(path)`` returns an eval-mode encoder from any file openjepa can read (a run folder,
a training checkpoint, an exported ``.safetensors``, an official I-JEPA / V-JEPA checkpoint).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "load_encoder", "read_encoder"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `openjepa --help` and `import openjepa` do not pay for torch.
    if name in ("load_encoder", "read_encoder"):
        from openjepa import checkpoints

        return getattr(checkpoints, name)
    raise AttributeError(f"module 'openjepa' has no attribute {name!r}")
