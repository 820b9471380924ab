"""Vision Transformer encoder for JEPA: no class token, fixed positions, ``forward(x, keep)``.

The encoder takes images ``[B, 3, H, W]`` or, when built with ``num_frames > 1``, video clips
``[B, 3, T, H, W]`` cut into ``tubelet x patch x patch`` tubelets. Video is an explicit choice made at
construction, never inferred from an input size. The encoder embeds patches, adds the position table,
keeps only the tokens listed in ``keep`` (gathering them, so dropped tokens cost nothing), and runs the
pre-norm blocks and a final LayerNorm. With rotary positions (``pos="rope"``) no table is added: every
block rotates its queries and keys by the grid coordinates of the tokens it sees (the kept ones).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from openjepa.models.layers import (
    Block,
    ConvPatchEmbed2D,
    HMLPPatchEmbed2D,
    PatchEmbed2D,
    PatchEmbed3D,
    gather_tokens,
    init_weights,
    rescale_residual_branches,
)
from openjepa.models.pos_embed import position_table
from openjepa.models.rope import ROPE_VARIANTS, RotaryEmbedding

# How token positions enter the model: a fixed sin-cos table computed from the grid (openjepa's own
# encoders), a table stored with the weights (encoders converted from other code bases, whose tables
# follow their own conventions and must be used as they are), or rotary embeddings in every attention
# layer (V-JEPA 2, SALT; "rope_vjepa2" reproduces the released V-JEPA 2 weights, see models/rope.py).
POSITION_KINDS = ("sincos", "stored", *ROPE_VARIANTS)

# How pixels become tokens: one linear projection per patch (ViT, every published JEPA checkpoint), the
# patch-local hierarchical MLP of layers.HMLPPatchEmbed2D, or the overlapping convolutions of
# layers.ConvPatchEmbed2D (images only).
STEMS = ("linear", "hmlp", "conv")
_STEM_CLASSES = {"linear": PatchEmbed2D, "hmlp": HMLPPatchEmbed2D, "conv": ConvPatchEmbed2D}


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


def _pair(x: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    return (x, x) if isinstance(x, int) else (int(x[0]), int(x[1]))


class VisionTransformer(nn.Module):
    """ViT encoder with ``forward(x, keep=None) -> tokens [B, K or N, D]``.

    Args:
        img_size: input height/width (int or pair); non-square grids are fine.
        patch_size: patch side in pixels.
        embed_dim, depth, num_heads, mlp_ratio: the transformer shape.
        qkv_bias: bias on the attention projections.
        drop_path: stochastic-depth rate, linearly increasing over the blocks.
        in_chans: input channels.
        num_frames: frames per clip; ``> 1`` makes a video encoder (3-D tubelets), ``1`` an image encoder.
        tubelet_size: frames per tubelet (video only).
        pos: ``"sincos"`` (fixed table computed for any grid), ``"stored"`` (a table kept in the weights,
            for converted checkpoints; a grid other than the stored one is interpolated), ``"rope"``
            (rotary positions in every attention layer, any grid) or ``"rope_vjepa2"`` (the rotary variant
            the released V-JEPA 2 weights need; see :mod:`openjepa.models.rope`).
        rescale_init: divide residual output projections by sqrt(2 * layer) after init.
        norm_eps: LayerNorm epsilon.
        stem: ``"linear"`` (one projection per patch), ``"hmlp"`` (a three-layer patch-local MLP, see
            :class:`~openjepa.models.layers.HMLPPatchEmbed2D`) or ``"conv"`` (overlapping 4x4 stride-2 convolutions,
            see :class:`~openjepa.models.layers.ConvPatchEmbed2D`); the last two for images only.
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
        tubelet_size: int = 2,
        pos: str = "sincos",
        rescale_init: bool = False,
        norm_eps: float = 1e-6,
        stem: str = "linear",
    ):
        super().__init__()
        if num_frames < 1:
            raise ValueError(f"num_frames={num_frames} must be >= 1 (1: images, > 1: video clips)")
        if pos not in POSITION_KINDS:
            raise ValueError(f"pos={pos!r}: choose one of {', '.join(POSITION_KINDS)}")
        if stem not in STEMS:
            raise ValueError(f"stem={stem!r} (model.stem): choose one of {', '.join(STEMS)}")
        if stem != "linear" and num_frames > 1:
            raise ValueError(f"stem={stem!r} (model.stem) is for images; video encoders use the linear tubelet stem")
        self.stem = stem
        self.img_size = _pair(img_size)
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.depth = depth
        self.in_chans = in_chans
        self.num_frames = num_frames
        self.is_video = num_frames > 1
        self.tubelet_size = tubelet_size if self.is_video else 1
        self.pos = pos
        self.norm_eps = norm_eps
        if self.is_video:
            if num_frames % tubelet_size:
                raise ValueError(
                    f"num_frames={num_frames} is not divisible by the tubelet size {tubelet_size}: choose "
                    "data.num_frames as a multiple of model.tubelet_size"
                )
            self.patch_embed: nn.Module = PatchEmbed3D(patch_size, embed_dim, in_chans, tubelet_size)
            shape: tuple[int, ...] = (num_frames, *self.img_size)
        else:
            self.patch_embed = _STEM_CLASSES[stem](patch_size, embed_dim, in_chans)
            shape = self.img_size
        self.grid_size: tuple[int, ...] = self.patch_embed.grid(shape)
        self.num_patches = math.prod(self.grid_size)
        if pos in ROPE_VARIANTS:
            self.register_buffer("pos_embed", None)
        else:
            table = position_table(embed_dim, self.grid_size).unsqueeze(0)
            # A computed table is not persistent: it is a function of the grid, so checkpoints stay small and
            # a model loads at any resolution. A stored one is part of the weights.
            self.register_buffer("pos_embed", table, persistent=pos == "stored")
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]  # stochastic depth grows with depth
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, qkv_bias, r, norm_eps) for r in rates)
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        # Built after the blocks, so that heads not dividing the width are reported by the attention layer.
        self.rope = RotaryEmbedding(embed_dim // num_heads, pos) if pos in ROPE_VARIANTS else None
        self.apply(init_weights)
        if hasattr(self.patch_embed, "reset_parameters"):  # a deep stem keeps its own, scale-preserving init
            self.patch_embed.reset_parameters()
        if rescale_init:
            rescale_residual_branches(self.blocks)

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
            "in_chans": self.in_chans,
            "num_frames": self.num_frames,
            "tubelet_size": self.tubelet_size,
            "pos": self.pos,
            "norm_eps": self.norm_eps,
            "stem": self.stem,
        }

    def _positions(self, grid: tuple[int, ...], device: torch.device) -> torch.Tensor:
        if grid == self.grid_size:
            return self.pos_embed
        if self.pos == "sincos":
            return position_table(self.embed_dim, grid).unsqueeze(0).to(device)
        return interpolate_table(self.pos_embed, self.grid_size, grid)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Patch embedding plus position table (none with rotary positions): ``[B, N, D]`` tokens in raster order."""
        grid = self.patch_embed.grid(x.shape[2:])
        tokens = self.patch_embed(x)
        if self.rope is not None:
            return tokens
        return tokens + self._positions(grid, tokens.device).to(tokens.dtype)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Encodes ``x``; with ``keep: LongTensor[B, K]`` only those tokens enter the blocks.

        With a stem whose kernels overlap (``stem="conv"``) the pixels of the dropped patches are zeroed first,
        so that the kept tokens see nothing of what a masked method hides from them.
        """
        if keep is not None and self.patch_embed.overlaps:
            x = x * self._kept_pixels(keep, x.shape[-2:]).to(x.dtype)
        tokens = self.embed(x)
        rope = None
        if self.rope is not None:
            # Tables for the tokens present, computed once and shared by every block.
            index = keep if keep is not None else torch.arange(tokens.shape[1], device=tokens.device)
            rope = self.rope(index, self.patch_embed.grid(x.shape[2:]))
        if keep is not None:
            tokens = gather_tokens(tokens, keep)
        for blk in self.blocks:
            tokens = blk(tokens, rope=rope)
        return self.norm(tokens)


    def _kept_pixels(self, keep: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
        """``[B, 1, H, W]`` mask: 1 on the pixels of the patches listed in ``keep``, 0 elsewhere."""
        grid = self.patch_embed.grid(tuple(size))
        kept = torch.zeros(keep.shape[0], math.prod(grid), device=keep.device)
        kept.scatter_(1, keep, 1.0)
        p = self.patch_size
        return kept.reshape(-1, 1, *grid).repeat_interleave(p, dim=2).repeat_interleave(p, dim=3)


def interpolate_table(table: torch.Tensor, grid: tuple[int, ...], new_grid: tuple[int, ...]) -> torch.Tensor:
    """Resizes a stored ``[1, prod(grid), D]`` position table to ``new_grid`` (bicubic in 2-D, trilinear in 3-D)."""
    import torch.nn.functional as F

    d = table.shape[-1]
    volume = table.reshape(1, *grid, d).movedim(-1, 1).float()
    mode = "bicubic" if len(grid) == 2 else "trilinear"
    out = F.interpolate(volume, size=tuple(new_grid), mode=mode, align_corners=False)
    return out.movedim(1, -1).reshape(1, -1, d).to(table.dtype)


def build_vit(arch: str, img_size: int | tuple[int, int], patch_size: int, **kwargs: Any) -> VisionTransformer:
    """A :class:`VisionTransformer` from a preset name (``vit_tiny`` ... ``vit_giant``)."""
    spec = vit_spec(arch)
    return VisionTransformer(img_size=img_size, patch_size=patch_size, **asdict(spec), **kwargs)
