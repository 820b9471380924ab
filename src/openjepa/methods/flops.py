"""Training-compute accounting with the convention of the SALT paper (Li et al., 2025) and of scaling laws.

A network with ``N`` parameters (embeddings included) that processes ``D`` tokens costs

- ``6 * N * D`` FLOPs when it is trained (forward 2ND + backward 4ND);
- ``2 * N * D`` FLOPs when it only runs forward: a frozen teacher, and an EMA teacher too (its weights
  move by an average, not by gradients).

Attention's quadratic term, layer norms, the optimizer and the EMA update are not counted; neither is
anything computed once before training (cached caption embeddings). ``D`` comes from the shapes of the
actual batch and masks (so masking 90% of a clip makes the encoder 10x cheaper), never from the config.
Everything here reads tensor *shapes* only: it runs on the host and never synchronizes with the device.

Each method reports its split (``teacher`` / ``student`` / ``predictor`` / ``decoder`` / ``heads``) through
:meth:`openjepa.methods.base.Method.flops`; the training loop sums the parts over micro-batches and ranks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

__all__ = [
    "PARTS",
    "forward_flops",
    "mask_token_counts",
    "param_count",
    "total",
    "trained_flops",
]

# The parts every report lists, in this order (a method reports the ones it has).
PARTS = ("teacher", "student", "predictor", "decoder", "heads")


def param_count(modules: nn.Module | Iterable[nn.Parameter]) -> int:
    """``N``: the parameters of a module (trainable or not, embeddings and mask tokens included).

    Buffers (fixed sin-cos position tables) are not parameters and are not counted.
    """
    params = modules.parameters() if isinstance(modules, nn.Module) else modules
    return sum(p.numel() for p in params)


def trained_flops(n_params: int, tokens: int) -> float:
    """``6 * N * D``: forward and backward of a trained network."""
    return 6.0 * n_params * tokens


def forward_flops(n_params: int, tokens: int) -> float:
    """``2 * N * D``: a forward pass only (frozen or EMA teacher)."""
    return 2.0 * n_params * tokens


def total(parts: Mapping[str, float]) -> float:
    """The sum of a split."""
    return float(sum(parts.values()))


def mask_token_counts(masks: dict[str, torch.Tensor]) -> tuple[int, int, int]:
    """``(Kc, T, Kt)`` of one (context, target) pair: context tokens and ``T`` target blocks of ``Kt`` tokens."""
    _, t, kt = masks["tgt_idx"].shape
    return int(masks["ctx_idx"].shape[1]), int(t), int(kt)
