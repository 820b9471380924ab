"""The one training loop: every method, on CPU, one GPU, or many processes under ``torchrun``.

Read top to bottom: set up processes and device, build data and method, restore a checkpoint when
resuming, then for each optimizer step apply the schedules, run the accumulation micro-steps, clip, step,
update the teacher, and (only on logging / checkpoint steps) talk to the host.

Speed rules kept here: the step never calls ``.item()`` or synchronizes except on logging and checkpoint
steps; non-finite losses are tracked on the device and checked at those points.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from openjepa.config import Config, ConfigError, dump_yaml, to_dict
from openjepa.errors import DataError, NonFiniteLossError
from openjepa.methods.base import Method, build_method
from openjepa.train import checkpoint as ckpt
from openjepa.train.dist import (
    DistInfo,
    all_reduce_max,
    all_reduce_mean,
    all_reduce_sum,
    barrier,
    cleanup_distributed,
    setup_distributed,
)
from openjepa.train.logger import METRICS_FILE, RunLogger
from openjepa.train.optim import StepSchedule, build_optimizer
from openjepa.train.plots import plot_training_curves

# Keys whose change would make a resumed run a different experiment.
_RESUME_INVARIANT = (
    "method", "model", "mask", "data", "optim", "train.seed", "train.loss", "train.epochs",
    "text.encoder", "text.dim", "text.max_length", "text.num_captions", "text.split_sentences", "text.mode",
    "text.layers", "text.heads", "text.pooling", "text.mlp", "text.sparse_weight", "text.consistency_weight",
    "text.clip_loss", "text.clip_dim",
)


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
        if device.type != "cuda":
            raise ConfigError("train.precision=fp16 needs a CUDA device; use fp32 or bf16 on the CPU")
        return Precision(torch.float16, True)

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The autocast context for forward passes."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.dtype)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Moves every tensor of a batch to ``device`` (asynchronously from pinned memory)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


class TrainStep:
    """One optimizer step: micro-batches, backward, unscale/clip, optimizer, teacher update.

    Kept separate from the loop so the benchmark times exactly what training runs.
    """

    def __init__(
        self,
        method: Method,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        precision: Precision,
        device: torch.device,
        clip_grad: float = 0.0,
    ):
        self.method = method
        self.model = model  # the method, possibly wrapped by DDP and/or torch.compile
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

    def __call__(self, micro_batches: list[dict[str, Any]], step: int) -> dict[str, torch.Tensor]:
        """Runs the step; returns detached device tensors (no host synchronization)."""
        n = len(micro_batches)
        totals: dict[str, torch.Tensor] = {}
        for i, batch in enumerate(micro_batches):
            with self._no_sync(last=i == n - 1):
                with self.precision.autocast(self.device):
                    loss, metrics = self.model(batch, step)
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
        loss = totals["loss"]
        bad = ~torch.isfinite(loss)
        self.first_bad_step = torch.where(bad & (self.first_bad_step < 0), step, self.first_bad_step)
        return totals


def _get(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def check_resume_compatible(cfg: Config, saved: Config, path: Path) -> None:
    """Refuses to resume when a key that defines the experiment differs from the checkpoint's."""
    changed = []
    for key in _RESUME_INVARIANT:
        a, b = to_dict(_get(cfg, key)), to_dict(_get(saved, key))
        if a != b:
            changed.append(key)
    if changed:
        raise ConfigError(
            f"cannot resume from {path}: these settings differ from the checkpoint's: {', '.join(changed)}. "
            "Resume with the same config (only train.* logging/length keys may change) or start a new run "
            "in another --out folder."
        )


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


def compile_blocks(module: nn.Module) -> int:
    """``torch.compile`` every transformer block in place ("regional" compilation); returns the count.

    All blocks of one width share one compiled graph (parameters are graph inputs), so compiling takes
    seconds instead of tracing a 32-block encoder, and the state-dict keys do not change. Token counts
    vary from step to step (masks), so after the first recompile the graphs become shape-dynamic and
    stop recompiling. TC-JEPA's cross-attention layers are compiled too (their tensor function
    ``attend``): fusing the element-wise work on the N-caption tensors matters more there than the matmuls.
    """
    from openjepa.models.conditioner import CrossAttentionLayer
    from openjepa.models.layers import Block

    count = 0
    for m in module.modules():
        if isinstance(m, Block):
            m.compile()
            count += 1
        elif isinstance(m, CrossAttentionLayer):
            m.attend = torch.compile(m.attend)  # type: ignore[method-assign]
            count += 1
    return count


def default_text_cache() -> Path:
    """Where caption embeddings are cached unless ``text.cache`` says otherwise (shared by runs: entries are
    keyed by encoder and caption)."""
    import os

    root = os.environ.get("OPENJEPA_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "openjepa")
    return Path(root) / "text_embeddings.sqlite"


def build_text_batcher(cfg: Config):
    """The caption pipeline of a text method (frozen encoder + on-disk cache + N-caption sampling).

    Also resolves ``cfg.text.dim`` from the encoder, so the method can be built and the saved config is
    complete. Returns None for image-only methods.
    """
    from openjepa.methods.base import method_class

    if not method_class(cfg.method).needs_text:
        return None
    from openjepa.data.captions import TextBatcher
    from openjepa.models.text import CachedTextEncoder, EmbeddingCache, build_text_encoder

    encoder = build_text_encoder(cfg.text, device=cfg.text.device)
    if cfg.text.dim == 0:
        cfg.text.dim = encoder.dim
    elif cfg.text.dim != encoder.dim:
        raise ConfigError(
            f"text.dim={cfg.text.dim} but the text encoder {cfg.text.encoder!r} gives {encoder.dim}-d words; "
            "remove text.dim (it is filled automatically) or use the matching encoder"
        )
    cache = EmbeddingCache(Path(cfg.text.cache) if cfg.text.cache else default_text_cache())
    cached = CachedTextEncoder(encoder, cache)
    return TextBatcher(cached, cfg.text.num_captions, cfg.text.split_sentences, cfg.train.seed)


def prewarm_text_cache(dataset: Any, batcher: Any, cfg: Config, info: DistInfo, logger: RunLogger) -> None:
    """Encodes every training caption into the cache before training (rank 0; the others wait).

    Loader workers encode with one thread each while the model trains; encoding the whole set once up front,
    sorted by length so batches carry little padding, is several times faster and keeps the first epoch
    from being text-bound.
    """
    from openjepa.data.captions import dataset_captions

    if info.is_main:
        captions = dataset_captions(dataset, cfg.text.split_sentences)
        if captions:
            from tqdm import tqdm

            captions.sort(key=len)
            new, chunk = 0, 256
            with tqdm(total=len(captions), desc="text cache", unit="caption", disable=not cfg.train.progress) as bar:
                for i in range(0, len(captions), chunk):
                    new += batcher.encoder.warm(captions[i : i + chunk], batch_size=chunk)
                    bar.update(len(captions[i : i + chunk]))
            logger.event(f"text cache: {len(captions)} unique training captions, {new} newly encoded")
    barrier(info)


def build_mask_sampler(cfg: Config, grid: tuple[int, ...]):
    """The mask sampler of ``cfg.mask`` for the encoder's token grid."""
    from openjepa.masks import MultiBlockMaskSampler

    return MultiBlockMaskSampler(cfg.mask, tuple(grid), seed=cfg.train.seed)  # type: ignore[arg-type]


def rankme_probe_images(cfg: Config, n: int = 512) -> torch.Tensor:
    """A fixed set of evaluation-transformed images on which RankMe is tracked during training."""
    from openjepa.data.images import build_dataset
    from openjepa.data.transforms import eval_transform

    try:
        ds = build_dataset(cfg.data, split="val", seed=cfg.train.seed)
    except (ValueError, KeyError):  # sources without a val split use the first training images
        ds = build_dataset(cfg.data, split="train", seed=cfg.train.seed)
    tf = eval_transform(cfg.data.image_size)
    n = min(n, len(ds))  # type: ignore[arg-type]
    return torch.stack([tf(ds[i]["image"]) for i in range(n)])


@torch.no_grad()
def online_rankme(encoder: nn.Module, images: torch.Tensor, device: torch.device, precision: Precision) -> float:
    """RankMe of the mean-pooled features of ``encoder`` on ``images``."""
    from openjepa.metrics import rankme

    was_training = encoder.training
    encoder.eval()
    feats = []
    for chunk in images.split(128):
        with precision.autocast(device):
            feats.append(encoder(chunk.to(device)).float().mean(1))
    encoder.train(was_training)
    return float(rankme(torch.cat(feats)))


def train(cfg: Config, out_dir: str | Path, resume: bool = False, overwrite: bool = False) -> TrainResult:
    """Pretrains ``cfg.method`` and writes logs, checkpoints and curves to ``out_dir``.

    Runs as one process, or as one rank of a ``torchrun`` job (process group created here).

    Raises:
        ConfigError: bad configuration or run folder state.
        NonFiniteLossError: the loss became NaN/inf (names the step and last good checkpoint).
    """
    out_dir = Path(out_dir)
    info = setup_distributed(cfg.train.device)
    try:
        return _train(cfg, out_dir, resume, overwrite, info)
    finally:
        cleanup_distributed()


def _train(cfg: Config, out_dir: Path, resume: bool, overwrite: bool, info: DistInfo) -> TrainResult:
    from openjepa.data.images import build_dataset
    from openjepa.data.loader import BatchPlan, build_pretrain_loader
    from openjepa.data.transforms import RandomResizedCrop

    device = info.device
    precision = Precision.resolve(cfg.train.precision, device)
    resume_from = prepare_out_dir(out_dir, resume, overwrite, info)
    state = ckpt.load_checkpoint(resume_from) if resume_from else None
    text_batcher = build_text_batcher(cfg)  # before the resume check: it resolves text.dim
    if state is not None:
        check_resume_compatible(cfg, ckpt.checkpoint_config(state, resume_from), resume_from)  # type: ignore[arg-type]

    # ---- data: which images each step sees is a pure function of (seed, step)
    dataset = build_dataset(cfg.data, split="train", seed=cfg.train.seed)
    plan = BatchPlan(
        dataset_len=len(dataset),  # type: ignore[arg-type]
        batch_size=cfg.data.batch_size,
        world_size=info.world_size,
        rank=info.rank,
        accum_steps=cfg.optim.accum_steps,
        seed=cfg.train.seed,
    )
    spe = plan.steps_per_epoch
    total_steps = max(1, round(cfg.train.epochs * spe))
    end_step = min(total_steps, cfg.train.max_steps) if cfg.train.max_steps > 0 else total_steps
    schedule = StepSchedule(cfg.optim, total_steps, round(cfg.optim.warmup_epochs * spe))

    # ---- model, optimizer; identical init on every rank (DDP also broadcasts rank 0's weights)
    torch.manual_seed(cfg.train.seed)
    method = build_method(cfg, total_steps).to(device)
    mask_sampler = None
    if method.needs_masks:
        mask_sampler = build_mask_sampler(cfg, method.encoder_for_eval().grid_size)  # type: ignore[union-attr]
    optimizer = build_optimizer(method.param_groups(), cfg.optim, device)
    model: nn.Module = method
    if info.distributed:
        model = DistributedDataParallel(
            method, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
        )
    if cfg.train.compile:
        compile_blocks(method)
    stepper = TrainStep(method, model, optimizer, precision, device, cfg.optim.clip_grad)

    start_step, skipped_total = 0, 0
    if state is not None:
        method.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if stepper.scaler is not None and state.get("scaler"):
            stepper.scaler.load_state_dict(state["scaler"])
        ckpt.set_rng_state(state["rng"][min(info.rank, len(state["rng"]) - 1)])
        start_step = int(state["step"])
        skipped_total = int(state.get("skipped_total", 0))

    logger = RunLogger(out_dir, enabled=info.is_main, tensorboard=cfg.train.tensorboard, resume=state is not None)
    if info.is_main:
        (out_dir / "config.yaml").write_text(dump_yaml(cfg))
        n_params = sum(p.numel() for p in method.parameters() if p.requires_grad)
        logger.event(
            f"{cfg.method} {cfg.model.arch}/{cfg.model.patch_size} on {device} ({info.world_size} process(es)), "
            f"{n_params / 1e6:.1f}M trainable params, global batch {plan.global_batch}, "
            f"{spe} steps/epoch, steps {start_step}->{end_step} of {total_steps}, precision "
            f"{precision.dtype or 'fp32'}"
        )
    if text_batcher is not None and cfg.text.prewarm:
        prewarm_text_cache(dataset, text_batcher, cfg, info, logger)
    probe_images = rankme_probe_images(cfg) if (info.is_main and cfg.train.rankme_every > 0) else None

    crop = RandomResizedCrop(cfg.data.image_size, scale=cfg.data.crop_scale)
    loader = build_pretrain_loader(
        dataset, plan, crop, mask_sampler, start_step, end_step,
        num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda", text_batcher=text_batcher,
    )
    batches = iter(loader)
    last_ckpt: Path | None = resume_from
    last_ckpt_step = start_step if resume_from else -1
    skipped_files: list[str] = []
    loss_sum = torch.zeros((), device=device)
    loss_count = 0
    last_loss = float("nan")
    t_last, step_last = time.perf_counter(), start_step

    def save(step: int, periodic: bool) -> Path:
        """Checks that the run is still finite, then writes checkpoint-latest (and a kept copy)."""
        nonlocal last_ckpt, last_ckpt_step
        raise_if_nonfinite()
        payload = {
            "format": ckpt.FORMAT,
            "step": step,
            "total_steps": total_steps,
            "model": method.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": stepper.scaler.state_dict() if stepper.scaler is not None else {},
            "config": to_dict(cfg),
            "rng": gather_rng(info),
            "skipped_total": skipped_total,
            "world_size": info.world_size,
        }
        if info.is_main:
            ckpt.atomic_save(payload, out_dir / ckpt.LATEST)
            if periodic:
                ckpt.atomic_save(payload, out_dir / f"checkpoint-{step:08d}.pt")
        barrier(info)
        last_ckpt, last_ckpt_step = out_dir / ckpt.LATEST, step
        return out_dir / ckpt.LATEST

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
        desc=f"{cfg.method}", unit="step", dynamic_ncols=True,
    )
    method.train()
    step = start_step
    try:
        for step in range(start_step, end_step):
            lr, wd = schedule.apply(optimizer, step)
            micro = []
            for _ in range(cfg.optim.accum_steps):
                batch = next(batches)
                if batch["skipped"]:
                    skipped_total += len(batch["skipped"])
                    skipped_files += batch["skipped"][: max(0, 20 - len(skipped_files))]
                micro.append(to_device(batch, device))
            metrics = stepper(micro, step)
            loss_sum += metrics["loss"]
            loss_count += 1
            bar.update(1)
            done = step + 1
            if done % cfg.train.log_every == 0 or done == end_step:
                raise_if_nonfinite()
                mean_loss = all_reduce_mean(loss_sum / max(loss_count, 1), info)
                skipped_all = int(all_reduce_sum(torch.tensor(float(skipped_total), device=device), info).item())
                check_skip_fraction(skipped_all, done * plan.global_batch, cfg, skipped_files)
                last_loss = float(mean_loss.item())
                now = time.perf_counter()
                ips = (done - step_last) * plan.global_batch / max(now - t_last, 1e-9)
                t_last, step_last = now, done
                record: dict[str, Any] = {
                    "loss": last_loss, "lr": lr, "wd": wd, "images_per_s": round(ips, 2),
                    "epoch": round(done / spe, 4), "skipped": skipped_all,
                }
                if hasattr(method, "momentum"):
                    record["ema"] = method.momentum(step)  # type: ignore[operator]
                others = {k: v for k, v in metrics.items() if k != "loss"}
                if others:  # one device->host copy for all of them
                    values = torch.stack([v.detach().float().reshape(()) for v in others.values()]).tolist()
                    record.update(zip(others, values))
                if device.type == "cuda":
                    record["max_mem_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
                if probe_images is not None and (done % cfg.train.rankme_every == 0 or done == end_step):
                    record["rankme"] = online_rankme(method.encoder_for_eval(), probe_images, device, precision)
                logger.log(done, record)
                bar.set_postfix(loss=f"{last_loss:.4f}", ips=f"{ips:.0f}")
                loss_sum.zero_()
                loss_count = 0
            if done % cfg.train.ckpt_every == 0 or done == end_step:
                save(done, periodic=False)
            if cfg.train.keep_every > 0 and done % cfg.train.keep_every == 0:
                save(done, periodic=True)
    finally:
        bar.close()
        logger.close()
    step = end_step
    curves = None
    if info.is_main:
        curves = plot_training_curves(out_dir / METRICS_FILE, out_dir / "training_curves.png")
        if skipped_total:
            logger.event(
                f"skipped {skipped_total} unreadable image(s) during training; first ones: "
                + "; ".join(skipped_files[:5])
            )
        logger.event(f"done: step {step}/{total_steps}, loss {last_loss:.4f}, checkpoint {last_ckpt}")
    return TrainResult(out_dir, step, total_steps, last_ckpt, last_loss, skipped_files, curves)


def check_skip_fraction(skipped: int, seen: int, cfg: Config, examples: list[str]) -> None:
    """Stops a run whose data is mostly unreadable instead of silently training on the rest."""
    if seen >= 100 and skipped > cfg.data.max_skip_fraction * seen:
        raise DataError(
            f"{skipped} of {seen} images read so far were unreadable (more than data.max_skip_fraction="
            f"{cfg.data.max_skip_fraction}); examples: {'; '.join(examples[:5])}. Fix or remove these files, "
            "or raise data.max_skip_fraction."
        )


def gather_rng(info: DistInfo) -> list[dict[str, Any]]:
    """Every rank's RNG state (list indexed by rank), so each rank resumes its own stream."""
    own = ckpt.rng_state()
    if not info.distributed:
        return [own]
    import torch.distributed as torch_dist

    out: list[Any] = [None] * info.world_size
    torch_dist.all_gather_object(out, own)
    return out
