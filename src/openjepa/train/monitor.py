"""What a logging step records: mean loss, throughput, skipped files, the method's values, RankMe.

Everything here runs on logging steps only; between them the loop keeps device tensors and never talks
to the host.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from openjepa.errors import DataError
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
