"""``openjepa inspect text-attention``: which image patches attend to which caption words in TC-JEPA.

The checkpoint's TC-JEPA predictor sees every patch of the image as context (through the student encoder,
as in training) plus one target block covering the whole grid, conditioned on one
caption. For each word, the figure shows the cross-attention weight that each patch's context token gives to
it, averaged over heads and conditioned layers, on top of the image.

Each patch's attention is a distribution over the caption's S words, so "no preference" is 1/S everywhere.
The panels therefore show the contrast against that uniform attention, ``log2(attention * S)``, on a
diverging colour scale centred at 0 (= uniform): red patches attend to the word more than uniform
(+1 = twice as much), blue less. The colour scale spans at least 0.5x to 2x (``--color-ratio``), so a
near-uniform map stays pale instead of having its noise stretched to full colour, and the title states the
largest ratio over uniform ("near uniform" below 1.25x).
"""

from __future__ import annotations

import argparse
import math
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
        raise ValueError("this checkpoint has no cross-attention text conditioner (method=tcjepa, tcjepa.mode=xattn)")
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


#: Below this largest ratio over uniform (attention * S), a map is labelled "near uniform".
NEAR_UNIFORM_RATIO = 1.25
#: The colour scale spans at least 1/this .. this times uniform, whatever the data: a map whose ratios all
#: sit within a few % of 1 stays pale rather than filling the colour range with noise.
MIN_COLOR_RATIO = 2.0
# Colour bar ticks: round ratios, placed on the log scale.
_TICK_RATIOS = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 2 / 3, 1.0, 1.5, 2.0, 4.0, 8.0, 16.0)
# Attention exactly 0 (a word masked out, or softmax underflow) would give log2(0) = -inf.
_MIN_RATIO = 1e-3


def contrast_to_uniform(maps: torch.Tensor) -> torch.Tensor:
    """``log2(attention / (1 / S))`` of patch-to-word attention: 0 where a patch attends uniformly.

    Args:
        maps: ``[..., S, h, w]`` attention over the caption's ``S`` (real, unpadded) words: for every patch
            the weights over words sum to 1, as :func:`text_attention_maps` returns them (or their mean
            over layers).

    Returns:
        Same shape: +1 where a patch gives a word twice the uniform weight ``1 / S``, -1 half of it;
        ratios below ``_MIN_RATIO`` are clipped so the result is finite.
    """
    words = maps.shape[-3]
    return torch.log2((maps.double() * words).clamp_min(_MIN_RATIO)).to(maps.dtype)


def max_ratio_over_uniform(maps: torch.Tensor) -> float:
    """The largest ``attention * S`` of ``[layers, S, h, w]`` maps after the mean over layers (1.0 = uniform)."""
    return float((maps.float().mean(0) * maps.shape[1]).max())


def uniformity_note(max_ratio: float) -> str:
    """Title fragment stating the largest ratio over uniform, and saying so when the map is near uniform."""
    note = f"max {max_ratio:.2f}x uniform"
    if max_ratio < NEAR_UNIFORM_RATIO:
        return f"{note}: near uniform, the caption barely steers these patches"
    return note


def draw_text_attention(
    image: np.ndarray,
    tokens: list[str],
    maps: torch.Tensor,
    out: Path,
    title: str = "",
    min_color_ratio: float = MIN_COLOR_RATIO,
) -> Path:
    """Draws the image, then one panel per word with the patches' attention contrast to uniform on top.

    Args:
        image: the image as shown, uint8 ``[H, W, 3]``.
        tokens: the caption's words, one per panel.
        maps: attention ``[layers, S, h, w]`` over exactly ``len(tokens)`` words (padding removed).
        out: the PNG to write (parent folders are created).
        title: the figure's first title line; the attention summary goes on the line below.
        min_color_ratio: the colour scale spans at least ``1 / min_color_ratio`` to ``min_color_ratio``
            times uniform (wider when the data reach further); 1 stretches it to the data, which shows
            the pattern of a weak, near-uniform attention (the title still states how weak).

    Returns:
        ``out``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    if not tokens or maps.shape[1] != len(tokens):
        raise ValueError(f"{maps.shape[1]} attention maps for {len(tokens)} tokens: pass the real words only")
    if min_color_ratio < 1:
        raise ValueError(f"min_color_ratio={min_color_ratio} must be >= 1 (a ratio to uniform attention)")
    mean = maps.float().mean(0)  # [S, h, w]: every patch still sums to 1 over the words
    contrast = contrast_to_uniform(mean).numpy()
    ratio = (mean * len(tokens)).numpy()
    # Symmetric around 0 so white means uniform; never zero-width, even for exactly uniform maps.
    limit = max(float(np.abs(contrast).max()), math.log2(min_color_ratio), 1e-3)
    panels = len(tokens) + 1  # the plain image first, for reference
    cols = min(panels, 6)
    rows = (panels + cols - 1) // cols
    fig, axes = plt.subplots(
        rows, cols, figsize=(2.2 * cols + 1.0, 2.3 * rows + 0.6), squeeze=False, layout="constrained"
    )
    height, width = image.shape[:2]
    extent = (0, width, height, 0)  # stretch the patch grid over the image whatever the patch size
    shown = None
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i == 0:
            ax.imshow(image)
            ax.set_title("image", fontsize=8)
        elif i < panels:
            word = i - 1
            ax.imshow(image)
            shown = ax.imshow(
                contrast[word], cmap="RdBu_r", vmin=-limit, vmax=limit, alpha=0.65, extent=extent,
                interpolation="nearest",
            )
            ax.set_title(f"{tokens[word]!r}\nmax {ratio[word].max():.2f}x", fontsize=8)
    bar = fig.colorbar(shown, ax=axes, shrink=0.8)
    bar.set_label("attention / uniform (1/S), log scale", fontsize=8)
    bar.set_ticks([math.log2(r) for r in _TICK_RATIOS if abs(math.log2(r)) <= limit + 1e-9])
    bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{2.0**v:.3g}x"))
    head = title or "patch -> word cross-attention"
    note = uniformity_note(max_ratio_over_uniform(maps))
    summary = f"mean over heads and conditioned layers, {len(tokens)} words; {note}"
    fig.suptitle(f"{head}\n{summary}", fontsize=9)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out


def run(args: argparse.Namespace) -> int:
    """Handler of ``openjepa inspect text-attention``."""
    from openjepa.data.images import load_image
    from openjepa.data.transforms import eval_transform
    from openjepa.methods.load import load_method
    from openjepa.models.text import build_text_encoder

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
    title = f"{Path(args.image).name}: {args.caption!r}"
    out = draw_text_attention(shown, tokens, maps, Path(args.png), title, args.color_ratio)
    note = uniformity_note(max_ratio_over_uniform(maps))
    print(f"[openjepa] text attention of {len(tokens)} tokens over {maps.shape[0]} layer(s), {note} -> {out}",
          file=sys.stderr)
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
    p.add_argument(
        "--color-ratio", type=float, default=MIN_COLOR_RATIO, metavar="R",
        help="the colour scale spans at least 1/R to R times uniform attention (default: %(default)s, so a "
        "near-uniform map stays pale); 1 stretches it to the data to show a weak pattern",
    )
    p.set_defaults(handler=run)
