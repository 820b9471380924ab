"""Vision Transformer encoder for JEPA: no class token, fixed sin-cos positions, ``forward(x, keep)``.

The encoder takes images ``[B, 3, H, W]`` (or, with ``tubelet_size > 1``, videos ``[B, 3, T, H, W]``),
embeds patches, adds the fixed position table, keeps only the tokens listed in ``keep`` (gathering
them, so dropped tokens cost nothing), and runs the pre-norm blocks and a final LayerNorm.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from openjepa.models.layers import Block, PatchEmbed, gather_tokens, init_weights, rescale_residual_branches
from openjepa.models.pos_embed import sincos_2d, sincos_3d


@dataclass(frozen=True)
class VitSpec:
    """Width, depth, heads and MLP ratio of a ViT preset."""

    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0


VIT_PRESETS: dict[str, VitSpec] = {
    "vit_pico": VitSpec(96, 6, 3),  # for tests and laptop demos
    "vit_tiny": VitSpec(192, 12, 3),
    "vit_small": VitSpec(384, 12, 6),
    "vit_base": VitSpec(768, 12, 12),
    "vit_large": VitSpec(1024, 24, 16),
    "vit_huge": VitSpec(1280, 32, 16),
    "vit_giant": VitSpec(1408, 40, 16, 48 / 11),
}


def vit_spec(arch: str) -> VitSpec:
    """Looks up a preset; an unknown name is an error listing the valid ones."""
    if arch not in VIT_PRESETS:
        raise ValueError(f"unknown encoder arch {arch!r} (model.arch); choose one of {', '.join(VIT_PRESETS)}")
    return VIT_PRESETS[arch]


def _pair(x: int | tuple[int, int]) -> tuple[int, int]:
    return (x, x) if isinstance(x, int) else (int(x[0]), int(x[1]))


class VisionTransformer(nn.Module):
    """ViT encoder with ``forward(x, keep=None) -> tokens [B, K or N, D]``.

    Args:
        img_size: input height/width (int or pair); non-square grids are fine.
        patch_size: patch side in pixels.
        embed_dim, depth, num_heads, mlp_ratio: the transformer shape.
        qkv_bias: bias on the attention projections.
        drop_path: stochastic-depth rate, linearly increasing over the blocks.
        num_frames, tubelet_size: video input (``tubelet_size > 1``): frames per clip and per tubelet.
        rescale_init: divide residual output projections by sqrt(2 * layer) after init.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        in_chans: int = 3,
        num_frames: int = 1,
        tubelet_size: int = 1,
        rescale_init: bool = False,
    ):
        super().__init__()
        self.img_size = _pair(img_size)
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.depth = depth
        self.num_frames = num_frames
        self.tubelet_size = tubelet_size
        self.patch_embed = PatchEmbed(patch_size, embed_dim, in_chans, tubelet_size)
        shape = (num_frames, *self.img_size) if tubelet_size > 1 else self.img_size
        self.grid_size: tuple[int, ...] = self.patch_embed.grid(shape)
        self.num_patches = math.prod(self.grid_size)
        # Not persistent: the table is a function of the grid, so checkpoints stay small and a model
        # loads at any resolution.
        self.register_buffer("pos_embed", self._pos_table(self.grid_size), persistent=False)
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]  # stochastic depth grows with depth
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, qkv_bias, r) for r in rates)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.apply(init_weights)
        if rescale_init:
            rescale_residual_branches(self.blocks)

    def _pos_table(self, grid: tuple[int, ...]) -> torch.Tensor:
        table = sincos_2d(self.embed_dim, grid) if len(grid) == 2 else sincos_3d(self.embed_dim, grid)  # type: ignore[arg-type]
        return table.unsqueeze(0)

    def config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this model (saved beside exported weights)."""
        return {
            "img_size": list(self.img_size),
            "patch_size": self.patch_size,
            "embed_dim": self.embed_dim,
            "depth": self.depth,
            "num_heads": self.num_heads,
            "mlp_ratio": self.blocks[0].mlp.fc1.out_features / self.embed_dim,
            "qkv_bias": self.blocks[0].attn.qkv.bias is not None,
            "num_frames": self.num_frames,
            "tubelet_size": self.tubelet_size,
        }

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Patch embedding plus position table: ``[B, N, D]`` tokens in raster order."""
        grid = self.patch_embed.grid(x.shape[2:])
        tokens = self.patch_embed(x)
        pos = self.pos_embed if grid == self.grid_size else self._pos_table(grid).to(tokens.device)
        return tokens + pos.to(tokens.dtype)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Encodes ``x``; with ``keep: LongTensor[B, K]`` only those tokens enter the blocks."""
        tokens = self.embed(x)
        if keep is not None:
            tokens = gather_tokens(tokens, keep)
        for blk in self.blocks:
            tokens = blk(tokens)
        return self.norm(tokens)


def build_vit(arch: str, img_size: int | tuple[int, int], patch_size: int, **kwargs: Any) -> VisionTransformer:
    """A :class:`VisionTransformer` from a preset name (``vit_tiny`` ... ``vit_giant``)."""
    spec = vit_spec(arch)
    return VisionTransformer(img_size=img_size, patch_size=patch_size, **asdict(spec), **kwargs)
