"""TC-JEPA's training cost over I-JEPA's: analytic FLOPs per step (same encoder, masks and batch).

Counts both methods' steps with the shapes of real masks of the config (mean over a few batches) and
cached caption embeddings (N captions of S words), for ``tcjepa.mlp=after_pool`` and ``per_caption``.
Measured GPU times come from ``benchmarks/train_step.py ... method=tcjepa`` (see benchmarks/gpu_check.sh).

Example:
    python benchmarks/tcjepa_cost.py --json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from analytic_flops import step_flops

from openjepa.config import load_config
from openjepa.masks import MultiBlockMaskSampler

SETUPS = {
    "ViT-B/16": ("configs/ijepa/vitb16-in1k.yaml", []),
    "ViT-L/16": ("configs/ijepa/vitb16-in1k.yaml", ["model.arch=vit_large", "model.pred_depth=12"]),
}


def mean_mask_shapes(cfg, batch_size: int, batches: int = 8) -> tuple[float, int, float]:
    """Mean context tokens, number of target blocks and tokens per block over a few real batches."""
    grid = (cfg.data.image_size // cfg.model.patch_size,) * 2
    sampler = MultiBlockMaskSampler(cfg.mask, grid, seed=0)
    kc = kt = 0.0
    for step in range(batches):
        m = sampler(step, list(range(batch_size)), batch_size)
        kc += m["ctx_idx"].shape[1] / batches
        kt += m["tgt_idx"].shape[2] / batches
    return kc, cfg.mask.num_targets, kt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--captions", type=int, default=8, help="N captions per image")
    parser.add_argument("--words", type=int, default=32, help="S words per caption")
    parser.add_argument("--text-dim", type=int, default=384, help="word embedding width (384 MiniLM, 768 T5-base)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = []
    for name, (path, extra) in SETUPS.items():
        base = [*extra, "data.path=/unused", f"text.dim={args.text_dim}"]
        ijepa = load_config(path, base)
        kc, t, kt = mean_mask_shapes(ijepa, args.batch_size)
        f_i = step_flops(ijepa, args.batch_size, round(kc), t, round(kt))
        row = {"model": name, "ctx_tokens": round(kc, 1), "tgt_tokens": round(kt, 1),
               "ijepa_tflop_per_step": round(f_i.total / 1e12, 2)}
        for mlp in ("after_pool", "per_caption"):
            tc = load_config(path, [*base, "method=tcjepa", f"tcjepa.mlp={mlp}"])
            f_t = step_flops(tc, args.batch_size, round(kc), t, round(kt), args.captions, args.words)
            row[f"tcjepa_{mlp}_tflop_per_step"] = round(f_t.total / 1e12, 2)
            row[f"ratio_{mlp}"] = round(f_t.total / f_i.total, 3)
        rows.append(row)
    if args.json:
        print(json.dumps({"captions": args.captions, "words": args.words, "text_dim": args.text_dim,
                          "batch_size": args.batch_size, "rows": rows}))
    else:
        for row in rows:
            print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
