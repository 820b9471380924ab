"""Transformer building blocks shared by the encoder, the predictor and the decoders."""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from openjepa.models.rope import apply_rope
from openjepa.models.stochastic import sample_uniform


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample with probability ``p``.

    The per-sample draws come from :func:`~openjepa.models.stochastic.sample_uniform`: keyed by sample during
    training steps (so DDP, accumulation and resume give the same masks as one process), torch's RNG otherwise.
    """

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        u = sample_uniform(x.shape[0], x.device)
        mask = (u < keep).to(x.dtype).reshape((x.shape[0],) + (1,) * (x.ndim - 1))
        return x * mask / keep


class Attention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention`` (flash / memory-efficient).

    Queries and keys are rotated first when the caller passes rotary tables (:mod:`openjepa.models.rope`).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by the number of heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Attends ``x: [B, N, D]``; ``rope`` holds the tokens' rotary ``(cos, sin)`` tables, if any."""
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
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
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), attn_mask, rope))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class _ImageStem(nn.Module):
    """What every image stem shares: the patch side, the token grid and the input check.

    ``overlaps`` says whether a token reads pixels outside its own patch (then a masked encoder must blank the
    dropped patches before the stem, see ``VisionTransformer.forward``).
    """

    overlaps = False

    def __init__(self, patch_size: int):
        super().__init__()
        self.patch_size = patch_size

    def grid(self, shape: torch.Size | tuple[int, ...]) -> tuple[int, int]:
        """The ``(H/p, W/p)`` token grid of an input whose last two sizes are ``(H, W)``."""
        return _grid(tuple(shape[-2:]), (self.patch_size, self.patch_size))  # type: ignore[return-value]

    @staticmethod
    def _check(x: torch.Tensor) -> None:
        if x.ndim != 4:
            raise ValueError(f"an image encoder takes [B, 3, H, W] inputs, got shape {tuple(x.shape)}")


class PatchEmbed2D(_ImageStem):
    """Non-overlapping ``patch x patch`` image patches projected to the model width (a strided 2-D conv).

    Input ``[B, C, H, W]``; output tokens ``[B, (H/p)*(W/p), D]`` in raster order.
    """

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3):
        super().__init__(patch_size)
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self.proj(x).flatten(2).transpose(1, 2)


class HMLPPatchEmbed2D(_ImageStem):
    """A hierarchical-MLP patch stem: three patch-local layers instead of one linear projection.

    ``patch x patch`` patches go through a ``patch/4``-strided conv, then two 2x2-strided convs, with a
    LayerNorm over channels and a GELU between them (the "hMLP" stem of DeiT III). Every kernel equals its
    stride, so each token still depends on the pixels of its own patch only: masking the tokens afterwards
    hides exactly the masked patches, as with the linear stem (a convolutional stem with overlapping kernels
    would leak the pixels of masked patches into their visible neighbours). What it adds is a nonlinear
    reading of each patch before the transformer, which helps ViTs trained on little data (DeiT III).

    Same interface as :class:`PatchEmbed2D`; the patch side must be a multiple of 4.
    """

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3):
        if patch_size % 4:
            raise ValueError(f"the hmlp stem needs a patch size divisible by 4, got {patch_size} (model.patch_size)")
        super().__init__(patch_size)
        hidden = max(embed_dim // 4, 16)
        first = patch_size // 4
        self.convs = nn.ModuleList(
            [
                nn.Conv2d(in_chans, hidden, first, stride=first),
                nn.Conv2d(hidden, hidden, 2, stride=2),
                nn.Conv2d(hidden, embed_dim, 2, stride=2),
            ]
        )
        self.norms = nn.ModuleList([nn.LayerNorm(hidden), nn.LayerNorm(hidden)])
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        for conv, norm in zip(self.convs[:-1], self.norms):
            x = conv(x)
            x = self.act(norm(x.movedim(1, -1)).movedim(-1, 1))  # LayerNorm per position: stays patch-local
        return self.convs[-1](x).flatten(2).transpose(1, 2)


class ConvPatchEmbed2D(_ImageStem):
    """A convolutional stem: ``log2(patch)`` 4x4 stride-2 convolutions (padding 1) with GELU between them.

    Widths double up to the model width (``D/4, D/2, D`` for 8 px patches), so the cost stays a few percent of
    the transformer's. The kernels overlap: a token reads its patch and a margin around it (7 px on every side
    for 8 px patches; an even kernel keeps the margin symmetric, where a 3x3 one would look up and left only).
    That is what lets a small ViT learn the shapes of small objects from a few thousand images (early
    convolutions, Xiao et al. 2021; docs/RESULTS.md, section 16), and what a masked encoder must not see:
    :meth:`VisionTransformer.forward` zeroes the pixels of every dropped patch before this stem when it is
    given ``keep`` (:attr:`overlaps` is True), so kept tokens never read a masked pixel.

    Same interface as :class:`PatchEmbed2D`; the patch side must be a power of two. The training-FLOPs estimate
    (6 x parameters x tokens, :mod:`openjepa.methods.flops`) counts the stem's weights once per token, but its
    first two layers run 16 and 4 times per 8 px patch: for ``vit_pico`` / 8 the encoder's true count is ~10 %
    above the estimate (0.84 M multiply-adds per token, not 0.76 M); runs compared at matched FLOPs should
    share the stem.
    """

    overlaps = True

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3):
        layers = int(math.log2(patch_size)) if patch_size >= 2 else 0
        if patch_size < 2 or 2**layers != patch_size:
            raise ValueError(f"the conv stem needs a power-of-two patch size, got {patch_size} (model.patch_size)")
        super().__init__(patch_size)
        widths = [in_chans] + [max(embed_dim // 2 ** (layers - 1 - i), 8) for i in range(layers - 1)] + [embed_dim]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 4, stride=2, padding=1) for a, b in itertools.pairwise(widths))
        self.act = nn.GELU()

    def reset_parameters(self) -> None:
        """He-normal kernels (fan in), zero biases, the last one at unit gain: the stem keeps the input's scale.

        The transformer's init (truncated normal, std 0.02) would shrink the signal about 10x per layer: after
        three layers the patch content is ~1% of the position table's scale, and a JEPA target encoder's tokens
        then carry their position only, which the predictor learns to copy (the I-JEPA loss fell to 3e-4
        within 96 steps of the scenes demo, docs/RESULTS.md section 16). The encoder calls this after
        its own init.
        """
        for i, conv in enumerate(self.convs):
            last = i == len(self.convs) - 1
            nn.init.kaiming_normal_(conv.weight, nonlinearity="linear" if last else "relu")
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        for i, conv in enumerate(self.convs):
            x = conv(x) if i == 0 else conv(self.act(x))
        return x.flatten(2).transpose(1, 2)


class PatchEmbed3D(nn.Module):
    """Non-overlapping ``tubelet x patch x patch`` video tubelets projected to the model width (3-D conv).

    Input ``[B, C, T, H, W]``; output tokens ``[B, (T/t)*(H/p)*(W/p), D]`` in time-major raster order.
    """

    overlaps = False

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3, tubelet_size: int = 2):
        super().__init__()
        self.patch_size = patch_size
        self.tubelet_size = tubelet_size
        k = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(in_chans, embed_dim, k, stride=k)

    def grid(self, shape: torch.Size | tuple[int, ...]) -> tuple[int, int, int]:
        """The ``(T/t, H/p, W/p)`` token grid of an input whose last three sizes are ``(T, H, W)``."""
        steps = (self.tubelet_size, self.patch_size, self.patch_size)
        return _grid(tuple(shape[-3:]), steps)  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            raise ValueError(f"a video encoder takes [B, 3, T, H, W] clips, got shape {tuple(x.shape)}")
        return self.proj(x).flatten(2).transpose(1, 2)


def _grid(sizes: tuple[int, ...], steps: tuple[int, ...]) -> tuple[int, ...]:
    for s, p in zip(sizes, steps):
        if s % p:
            raise ValueError(f"input size {tuple(sizes)} is not divisible by the patch/tubelet size {steps}")
    return tuple(s // p for s, p in zip(sizes, steps))


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
