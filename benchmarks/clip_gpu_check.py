"""GPU checks for method=clip: bf16 autocast, no host syncs in the step, loss-part timing.

Run on a CUDA machine: `PYTHONPATH=src python benchmarks/clip_gpu_check.py`
(numbers in docs/clip.md and docs/RESULTS.md).
"""
# ruff: noqa: B023 - the closures are called inside the loop iteration that defines them
import time

import torch

from openjepa.config import load_config
from openjepa.methods.clip import CLIP
from openjepa.methods.contrastive_losses import clip_loss, siglip_loss

dev = torch.device("cuda")
print(torch.__version__, torch.cuda.get_device_name())


def batch(b, n=8, s=32, dt=384, size=224):
    g = torch.Generator(device=dev).manual_seed(0)
    cm = torch.rand(b, n, device=dev, generator=g) > 0.2
    cm[:4] = False
    return {
        "image": torch.randn(b, 3, size, size, device=dev, generator=g),
        "text_emb": torch.randn(b, n, s, dt, device=dev, generator=g).half(),
        "text_mask": torch.rand(b, n, s, device=dev, generator=g) > 0.3,
        "caption_mask": cm,
    }


for kind in ("clip", "siglip"):
    cfg = load_config(None, ["method=clip", "model.arch=vit_small", f"clip.loss={kind}", "text.dim=384"])
    torch.manual_seed(0)
    m = CLIP(cfg, 100).to(dev)
    opt = torch.optim.AdamW(m.param_groups(), lr=1e-4, fused=True)
    bt = batch(256)
    with torch.no_grad():
        l32, _ = m(bt, 0)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            l16, _ = m(bt, 0)
    print(kind, "fp32 loss", l32.item(), "bf16-autocast loss", l16.item(), "dtype", l16.dtype)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss, metrics = m(bt, 0)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        m.after_step(0)
        return loss, metrics

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        t = time.perf_counter()
        for _ in range(10):
            loss, metrics = step()
        torch.cuda.set_sync_debug_mode(0)
        torch.cuda.synchronize()
        print(kind, "no host sync in 10 steps; vit_small/16 224px B=256 step ms", (time.perf_counter() - t) * 100)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    print(kind, {k: round(v.item(), 4) for k, v in metrics.items()})

# cost of the global loss alone (fwd+bwd, fp32) at global batch n, d=256
for n in (2048, 8192, 32768):
    img = torch.nn.functional.normalize(torch.randn(n, 256, device=dev), dim=-1).requires_grad_()
    txt = torch.nn.functional.normalize(torch.randn(n, 256, device=dev), dim=-1).requires_grad_()
    s, b = torch.tensor(14.0, device=dev), torch.tensor(-10.0, device=dev)
    for name, fn in (("clip", lambda: clip_loss(img, txt, s)), ("siglip", lambda: siglip_loss(img, txt, s, b))):
        for _ in range(2):
            fn().backward()
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(5):
            fn().backward()
        torch.cuda.synchronize()
        print(f"loss only {name} n={n}: {(time.perf_counter() - t) / 5 * 1e3:.2f} ms, peak GiB "
              f"{torch.cuda.max_memory_allocated() / 2**30:.1f}")
