"""Training-step benchmark: images/s, peak memory and model TFLOP/s of one method's step.

It times exactly the step the training loop runs (``openjepa.train.loop.TrainStep``: forward, backward,
optimizer, EMA update) on batches already on the device, so data loading is not measured. FLOPs are
counted analytically from the shapes of each batch (matrix multiplies and attention; 2 FLOPs per
multiply-add; backward = 2x forward), so TFLOP/s is comparable across implementations.

Examples:
    python benchmarks/train_step.py configs/ijepa/vith14-in1k.yaml --mask-mode faithful --steps 20
    python benchmarks/train_step.py configs/ijepa/demo.yaml --device cpu --steps 5 --json
    python benchmarks/train_step.py configs/ijepa/vith14-in1k.yaml --compile --check-sync
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass

import torch

from openjepa.config import Config, load_config
from openjepa.methods import build_method
from openjepa.models.vit import vit_spec
from openjepa.train.dist import pick_device
from openjepa.train.loop import Precision, TrainStep, build_mask_sampler, compile_blocks
from openjepa.train.optim import StepSchedule, build_optimizer


def vit_forward_flops(tokens: int, dim: int, depth: int, mlp_ratio: float = 4.0) -> float:
    """FLOPs of ``depth`` pre-norm transformer blocks on one sequence of ``tokens`` tokens."""
    dense = 2 * tokens * dim * (3 * dim + dim + 2 * int(dim * mlp_ratio))  # qkv, proj, mlp
    attn = 2 * 2 * tokens * tokens * dim  # scores and weighted sum
    return depth * (dense + attn)


@dataclass
class StepFlops:
    """Analytic FLOPs of one JEPA step, split by part."""

    teacher: float
    student: float
    predictor: float
    conditioner: float = 0.0

    @property
    def total(self) -> float:
        return self.teacher + self.student + self.predictor + self.conditioner


def conditioner_forward_flops(cfg: Config, seq_tokens: int, captions: int, words: int) -> float:
    """Forward FLOPs of TC-JEPA's text conditioner on one predictor sequence of ``seq_tokens`` tokens.

    Per conditioned layer: the query projection once; key/value projections, attention, rectified cosines and
    the output projection once per caption; the MLP once after pooling (``tcjepa.mlp=after_pool``) or once per
    caption (``per_caption``).
    """
    if cfg.tcjepa.mode != "xattn":
        return 0.0
    d, dt, n, s, length = cfg.model.pred_dim, cfg.text.dim, captions, words, seq_tokens
    # Words are projected to width d once per image (shared by all layers), then to keys and values once per
    # image and layer: both are divided over the image's `num_targets` sequences.
    t = cfg.mask.num_targets
    text_proj = n * 2 * s * dt * d / t
    kv = 2 * 2 * s * d * d / t
    per_caption = kv + 2 * 2 * length * s * d + 2 * length * s * d + 2 * length * d * d
    mlp = 2 * length * d * 4 * d * 2 * (n if cfg.tcjepa.mlp == "per_caption" else 1)
    layers = len(cfg.tcjepa.layers) if cfg.tcjepa.layers is not None else cfg.model.pred_depth
    return text_proj + layers * (2 * length * d * d + n * per_caption + mlp)


def step_flops(cfg: Config, batch_size: int, kc: int, t: int, kt: int, captions: int = 0, words: int = 0) -> StepFlops:
    """FLOPs of one step (teacher fwd on all patches, student and predictor fwd + bwd = 3x fwd), from shapes."""
    spec = vit_spec(cfg.model.arch)
    d, depth, mlp = spec.embed_dim, spec.depth, spec.mlp_ratio
    p = cfg.model.patch_size
    n = (cfg.data.image_size // p) ** 2
    stem = 2 * 3 * p * p * d
    teacher = batch_size * (n * stem + vit_forward_flops(n, d, depth, mlp))
    student = 3 * batch_size * (n * stem + vit_forward_flops(kc, d, depth, mlp))
    pd = cfg.model.pred_dim
    pred_fwd = batch_size * (2 * kc * d * pd) + batch_size * t * (
        vit_forward_flops(kc + kt, pd, cfg.model.pred_depth) + 2 * kt * pd * d
    )
    cond = 0.0
    if cfg.method == "tcjepa":
        cond = 3 * batch_size * t * conditioner_forward_flops(cfg, kc + kt, captions, words)
    return StepFlops(teacher, student, 3 * pred_fwd, cond)


def batch_flops(cfg: Config, batch: dict) -> StepFlops:
    """:func:`step_flops` for the shapes of a real batch."""
    b, kc = batch["ctx_idx"].shape
    _, t, kt = batch["tgt_idx"].shape
    n, s = batch["text_emb"].shape[1:3] if "text_emb" in batch else (0, 0)
    return step_flops(cfg, b, kc, t, kt, n, s)


def make_batches(
    cfg: Config, method, device: torch.device, count: int, batch_size: int, args_words: int = 32
) -> list[dict]:
    """``count`` batches of random images with real masks (steps 0..count-1) on ``device``."""
    sampler = build_mask_sampler(cfg, method.encoder.grid_size)
    size = cfg.data.image_size
    g = torch.Generator().manual_seed(0)
    out = []
    for step in range(count):
        masks = sampler(step, list(range(batch_size)), batch_size)
        batch = {"image": torch.randn(batch_size, 3, size, size, generator=g), **masks, "step": step}
        if getattr(method, "needs_text", False):
            # Cached caption embeddings: what the loader hands over once every caption has been encoded.
            n, s = cfg.text.num_captions, args_words
            batch["text_emb"] = torch.randn(batch_size, n, s, cfg.text.dim, generator=g).half()
            batch["text_mask"] = torch.ones(batch_size, n, s, dtype=torch.bool)
            batch["caption_mask"] = torch.ones(batch_size, n, dtype=torch.bool)
        out.append({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()})
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(args: argparse.Namespace) -> dict:
    overrides = list(args.overrides)
    overrides.append("data.path=/unused")  # the benchmark feeds random images; no data folder is read
    if args.mask_mode:
        overrides.append(f"mask.mode={args.mask_mode}")
    cfg = load_config(args.config, overrides)
    if cfg.text.dim == 0:
        cfg.text.dim = 384  # all-MiniLM-L6-v2 word width; pass text.dim=768 for T5-base-sized embeddings
    device = pick_device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    precision = Precision.resolve(args.precision or cfg.train.precision, device)
    batch_size = args.batch_size or cfg.data.batch_size
    torch.manual_seed(0)
    method = build_method(cfg, total_steps=10_000).to(device)
    optimizer = build_optimizer(method.param_groups(), cfg.optim, device)
    schedule = StepSchedule(cfg.optim, 10_000, 100)
    if args.compile:
        compile_blocks(method)
        # Every distinct mask shape may trigger a (re)compile: warm up through all of them twice, so no
        # compilation lands inside the timed steps.
        if args.warmup < 2 * args.distinct_batches:
            print(f"--compile: warmup raised from {args.warmup} to {2 * args.distinct_batches} steps", file=sys.stderr)
            args.warmup = 2 * args.distinct_batches
    stepper = TrainStep(method, method, optimizer, precision, device, cfg.optim.clip_grad)
    batches = make_batches(cfg, method, device, args.distinct_batches, batch_size, args.words)
    flops = [batch_flops(cfg, b) for b in batches]

    t_compile = time.perf_counter()
    for i in range(args.warmup):
        schedule.apply(optimizer, i)
        stepper([batches[i % len(batches)]], i)
    sync(device)
    warmup_s = time.perf_counter() - t_compile

    sync_ok = None
    if args.check_sync and device.type == "cuda":
        # Any host synchronization inside the step raises here (CUDA's sync debug mode).
        torch.cuda.set_sync_debug_mode("error")
        try:
            stepper([batches[0]], args.warmup)
            sync_ok = True
        except RuntimeError as err:
            sync_ok = False
            print(f"host synchronization inside the step: {err}", file=sys.stderr)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        sync(device)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    total_flops = 0.0
    sync(device)
    t0 = time.perf_counter()
    for i in range(args.steps):
        step = args.warmup + 1 + i
        schedule.apply(optimizer, step)
        stepper([batches[i % len(batches)]], step)
        total_flops += flops[i % len(batches)].total
    sync(device)
    elapsed = time.perf_counter() - t0
    f0 = flops[0]
    result = {
        "config": args.config,
        "arch": cfg.model.arch,
        "patch_size": cfg.model.patch_size,
        "image_size": cfg.data.image_size,
        "batch_size": batch_size,
        "mask_mode": cfg.mask.mode,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": str(precision.dtype or "fp32"),
        "compile": bool(args.compile),
        "steps": args.steps,
        "warmup_s": round(warmup_s, 2),
        "step_ms": round(1000 * elapsed / args.steps, 2),
        "images_per_s": round(batch_size * args.steps / elapsed, 1),
        "model_tflops_per_s": round(total_flops / elapsed / 1e12, 2),
        "tflop_per_step": round(total_flops / args.steps / 1e12, 3),
        "method": cfg.method,
        "flops_split": {
            k: round(getattr(f0, k) / f0.total, 3) for k in ("teacher", "student", "predictor", "conditioner")
        },
        "mean_ctx_tokens": sum(b["ctx_idx"].shape[1] for b in batches) / len(batches),
        "mean_tgt_tokens": sum(b["tgt_idx"].shape[2] for b in batches) / len(batches),
        "peak_mem_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
        "no_host_sync_in_step": sync_ok,
        "torch": torch.__version__,
    }
    if args.profile:
        result["profile_top_ms_per_step"] = profile_steps(stepper, schedule, optimizer, batches, args, device)
    return result


def profile_steps(stepper, schedule, optimizer, batches, args: argparse.Namespace, device: torch.device) -> dict:
    """Where a step's time goes: the operators with the most self time (device time on CUDA), in ms/step."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for i in range(args.profile):
            step = args.warmup + args.steps + 1 + i
            schedule.apply(optimizer, step)
            stepper([batches[i % len(batches)]], step)
        sync(device)
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0.0), reverse=True)
    return {e.key[:80]: round(getattr(e, key, 0.0) / 1000 / args.profile, 3) for e in events[:25]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--batch-size", type=int, help="per-step batch (default: data.batch_size)")
    parser.add_argument("--mask-mode", choices=["faithful", "fixed"])
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--compile", action="store_true", help="torch.compile the method")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--distinct-batches", type=int, default=4, help="batches rotated through (mask shapes vary)")
    parser.add_argument("--check-sync", action="store_true", help="fail a step that synchronizes with the host (CUDA)")
    parser.add_argument("--words", type=int, default=32, help="words per cached caption (text methods)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="after timing, profile N steps and report the 25 costliest operators")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args, extra = parser.parse_known_args(argv)  # overrides may follow options
    if any("=" not in e or e.startswith("-") for e in extra):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = [*args.overrides, *extra]
    result = run(args)
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>22}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
