"""Where prediction targets come from: an EMA copy of the student, or (later) a frozen teacher."""

from __future__ import annotations

import copy

import torch
from torch import nn


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

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.model(*args, **kwargs)
