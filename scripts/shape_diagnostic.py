"""Why does a small ViT not learn shape on ``scenes``? One supervised run with one choice changed.

    python scripts/shape_diagnostic.py --model vit --pool mean [--stem hmlp] [--embed-scale 5] \
        [--objects 1] [--tasks largest_shape] [--steps 600]

Trains an encoder from scratch on ``--train-size`` scenes with at most ``--objects`` objects (1: the shape of
a single object, the easiest shape task there is), with a head on its tokens pooled by ``--pool``:
``mean`` (the supervised ceiling's linear heads and the linear probe), ``att`` (one cross-attention query
per task, the attentive probe's layout) or ``max`` (per channel over the tokens). ``--model cnn`` is a
3-layer CNN reference (max-pooled). ``--embed-scale`` multiplies the ViT's initial patch-embedding weights
(at ``vit_pico`` / 8 px the patch content is 0.27x the position table's scale at initialization). The inputs
are prepared once and kept in memory; AdamW at ``--lr``, no schedule. Prints one JSON
line per ``--every`` steps (training accuracy over those steps) and a last line with the val accuracy on 500
val scenes. docs/RESULTS.md, section 16, has the runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from openjepa.data.scenes import ScenesDataset
from openjepa.eval.attentive import AttentivePooler
from openjepa.eval.features import default_transform
from openjepa.models.vit import build_vit


class Cnn(nn.Module):
    """Three 3x3 conv layers (32, 64, 64 channels) with ReLU and 2x2 max pooling: the CNN reference."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.width = width
        self.net = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, width, 3, padding=1), nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(2).transpose(1, 2)  # [B, positions, width]: "tokens" for the same heads


class Classifier(nn.Module):
    """Encoder tokens -> pooled -> one linear head per task."""

    def __init__(self, encoder: nn.Module, dim: int, tasks: dict[str, int], pool: str):
        super().__init__()
        self.encoder, self.pool = encoder, pool
        self.pooler = AttentivePooler(dim, num_queries=len(tasks)) if pool == "att" else None
        self.heads = nn.ModuleDict({t: nn.Linear(dim, c) for t, c in tasks.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        tokens = self.encoder(x)
        if self.pooler is not None:
            queries = self.pooler(tokens)
            return {t: h(queries[:, i]) for i, (t, h) in enumerate(self.heads.items())}
        pooled = tokens.mean(1) if self.pool == "mean" else tokens.amax(1)
        return {t: h(pooled) for t, h in self.heads.items()}


def prepare(ds: ScenesDataset, tasks: list[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    transform = default_transform("image", ds.image_size)
    items = [ds[i] for i in range(len(ds))]
    x = torch.stack([transform(it["image"]) for it in items])
    return x, {t: torch.tensor([it["labels"][t] for it in items]) for t in tasks}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vit", choices=("vit", "cnn"))
    p.add_argument("--arch", default="vit_pico")
    p.add_argument("--patch", type=int, default=8)
    p.add_argument("--stem", default="linear", choices=("linear", "hmlp", "conv"))
    p.add_argument("--embed-scale", type=float, default=1.0)
    p.add_argument("--pool", default="mean", choices=("mean", "att", "max"))
    p.add_argument("--objects", type=int, default=1)
    p.add_argument("--tasks", default="largest_shape", help="comma-separated scenes tasks, or 'all'")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--train-size", type=int, default=4096)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's choice)")
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train = ScenesDataset("train", args.train_size, args.image_size, args.objects)
    val = ScenesDataset("val", 500, args.image_size, args.objects)
    tasks = dict(train.tasks) if args.tasks == "all" else {t: train.tasks[t] for t in args.tasks.split(",")}
    start = time.perf_counter()
    x, y = prepare(train, list(tasks))
    vx, vy = prepare(val, list(tasks))
    if args.model == "cnn":
        encoder: nn.Module = Cnn()
        dim = 64
    else:
        vit = build_vit(args.arch, img_size=args.image_size, patch_size=args.patch, stem=args.stem)
        with torch.no_grad():
            for w in vit.patch_embed.parameters():
                if w.ndim > 1:
                    w.mul_(args.embed_scale)
        encoder, dim = vit, vit.embed_dim
    model = Classifier(encoder, dim, tasks, args.pool)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    gen = torch.Generator().manual_seed(args.seed)
    hits = {t: 0 for t in tasks}
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, len(x), (args.batch,), generator=gen)
        logits = model(x[idx])
        loss = sum(F.cross_entropy(logits[t], y[t][idx]) for t in tasks) / len(tasks)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[union-attr]
        opt.step()
        for t in tasks:
            hits[t] += int((logits[t].argmax(1) == y[t][idx]).sum())
        if step % args.every == 0:
            acc = {t: round(100 * h / (args.every * args.batch), 1) for t, h in hits.items()}
            print(json.dumps({"step": step, "loss": round(float(loss.detach()), 3), "train_acc": acc,
                              "seconds": round(time.perf_counter() - start)}), flush=True)
            hits = {t: 0 for t in tasks}
    model.eval()
    with torch.no_grad():
        logits = model(vx)
    val_acc = {t: round(100 * float((logits[t].argmax(1) == vy[t]).float().mean()), 1) for t in tasks}
    print(json.dumps({"args": vars(args), "val_acc": val_acc, "seconds": round(time.perf_counter() - start)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
