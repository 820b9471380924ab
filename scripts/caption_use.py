"""Does a trained TC-JEPA predictor use its captions? Prediction error with the right, wrong and no captions.

    python scripts/caption_use.py runs/exp/tcjepa-s0/checkpoint-latest.pt [--batches 8] [--json]

On held-out scenes (the ``val`` split, the training crops and masks), the frozen checkpoint predicts the
masked target features three times: with each image's own captions, with the captions of another image of
the batch (rolled by one), and with no caption at all (the conditioner then leaves every token as it is).
If the text carries information about the hidden blocks, the right captions give the lowest error.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys

import torch

from openjepa.data.pipeline import PretrainPipeline
from openjepa.methods.load import load_method

TEXT_KEYS = ("text_emb", "text_mask", "caption_mask")


def conditions(batch: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """The three caption inputs compared: the image's own, another image's, none."""
    own = {k: batch[k] for k in TEXT_KEYS}
    other = {k: v.roll(1, dims=0) for k, v in own.items()}
    none = {**own, "caption_mask": torch.zeros_like(own["caption_mask"])}
    return {"own captions": own, "another image's captions": other, "no captions": none}


@torch.no_grad()
def caption_use(ckpt: str, batches: int, batch_size: int, seed: int) -> dict[str, float]:
    """Mean prediction loss over ``batches`` held-out batches for each caption input."""
    method, cfg, _ = load_method(ckpt)
    if not method.uses_text:
        raise SystemExit(f"{ckpt}: method={cfg.method} has no text conditioning")
    held_out = copy.deepcopy(cfg)
    held_out.data.batch_size, held_out.data.train_size, held_out.data.num_workers = batch_size, batches * batch_size, 0
    held_out.optim.accum_steps, held_out.train.seed = 1, seed
    pipe = PretrainPipeline(held_out, method.data_needs(held_out), split="val")
    loader = pipe.loader(0, batches)
    totals: dict[str, float] = {}
    for step, batch in enumerate(loader):
        for name, cond in conditions(batch).items():
            _, metrics = method({**batch, **cond}, step)  # the training forward; its prediction term only
            totals[name] = totals.get(name, 0.0) + metrics["loss_pred"].item() / batches
    return totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the held-out batches (val images, crops, masks, captions)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = caption_use(args.checkpoint, args.batches, args.batch_size, args.seed)
    if args.json:
        print(json.dumps({"checkpoint": args.checkpoint, **result}))
    else:
        for name, loss in result.items():
            print(f"{name:>26}: prediction loss {loss:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
