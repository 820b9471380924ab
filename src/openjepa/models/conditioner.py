"""TC-JEPA's fine-grained text conditioner and its sparsity / consistency regularizers.

At each conditioned predictor layer every predictor token (context and mask tokens) cross-attends to the
word embeddings of each of the image's N captions (shared weights, batched over captions):

    a_n = MHA(Q = W_Q q, K = W_K t_n, V = W_V t_n)      padded words never attended
    q_n = q + a_n                                        residual cross-attention
    q   = pool_n q_n   (element-wise max; padded captions excluded)
    q   = LayerNorm(q + MLP(q))                          "then a two-layer MLP and LayerNorm"

``mlp="per_caption"`` runs the MLP + LayerNorm on every q_n before pooling instead (the other reading of the
paper); it costs N times the MLP on every predictor token, so ``after_pool`` is the default.

"Sparse" attention comes from two penalties on the rectified cosine similarity between each projected query
Q_i and each projected word key K_s: O_i = max(cos(Q_i, K), 0) (padding words 0);
L_sparse = mean_i (1/L) Σ_l ||O_i^(l)||_1 and L_consistency = mean_i (1/L) Σ_l ||O_i^(l) − Ō_i||_1, each
averaged over the real captions. Ablation modes: ``adaln`` (scale/shift from a pooled caption embedding) and
``append`` (caption words appended to the predictor sequence).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from openjepa.models.layers import Mlp, init_weights


@dataclass
class ConditionState:
    """Per-forward state: the captions, their masks repeated per target block, what the regularizers need.

    ``text`` stays one copy per image: keys and values are projected once per image and only then repeated
    for the image's T target-block sequences (projecting repeated words would cost T times as much).
    """

    text: torch.Tensor  # [B, N, S, dt]
    word_mask: torch.Tensor  # [BT, N, S] True = real word
    caption_mask: torch.Tensor  # [BT, N] True = real caption
    repeats: int = 1  # T: predictor sequences per image
    sims: list[torch.Tensor] = field(default_factory=list)  # per conditioned layer: O [BT, N, L, S]
    entropies: list[torch.Tensor] = field(default_factory=list)  # per layer: mean attention entropy (detached)


def rectified_cosine(q: torch.Tensor, k: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
    """O = max(cos(q_i, k_s), 0) for ``q [BT, L, d]`` and ``k [BT, N, S, d]`` -> ``[BT, N, L, S]``.

    Padding words get 0.
    """
    qn = F.normalize(q.float(), dim=-1)
    kn = F.normalize(k.float(), dim=-1)
    cos = torch.einsum("bld,bnsd->bnls", qn, kn)
    return cos.clamp_min(0) * word_mask[:, :, None, :]


def center_words(k: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
    """Subtracts from each caption's keys ``[B, N, S, d]`` their mean over the caption's real words.

    Softmax attention does not change (every logit of a query moves by the same amount), but the rectified
    cosines do: with keys that sum to zero, every query has a positive dot product with some word, so the
    sparsity term can no longer be satisfied by pushing all similarities below zero ("dead conditioner");
    it has to make each token select few words, which is what it is for.
    """
    m = word_mask[..., None].to(k.dtype)
    mean = (k * m).sum(2, keepdim=True) / m.sum(2, keepdim=True).clamp_min(1)
    return (k - mean) * m


def sparsity_and_consistency(
    sims: Sequence[torch.Tensor], caption_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two TC-JEPA regularizers from the per-layer rectified similarities.

    Args:
        sims: one ``O [BT, N, L, S]`` per conditioned layer.
        caption_mask: ``[BT, N]``; padded captions do not count.

    Returns:
        ``(L_sparse, L_consistency)``: per caption, the mean over tokens i of (1/L) Σ_l ||O_i^(l)||_1 and of
        (1/L) Σ_l ||O_i^(l) − Ō_i||_1, then averaged over the real captions of the batch.
    """
    stack = torch.stack(list(sims))  # [Lc, BT, N, L, S]
    mean_o = stack.mean(0)
    sparse = stack.sum(-1).mean(0)  # (1/L) Σ_l ||O_i||_1 -> [BT, N, L]
    consistency = (stack - mean_o).abs().sum(-1).mean(0)
    w = caption_mask.float()
    denom = w.sum().clamp_min(1.0)
    per_caption_sparse = sparse.mean(-1)  # mean over tokens i -> [BT, N]
    per_caption_cons = consistency.mean(-1)
    return (per_caption_sparse * w).sum() / denom, (per_caption_cons * w).sum() / denom


class CrossAttentionLayer(nn.Module):
    """One conditioned layer: multi-head cross-attention to each caption, pooling, MLP + LayerNorm."""

    def __init__(
        self,
        dim: int,
        text_dim: int,
        heads: int,
        pooling: str,
        mlp: str,
        mlp_ratio: float = 4.0,
        qk_bias: bool = True,
        center_keys: bool = True,
    ):
        super().__init__()
        self.center_keys = center_keys
        if dim % heads:
            raise ValueError(f"conditioner width {dim} not divisible by text.heads={heads}")
        self.heads = heads
        self.pooling = pooling
        self.mlp_position = mlp
        # Queries are pre-normed like in other cross-attention blocks (the words arrive normed and projected
        # to the predictor width by TextConditioner.prepare).
        self.norm_q = nn.LayerNorm(dim, eps=1e-6)
        self.q = nn.Linear(dim, dim, bias=qk_bias)
        self.k = nn.Linear(text_dim, dim, bias=qk_bias)
        self.v = nn.Linear(text_dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def _mlp_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.mlp(x))

    def _pool(self, xs: torch.Tensor, caption_mask: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
        """Pools ``xs [BT, N, L, d]`` over captions; images without any caption keep ``fallback``."""
        m = caption_mask[:, :, None, None]
        if self.pooling == "max":
            pooled = xs.masked_fill(~m, float("-inf")).amax(1)
        else:
            pooled = (xs * m).sum(1) / m.sum(1).clamp_min(1)
        has_caption = caption_mask.any(1)[:, None, None]
        return torch.where(has_caption, pooled, fallback)

    def forward(self, x: torch.Tensor, state: ConditionState) -> torch.Tensor:
        bt, length, d = x.shape
        _, n, s, _ = state.text.shape
        h, dh = self.heads, d // self.heads
        text = state.text.to(x.dtype)
        q = self.q(self.norm_q(x))  # shared over captions: computed once
        k = self.k(text)  # [B, N, S, d], projected once per image
        if self.center_keys:
            k = center_words(k, state.word_mask[:: state.repeats])
        k = k.repeat_interleave(state.repeats, 0)  # [BT, N, S, d]
        v = self.v(text).repeat_interleave(state.repeats, 0)
        state.sims.append(rectified_cosine(q, k, state.word_mask))
        # Every caption keeps at least one attendable word so padded captions do not produce NaN rows; their
        # outputs are excluded from the pooling anyway.
        word_mask = state.word_mask.clone()
        word_mask[..., 0] |= ~state.caption_mask
        qh = q.view(bt, 1, length, h, dh).expand(bt, n, length, h, dh).reshape(bt * n, length, h, dh).transpose(1, 2)
        kh = k.reshape(bt * n, s, h, dh).transpose(1, 2)
        vh = v.reshape(bt * n, s, h, dh).transpose(1, 2)
        attn_mask = word_mask.reshape(bt * n, 1, 1, s)
        a = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=attn_mask)  # [BT*N, h, L, dh]
        a = self.proj(a.transpose(1, 2).reshape(bt, n, length, d))
        state.entropies.append(self._entropy(qh, kh, attn_mask))
        xs = x[:, None] + a  # residual cross-attention, per caption
        if self.mlp_position == "per_caption":
            return self._pool(self._mlp_norm(xs), state.caption_mask, self._mlp_norm(x))
        return self._mlp_norm(self._pool(xs, state.caption_mask, x))

    @torch.no_grad()
    def attention_weights(self, x: torch.Tensor, state: ConditionState) -> torch.Tensor:
        """Softmax attention of every token to every word, mean over heads: ``[BT, N, L, S]`` (for plots)."""
        bt, length, d = x.shape
        _, n, s, _ = state.text.shape
        h, dh = self.heads, d // self.heads
        q = self.q(self.norm_q(x)).view(bt, length, h, dh)
        k = self.k(state.text.to(x.dtype))
        if self.center_keys:
            k = center_words(k, state.word_mask[:: state.repeats])
        k = k.repeat_interleave(state.repeats, 0).view(bt, n, s, h, dh)
        logits = torch.einsum("blhd,bnshd->bnhls", q.float(), k.float()) / dh**0.5
        logits = logits.masked_fill(~state.word_mask[:, :, None, None, :], float("-inf"))
        return logits.softmax(-1).nan_to_num(0.0).mean(2)

    @torch.no_grad()
    def _entropy(self, qh: torch.Tensor, kh: torch.Tensor, attn_mask: torch.Tensor, rows: int = 64) -> torch.Tensor:
        """Mean attention entropy (nats) over a few sequences: a cheap signal of peaked vs uniform attention."""
        q, k, m = qh[:rows].float(), kh[:rows].float(), attn_mask[:rows]
        logits = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
        p = logits.masked_fill(~m, float("-inf")).softmax(-1)
        return -(p * torch.log(p.clamp_min(1e-12))).sum(-1).mean()


class AdaLNLayer(nn.Module):
    """Ablation: scale and shift every token from a pooled caption embedding (zero-initialised)."""

    def __init__(self, dim: int, text_dim: int):
        super().__init__()
        self.mod = nn.Sequential(nn.SiLU(), nn.Linear(text_dim, 2 * dim))
        nn.init.zeros_(self.mod[1].weight)
        nn.init.zeros_(self.mod[1].bias)

    def forward(self, x: torch.Tensor, state: ConditionState) -> torch.Tensor:
        t = state.repeats
        w = state.word_mask[::t, ..., None].to(x.dtype)  # one row per image
        per_caption = (state.text.to(x.dtype) * w).sum(2) / w.sum(2).clamp_min(1)  # [B, N, dt]
        c = state.caption_mask[::t, ..., None].to(x.dtype)
        pooled = (per_caption * c).sum(1) / c.sum(1).clamp_min(1)  # [B, dt]
        scale, shift = self.mod(pooled).repeat_interleave(t, 0).chunk(2, dim=-1)
        return x * (1 + scale[:, None]) + shift[:, None]


class TextConditioner(nn.Module):
    """The predictor's conditioning module (see :class:`openjepa.models.predictor.Conditioner`).

    Args:
        dim: predictor width.
        text_dim: width of the frozen text encoder's word embeddings.
        depth: number of predictor blocks.
        layers: which predictor layers are conditioned (None: all).
        heads: cross-attention heads.
        pooling: ``max`` (paper) or ``mean`` over captions.
        mlp: ``after_pool`` (cheap, default) or ``per_caption``.
        mode: ``xattn`` (TC-JEPA), ``adaln`` or ``append`` (the paper's weaker alternatives).
        qk_bias: biases on the query/key projections.
        center_keys: center each caption's keys over its words before the rectified cosines (see
            :func:`center_words`; the attention itself is unchanged).
    """

    def __init__(
        self,
        dim: int,
        text_dim: int,
        depth: int,
        layers: Sequence[int] | None = None,
        heads: int = 8,
        pooling: str = "max",
        mlp: str = "after_pool",
        mode: str = "xattn",
        qk_bias: bool = True,
        center_keys: bool = True,
    ):
        super().__init__()
        self.mode = mode
        self.layer_ids = list(range(depth)) if layers is None else sorted(set(layers))
        bad = [i for i in self.layer_ids if not 0 <= i < depth]
        if bad or not self.layer_ids:
            raise ValueError(f"text.layers={list(layers or [])}: layers must be in 0..{depth - 1} (predictor depth)")
        self.slot = {layer: i for i, layer in enumerate(self.layer_ids)}
        # Words are normed and projected to the predictor width once per image, shared by every layer: raw
        # sentence-encoder embeddings are large and share a common direction (uniform attention at the start
        # otherwise), and per-layer projections from the text width would cost T (blocks) x layers x more.
        self.text_norm = nn.LayerNorm(text_dim, eps=1e-6)
        self.text_proj = nn.Linear(text_dim, dim)
        if mode == "xattn":
            self.blocks = nn.ModuleList(
                CrossAttentionLayer(dim, dim, heads, pooling, mlp, qk_bias=qk_bias, center_keys=center_keys)
                for _ in self.layer_ids
            )
        elif mode == "adaln":
            self.blocks = nn.ModuleList(AdaLNLayer(dim, dim) for _ in self.layer_ids)
        elif mode == "append":
            self.blocks = nn.ModuleList()
            self.caption_embed = nn.Parameter(torch.zeros(1, 64, 1, dim))  # which caption a word came from
        else:
            raise ValueError(f"unknown text.mode={mode!r}: use xattn, adaln or append")
        self.apply(init_weights)
        for blk in self.blocks:
            if isinstance(blk, AdaLNLayer):  # keep the zero init of the modulation
                nn.init.zeros_(blk.mod[1].weight)
        if mode == "append":
            nn.init.trunc_normal_(self.caption_embed, std=0.02, a=-0.04, b=0.04)

    def prepare(self, cond: dict[str, torch.Tensor], repeats: int) -> ConditionState:
        """Repeats the caption tensors once per target block (sample-major, like the predictor)."""
        text, word_mask, caption_mask = cond["text_emb"], cond["text_mask"], cond["caption_mask"]
        if text.ndim != 4 or word_mask.shape != text.shape[:3] or caption_mask.shape != text.shape[:2]:
            raise ValueError(
                "text conditioning expects text_emb [B,N,S,dt], text_mask [B,N,S], caption_mask [B,N]; got "
                f"{tuple(text.shape)}, {tuple(word_mask.shape)}, {tuple(caption_mask.shape)}"
            )
        word_mask = word_mask & caption_mask[..., None]
        return ConditionState(
            text=self.text_proj(self.text_norm(text.to(self.text_proj.weight.dtype))),
            word_mask=word_mask.repeat_interleave(repeats, 0),
            caption_mask=caption_mask.repeat_interleave(repeats, 0),
            repeats=repeats,
        )

    def prefix(self, state: ConditionState) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``append`` mode: caption words as extra predictor tokens ``[BT, N*S, d]`` and their key mask."""
        if self.mode != "append":
            return None
        b, n, s, _ = state.text.shape
        if n > self.caption_embed.shape[1]:
            raise ValueError(f"append mode supports at most {self.caption_embed.shape[1]} captions, got {n}")
        words = state.text + self.caption_embed[:, :n]
        words = words.repeat_interleave(state.repeats, 0)
        return words.reshape(b * state.repeats, n * s, -1), state.word_mask.reshape(b * state.repeats, n * s)

    def forward(self, layer: int, tokens: torch.Tensor, state: ConditionState) -> torch.Tensor:
        """Conditions ``tokens`` after predictor block ``layer`` (unchanged for unconditioned layers)."""
        i = self.slot.get(layer)
        if i is None or self.mode == "append":
            return tokens
        return self.blocks[i](tokens, state)

    def regularizers(self, state: ConditionState) -> tuple[torch.Tensor, torch.Tensor]:
        """``(L_sparse, L_consistency)`` of the forward that produced ``state`` (zeros outside xattn)."""
        if not state.sims:
            zero = state.text.new_zeros((), dtype=torch.float32)
            return zero, zero
        return sparsity_and_consistency(state.sims, state.caption_mask)
