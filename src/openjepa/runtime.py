"""Small runtime choices shared by training, evaluation and benchmarks: device, precision, CPU threads.

They live here, below ``train`` and ``eval``, so an evaluator picks a device or an autocast dtype the way
the training loop does without importing the loop.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from typing import Any

import torch

from openjepa.errors import ConfigError

__all__ = ["Precision", "configure_threads", "pick_device", "to_device"]


def pick_device(pref: str, local_rank: int = 0, key: str = "train.device") -> torch.device:
    """``auto`` -> CUDA when available (one GPU per local rank), else CPU; ``cuda`` without CUDA is an error.

    Args:
        pref: ``auto``, ``cpu`` or ``cuda``.
        local_rank: this process's GPU on its node.
        key: the setting the user gave ``pref`` with, named in the error (``train.device``, ``--device``).

    Raises:
        ConfigError: ``cuda`` was asked for but no CUDA device is visible, or ``pref`` is unknown.
    """
    if pref not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"{key}={pref!r}: choose auto, cpu or cuda")
    if pref == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"{key}=cuda but no CUDA device is visible to PyTorch (torch {torch.__version__}, "
            f"CUDA build: {torch.version.cuda or 'no'}). Use {key}=cpu (or auto), or install a CUDA build of torch "
            "and check CUDA_VISIBLE_DEVICES"
        )
    if pref == "cuda" or (pref == "auto" and torch.cuda.is_available()):
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"local rank {local_rank} has no GPU: only {torch.cuda.device_count()} visible. Start at most "
                "that many processes per node (torchrun --nproc_per_node)"
            )
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


@dataclass(frozen=True)
class Precision:
    """Autocast dtype (None: full fp32) and whether a GradScaler is needed (fp16)."""

    dtype: torch.dtype | None
    scaler: bool

    @staticmethod
    def resolve(name: str, device: torch.device) -> Precision:
        """``auto``: bf16 on CUDA GPUs that support it, fp16 + GradScaler on older GPUs, fp32 on CPU."""
        if name == "auto":
            if device.type != "cuda":
                return Precision(None, False)
            name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if name == "fp32":
            return Precision(None, False)
        if name == "bf16":
            return Precision(torch.bfloat16, False)
        if name != "fp16":
            raise ConfigError(f"train.precision={name!r}: choose auto, fp32, bf16 or fp16")
        if device.type != "cuda":
            raise ConfigError("train.precision=fp16 needs a CUDA device; use fp32 or bf16 on the CPU")
        return Precision(torch.float16, True)

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The autocast context for forward passes."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.dtype)


def to_device(batch: Any, device: torch.device) -> Any:
    """Moves every tensor of a batch (nested dicts / lists) to ``device`` (asynchronously from pinned memory)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list):
        return [to_device(v, device) for v in batch]
    return batch


def available_cores() -> int:
    """CPU cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def configure_threads(num_workers: int, processes_per_node: int = 1) -> str:
    """Sets torch's intra-op threads so the main process, its loader workers and BLAS fit the free cores.

    Without a limit each of them starts one thread per core, and on a small or shared CPU the threads
    oversubscribe the cores: torch's threads wait for each other at every operation, so one descheduled thread
    stalls them all (docs/RESULTS.md, section 15: 96 demo steps take 129 s with 2 threads beside one busy
    process on 2 cores, 69 s with 1). So the count is the cores left after the loader workers and after what
    other programs keep busy (measured over 0.3 s before this process starts working, :func:`other_load`), at
    least 1. Counting each loader worker as a full core is conservative: with the cheap ``scenes`` generator on an
    idle 2-core machine, 2 threads are about a quarter faster (same section). An ``OMP_NUM_THREADS`` the
    user set is respected. Loader workers run one thread each (PyTorch's default).

    Returns:
        A one-line description of the choice, for the run log.
    """
    if os.environ.get("OMP_NUM_THREADS"):
        threads = max(1, int(os.environ["OMP_NUM_THREADS"]))
        torch.set_num_threads(threads)
        return f"{threads} torch thread(s) (OMP_NUM_THREADS)"
    cores = available_cores()
    per_process = max(1, cores // max(1, processes_per_node))
    busy = other_load(cores)
    threads = max(1, min(per_process - num_workers, cores - busy - num_workers * processes_per_node))
    torch.set_num_threads(threads)
    return (
        f"{threads} torch thread(s): {cores} core(s), ~{busy} kept busy by other programs, {num_workers} loader "
        f"worker(s), {processes_per_node} process(es); set OMP_NUM_THREADS to choose"
    )


def other_load(cores: int, window_s: float = 0.3) -> int:
    """Cores other programs keep busy now: :func:`busy_cpus` over a short window, rounded.

    Falls back to the rounded 1-minute load average where ``/proc/stat`` is not readable (not Linux), and to
    0 where neither is available. The load average lags by about a minute, so right after a busy process ends
    (the previous stage of a pipeline, ``pip install``, a training run before its own probe report) it still
    reports it; the window does not.
    """
    busy = busy_cpus(window_s)
    if busy is None:
        try:
            busy = os.getloadavg()[0]
        except (AttributeError, OSError):  # not on Unix
            return 0
    return min(cores, int(busy + 0.5))


def busy_cpus(window_s: float = 0.3, stat_path: str = "/proc/stat") -> float | None:
    """How many of this process's CPUs were busy over the next ``window_s`` seconds (None if not measurable).

    Reads the per-CPU counters of ``/proc/stat`` for the CPUs in this process's affinity mask before and after
    the window; busy time is everything but idle and iowait (time the hypervisor stole counts as busy: it was
    not ours). This process sleeps during the window, so what it measures is what other programs use.
    """
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return None
    before = _read_cpu_times(stat_path, cpus)
    if before is None:
        return None
    time.sleep(window_s)
    after = _read_cpu_times(stat_path, cpus)
    if after is None:
        return None
    return cpu_busy_between(before, after)


def cpu_busy_between(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]) -> float:
    """Busy CPUs between two snapshots of ``{cpu: (busy ticks, total ticks)}``: the sum of each CPU's busy share."""
    share = 0.0
    for cpu, (busy_after, total_after) in after.items():
        busy_before, total_before = before.get(cpu, (busy_after, total_after))
        if total_after > total_before:
            share += (busy_after - busy_before) / (total_after - total_before)
    return share


def _read_cpu_times(stat_path: str, cpus: list[int]) -> dict[int, tuple[int, int]] | None:
    """``{cpu: (busy ticks, total ticks)}`` for ``cpus`` from a ``/proc/stat``-format file, None if unreadable."""
    wanted = set(cpus)
    times: dict[int, tuple[int, int]] = {}
    try:
        with open(stat_path, encoding="ascii") as f:
            lines = f.readlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if not fields or not fields[0].startswith("cpu") or fields[0] == "cpu":
            continue
        try:
            cpu = int(fields[0][3:])
            ticks = [int(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal
        except ValueError:
            return None
        if cpu in wanted and len(ticks) >= 5:
            total = sum(ticks)
            times[cpu] = (total - ticks[3] - ticks[4], total)
    return times or None
