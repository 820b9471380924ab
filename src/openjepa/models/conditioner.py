"""TC-JEPA's fine-grained text conditioner and its sparsity / consistency regularizers.

At each conditioned predictor layer every predictor token (context and mask tokens) cross-attends to the
word embeddings of each of the image's N captions (shared weights, batched over captions):

    a_n = MHA(Q = W_Q q, K = W_K t_n, V = W_V t_n)      padded words never attended
    q_n = q + a_n                                        residual cross-attention
    q   = pool_n q_n   (element-wise max; padded captions excluded)   = q + max_n a_n
    q   = LayerNorm(q + MLP(q))                          "then a two-layer MLP and LayerNorm"

``mlp="per_caption"`` runs the MLP + LayerNorm on every q_n before pooling instead (the other reading of the
paper); it costs N times the MLP on every predictor token, so ``after_pool`` is the default.

"Sparse" attention comes from two penalties on the rectified cosine similarity between each projected query
Q_i and each projected word key K_s: O_i = max(cos(Q_i, K), 0) (padding words 0); per caption n,
L_sparse^n = mean_i (1/L) Σ_l ||O_i^(l)||_1 and L_consistency^n = mean_i (1/L) Σ_l ||O_i^(l) − Ō_i||_1. As in
the paper's Eq. 4 they enter each image's loss as (1/N) Σ_n over that image's own N real captions, and the
batch takes the mean over images. Ablation modes: ``adaln`` (scale/shift from a pooled caption embedding) and
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
    """Per-forward state: the captions of each image, their masks, and what the regularizers need.

    Everything is kept once per image (``B`` rows), not once per predictor sequence: a conditioned layer views
    the image's T target-block sequences as one query sequence of ``T*L`` tokens (sequences are sample-major),
    so keys, values and masks are never repeated T times. Build it with :meth:`build`.
    """

    text: torch.Tensor  # [B, N, S, d] words, padded captions replaced by a copy of a real caption
    word_mask: torch.Tensor  # [B, N, S] True = real word of a real caption (regularizers, metrics)
    attn_mask: torch.Tensor  # [B, N, S] words the attention may use (those of the copied caption too)
    caption_mask: torch.Tensor  # [B, N] True = real caption
    repeats: int = 1  # T: predictor sequences per image
    sims: list[torch.Tensor] = field(default_factory=list)  # per conditioned layer: O [B, N, T*L, S]
    entropies: list[torch.Tensor] = field(default_factory=list)  # per layer: mean attention entropy (detached)

    @classmethod
    def build(
        cls, text: torch.Tensor, word_mask: torch.Tensor, caption_mask: torch.Tensor, repeats: int = 1
    ) -> ConditionState:
        """From ``text [B, N, S, d]``, ``word_mask [B, N, S]`` and ``caption_mask [B, N]``.

        Each padded caption slot is filled with the image's first real caption. A max over captions is then
        the max over the real ones with no masking of the big ``[B, N, T*L, d]`` tensors (a duplicate cannot
        change a max, and the shared weights receive the same gradient); mean pooling and the regularizers
        still use ``caption_mask``. An image without any caption attends to its first word slot (so no row
        is fully masked) and keeps its tokens unconditioned.
        """
        word_mask = word_mask & caption_mask[..., None]
        n = caption_mask.shape[1]
        slots = torch.arange(n, device=caption_mask.device).expand_as(caption_mask)
        first_real = torch.where(caption_mask, slots, n).amin(1, keepdim=True).clamp_max(n - 1)
        source = torch.where(caption_mask, slots, first_real)  # [B, N]
        gathered = torch.gather(text, 1, source[..., None, None].expand_as(text))
        attn_mask = torch.gather(word_mask, 1, source[..., None].expand_as(word_mask)).clone()
        attn_mask[..., 0] |= ~attn_mask.any(-1)
        return cls(gathered, word_mask, attn_mask, caption_mask, repeats)


def rectified_cosine(q: torch.Tensor, k: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
    """O = max(cos(q_i, k_s), 0) for ``q [B, L, d]`` and ``k [B, N, S, d]`` -> ``[B, N, L, S]``.

    Padding words get 0.
    """
    dtype = torch.promote_types(q.dtype, torch.float32)  # bf16/fp16 cosines are too coarse near 0
    qn = F.normalize(q.to(dtype), dim=-1)
    kn = F.normalize(k.to(dtype), dim=-1)
    cos = torch.einsum("bld,bnsd->bnls", qn, kn)
    return cos.clamp_min(0) * word_mask[:, :, None, :]


def word_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax attention of ``q [X, h, L, dh]`` to the words ``k, v [X, h, S, dh]``; ``mask [X, 1, 1, S]``."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


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
    """The two TC-JEPA regularizers from the per-layer rectified similarities, averaged as in Eq. 4.

    For image b with N_b real captions, caption n, tokens i (every predictor token of the image's sequences)
    and L conditioned layers l:

        L_sparse^{b,n}      = mean_i (1/L) Σ_l ||O_i^(l)||_1
        L_consistency^{b,n} = mean_i (1/L) Σ_l ||O_i^(l) − Ō_i||_1,   Ō_i = (1/L) Σ_l O_i^(l)
        R^b                 = (1/N_b) Σ_n R^{b,n}                 (each image divides by its own N_b)

    and the batch value is the mean of R^b over the B images. An image without any caption was not conditioned
    and contributes 0 (its prediction loss still counts), so each image's regularizer-to-prediction weight is
    λ (β) whatever the other images of the batch carry. Averaging over all (image, caption) pairs instead
    would weight an image by its number of captions.

    Args:
        sims: one ``O [B, N, I, S]`` per conditioned layer (I: every token of the image's sequences).
        caption_mask: ``[B, N]``; padded captions do not count.

    Returns:
        ``(L_sparse, L_consistency)``, scalars.
    """
    stack = torch.stack(list(sims))  # [L, B, N, I, S]
    mean_o = stack.mean(0)
    sparse = stack.sum(-1).mean(0).mean(-1)  # mean_i (1/L) Σ_l ||O_i||_1 -> [B, N]
    consistency = (stack - mean_o).abs().sum(-1).mean(0).mean(-1)
    w = caption_mask.to(sparse.dtype)
    per_image = w.sum(1).clamp_min(1.0)  # N_b (1 for a captionless image, whose sums are empty)
    return ((sparse * w).sum(1) / per_image).mean(), ((consistency * w).sum(1) / per_image).mean()


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
            raise ValueError(f"conditioner width {dim} not divisible by tcjepa.heads={heads}")
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

    def forward(self, x: torch.Tensor, state: ConditionState) -> torch.Tensor:
        """Conditions ``x [B*T, L, d]`` (sample-major predictor sequences) on the captions of ``state``."""
        out, sims, entropy = self.attend(x, state.text, state.word_mask, state.attn_mask, state.caption_mask)
        state.sims.append(sims)
        state.entropies.append(entropy)
        return out

    def attend(
        self,
        x: torch.Tensor,
        text: torch.Tensor,
        word_mask: torch.Tensor,
        attn_mask: torch.Tensor,
        caption_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The layer as a pure function of tensors (what ``compile_blocks`` compiles).

        Returns the conditioned tokens, the rectified cosines ``O [B, N, T*L, S]`` and the attention entropy.
        """
        bt, length, d = x.shape
        b, n, s, _ = text.shape
        tl = bt // b * length  # the image's T sequences as one query sequence (sample-major, so a view)
        h, dh = self.heads, d // self.heads
        text = text.to(x.dtype)
        q = self.q(self.norm_q(x)).reshape(b, tl, d)  # shared over captions: computed once
        k = self.k(text)  # [B, N, S, d]: once per image, not once per sequence
        if self.center_keys:
            k = center_words(k, attn_mask)
        v = self.v(text)
        sims = rectified_cosine(q, k, word_mask)
        # The only copy made N times is the query (SDPA wants one batch dimension); keys stay per caption.
        qh = q[:, None].expand(b, n, tl, d).reshape(b * n, tl, h, dh).transpose(1, 2)
        kh = k.reshape(b * n, s, h, dh).transpose(1, 2)
        vh = v.reshape(b * n, s, h, dh).transpose(1, 2)
        mask = attn_mask.reshape(b * n, 1, 1, s)
        a = word_attention(qh, kh, vh, mask)  # [B*N, h, T*L, dh]
        a = self.proj(a.transpose(1, 2).reshape(b, n, tl, d))  # per caption, before the residual
        entropy = self._entropy(qh, kh, mask)
        has_caption = caption_mask.any(1).repeat_interleave(bt // b)[:, None, None]
        if self.mlp_position == "per_caption":
            ys = self._mlp_norm(x.reshape(b, 1, tl, d) + a)
            pooled = self._pool(ys, caption_mask).reshape(bt, length, d)
            return torch.where(has_caption, pooled, self._mlp_norm(x)), sims, entropy
        # max_n (x + a_n) = x + max_n a_n: the residual is added once, after pooling.
        pooled = x + self._pool(a, caption_mask).reshape(bt, length, d)
        return self._mlp_norm(torch.where(has_caption, pooled, x)), sims, entropy

    def _pool(self, xs: torch.Tensor, caption_mask: torch.Tensor) -> torch.Tensor:
        """Pools ``xs [B, N, T*L, d]`` over captions (padded slots hold copies of real captions)."""
        if self.pooling == "max":
            # .max(dim) saves only the argmax for backward (amax would keep the whole N-fold input).
            return xs.max(1).values
        m = caption_mask[:, :, None, None].to(xs.dtype)
        return (xs * m).sum(1) / m.sum(1).clamp_min(1)

    @torch.no_grad()
    def attention_weights(self, x: torch.Tensor, state: ConditionState) -> torch.Tensor:
        """Softmax attention of every token to every word, mean over heads: ``[B, N, T*L, S]`` (for plots)."""
        bt, length, d = x.shape
        b, n, s, _ = state.text.shape
        h, dh = self.heads, d // self.heads
        q = self.q(self.norm_q(x)).reshape(b, bt // b * length, h, dh)
        k = self.k(state.text.to(x.dtype))
        if self.center_keys:
            k = center_words(k, state.attn_mask)
        k = k.view(b, n, s, h, dh)
        logits = torch.einsum("blhd,bnshd->bnhls", q.float(), k.float()) / dh**0.5
        logits = logits.masked_fill(~state.word_mask[:, :, None, None, :], float("-inf"))
        return logits.softmax(-1).nan_to_num(0.0).mean(2)

    @torch.no_grad()
    def _entropy(self, qh: torch.Tensor, kh: torch.Tensor, attn_mask: torch.Tensor, rows: int = 8) -> torch.Tensor:
        """Mean attention entropy (nats) over a few (image, caption) pairs: a cheap signal of peaked vs uniform
        attention."""
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
        w = state.word_mask[..., None].to(x.dtype)
        per_caption = (state.text.to(x.dtype) * w).sum(2) / w.sum(2).clamp_min(1)  # [B, N, dt]
        c = state.caption_mask[..., None].to(x.dtype)
        pooled = (per_caption * c).sum(1) / c.sum(1).clamp_min(1)  # [B, dt]
        scale, shift = self.mod(pooled).repeat_interleave(state.repeats, 0).chunk(2, dim=-1)
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
            raise ValueError(f"tcjepa.layers={list(layers or [])}: layers must be in 0..{depth - 1} (predictor depth)")
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
            raise ValueError(f"unknown tcjepa.mode={mode!r}: use xattn, adaln or append")
        self.apply(init_weights)
        for blk in self.blocks:
            if isinstance(blk, AdaLNLayer):  # keep the zero init of the modulation
                nn.init.zeros_(blk.mod[1].weight)
        if mode == "append":
            nn.init.trunc_normal_(self.caption_embed, std=0.02, a=-0.04, b=0.04)

    def prepare(self, cond: dict[str, torch.Tensor], repeats: int) -> ConditionState:
        """Norms and projects the words once per image; ``repeats`` = T sequences per image (sample-major)."""
        text, word_mask, caption_mask = cond["text_emb"], cond["text_mask"], cond["caption_mask"]
        if text.ndim != 4 or word_mask.shape != text.shape[:3] or caption_mask.shape != text.shape[:2]:
            raise ValueError(
                "text conditioning expects text_emb [B,N,S,dt], text_mask [B,N,S], caption_mask [B,N]; got "
                f"{tuple(text.shape)}, {tuple(word_mask.shape)}, {tuple(caption_mask.shape)}"
            )
        words = self.text_proj(self.text_norm(text.to(self.text_proj.weight.dtype)))
        return ConditionState.build(words, word_mask, caption_mask, repeats)

    def prefix(self, state: ConditionState) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``append`` mode: caption words as extra predictor tokens ``[BT, N*S, d]`` and their key mask."""
        if self.mode != "append":
            return None
        b, n, s, _ = state.text.shape
        if n > self.caption_embed.shape[1]:
            raise ValueError(f"append mode supports at most {self.caption_embed.shape[1]} captions, got {n}")
        t = state.repeats
        words = (state.text + self.caption_embed[:, :n]).repeat_interleave(t, 0)
        return words.reshape(b * t, n * s, -1), state.word_mask.repeat_interleave(t, 0).reshape(b * t, n * s)

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
