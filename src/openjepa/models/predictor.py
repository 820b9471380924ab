"""The I-JEPA predictor: a narrow ViT that maps context tokens to features at target positions.

Each target block is its own sequence ``[context tokens, mask tokens of block k]``: the batch is repeated
once per block, so blocks never see each other. A conditioning module (TC-JEPA's text conditioner) can
be plugged in; it is called after every predictor block with the running token sequence.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from openjepa.models.layers import Block, init_weights, rescale_residual_branches
from openjepa.models.pos_embed import sincos_2d, sincos_3d


class Conditioner(Protocol):
    """What the predictor needs from a conditioning module (e.g. TC-JEPA's text conditioner).

    ``prepare`` turns the method's conditioning input (caption embeddings, ...) into per-sequence state,
    knowing that every sample's sequence is repeated ``repeats`` times (once per target block, sample
    major). ``__call__(layer, tokens, state)`` returns the conditioned tokens after predictor block
    ``layer``; a conditioner that skips a layer returns ``tokens`` unchanged.
    """

    def prepare(self, cond: Any, repeats: int) -> Any: ...

    def __call__(self, layer: int, tokens: torch.Tensor, state: Any) -> torch.Tensor: ...


class Predictor(nn.Module):
    """Narrow ViT predictor.

    Args:
        grid_size: the encoder's token grid ((H, W) or (T, H, W)).
        embed_dim: encoder width D (input and output of the predictor).
        pred_dim: predictor width (384 in I-JEPA).
        depth, num_heads, mlp_ratio, qkv_bias, drop_path: the transformer shape.
        conditioner: optional module called after every block (see :class:`Conditioner`).
        rescale_init: divide residual output projections by sqrt(2 * layer) after init.
    """

    def __init__(
        self,
        grid_size: tuple[int, ...],
        embed_dim: int,
        pred_dim: int = 384,
        depth: int = 6,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        conditioner: nn.Module | None = None,
        rescale_init: bool = False,
    ):
        super().__init__()
        self.grid_size = tuple(grid_size)
        self.embed_dim = embed_dim
        self.pred_dim = pred_dim
        self.embed = nn.Linear(embed_dim, pred_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, pred_dim))
        table = sincos_2d(pred_dim, grid_size) if len(grid_size) == 2 else sincos_3d(pred_dim, grid_size)  # type: ignore[arg-type]
        self.register_buffer("pos_embed", table, persistent=False)
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]  # stochastic depth grows with depth
        self.blocks = nn.ModuleList(Block(pred_dim, num_heads, mlp_ratio, qkv_bias, r) for r in rates)
        self.norm = nn.LayerNorm(pred_dim, eps=1e-6)
        self.proj = nn.Linear(pred_dim, embed_dim)
        self.apply(init_weights)
        nn.init.trunc_normal_(self.mask_token, std=0.02, a=-0.04, b=0.04)
        if rescale_init:
            rescale_residual_branches(self.blocks)
        # Assigned after init so the conditioner keeps its own initialisation.
        self.conditioner = conditioner

    def forward(
        self,
        ctx: torch.Tensor,
        ctx_idx: torch.Tensor,
        tgt_idx: torch.Tensor,
        cond: Any = None,
        return_state: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """Predicts target features.

        Args:
            ctx: context-encoder tokens ``[B, Kc, D]``.
            ctx_idx: their patch indices ``[B, Kc]``.
            tgt_idx: target patch indices ``[B, T, Kt]`` (T target blocks).
            cond: conditioning input handed to the conditioner (ignored without one).
            return_state: also return the conditioner's per-forward state (for its regularizers).

        Returns:
            Predicted features ``[B, T, Kt, D]`` (and the conditioner state when asked).
        """
        b, num_ctx = ctx_idx.shape
        _, t, kt = tgt_idx.shape
        x = self.embed(ctx) + self.pos_embed[ctx_idx].to(ctx.dtype)
        x = x.repeat_interleave(t, dim=0)  # [B*T, Kc, d], sample-major
        mask = self.mask_token.to(x.dtype) + self.pos_embed[tgt_idx.reshape(b * t, kt)].to(x.dtype)
        x = torch.cat([x, mask], dim=1)
        state, attn_mask, num_prefix = None, None, 0
        if self.conditioner is not None:
            state = self.conditioner.prepare(cond, repeats=t)
            # Some conditioners (caption tokens appended to the sequence) add tokens before the blocks.
            prefix = self.conditioner.prefix(state) if hasattr(self.conditioner, "prefix") else None
            if prefix is not None:
                tokens, key_mask = prefix
                num_prefix = tokens.shape[1]
                x = torch.cat([tokens.to(x.dtype), x], dim=1)
                keep = torch.ones(x.shape[0], x.shape[1] - num_prefix, dtype=torch.bool, device=x.device)
                attn_mask = torch.cat([key_mask, keep], dim=1)[:, None, None, :]
        for layer, blk in enumerate(self.blocks):
            x = blk(x, attn_mask)
            if self.conditioner is not None:
                x = self.conditioner(layer, x, state)
        x = self.proj(self.norm(x[:, num_prefix + num_ctx :]))
        out = x.reshape(b, t, kt, self.embed_dim)
        return (out, state) if return_state else out
