"""One optimizer step: micro-batches, backward, unscale/clip, optimizer, teacher update.

Kept apart from the loop so the benchmark times exactly what training runs.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from openjepa.methods import Method
from openjepa.models.stochastic import sample_keys
from openjepa.runtime import Precision


class TrainStep:
    """Runs one optimizer step of a method and tracks non-finite losses on the device.

    Args:
        method: the method (its ``after_step`` runs after the optimizer step).
        model: the module to call, the method itself or wrapped by DDP and/or ``torch.compile``.
        optimizer: AdamW over ``method.param_groups()``.
        precision: autocast dtype and GradScaler choice.
        device: where the batches and the model are.
        clip_grad: clip the global gradient norm to this value (0: no clipping).
        seed: the run seed; with the batches' ``slots`` it keys the model's random draws (stochastic depth)
            by sample, so they do not depend on how the global batch is split or on a resume.
    """

    def __init__(
        self,
        method: Method,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        precision: Precision,
        device: torch.device,
        clip_grad: float = 0.0,
        seed: int = 0,
    ):
        self.method = method
        self.seed = seed
        self.model = model
        self.optimizer = optimizer
        self.precision = precision
        self.device = device
        self.clip_grad = clip_grad
        self.scaler = torch.amp.GradScaler(device.type) if precision.scaler else None
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        # Device-side record of the first step whose loss was not finite (-1: none yet).
        self.first_bad_step = torch.full((), -1, dtype=torch.long, device=device)

    def _no_sync(self, last: bool) -> contextlib.AbstractContextManager:
        ddp = self.model if isinstance(self.model, DistributedDataParallel) else None
        if ddp is None:
            ddp = getattr(self.model, "_orig_mod", None)
            ddp = ddp if isinstance(ddp, DistributedDataParallel) else None
        return contextlib.nullcontext() if last or ddp is None else ddp.no_sync()

    def _keys(self, batch: dict[str, Any], step: int) -> contextlib.AbstractContextManager:
        slots = batch.get("slots")
        return contextlib.nullcontext() if slots is None else sample_keys(self.seed, step, slots)

    def __call__(self, micro_batches: list[dict[str, Any]], step: int) -> dict[str, torch.Tensor]:
        """Runs the step; returns detached device tensors (no host synchronization)."""
        n = len(micro_batches)
        totals: dict[str, torch.Tensor] = {}
        for i, batch in enumerate(micro_batches):
            with self._no_sync(last=i == n - 1):
                with self.precision.autocast(self.device), self._keys(batch, step):
                    loss, metrics = self.model(batch, step)
                # Each micro-batch's loss is a mean over its own samples: dividing by n makes the summed
                # gradient the gradient of the mean over the whole step's batch.
                scaled = loss / n
                (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            for k, v in metrics.items():
                totals[k] = totals[k] + v / n if k in totals else v / n
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.clip_grad > 0:
            totals["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.params, self.clip_grad, foreach=True)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.method.after_step(step)
        bad = ~torch.isfinite(totals["loss"])
        self.first_bad_step = torch.where(bad & (self.first_bad_step < 0), step, self.first_bad_step)
        return totals
