"""The one training loop: every method, on CPU, one GPU, or many processes under ``torchrun``.

Read top to bottom: set up processes and device, build the data pipeline from what the method declares it
needs, build the method and its optimizer, restore a checkpoint when resuming, then for each optimizer
step apply the schedules, run the step (micro-batches, clip, optimizer, teacher update) and, only on
logging / checkpoint steps, talk to the host. Nothing here names a method, a modality or a mask kind.
The run's training FLOPs are counted from batch shapes (host arithmetic) and ``train.flops_budget`` ends
the run like its last step.

Speed rules kept here: the step never calls ``.item()`` or synchronizes except on logging and checkpoint
steps; non-finite losses are tracked on the device and checked at those points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from openjepa import checkpoints as ckpt
from openjepa.config import Config, dump_yaml
from openjepa.data.pipeline import PretrainPipeline
from openjepa.errors import NonFiniteLossError
from openjepa.methods import method_class
from openjepa.models.compile import compile_blocks
from openjepa.runtime import Precision, configure_threads, to_device
from openjepa.train.dist import DistInfo, all_reduce_max, barrier, cleanup_distributed, setup_distributed
from openjepa.train.logger import METRICS_FILE, RunLogger
from openjepa.train.monitor import FlopsCounter, Monitor, online_rankme
from openjepa.train.optim import StepSchedule, build_optimizer
from openjepa.train.plots import plot_training_curves
from openjepa.train.signals import RunInterrupted, StopSignals
from openjepa.train.state import check_resume_compatible, checkpoint_payload, prepare_out_dir, restore
from openjepa.train.step import TrainStep


@dataclass
class TrainResult:
    """What a finished (or stopped) run leaves behind."""

    out_dir: Path
    step: int
    total_steps: int
    checkpoint: Path | None
    last_loss: float
    skipped: list[str] = field(default_factory=list)
    curves_png: Path | None = None


def train(cfg: Config, out_dir: str | Path, resume: bool = False, overwrite: bool = False) -> TrainResult:
    """Pretrains ``cfg.method`` and writes logs, checkpoints and curves to ``out_dir``.

    Runs as one process, or as one rank of a ``torchrun`` job (process group created here).

    Raises:
        ConfigError: bad configuration or run folder state (e.g. resuming with a changed experiment).
        NonFiniteLossError: the loss became NaN/inf (names the step and last good checkpoint).
        RunInterrupted: a stop signal arrived; ``checkpoint-latest.pt`` holds the step reached.
    """
    info = setup_distributed(cfg.train.device)
    try:
        return _train(cfg, Path(out_dir), resume, overwrite, info)
    finally:
        cleanup_distributed()


def _train(cfg: Config, out_dir: Path, resume: bool, overwrite: bool, info: DistInfo) -> TrainResult:
    device = info.device
    precision = Precision.resolve(cfg.train.precision, device)
    threads = configure_threads(cfg.data.num_workers, info.local_world_size)
    resume_from = prepare_out_dir(out_dir, resume, overwrite, info)
    state = ckpt.load_checkpoint(resume_from) if resume_from else None
    method_cls = method_class(cfg.method)
    method_cls.check_config(cfg)

    # ---- data: what each step sees is a pure function of (seed, step); built from the method's needs
    data = PretrainPipeline(cfg, method_cls.data_needs(cfg), info.rank, info.world_size)  # fills text.dim
    if state is not None:
        check_resume_compatible(cfg, ckpt.checkpoint_config(state, resume_from), resume_from)  # type: ignore[arg-type]
    spe = data.steps_per_epoch
    total_steps = max(1, round(cfg.train.epochs * spe))
    end_step = min(total_steps, cfg.train.max_steps) if cfg.train.max_steps > 0 else total_steps
    warmup = cfg.optim.warmup_steps or round(cfg.optim.warmup_epochs * spe)
    schedule = StepSchedule(cfg.optim, total_steps, warmup)

    # ---- model, optimizer: identical init on every rank (DDP also broadcasts rank 0's weights)
    torch.manual_seed(cfg.train.seed)
    method = method_cls(cfg, total_steps).to(device)
    optimizer = build_optimizer(method.param_groups(), cfg.optim, device)
    model: nn.Module = method
    if info.distributed:
        ids = [device.index] if device.type == "cuda" else None
        model = DistributedDataParallel(method, device_ids=ids, broadcast_buffers=False)
    if cfg.train.compile:
        compile_blocks(method)
    stepper = TrainStep(method, model, optimizer, precision, device, cfg.optim.clip_grad, cfg.train.seed)
    start_step, skipped_total = restore(state, method, optimizer, stepper.scaler, info) if state else (0, 0)
    flops = FlopsCounter(method, info, cfg.train.flops_budget, state.get("flops") if state else None)

    logger = RunLogger(out_dir, enabled=info.is_main, tensorboard=cfg.train.tensorboard, resume=state is not None)
    last_ckpt: Path | None = resume_from
    last_ckpt_step = start_step if resume_from else -1
    if start_step >= end_step or flops.reached():
        logger.event(
            f"the run in {out_dir} is finished (step {start_step} of {total_steps}); nothing to do. Extend it with "
            "--resume train.epochs=<more> (or train.max_steps=<more>), or evaluate it with `openjepa eval`."
            if start_step >= end_step else flops.budget_message(start_step)
        )
        logger.close()
        return TrainResult(out_dir, start_step, total_steps, last_ckpt, math.nan)
    if info.is_main:
        (out_dir / "config.yaml").write_text(dump_yaml(cfg))
        n_params = sum(p.numel() for p in method.parameters() if p.requires_grad)
        logger.event(
            f"{cfg.method} {cfg.model.arch}/{cfg.model.patch_size} on {device} ({info.world_size} process(es), "
            f"{threads}), {n_params / 1e6:.1f}M trainable params, global batch {data.plan.global_batch}, "
            f"{spe} steps/epoch, steps {start_step}->{end_step} of {total_steps}, precision {precision.dtype or 'fp32'}"
        )
        if flops.describe():
            logger.event(flops.describe())
        if state is not None and state.get("threads", torch.get_num_threads()) != torch.get_num_threads():
            logger.event(
                f"resuming with {torch.get_num_threads()} torch thread(s) where the run used {state['threads']}: the "
                f"result will differ from an uninterrupted run in float rounding (OMP_NUM_THREADS={state['threads']})"
            )
        data.prewarm_text(cfg.train.progress, logger.event)
    barrier(info)
    probe = data.eval_inputs() if (info.is_main and cfg.train.rankme_every > 0) else None
    batches = iter(data.loader(start_step, end_step, pin_memory=device.type == "cuda"))
    monitor = Monitor(info, data.plan.global_batch, cfg.data.max_skip_fraction, start_step)

    def save(step: int, periodic: bool = False) -> None:
        """Checks that the run is still finite, then writes checkpoint-latest (and a kept copy)."""
        nonlocal last_ckpt, last_ckpt_step
        raise_if_nonfinite()
        payload = checkpoint_payload(
            method, optimizer, stepper.scaler, cfg, step, total_steps, info, skipped_total, flops.state()
        )
        if info.is_main:
            ckpt.atomic_save(payload, out_dir / ckpt.LATEST)
            if periodic:
                ckpt.atomic_save(payload, out_dir / f"checkpoint-{step:08d}.pt")
        barrier(info)
        last_ckpt, last_ckpt_step = out_dir / ckpt.LATEST, step

    def raise_if_nonfinite() -> None:
        bad = int(all_reduce_max(stepper.first_bad_step, info).item())
        if bad >= 0:
            where = f"{last_ckpt} (step {last_ckpt_step})" if last_ckpt is not None else "none (no checkpoint yet)"
            raise NonFiniteLossError(
                f"the loss became NaN/inf at step {bad}; training stopped. Last good checkpoint: {where}. "
                "Try a lower optim.lr, optim.clip_grad=1.0, train.precision=fp32, or check the input data."
            )

    from tqdm import tqdm

    bar = tqdm(
        total=end_step, initial=start_step, disable=not (info.is_main and cfg.train.progress),
        desc=cfg.method, unit="step", dynamic_ncols=True,
    )
    def interrupt(done: int) -> RunInterrupted:
        if last_ckpt_step != done:
            save(done)
        return RunInterrupted(
            f"stopped by {stop.received or 'a signal on another rank'} after step {done} of {end_step}; "
            f"checkpoint written to {out_dir / ckpt.LATEST}. Continue with: openjepa pretrain --resume --out {out_dir}"
        )

    method.train()
    done = start_step
    try:
        with StopSignals() as stop:
            for step in range(start_step, end_step):
                lr, wd = schedule.apply(optimizer, step)
                try:
                    micro = [next(batches) for _ in range(cfg.optim.accum_steps)]
                except RuntimeError:  # loader workers also receive Ctrl-C and exit
                    if stop.received:
                        raise interrupt(step) from None
                    raise
                skipped = [s for b in micro for s in b["skipped"]]
                skipped_total += len(skipped)
                metrics = stepper([to_device(b, device) for b in micro], step)
                monitor.add(metrics, skipped)
                flops.add(micro)
                bar.update(1)
                done = step + 1
                out_of_budget = flops.reached(sync_point=done % cfg.train.log_every == 0 or done == end_step)
                last = done == end_step or out_of_budget  # a spent FLOPs budget ends the run like its last step
                logging_step = done % cfg.train.log_every == 0 or last
                if logging_step:
                    raise_if_nonfinite()
                    record = monitor.record(done, skipped_total, metrics)
                    record.update(lr=lr, wd=wd, epoch=round(done / spe, 4), **flops.values(), **method.log_values(step))
                    if probe is not None and (done % cfg.train.rankme_every == 0 or last):
                        record["rankme"] = online_rankme(method.encoder_for_eval(), probe, device, precision)
                    logger.log(done, record)
                    bar.set_postfix(loss=f"{monitor.last_loss:.4f}")
                if done % cfg.train.ckpt_every == 0 or last:
                    save(done)
                if cfg.train.keep_every > 0 and done % cfg.train.keep_every == 0:
                    save(done, periodic=True)
                if out_of_budget:
                    logger.event(flops.budget_message(done))
                    break
                if stop_requested(stop, info, logging_step) and done < end_step:
                    raise interrupt(done)
    finally:
        bar.close()
        logger.close()
    curves = None
    if info.is_main:
        curves = plot_training_curves(out_dir / METRICS_FILE, out_dir / "training_curves.png")
        if skipped_total:
            logger.event(
                f"skipped {skipped_total} unreadable file(s) during training; first ones: "
                + "; ".join(monitor.skipped_files[:5])
            )
        logger.event(f"done: step {done}/{total_steps}, loss {monitor.last_loss:.4f}, checkpoint {last_ckpt}")
    return TrainResult(out_dir, done, total_steps, last_ckpt, monitor.last_loss, monitor.skipped_files, curves)


def stop_requested(stop: StopSignals, info: DistInfo, logging_step: bool) -> bool:
    """Whether to stop after this step. Under DDP every rank must stop at the same step, so ranks agree on
    logging steps only (a collective on steps that synchronize anyway); a single process stops at once."""
    if not info.distributed:
        return stop.received is not None
    if not logging_step:
        return False
    flag = torch.tensor(0.0 if stop.received is None else 1.0, device=info.device)
    return bool(all_reduce_max(flag, info).item() > 0)
