"""What a logging step records: mean loss, throughput, skipped files, the method's values, RankMe, FLOPs.

Everything here runs on logging steps only; between them the loop keeps device tensors and never talks
to the host. The FLOPs count is host arithmetic on batch shapes (:class:`FlopsCounter`).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from openjepa.errors import DataError
from openjepa.methods import Method
from openjepa.methods.flops import total
from openjepa.metrics import rankme
from openjepa.runtime import Precision
from openjepa.train.dist import DistInfo, all_reduce_mean, all_reduce_sum


@torch.no_grad()
def online_rankme(encoder: nn.Module, inputs: torch.Tensor, device: torch.device, precision: Precision) -> float:
    """RankMe of the mean-pooled features of ``encoder`` on ``inputs``."""
    was_training = encoder.training
    encoder.eval()
    feats = []
    for chunk in inputs.split(128):
        with precision.autocast(device):
            feats.append(encoder(chunk.to(device)).float().mean(1))
    encoder.train(was_training)
    return float(rankme(torch.cat(feats)))


class Monitor:
    """Accumulates per-step device values and turns them into one log record on logging steps.

    Args:
        info: process placement (values are averaged / summed over ranks).
        global_batch: samples per optimizer step (for the throughput).
        max_skip_fraction: stop the run when more than this fraction of files read so far were unreadable.
        start_step: the first step of this process's run (for the throughput of the first record).
    """

    def __init__(self, info: DistInfo, global_batch: int, max_skip_fraction: float, start_step: int):
        self.info = info
        self.global_batch = global_batch
        self.max_skip_fraction = max_skip_fraction
        self.loss_sum = torch.zeros((), device=info.device)
        self.count = 0
        self.skipped_files: list[str] = []
        self.last_loss = float("nan")
        self._t, self._step = time.perf_counter(), start_step

    def add(self, metrics: dict[str, torch.Tensor], skipped: list[str]) -> None:
        """Records one step's loss (on the device) and the files its batches skipped."""
        self.loss_sum += metrics["loss"]
        self.count += 1
        self.skipped_files += skipped[: max(0, 20 - len(self.skipped_files))]

    def record(self, done: int, skipped_total: int, metrics: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The log record after ``done`` steps (host sync; a collective under DDP)."""
        info = self.info
        mean_loss = all_reduce_mean(self.loss_sum / max(self.count, 1), info)
        skipped_all = int(all_reduce_sum(torch.tensor(float(skipped_total), device=info.device), info).item())
        self.check_skips(skipped_all, done * self.global_batch)
        self.last_loss = float(mean_loss.item())
        now = time.perf_counter()
        per_s = (done - self._step) * self.global_batch / max(now - self._t, 1e-9)
        self._t, self._step = now, done
        record: dict[str, Any] = {"loss": self.last_loss, "samples_per_s": round(per_s, 2), "skipped": skipped_all}
        others = {k: v for k, v in metrics.items() if k != "loss"}
        if others:  # one device->host copy for all of them
            values = torch.stack([v.detach().float().reshape(()) for v in others.values()]).tolist()
            record.update(zip(others, values))
        if info.device.type == "cuda":
            record["max_mem_gb"] = round(torch.cuda.max_memory_allocated(info.device) / 2**30, 3)
        self.loss_sum.zero_()
        self.count = 0
        return record

    def check_skips(self, skipped: int, seen: int) -> None:
        """Stops a run whose data is mostly unreadable instead of silently training on the rest."""
        if seen >= 100 and skipped > self.max_skip_fraction * seen:
            raise DataError(
                f"{skipped} of {seen} files read so far were unreadable (more than data.max_skip_fraction="
                f"{self.max_skip_fraction}); examples: {'; '.join(self.skipped_files[:5])}. Fix or remove these "
                "files, or raise data.max_skip_fraction."
            )


class FlopsCounter:
    """Cumulative training FLOPs of a run (convention: :mod:`openjepa.methods.flops`) and ``train.flops_budget``.

    Each process adds the FLOPs of its own micro-batches (:meth:`Method.flops`: host arithmetic on shapes,
    no device sync). Under DDP the processes' counts are summed by one all-reduce at sync points (logging
    steps and checkpoint writes, which synchronize anyway), so the logged and saved counts are exact even
    when processes see masks of different sizes (masks cut per call). ``prior`` is what earlier stages cost
    (:meth:`Method.prior_flops`: a SALT student counts its teacher's run); the budget applies to
    ``prior + run``.

    The run stops after the first step at which the total reaches the budget (so it may exceed it by less
    than one step). One process checks after every step; under DDP every rank must stop at the same step,
    so the check happens at logging steps (the run may then go on for up to ``train.log_every - 1`` steps).

    Args:
        method: the method (its ``flops`` and ``prior_flops``).
        info: process placement.
        budget: ``train.flops_budget`` (0: none).
        saved: the ``flops`` entry of the checkpoint resumed from (None: a fresh run).
    """

    def __init__(self, method: Method, info: DistInfo, budget: float, saved: dict[str, float] | None = None):
        self.method = method
        self.info = info
        self.budget = float(budget)
        self.run = float(saved["run"]) if saved else 0.0
        # Resumed runs keep the prior they started with, even if the earlier stage's files changed since.
        prior = saved["prior"] if saved else method.prior_flops()
        self.prior_known = prior is not None
        self.prior = float(prior or 0.0)
        self._pending = 0.0
        self._pending_steps = 0  # the same on every rank, so every rank takes the same collectives

    @property
    def total(self) -> float:
        """FLOPs of every stage so far (``prior + run``), as of the last sync."""
        return self.prior + self.run

    def add(self, micro_batches: list[dict[str, Any]]) -> None:
        """Counts one optimizer step (this process's micro-batches)."""
        self._pending += sum(total(self.method.flops(b)) for b in micro_batches)
        self._pending_steps += 1
        if not self.info.distributed:
            self.sync()

    def sync(self) -> None:
        """Adds every process's pending FLOPs to the run's count (a collective under DDP: call it on all ranks)."""
        if self._pending_steps == 0:
            return
        pending = self._pending
        if self.info.distributed:
            summed = all_reduce_sum(torch.tensor(pending, dtype=torch.float64, device=self.info.device), self.info)
            pending = float(summed.item())
        self.run += pending
        self._pending, self._pending_steps = 0.0, 0

    def reached(self, sync_point: bool = True) -> bool:
        """Whether the budget is spent (always False without one). Under DDP only at sync points."""
        if self.budget <= 0:
            return False
        if self.info.distributed and not sync_point:
            return False
        self.sync()
        return self.total >= self.budget

    def values(self) -> dict[str, float]:
        """The log record's entries: ``flops`` (this stage) and ``flops_total`` (every stage)."""
        self.sync()
        return {"flops": self.run, "flops_total": self.total}

    def state(self) -> dict[str, float]:
        """What a checkpoint keeps, so that a resumed run continues the count."""
        self.sync()
        return {"run": self.run, "prior": self.prior}

    def describe(self) -> str:
        """One line for the run log (empty when there is neither a budget nor an earlier stage)."""
        if self.budget <= 0 and self.prior <= 0 and self.prior_known:
            return ""
        text = f"training FLOPs so far {self.total:.4g}"
        if self.prior > 0:
            text += f" (of which {self.prior:.4g} from the earlier stage this run starts from)"
        if not self.prior_known:
            text += " (the earlier stage this run starts from does not record its FLOPs: this run only)"
        if self.budget > 0:
            text += f"; train.flops_budget={self.budget:.4g} (every stage counted)"
        return text

    def budget_message(self, done: int) -> str:
        """Why the run stopped early."""
        return (
            f"FLOPs budget reached after step {done}: {self.total:.4g} >= train.flops_budget={self.budget:.4g} "
            f"({self.run:.4g} in this run, {self.prior:.4g} before it); checkpoint written. To train on, resume "
            "with a larger train.flops_budget (or 0 for none)"
        )
