"""Transformer building blocks shared by the encoder, the predictor and the decoders."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample with probability ``p``."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Attention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention`` (flash / memory-efficient)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by the number of heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=attn_mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """Two-layer perceptron with GELU."""

    def __init__(self, dim: int, hidden: int, out: int | None = None):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out or dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_path: float = 0.0
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), attn_mask))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Non-overlapping patches (images) or tubelets (video) projected to the model width.

    ``tubelet_size == 1`` uses a 2-D convolution on ``[B, C, H, W]``; a larger value a 3-D convolution on
    ``[B, C, T, H, W]`` (video). Output tokens are in raster order (time-major for video).
    """

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3, tubelet_size: int = 1):
        super().__init__()
        self.patch_size = patch_size
        self.tubelet_size = tubelet_size
        if tubelet_size == 1:
            self.proj: nn.Module = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)
        else:
            k = (tubelet_size, patch_size, patch_size)
            self.proj = nn.Conv3d(in_chans, embed_dim, k, stride=k)

    def grid(self, shape: torch.Size | tuple[int, ...]) -> tuple[int, ...]:
        """The token grid for an input of the given shape (without batch and channels)."""
        sizes = tuple(shape[-2:]) if self.tubelet_size == 1 else tuple(shape[-3:])
        steps = (self.patch_size,) * 2 if self.tubelet_size == 1 else (self.tubelet_size, *(self.patch_size,) * 2)
        for s, p in zip(sizes, steps):
            if s % p:
                raise ValueError(f"input size {tuple(sizes)} is not divisible by the patch/tubelet size {steps}")
        return tuple(s // p for s, p in zip(sizes, steps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """Truncated-normal Linear/conv weights, zero biases, LayerNorm (1, 0): the I-JEPA init."""
    if isinstance(module, (nn.Linear, nn.Conv2d, nn.Conv3d)):
        nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        if module.weight is not None:
            nn.init.ones_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def rescale_residual_branches(blocks: nn.ModuleList) -> None:
    """Divides each block's residual output projections by sqrt(2 * layer) (GPT-2 style)."""
    for layer, blk in enumerate(blocks, start=1):
        blk.attn.proj.weight.data.div_((2.0 * layer) ** 0.5)
        blk.mlp.fc2.weight.data.div_((2.0 * layer) ** 0.5)


def gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Selects tokens: ``x[b, idx[b, k]]`` for ``x: [B, N, D]`` and ``idx: [B, K]`` -> ``[B, K, D]``."""
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
