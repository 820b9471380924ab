"""Micro-benchmark of one TC-JEPA cross-attention layer (forward + backward) on a GPU.

Times ``CrossAttentionLayer`` alone at a training step's shapes (defaults: the ViT-L/16 recipe at batch 128)
for several head counts, SDPA backends and ways of masking padded words, optionally with the costliest
kernels. Few words per caption and small head dims make this attention unlike the encoder's.

    python benchmarks/conditioner_layer.py --heads 16 6 --backends default efficient --profile
    python benchmarks/conditioner_layer.py --variants sdpa-mask bias-dim no-mask --backends default flash
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import openjepa.models.conditioner as conditioner
from openjepa.models.conditioner import ConditionState, CrossAttentionLayer

BACKENDS = {
    "default": None,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
}


def bias_dim_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Padding through an extra key dimension (logit - 1e4 on padded words), so no mask is passed to SDPA."""
    pad = 8
    dh = q.shape[-1]
    one = q.new_zeros(*q.shape[:-1], pad)
    one[..., 0] = 1
    bias = torch.where(mask.transpose(-1, -2), 0.0, -1e4).to(k.dtype).expand(*k.shape[:-1], 1)
    k2 = torch.cat([k, bias, k.new_zeros(*k.shape[:-1], pad - 1)], -1)
    v2 = torch.cat([v, v.new_zeros(*v.shape[:-1], pad)], -1)
    out = F.scaled_dot_product_attention(torch.cat([q, one], -1), k2, v2, scale=dh**-0.5)
    return out[..., :dh]


def no_mask_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """No padding handling at all: the lower bound of what masking costs."""
    return F.scaled_dot_product_attention(q, k, v)


VARIANTS = {"sdpa-mask": conditioner.word_attention, "bias-dim": bias_dim_attention, "no-mask": no_mask_attention}


def time_layer(args: argparse.Namespace, heads: int, backend: str) -> dict:
    dev = torch.device("cuda")
    torch.manual_seed(0)
    layer = CrossAttentionLayer(args.dim, args.dim, heads, "max", "after_pool").to(dev)
    x = torch.randn(args.batch * args.targets, args.tokens, args.dim, device=dev, requires_grad=True)
    text = torch.randn(args.batch, args.captions, args.words, args.dim, device=dev)
    masks = torch.ones(args.batch, args.captions, args.words, dtype=torch.bool, device=dev)
    caps = torch.ones(args.batch, args.captions, dtype=torch.bool, device=dev)

    def step() -> None:
        state = ConditionState.build(text, masks, caps, args.targets)
        with torch.autocast("cuda", torch.bfloat16):
            out = layer(x, state)
            loss = out.float().square().mean() + state.sims[0].mean()
        loss.backward()

    ctx = sdpa_kernel(BACKENDS[backend]) if BACKENDS[backend] is not None else torch.enable_grad()
    try:
        with ctx:
            for _ in range(3):
                step()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            for _ in range(args.iters):
                step()
            torch.cuda.synchronize()
    except RuntimeError as err:  # a backend that does not support these shapes
        return {"heads": heads, "backend": backend, "error": str(err).splitlines()[0][:160]}
    ms = 1000 * (time.perf_counter() - t0) / args.iters
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
            for _ in range(5):
                step()
            torch.cuda.synchronize()
        events = sorted(prof.key_averages(), key=lambda e: e.self_device_time_total, reverse=True)[:12]
        for e in events:
            print(f"  {e.self_device_time_total / 5000:8.3f} ms  {e.count // 5:4d}x  {e.key[:110]}")
    return {
        "heads": heads,
        "backend": backend,
        "ms_fwd_bwd": round(ms, 3),
        "peak_mem_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--targets", type=int, default=4)
    p.add_argument("--tokens", type=int, default=89, help="predictor tokens per sequence (context + target)")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--captions", type=int, default=8)
    p.add_argument("--words", type=int, default=32)
    p.add_argument("--heads", type=int, nargs="+", default=[16, 6])
    p.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS))
    p.add_argument("--variants", nargs="+", default=["sdpa-mask"], choices=list(VARIANTS))
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--profile", action="store_true", help="print the costliest kernels of each configuration")
    args = p.parse_args()
    shape = {k: getattr(args, k) for k in ("batch", "targets", "tokens", "dim", "captions", "words")}
    for variant in args.variants:
        conditioner.word_attention = VARIANTS[variant]
        for heads in args.heads:
            for backend in args.backends:
                result = time_layer(args, heads, backend)
                print(json.dumps({"variant": variant, **result, "shape": shape}), flush=True)


if __name__ == "__main__":
    main()
