"""A run's folder and its training state: what a checkpoint holds, writing it, restoring it, resume rules.

A training checkpoint holds the method's weights (student, teacher, predictor...), the optimizer and
GradScaler states, the step, every rank's RNG state, the training FLOPs so far, the resolved config and
where the evaluation encoder sits in the weights (so :func:`openjepa.checkpoints.load_encoder` can read it
without the method's code).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from openjepa import checkpoints as ckpt
from openjepa.config import Config, ConfigError, experiment_changes, to_dict
from openjepa.methods import Method
from openjepa.train.dist import DistInfo, barrier
from openjepa.train.logger import METRICS_FILE


def prepare_out_dir(out_dir: Path, resume: bool, overwrite: bool, info: DistInfo) -> Path | None:
    """Checks the run folder; returns the checkpoint to resume from (None for a fresh run)."""
    latest = out_dir / ckpt.LATEST
    if resume:
        if not latest.is_file():
            raise FileNotFoundError(
                f"--resume given but {latest} does not exist. Check --out, or drop --resume to start a new run."
            )
        return latest
    if latest.exists() and not overwrite:
        raise ConfigError(
            f"{out_dir} already holds a run ({latest.name}). Pass --resume to continue it, --overwrite to "
            "start again from step 0, or --out to choose another folder."
        )
    if latest.exists() and overwrite and info.is_main:
        for p in [*out_dir.glob("checkpoint-*.pt"), out_dir / METRICS_FILE]:
            p.unlink(missing_ok=True)
        shutil.rmtree(out_dir / "tensorboard", ignore_errors=True)
    barrier(info)
    return None


def check_resume_compatible(cfg: Config, saved: Config, path: Path) -> None:
    """Refuses to resume when a key that defines the experiment differs from the checkpoint's."""
    changed = experiment_changes(cfg, saved)
    if changed:
        shown = ", ".join(f"{k} ({_value(saved, k)!r} -> {_value(cfg, k)!r})" for k in changed[:8])
        more = f" and {len(changed) - 8} more" if len(changed) > 8 else ""
        raise ConfigError(
            f"cannot resume from {path}: these settings differ from the checkpoint's: {shown}{more}. "
            "Resume without overrides (the checkpoint remembers its config); only logging, checkpointing, speed "
            "and length keys (train.epochs, train.max_steps) may change. To change the experiment, start a new "
            "run in another --out folder."
        )


def _value(cfg: Config, key: str) -> Any:
    cur: Any = to_dict(cfg)
    for part in key.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return cur


def gather_rng(info: DistInfo) -> list[dict[str, Any]]:
    """Every rank's RNG state (list indexed by rank), so each rank resumes its own stream."""
    own = ckpt.rng_state()
    if not info.distributed:
        return [own]
    import torch.distributed as torch_dist

    out: list[Any] = [None] * info.world_size
    torch_dist.all_gather_object(out, own)
    return out


def checkpoint_payload(
    method: Method,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    cfg: Config,
    step: int,
    total_steps: int,
    info: DistInfo,
    skipped_total: int,
    flops: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Everything a run needs to continue exactly (collective under DDP: every rank must call it).

    ``flops`` is the run's FLOPs count (``{"run", "prior"}``, :class:`~openjepa.train.monitor.FlopsCounter`),
    so a resumed run continues it and a later stage (a SALT student) can read what this run cost.
    """
    encoder = method.encoder_for_eval()
    return {
        "format": ckpt.FORMAT,
        "step": step,
        "total_steps": total_steps,
        "model": method.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "config": to_dict(cfg),
        "encoder": {"prefix": method.encoder_prefix(), "kwargs": encoder.config()},  # type: ignore[operator]
        "rng": gather_rng(info),
        "skipped_total": skipped_total,
        "world_size": info.world_size,
        "threads": torch.get_num_threads(),  # float summation order depends on it: a bitwise resume needs the same
        "flops": dict(flops or {"run": 0.0, "prior": 0.0}),
    }


def restore(
    state: dict[str, Any],
    method: Method,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    info: DistInfo,
) -> tuple[int, int]:
    """Loads a checkpoint's weights, optimizer, scaler and this rank's RNG; returns ``(step, skipped_total)``."""
    method.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    ckpt.set_rng_state(state["rng"][min(info.rank, len(state["rng"]) - 1)])
    return int(state["step"]), int(state.get("skipped_total", 0))
