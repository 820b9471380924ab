"""V-Pixel (SALT's stage 1) and MAE: masked pixel reconstruction, on clips or on images.

For each mask generator of the batch, the encoder sees that generator's context tokens; a pixel decoder
(:class:`~openjepa.models.decoder.PixelDecoder`, ``decoder.*``) with that generator's mask token predicts
the pixels of that generator's **target** tokens, normalized per token and channel (``decoder.norm_pixels``);
the loss is the mean squared error over those tokens only, averaged over the generators (as V-JEPA averages
its feature losses over the mask pairs).

Which tokens are reconstructed: exactly the targets (``tgt_idx``) of the mask sampler, i.e. the positions a
JEPA predictor would predict under the same masks. So V-Pixel and V-JEPA / SALT solve the same prediction
problem and differ only in the target space (pixels vs latents), the comparison SALT is about.

- ``mask.kind=multiblock3d`` (default, SALT): V-JEPA's two generators; the target is the union of each
  generator's blocks (the context is the rest, minus the sampler's cut to a common length).
- ``mask.kind=tube``: VideoMAE's random tubes (``mask.tube_ratio``, 0.9); on images, MAE's random patches.
- ``mask.kind=multiblock`` (images): MAE with I-JEPA's multi-block masks. The ``mask.num_targets`` target
  blocks are decoded together in one sequence (context + every target position, as MAE's decoder sees all
  masked patches at once); a patch covered by two target blocks is predicted, and counted in the loss, once
  per block, the weight I-JEPA's loss gives it. Patches outside the context block that no target covers are
  neither seen nor reconstructed.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from openjepa.config import Config, ConfigError
from openjepa.masks.build import num_mask_generators
from openjepa.methods.base import Method, Metrics
from openjepa.methods.flops import mask_token_counts, param_count, trained_flops
from openjepa.methods.registry import register
from openjepa.models.build import build_encoder
from openjepa.models.decoder import build_decoder, patchify, pixel_targets

__all__ = ["VPixel", "reconstruction_loss"]


def reconstruction_loss(pred: torch.Tensor, patches: torch.Tensor, tgt_idx: torch.Tensor, norm: bool) -> torch.Tensor:
    """Mean squared error between predicted pixels ``[B, T, Kt, P]`` and the pixels of the tokens ``tgt_idx``.

    Only the tokens in ``tgt_idx`` enter: the pixels of every other token do not change the loss.
    """
    return F.mse_loss(pred.float(), pixel_targets(patches, tgt_idx, norm=norm))


@register("vpixel")
class VPixel(Method):
    """Masked pixel reconstruction behind the Method contract (2-D or 3-D, one class).

    Batch keys: ``video [B,3,T,H,W]`` (or ``image [B,3,H,W]``) and ``masks``: one
    ``{"ctx_idx": [B,Kc], "tgt_idx": [B,T,Kt]}`` per mask generator.
    """

    sections = ("decoder",)
    default_loss = "l2"  # MSE on the masked tokens (VideoMAE, SALT's V-Pixel)

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        if cls.prediction_loss(cfg) != "l2":
            raise ConfigError(
                f"method=vpixel reconstructs pixels with the mean squared error: set train.loss=l2 or auto (got "
                f"{cfg.train.loss!r})"
            )
        d = cfg.decoder
        if d.dim % d.heads or d.dim % 4:
            raise ConfigError(
                f"decoder.dim={d.dim} must be divisible by decoder.heads={d.heads} and by 4 (its sin-cos position "
                "table): e.g. decoder.dim=512 decoder.heads=16"
            )

    def __init__(self, cfg: Config, total_steps: int):
        super().__init__()
        self.check_config(cfg)
        self.input_key = self.data_needs(cfg).input_key
        self.norm_pixels = cfg.decoder.norm_pixels
        self.patch_size = cfg.model.patch_size
        self.tubelet_size = cfg.model.tubelet_size if cfg.data.num_frames > 1 else 1
        self.encoder = build_encoder(cfg)
        self.decoder = build_decoder(cfg, self.encoder.grid_size, self.encoder.embed_dim, num_mask_generators(cfg.mask))

    def reconstruct(self, x: torch.Tensor, masks: dict[str, torch.Tensor], index: int = 0) -> torch.Tensor:
        """Predicted pixels ``[B, T, Kt, P]`` of one generator's targets from its context."""
        z = self.encoder(x, keep=masks["ctx_idx"])
        return self.decoder(z, masks["ctx_idx"], masks["tgt_idx"], mask_index=index)

    def forward(self, batch: dict[str, Any], step: int) -> tuple[torch.Tensor, Metrics]:
        x = batch[self.input_key]
        patches = patchify(x, self.patch_size, self.tubelet_size)
        losses = [
            reconstruction_loss(self.reconstruct(x, m, i), patches, m["tgt_idx"], self.norm_pixels)
            for i, m in enumerate(batch["masks"])
        ]
        loss = torch.stack(losses).mean()
        return loss, {"loss": loss.detach()}

    def flops(self, batch: dict[str, Any]) -> dict[str, float]:
        """Encoder on each context, decoder on each (context + all target tokens) sequence, both trained."""
        b = int(batch[self.input_key].shape[0])
        ctx_tokens = dec_tokens = 0
        for masks in batch["masks"]:
            kc, t, kt = mask_token_counts(masks)
            ctx_tokens += b * kc
            dec_tokens += b * (kc + t * kt)  # one sequence per sample: the target blocks are flattened
        return {
            "student": trained_flops(param_count(self.encoder), ctx_tokens),
            "decoder": trained_flops(param_count(self.decoder), dec_tokens),
        }

    def encoder_for_eval(self) -> nn.Module:
        return self.encoder

