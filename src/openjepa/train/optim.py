"""AdamW over the method's parameter groups, and the per-step schedule values applied to it."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from openjepa.config import OptimConfig
from openjepa.schedules import cosine_ramp, warmup_cosine


@dataclass(frozen=True)
class StepSchedule:
    """Learning rate and weight decay as pure functions of the global step."""

    cfg: OptimConfig
    total_steps: int
    warmup_steps: int

    def lr(self, step: int) -> float:
        """Warmup ``start_lr -> lr``, then cosine to ``final_lr``."""
        c = self.cfg
        return warmup_cosine(step, self.total_steps, self.warmup_steps, c.start_lr, c.lr, c.final_lr)

    def weight_decay(self, step: int) -> float:
        """Cosine-shaped increase ``weight_decay -> final_weight_decay`` (I-JEPA)."""
        return cosine_ramp(step, self.total_steps, self.cfg.weight_decay, self.cfg.final_weight_decay)

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> tuple[float, float]:
        """Writes this step's values into the optimizer groups; returns ``(lr, wd)``."""
        lr, wd = self.lr(step), self.weight_decay(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
            if group.get("apply_wd", True):
                group["weight_decay"] = wd
        return lr, wd


def build_optimizer(groups: list[dict], cfg: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; the fused CUDA kernel on GPUs (one launch for all parameters), foreach on CPU."""
    fused = device.type == "cuda"
    return torch.optim.AdamW(
        groups,
        lr=cfg.start_lr,
        betas=cfg.betas,
        weight_decay=cfg.weight_decay,
        fused=fused,
        foreach=None if fused else True,
    )
