"""Random draws of the model (stochastic depth) keyed by sample instead of by a global RNG stream.

A training step declares which samples its batch holds (their *slots* in the step's global batch) with
:func:`sample_keys`; inside it, :func:`sample_uniform` gives each row a uniform number that is a pure
function of ``(seed, step, slot, call)``, ``call`` counting the draws of the step in program order. So a
sample gets the same stochastic-depth mask whether it is processed alone, in one process with the whole
batch, in one of several DDP processes, in a gradient-accumulation micro-batch, or after a resume, which
is what makes those runs equal. Outside :func:`sample_keys` (a model used on its own) the draws come from
torch's global RNG as usual.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

__all__ = ["sample_keys", "sample_uniform"]

_MASK32 = 0xFFFFFFFF


@dataclass
class _Keys:
    seed: int
    step: int
    slots: torch.Tensor  # int64 [B], on the device of the batch (no host sync in the step)
    calls: int = 0


_active: _Keys | None = None


@contextlib.contextmanager
def sample_keys(seed: int, step: int, slots: torch.Tensor) -> Iterator[None]:
    """Makes :func:`sample_uniform` draw per sample for the rows of a batch with these global ``slots``."""
    global _active
    previous = _active
    _active = _Keys(int(seed), int(step), slots.detach().to(torch.int64).reshape(-1))
    try:
        yield
    finally:
        _active = previous


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixer (``lowbias32``) on int64 tensors holding values in [0, 2^32)."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _MASK32
    return x ^ (x >> 16)


def sample_uniform(rows: int, device: torch.device) -> torch.Tensor:
    """``rows`` uniform numbers in [0, 1), one per row of the current batch (float32 on ``device``).

    Inside :func:`sample_keys` with ``B`` slots, ``rows`` must be a multiple of ``B``: a batch repeated
    sample-major (``repeat_interleave``, as the predictor does once per target block) gives each copy its
    own draw.

    Raises:
        ValueError: ``rows`` is not a multiple of the number of declared samples.
    """
    keys = _active
    if keys is None:
        return torch.rand(rows, device=device)
    b = keys.slots.numel()
    if rows % b:
        raise ValueError(f"stochastic depth on {rows} rows but the batch declares {b} samples: rows must be a multiple")
    repeats = rows // b
    slot = keys.slots.to(device).repeat_interleave(repeats)
    copy = torch.arange(repeats, dtype=torch.int64, device=device).repeat(b)
    call = keys.calls
    keys.calls += 1
    x = (keys.seed * 0x9E3779B1 + keys.step * 0x85EBCA77 + call * 0x27D4EB2F) & _MASK32
    x = _hash32((_hash32(x ^ slot) + copy * 0x165667B1) & _MASK32)
    return (x >> 8).to(torch.float32) / float(1 << 24)
