"""I-JEPA: predict the EMA teacher's layer-normed features of target blocks from one context block."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from openjepa.config import Config
from openjepa.methods.base import Method, Metrics
from openjepa.methods.teachers import EMATeacher
from openjepa.models.predictor import Predictor
from openjepa.models.vit import VisionTransformer, build_vit
from openjepa.schedules import linear


def feature_loss(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean over all predicted features of ``smooth_l1`` (reference code), ``l2`` (squared) or ``l1``."""
    pred, target = pred.float(), target.float()
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred, target)
    if kind == "l2":
        return F.mse_loss(pred, target)
    if kind == "l1":
        return F.l1_loss(pred, target)
    raise ValueError(f"unknown loss {kind!r} (train.loss): use smooth_l1, l2 or l1")


def build_encoder(cfg: Config) -> VisionTransformer:
    """The context encoder described by ``cfg.model`` at ``cfg.data.image_size``."""
    return build_vit(
        cfg.model.arch,
        img_size=cfg.data.image_size,
        patch_size=cfg.model.patch_size,
        qkv_bias=cfg.model.qkv_bias,
        drop_path=cfg.model.drop_path,
        rescale_init=cfg.model.rescale_init,
    )


def build_predictor(cfg: Config, encoder: VisionTransformer, conditioner: nn.Module | None = None) -> Predictor:
    """The narrow predictor for ``encoder`` (heads default to the encoder's)."""
    return Predictor(
        grid_size=encoder.grid_size,
        embed_dim=encoder.embed_dim,
        pred_dim=cfg.model.pred_dim,
        depth=cfg.model.pred_depth,
        num_heads=cfg.model.pred_heads or encoder.num_heads,
        qkv_bias=cfg.model.qkv_bias,
        conditioner=conditioner,
        rescale_init=cfg.model.rescale_init,
    )


class IJEPA(Method):
    """I-JEPA (Assran et al., 2023) behind the Method contract.

    Batch keys: ``image [B,3,H,W]``, ``ctx_idx [B,Kc]``, ``tgt_idx [B,T,Kt]``.
    """

    def __init__(self, cfg: Config, total_steps: int, conditioner: nn.Module | None = None):
        super().__init__()
        self.loss_kind = cfg.train.loss
        self.ema_start, self.ema_final = cfg.optim.ema
        self.total_steps = total_steps
        self.encoder = build_encoder(cfg)
        self.predictor = build_predictor(cfg, self.encoder, conditioner)
        self.teacher = EMATeacher(self.encoder)

    def param_groups(self) -> list[dict[str, Any]]:
        from openjepa.methods.base import split_decay

        named = [(f"encoder.{n}", p) for n, p in self.encoder.named_parameters()]
        named += [(f"predictor.{n}", p) for n, p in self.predictor.named_parameters()]
        return split_decay(named)

    @torch.no_grad()
    def targets(self, images: torch.Tensor, tgt_idx: torch.Tensor) -> torch.Tensor:
        """Teacher features at the target positions, layer-normed without affine: ``[B, T, Kt, D]``."""
        h = self.teacher(images)
        h = F.layer_norm(h, h.shape[-1:])
        b, t, kt = tgt_idx.shape
        flat = tgt_idx.reshape(b, t * kt, 1).expand(-1, -1, h.shape[-1])
        return torch.gather(h, 1, flat).reshape(b, t, kt, h.shape[-1])

    def predict(self, batch: dict[str, Any], cond: Any = None) -> torch.Tensor:
        """Student path: context encoder on the context patches, predictor at the target positions."""
        z = self.encoder(batch["image"], keep=batch["ctx_idx"])
        return self.predictor(z, batch["ctx_idx"], batch["tgt_idx"], cond)

    def forward(self, batch: dict[str, Any], step: int) -> tuple[torch.Tensor, Metrics]:
        target = self.targets(batch["image"], batch["tgt_idx"])
        pred = self.predict(batch)
        loss = feature_loss(pred, target, self.loss_kind)
        return loss, {"loss": loss.detach()}

    def momentum(self, step: int) -> float:
        """EMA momentum at ``step`` (linear ``ema[0] -> ema[1]`` over the whole run)."""
        return linear(step, self.total_steps, self.ema_start, self.ema_final)

    def after_step(self, step: int) -> None:
        self.teacher.update(self.encoder, self.momentum(step))

    def encoder_for_eval(self) -> nn.Module:
        return self.teacher.model
