"""The I-JEPA predictor: a narrow ViT that maps context tokens to features at target positions.

Each target block is its own sequence ``[context tokens, mask tokens of block k]``: the batch is repeated
once per block, so blocks never see each other. The predictor holds one learned mask token per mask
generator (I-JEPA: one; V-JEPA: one for its short-range and one for its long-range masks); the caller says
which one a call uses. Its output width defaults to the encoder's, but can be another network's (SALT
predicts a frozen teacher of any width). A conditioning module (TC-JEPA's text conditioner) can be plugged
in; it is called after every predictor block with the running token sequence.

Positions enter as the predictor's own fixed sin-cos table (I-JEPA, V-JEPA) or, with ``pos="rope"``, as
rotary embeddings in every block (V-JEPA 2): context and mask tokens then rotate by their grid coordinates
and nothing is added to them; tokens without a grid position (a conditioner's prefix) are not rotated.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from openjepa.models.layers import Block, init_weights, rescale_residual_branches
from openjepa.models.pos_embed import position_table
from openjepa.models.rope import ROPE_VARIANTS, RotaryEmbedding, concat_tables, identity_tables


class Conditioner(Protocol):
    """What the predictor needs from a conditioning module (e.g. TC-JEPA's text conditioner).

    ``prepare`` turns the method's conditioning input (caption embeddings, ...) into per-sequence state,
    knowing that every sample's sequence is repeated ``repeats`` times (once per target block, sample
    major). ``__call__(layer, tokens, state)`` returns the conditioned tokens after predictor block
    ``layer``; a conditioner that skips a layer returns ``tokens`` unchanged.
    """

    def prepare(self, cond: Any, repeats: int) -> Any: ...

    def prefix(self, state: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Tokens (and their key mask) put before the sequence, or None (most conditioners)."""
        ...

    def __call__(self, layer: int, tokens: torch.Tensor, state: Any) -> torch.Tensor: ...


class Predictor(nn.Module):
    """Narrow ViT predictor.

    Args:
        grid_size: the encoder's token grid ((H, W) or (T, H, W)).
        embed_dim: encoder width D (input of the predictor).
        pred_dim: predictor width (384 in I-JEPA).
        depth, num_heads, mlp_ratio, qkv_bias, drop_path: the transformer shape.
        conditioner: optional module called after every block (see :class:`Conditioner`).
        rescale_init: divide residual output projections by sqrt(2 * layer) after init.
        num_mask_tokens: learned mask tokens, one per mask generator.
        out_dim: width of the predicted features (default ``embed_dim``; SALT: the teacher's width).
        zero_mask_tokens: initialize the mask tokens to zero (V-JEPA) instead of truncated normal (I-JEPA).
        pos: ``"sincos"`` (a fixed table added to the tokens) or a rotary kind (``"rope"``, ``"rope_vjepa2"``:
            see :mod:`openjepa.models.rope`), normally the encoder's.
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
        num_mask_tokens: int = 1,
        out_dim: int | None = None,
        zero_mask_tokens: bool = False,
        pos: str = "sincos",
    ):
        super().__init__()
        if pos not in ("sincos", *ROPE_VARIANTS):
            raise ValueError(f"predictor pos={pos!r}: choose one of sincos, {', '.join(ROPE_VARIANTS)}")
        if num_mask_tokens < 1:
            raise ValueError(f"num_mask_tokens={num_mask_tokens}: a predictor needs at least one mask token")
        self.grid_size = tuple(grid_size)
        self.embed_dim = embed_dim
        self.pred_dim = pred_dim
        self.out_dim = out_dim or embed_dim
        self.embed = nn.Linear(embed_dim, pred_dim)
        # [n, 1, d]: 3-D like the reference's mask token, so it stays in the weight-decay group.
        self.mask_tokens = nn.Parameter(torch.zeros(num_mask_tokens, 1, pred_dim))
        self.pos = pos
        if pos in ROPE_VARIANTS:
            self.register_buffer("pos_embed", None)
        else:
            self.register_buffer("pos_embed", position_table(pred_dim, self.grid_size), persistent=False)
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]  # stochastic depth grows with depth
        self.blocks = nn.ModuleList(Block(pred_dim, num_heads, mlp_ratio, qkv_bias, r) for r in rates)
        self.norm = nn.LayerNorm(pred_dim, eps=1e-6)
        # After the blocks, so that heads not dividing the width are reported by the attention layer.
        self.rope = RotaryEmbedding(pred_dim // num_heads, pos) if pos in ROPE_VARIANTS else None
        self.proj = nn.Linear(pred_dim, self.out_dim)
        self.apply(init_weights)
        if not zero_mask_tokens:
            nn.init.trunc_normal_(self.mask_tokens, std=0.02, a=-0.04, b=0.04)
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
        mask_index: int = 0,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """Predicts target features.

        Args:
            ctx: context-encoder tokens ``[B, Kc, D]``.
            ctx_idx: their patch indices ``[B, Kc]``.
            tgt_idx: target patch indices ``[B, T, Kt]`` (T target blocks).
            cond: conditioning input handed to the conditioner (ignored without one).
            return_state: also return the conditioner's per-forward state (for its regularizers).
            mask_index: which learned mask token (the index of the mask generator that made ``tgt_idx``).

        Returns:
            Predicted features ``[B, T, Kt, out_dim]`` (and the conditioner state when asked).
        """
        b, num_ctx = ctx_idx.shape
        _, t, kt = tgt_idx.shape
        rope = None
        if self.rope is None:
            x = self.embed(ctx) + self.pos_embed[ctx_idx].to(ctx.dtype)
            x = x.repeat_interleave(t, dim=0)  # [B*T, Kc, d], sample-major
            token = self.mask_tokens[mask_index].to(x.dtype)
            mask = token + self.pos_embed[tgt_idx.reshape(b * t, kt)].to(x.dtype)
        else:
            x = self.embed(ctx).repeat_interleave(t, dim=0)
            mask = self.mask_tokens[mask_index].to(x.dtype).expand(b * t, kt, -1)
            index = torch.cat([ctx_idx.repeat_interleave(t, dim=0), tgt_idx.reshape(b * t, kt)], dim=1)
            rope = self.rope(index, self.grid_size)
        x = torch.cat([x, mask], dim=1)
        state, attn_mask, num_prefix = None, None, 0
        if self.conditioner is not None:
            state = self.conditioner.prepare(cond, repeats=t)
            # Some conditioners (caption tokens appended to the sequence) add tokens before the blocks.
            prefix = self.conditioner.prefix(state)
            if prefix is not None:
                tokens, key_mask = prefix
                num_prefix = tokens.shape[1]
                x = torch.cat([tokens.to(x.dtype), x], dim=1)
                keep = torch.ones(x.shape[0], x.shape[1] - num_prefix, dtype=torch.bool, device=x.device)
                attn_mask = torch.cat([key_mask, keep], dim=1)[:, None, None, :]
                if rope is not None:
                    rope = concat_tables(identity_tables(rope, num_prefix), rope)
        for layer, blk in enumerate(self.blocks):
            x = blk(x, attn_mask, rope)
            if self.conditioner is not None:
                x = self.conditioner(layer, x, state)
        x = self.proj(self.norm(x[:, num_prefix + num_ctx :]))
        out = x.reshape(b, t, kt, self.out_dim)
        return (out, state) if return_state else out
