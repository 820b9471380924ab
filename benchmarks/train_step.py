"""Training-step benchmark: samples/s, peak memory and model TFLOP/s of one method's step (images or video).

It times exactly the step the training loop runs (``openjepa.train.step.TrainStep``: forward, backward,
optimizer, teacher update) on batches already on the device, so data loading is not measured. The inputs
are random, with real masks from the config's mask generators and random cached caption embeddings for
methods that read captions. FLOPs are the method's own count (``Method.flops``: the paper's convention,
6·N·D for trained networks and 2·N·D for a frozen forward, from the actual masks), so TFLOP/s compares
methods and implementations on the same footing (attention's quadratic term is not counted).

Examples:
    python benchmarks/train_step.py configs/ijepa/vith14-in1k.yaml --mask-mode faithful --steps 20
    python benchmarks/train_step.py configs/ijepa/demo.yaml --device cpu --steps 5 --json
    python benchmarks/train_step.py configs/vjepa/vitl16-k400.yaml --batch-size 24 --compile --check-sync
    python benchmarks/train_step.py configs/salt/vitl16-student.yaml teacher.checkpoint=teacher.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from openjepa.config import Config, load_config
from openjepa.errors import OpenJepaError
from openjepa.masks.build import build_mask_generators
from openjepa.methods import build_method, method_class
from openjepa.models.build import token_grid
from openjepa.models.compile import compile_blocks
from openjepa.runtime import Precision, pick_device
from openjepa.train.optim import StepSchedule, build_optimizer
from openjepa.train.step import TrainStep


def make_batches(cfg: Config, device: torch.device, count: int, batch_size: int, words: int = 32) -> list[dict]:
    """``count`` batches of random inputs with real masks (steps 0..count-1) on ``device``."""
    needs = method_class(cfg.method).data_needs(cfg)
    generators = build_mask_generators(cfg.mask, token_grid(cfg), cfg.train.seed) if needs.masks else []
    size, frames = cfg.data.image_size, cfg.data.num_frames
    shape = (batch_size, 3, frames, size, size) if needs.input_key == "video" else (batch_size, 3, size, size)
    g = torch.Generator().manual_seed(0)
    out = []
    for step in range(count):
        slots = list(range(batch_size))
        batch: dict = {needs.input_key: torch.randn(*shape, generator=g), "step": step, "slots": torch.tensor(slots)}
        if generators:
            batch["masks"] = [gen(step, slots, batch_size) for gen in generators]
        if needs.text:
            # Cached caption embeddings: what the loader hands over once every caption has been encoded.
            n = cfg.text.num_captions
            batch["text_emb"] = torch.randn(batch_size, n, words, cfg.text.dim, generator=g).half()
            batch["text_mask"] = torch.ones(batch_size, n, words, dtype=torch.bool)
            batch["caption_mask"] = torch.ones(batch_size, n, dtype=torch.bool)
        out.append(_to(batch, device))
    return out


def _to(value, device: torch.device):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    if isinstance(value, list):
        return [_to(v, device) for v in value]
    return value


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(args: argparse.Namespace) -> dict:
    overrides = list(args.overrides)
    overrides.append("data.path=/unused")  # the benchmark feeds random images; no data folder is read
    if args.mask_mode:
        overrides.append(f"mask.mode={args.mask_mode}")
    cfg = load_config(args.config, overrides)
    if cfg.data.source in ("scenes", "sprites"):
        cfg.data.path = None
    if cfg.text.dim == 0:
        cfg.text.dim = 384  # all-MiniLM-L6-v2 word width; pass text.dim=768 for T5-base-sized embeddings
    device = pick_device(args.device, key="--device")
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
    batches = make_batches(cfg, device, args.distinct_batches, batch_size, args.words)
    flops = [method.flops(b) for b in batches]

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
        total_flops += sum(flops[i % len(batches)].values())
    sync(device)
    elapsed = time.perf_counter() - t0
    f0 = flops[0]
    masks = batches[0].get("masks", [])
    result = {
        "config": args.config,
        "arch": cfg.model.arch,
        "patch_size": cfg.model.patch_size,
        "image_size": cfg.data.image_size,
        "num_frames": cfg.data.num_frames,
        "batch_size": batch_size,
        "mask_mode": cfg.mask.mode,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": str(precision.dtype or "fp32"),
        "compile": bool(args.compile),
        "steps": args.steps,
        "warmup_s": round(warmup_s, 2),
        "step_ms": round(1000 * elapsed / args.steps, 2),
        "samples_per_s": round(batch_size * args.steps / elapsed, 1),
        "model_tflops_per_s": round(total_flops / elapsed / 1e12, 2),
        "tflop_per_step": round(total_flops / args.steps / 1e12, 3),
        "method": cfg.method,
        "flops_split": {k: round(v / sum(f0.values()), 3) for k, v in f0.items()},
        "ctx_tokens": [m["ctx_idx"].shape[1] for m in masks],
        "tgt_tokens": [m["tgt_idx"].shape[1] * m["tgt_idx"].shape[2] for m in masks],
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
    parser.add_argument("--compile", action="store_true", help="torch.compile every transformer block")
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
    try:
        result = run(args)
    except OpenJepaError as err:  # a bad config or a missing CUDA device: one line, no traceback
        print(f"train_step.py: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>22}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
