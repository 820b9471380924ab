"""``openjepa inspect text-attention``: which image patches attend to which caption words in TC-JEPA.

The checkpoint's TC-JEPA predictor sees every patch of the image as context (through the student encoder,
as in training) plus one target block covering the whole grid, conditioned on one
caption. For each word, the figure shows the cross-attention weight that each patch's context token gives to
it, averaged over heads and conditioned layers, on top of the image.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch


def text_attention_maps(
    method: Any, image: torch.Tensor, text_emb: torch.Tensor, text_mask: torch.Tensor
) -> torch.Tensor:
    """Patch-to-word attention of a TC-JEPA method: ``[layers, S, h, w]`` (mean over heads).

    Args:
        method: a TC-JEPA method (``predictor.conditioner`` with cross-attention layers), in eval mode.
        image: one normalized image ``[3, H, W]``.
        text_emb, text_mask: one caption's word embeddings ``[S, dt]`` and mask ``[S]``.
    """
    from openjepa.models.conditioner import CrossAttentionLayer

    conditioner = method.predictor.conditioner
    layers = [m for m in conditioner.blocks if isinstance(m, CrossAttentionLayer)] if conditioner else []
    if not layers:
        raise ValueError("this checkpoint has no cross-attention text conditioner (method=tcjepa, text.mode=xattn)")
    grid = method.encoder.grid_size
    n = int(np.prod(grid))
    everything = torch.arange(n)[None]
    batch = {
        "image": image[None],
        "ctx_idx": everything,
        "tgt_idx": everything[:, None],
    }
    cond = {"text_emb": text_emb[None, None], "text_mask": text_mask[None, None],
            "caption_mask": torch.ones(1, 1, dtype=torch.bool)}
    maps: list[torch.Tensor] = []

    def record(module: CrossAttentionLayer, inputs: tuple[torch.Tensor, Any], _out: torch.Tensor) -> None:
        x, state = inputs
        weights = module.attention_weights(x, state)[0, 0]  # [L, S] for the one sequence and caption
        maps.append(weights[:n].T.reshape(-1, *grid))  # context tokens = the patches, raster order

    handles = [m.register_forward_hook(record) for m in layers]
    try:
        with torch.no_grad():
            z = method.encoder(batch["image"], keep=batch["ctx_idx"])
            method.predictor(z, batch["ctx_idx"], batch["tgt_idx"], cond)
    finally:
        for h in handles:
            h.remove()
    return torch.stack(maps)


def draw_text_attention(image: np.ndarray, tokens: list[str], maps: torch.Tensor, out: Path, title: str = "") -> Path:
    """One panel per word: the image with the patches' attention to that word (mean over layers) on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mean = maps.mean(0).numpy()  # [S, h, w]
    words = len(tokens)
    cols = min(words, 6)
    rows = (words + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows), squeeze=False)
    size = image.shape[:2]
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= words:
            continue
        heat = np.kron(mean[i], np.ones((size[0] // mean.shape[1], size[1] // mean.shape[2])))
        ax.imshow(image)
        ax.imshow(heat, cmap="magma", alpha=0.6, vmin=0, vmax=max(float(mean.max()), 1e-6))
        ax.set_title(f"{tokens[i]}\nmax {mean[i].max():.2f}", fontsize=8)
    fig.suptitle(title or "patch -> word cross-attention (mean over heads and conditioned layers)", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def run(args: argparse.Namespace) -> int:
    """Handler of ``openjepa inspect text-attention``."""
    from openjepa.data.images import load_image
    from openjepa.data.transforms import eval_transform
    from openjepa.models.text import build_text_encoder
    from openjepa.train.checkpoint import load_method

    method, cfg, _ = load_method(args.checkpoint)
    if cfg.method != "tcjepa":
        raise ValueError(f"{args.checkpoint} is a {cfg.method!r} checkpoint; text attention needs method=tcjepa")
    pil = load_image(args.image)
    image = eval_transform(cfg.data.image_size)(pil)
    encoder = build_text_encoder(cfg.text)
    emb, mask = encoder.encode([args.caption])
    tokens = encoder.tokens(args.caption)[: int(mask[0].sum())]
    maps = text_attention_maps(method, image, emb[0], mask[0])[:, : len(tokens)]
    shown = np.asarray(pil.resize((cfg.data.image_size,) * 2))
    out = draw_text_attention(shown, tokens, maps, Path(args.png), f"{Path(args.image).name}: {args.caption!r}")
    layers = maps.shape[0]
    print(f"[openjepa] text attention of {len(tokens)} tokens over {layers} layer(s) -> {out}", file=sys.stderr)
    return 0


def add_inspect_text_attention(sub: argparse._SubParsersAction) -> None:
    """Registers ``openjepa inspect text-attention``."""
    p = sub.add_parser(
        "text-attention", help="draw which patches attend to each caption word (TC-JEPA checkpoint)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="TC-JEPA checkpoint file or run folder")
    p.add_argument("--image", required=True, help="an image file (resized to the model's image size)")
    p.add_argument("--caption", required=True, help='one caption, e.g. "a small red star near the top left"')
    p.add_argument("--png", default="text_attention.png", help="output figure (default: text_attention.png)")
    p.set_defaults(handler=run)
