"""Where prediction targets come from: an EMA copy of the student, or a frozen pretrained encoder (SALT).

Both run in eval mode and never receive gradients; both keep their weights in the method's state dict
under ``teacher.model.``, so a checkpoint holds the exact targets' network.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
from torch import nn

from openjepa.checkpoints import LoadedEncoder, read_encoder
from openjepa.errors import CheckpointError, ConfigError


class EMATeacher(nn.Module):
    """An exponential moving average of a student network, never trained by gradients.

    ``update`` does ``teacher = m * teacher + (1 - m) * student`` for every parameter in one fused
    ``torch._foreach_lerp_`` call (one kernel launch per parameter chunk instead of per tensor).
    The teacher always runs in eval mode (no stochastic depth / dropout in the targets).
    """

    def __init__(self, student: nn.Module):
        super().__init__()
        self.model = copy.deepcopy(student)
        self.model.requires_grad_(False)
        self.model.eval()

    def train(self, mode: bool = True) -> EMATeacher:
        super().train(mode)
        self.model.eval()
        return self

    @torch.no_grad()
    def update(self, student: nn.Module, momentum: float) -> None:
        """Moves the teacher toward ``student`` by ``1 - momentum`` (a host float: no device sync)."""
        t_params = list(self.model.parameters())
        s_params = [p.detach() for p in student.parameters()]
        if len(t_params) != len(s_params):
            raise ValueError("EMA teacher and student have different parameter lists")
        torch._foreach_lerp_(t_params, s_params, 1.0 - float(momentum))

    @property
    def embed_dim(self) -> int:
        """Width of the teacher's tokens (the student's: an EMA teacher is a copy of it)."""
        return int(self.model.embed_dim)  # type: ignore[arg-type]

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.model(*args, **kwargs)


class FrozenTeacher(nn.Module):
    """A pretrained encoder whose final-layer tokens are the targets; never trained, never updated.

    Built from any file :func:`openjepa.checkpoints.read_encoder` reads (:meth:`from_checkpoint`): an openjepa
    run folder or training checkpoint (its evaluation encoder: a V-Pixel run's encoder, a V-JEPA run's EMA
    target), an exported ``.safetensors``, or an official checkpoint. Its architecture comes from that file.

    Its weights are parameters with ``requires_grad=False``: they are in the method's ``state_dict`` (so a
    student checkpoint is self-contained, and a resumed run continues with the very teacher it started with
    even if the teacher's run folder has moved on since), but never in an optimizer group.

    The forward runs under :func:`torch.inference_mode` (no autograd bookkeeping at all, cheaper than
    ``no_grad``) and inside the caller's autocast. Inference tensors cannot be saved for backward, and the
    targets meet the student's predictions in the loss, whose backward saves both; so the output is cloned
    once, outside inference mode, into an ordinary tensor. The copy costs one ``[B, N, D]`` write, nothing
    next to the teacher's forward.

    Args:
        encoder: the teacher network (a :class:`~openjepa.models.vit.VisionTransformer`).
        source: where it was read from (for messages).
        recorded_flops: the training FLOPs that produced it, when its file records them (``None``: unknown).
    """

    def __init__(self, encoder: nn.Module, source: str = "", recorded_flops: float | None = None):
        super().__init__()
        self.model = encoder
        self.model.requires_grad_(False)
        self.model.eval()
        self.source = source
        self.recorded_flops = recorded_flops

    @classmethod
    def from_checkpoint(cls, path: str | Path, key: str = "teacher.checkpoint") -> FrozenTeacher:
        """Reads the teacher at ``path`` (``key`` names the config key that gave it, for messages).

        Raises:
            ConfigError: no path, or nothing at ``path``.
            CheckpointError: an unreadable, corrupt or unknown file.
        """
        if not path:
            raise ConfigError(
                f"{key} is not set: a frozen teacher needs a pretrained encoder, e.g. {key}=runs/salt-demo-teacher "
                "(train one with `openjepa pretrain configs/salt/demo-teacher.yaml`) or an exported .safetensors"
            )
        try:
            # The teacher's random init must not draw from the global RNG: the student's initialization (and
            # so a seed's run) would otherwise depend on the teacher's architecture.
            with torch.random.fork_rng(devices=[]):
                loaded = read_encoder(path)
        except FileNotFoundError as err:
            raise ConfigError(
                f"{key}={path}: no teacher there ({err}). Train the teacher first (e.g. `openjepa pretrain "
                f"configs/salt/demo-teacher.yaml`), or set {key} to a run folder, a training checkpoint or an "
                "exported .safetensors"
            ) from None
        except CheckpointError as err:
            raise CheckpointError(
                f"{key}={path}: cannot read the teacher: {err}. Point {key} at an intact run folder, checkpoint "
                "or exported encoder"
            ) from None
        return cls(loaded.encoder, str(loaded.path), recorded_training_flops(loaded))

    @property
    def embed_dim(self) -> int:
        """Width of the teacher's tokens (the width the student's predictor must output)."""
        return int(self.model.embed_dim)  # type: ignore[arg-type]

    def train(self, mode: bool = True) -> FrozenTeacher:
        super().train(mode)
        self.model.eval()  # no stochastic depth / dropout in the targets, ever
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's final-layer tokens ``[B, N, D]`` of the full input (an ordinary, non-inference tensor)."""
        with torch.inference_mode():
            h = self.model(x)
        return h.clone()


def recorded_training_flops(loaded: LoadedEncoder) -> float | None:
    """The training FLOPs that produced an encoder (every earlier stage included), when its file says.

    openjepa training checkpoints record them (``flops``: ``run`` + ``prior``); an export's description may
    carry a ``flops`` entry. Other files (official checkpoints, older runs) do not: ``None``.
    """
    if loaded.source == "openjepa-run":
        # Memory-mapped: only the small ``flops`` entry is read, not the weights again.
        state = torch.load(loaded.path, map_location="cpu", weights_only=True, mmap=True)
        record = state.get("flops") if isinstance(state, dict) else None
        if isinstance(record, dict):
            return float(record.get("run", 0.0)) + float(record.get("prior", 0.0))
        return None
    value = loaded.meta.get("flops")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
