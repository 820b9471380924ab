"""How learnable are the scenes probe tasks for a given encoder recipe? The supervised ceiling alone.

    python scripts/ceiling_sweep.py --arch vit_pico --patch 8 --image-size 64 --steps 1500 --batch 64 [--lr 1e-3]
        [--pool max|mean] [--stem linear|hmlp|conv] [--max-objects 4] [--schedule constant|cosine]

Trains the architecture from scratch on the scenes labels (all tasks jointly, heads as in the ceiling row of
``openjepa eval``: linear on the per-channel maximum of the tokens, or on their mean with ``--pool mean``) for
``--steps`` steps on ``--train-size`` images, then prints the val accuracy of its heads per task as one JSON
line. Used to find a recipe where every task is learnable within the CPU budget (docs/RESULTS.md, the testbed
sections).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from openjepa.data.scenes import ScenesDataset
from openjepa.eval.baselines import CeilingSpec, ceiling_head_accuracy, train_supervised
from openjepa.eval.features import extract_features
from openjepa.models.vit import build_vit


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="vit_pico")
    p.add_argument("--patch", type=int, default=8)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--train-size", type=int, default=8192)
    p.add_argument("--val-size", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pool", default="max", choices=("max", "mean"))
    p.add_argument("--stem", default="linear", choices=("linear", "hmlp", "conv"))
    p.add_argument("--max-objects", type=int, default=4)
    p.add_argument("--schedule", default="constant", choices=("constant", "cosine"),
                   help="lr after the warmup (before 2026-12-04 the only one was cosine)")
    args = p.parse_args(argv)
    like = build_vit(args.arch, img_size=args.image_size, patch_size=args.patch, stem=args.stem)
    train = ScenesDataset("train", args.train_size, args.image_size, args.max_objects, seed=args.seed)
    val = ScenesDataset("val", args.val_size, args.image_size, args.max_objects, seed=args.seed)
    spec = CeilingSpec(steps=args.steps, batch_size=args.batch, lr=args.lr, seed=args.seed, pool=args.pool,
                       schedule=args.schedule)
    start = time.perf_counter()
    ceiling = train_supervised(like, train, train.tasks, spec, "cpu", progress=False)
    feats = extract_features(ceiling.encoder, val, batch_size=128, device="cpu", progress=False)
    acc = ceiling_head_accuracy(ceiling, feats)
    print(json.dumps({**vars(args), "seconds": round(time.perf_counter() - start, 1),
                      "val_acc": {k: round(100 * v, 1) for k, v in acc.items()},
                      "train_acc": {k: round(100 * v, 1) for k, v in ceiling.info["train_acc"].items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
