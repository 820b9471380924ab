"""CLIP / SigLIP-style contrastive baseline: the JEPA image encoder against a frozen text encoder.

The baseline TC-JEPA is compared with (spec/tc-jepa.md): same images, same captions, same ViT. Only the
objective differs. The image tower is :func:`~openjepa.models.build.build_encoder` on the full image,
mean-pooled over patch tokens (the pooled feature the probes evaluate) and linearly projected. The text tower
is the frozen text encoder's word embeddings carried in the batch (never trained here), mean-pooled over real
words and mapped by a small trainable head. The loss is CLIP's symmetric InfoNCE or SigLIP's sigmoid loss
(``clip.loss``) in ``clip.dim`` dimensions, with negatives from every rank.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from openjepa.config import Config, ConfigError
from openjepa.methods.base import Method, Metrics
from openjepa.methods.contrastive_losses import (
    clip_loss_from_logits,
    contrastive_logits,
    gather_pairs,
    i2t_accuracy,
    siglip_loss_from_logits,
)
from openjepa.methods.registry import register
from openjepa.models.build import build_encoder

__all__ = ["CLIP", "TextHead", "first_real_caption", "masked_mean"]

# CLIP (Radford et al., 2021): temperature 0.07 at init, logits never scaled by more than 100.
CLIP_INIT_LOG_SCALE = math.log(1 / 0.07)
CLIP_MAX_LOG_SCALE = math.log(100.0)
# SigLIP (Zhai et al., 2023): t = exp(t') with t' = log 10, bias -10, so that the many negatives start
# near their target and the first steps are not spent pushing them down.
SIGLIP_INIT_LOG_T = math.log(10.0)
SIGLIP_INIT_BIAS = -10.0


def first_real_caption(
    text_emb: torch.Tensor, text_mask: torch.Tensor, caption_mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Picks, per image, the first real caption of its ``N`` (the pipeline already shuffled them).

    A caption is real when ``caption_mask`` says so and it has at least one real word.

    Args:
        text_emb: ``[B, N, S, d_t]`` (or ``[B, S, d_t]`` for one caption per image) word embeddings.
        text_mask: ``bool[B, N, S]`` (or ``[B, S]``), True for real words.
        caption_mask: ``bool[B, N]`` (``[B]`` with 3-D inputs; None: every caption with a real word counts).

    Returns:
        ``emb [B, S, d_t]``, ``mask bool[B, S]`` of the chosen caption, and ``valid bool[B]`` (False: the image
        has no real caption; its chosen caption is padding).
    """
    if text_emb.ndim == 3:
        text_emb, text_mask = text_emb[:, None], text_mask[:, None]
        caption_mask = None if caption_mask is None else caption_mask.reshape(-1, 1)
    if text_emb.ndim != 4 or text_mask.shape != text_emb.shape[:3]:
        raise ValueError(
            f"text_emb must be [B, N, S, d_t] with text_mask [B, N, S]; got {tuple(text_emb.shape)} and "
            f"{tuple(text_mask.shape)}"
        )
    real = text_mask.bool().any(-1)
    if caption_mask is not None:
        real = real & caption_mask.bool()
    first = real.to(torch.int32).argmax(1)  # argmax returns the first maximum; 0 when there is none
    rows = torch.arange(text_emb.shape[0], device=text_emb.device)
    return text_emb[rows, first], text_mask[rows, first].bool(), real.any(1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x [B, S, D]`` over the positions where ``mask [B, S]`` is True, in float32 (0 if none)."""
    w = mask.to(torch.float32).unsqueeze(-1)
    # float32 before summing: fp16 caches would overflow/round over long captions.
    return (x.float() * w).sum(1) / w.sum(1).clamp(min=1.0)


class TextHead(nn.Module):
    """Trainable map from pooled frozen word embeddings to the shared space: LayerNorm, Linear, GELU, Linear.

    Two layers rather than one because the text encoder is frozen: this head is the only text-side capacity
    that can adapt to the images (with a linear head the text geometry would be fixed up to a linear map). The
    input LayerNorm makes it indifferent to the scale of whichever frozen encoder produced the embeddings.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int | None = None):
        super().__init__()
        hidden_dim = hidden_dim or max(in_dim, out_dim)
        self.norm = nn.LayerNorm(in_dim)
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, out_dim, bias=False)
        # Variance-preserving init (std = fan_in^-0.5, CLIP's choice for its projections).
        nn.init.normal_(self.fc1.weight, std=in_dim**-0.5)
        nn.init.zeros_(self.fc1.bias)
        nn.init.normal_(self.fc2.weight, std=hidden_dim**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_dim] -> [B, out_dim]`` (not normalized)."""
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


@register("clip")
class CLIP(Method):
    """Contrastive image-text pretraining of the JEPA image encoder (CLIP or SigLIP loss).

    Batch keys: ``image [B,3,H,W]``, ``text_emb [B,N,S,d_t]`` (frozen word embeddings, fp16 or fp32),
    ``text_mask bool[B,N,S]``, ``caption_mask bool[B,N]`` (optional). One caption per image per step: the first
    real one. Images without any real caption are excluded from the loss (a batch with none gives a zero loss
    attached to the graph). The batch carries no masks (``uses_masks`` is False).

    Under ``torch.distributed`` each rank gathers every rank's embeddings and computes the global loss, so
    DDP's gradient averaging reproduces the single-process gradient of the whole global batch
    (:mod:`openjepa.methods.contrastive_losses` explains why).

    Args:
        cfg: the run config (``model``, ``data.image_size``, ``clip.loss``, ``clip.dim``, and ``text.dim``, the
            word-embedding width that the training loop fills from the text encoder).
        total_steps: unused (no schedule inside the method); kept for the Method factory signature.

    Raises:
        ConfigError: ``text.dim`` unset or ``clip.loss`` unknown.
    """

    uses_masks = False  # the full image is encoded: no mask sampling
    uses_text = True
    sections = ("text", "clip")

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        if cfg.data.num_frames > 1:
            raise ConfigError("method=clip pairs images with captions: set data.num_frames=1 (an image source)")

    def __init__(self, cfg: Config, total_steps: int):
        super().__init__()
        self.check_config(cfg)
        if cfg.clip.loss not in ("clip", "siglip"):
            raise ConfigError(f"clip.loss={cfg.clip.loss!r}: use 'clip' or 'siglip'")
        if cfg.text.dim <= 0:
            raise ConfigError(
                "text.dim is not set: the training loop fills it from the text encoder; when building CLIP by "
                "hand pass text.dim=<word embedding width> (384 for all-MiniLM-L6-v2)"
            )
        self.loss_kind = cfg.clip.loss
        self.total_steps = total_steps
        self.text_dim = cfg.text.dim
        dim = cfg.clip.dim
        self.encoder = build_encoder(cfg)
        self.image_proj = nn.Linear(self.encoder.embed_dim, dim, bias=False)
        nn.init.normal_(self.image_proj.weight, std=self.encoder.embed_dim**-0.5)
        self.text_proj = TextHead(self.text_dim, dim)
        # 0-d parameters: split_decay puts them in the no-weight-decay group.
        if self.loss_kind == "clip":
            self.logit_scale = nn.Parameter(torch.tensor(CLIP_INIT_LOG_SCALE))
            self.logit_bias = None
        else:
            self.logit_scale = nn.Parameter(torch.tensor(SIGLIP_INIT_LOG_T))
            self.logit_bias = nn.Parameter(torch.tensor(SIGLIP_INIT_BIAS))

    def scale(self) -> torch.Tensor:
        """The logit multiplier: ``exp(logit_scale)``, capped at 100 for CLIP."""
        if self.loss_kind == "clip":
            return self.logit_scale.clamp(max=CLIP_MAX_LOG_SCALE).exp()
        return self.logit_scale.exp()

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """Mean-pooled patch tokens of the full image, projected: ``[B, clip_dim]`` (not normalized)."""
        return self.image_proj(self.encoder(image).mean(1))

    def encode_text(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected first real caption per image, ``[B, clip_dim]``, and ``valid bool[B]``."""
        if "text_emb" not in batch or "text_mask" not in batch:
            raise KeyError(
                "method=clip needs caption embeddings in the batch (keys 'text_emb', 'text_mask'); got keys "
                f"{sorted(batch)}. Use a data source with captions (e.g. data.source=scenes)."
            )
        emb, mask, valid = first_real_caption(batch["text_emb"], batch["text_mask"], batch.get("caption_mask"))
        if emb.shape[-1] != self.text_dim:
            raise ValueError(
                f"text_emb has width {emb.shape[-1]} but this CLIP was built for {self.text_dim}: the cached "
                "embeddings come from another text encoder than text.encoder (text.dim); clear the text cache "
                "or fix text.encoder"
            )
        # detach: the text encoder is frozen, nothing may flow back into its (cached) outputs.
        return self.text_proj(masked_mean(emb.detach(), mask)), valid

    def forward(self, batch: dict[str, Any], step: int) -> tuple[torch.Tensor, Metrics]:
        """Global contrastive loss and detached metrics ``loss``, ``logit_scale``, ``acc_i2t`` (+ ``logit_bias``)."""
        img = self.encode_image(batch["image"])
        txt, valid = self.encode_text(batch)
        # Normalization, logits and loss in float32 even under bf16/fp16 autocast: logits up to 100 in bf16
        # keep under 3 significant digits, which blurs the softmax over hard negatives.
        with torch.autocast(img.device.type, enabled=False):
            img = F.normalize(img.float(), dim=-1)
            txt = F.normalize(txt.float(), dim=-1)
            img, txt, valid = gather_pairs(img, txt, valid)
            scale = self.scale()
            logits = contrastive_logits(img, txt, scale, self.logit_bias)
            if self.loss_kind == "clip":
                loss = clip_loss_from_logits(logits, valid)
            else:
                loss = siglip_loss_from_logits(logits, valid)
        metrics = {"loss": loss.detach(), "logit_scale": scale.detach(), "acc_i2t": i2t_accuracy(logits, valid)}
        if self.logit_bias is not None:
            metrics["logit_bias"] = self.logit_bias.detach()
        return loss, metrics

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """Keeps CLIP's log-scale inside the cap (in place, no host sync).

        The forward clamp alone would zero the gradient once the parameter crossed ``log 100`` and leave it
        stuck there; clamping the parameter itself keeps it where the gradient can still bring it down.
        """
        if self.loss_kind == "clip":
            self.logit_scale.clamp_(max=CLIP_MAX_LOG_SCALE)

    def encoder_for_eval(self) -> nn.Module:
        """The trained image ViT (no EMA copy in this method)."""
        return self.encoder
