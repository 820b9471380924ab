"""I-JEPA: predict the EMA teacher's layer-normed features of target blocks from a context block.

Written over any number of mask generators and either input kind, so V-JEPA (two generators on video
tubelets) is this class with other settings (``methods/vjepa.py``). The teacher encodes the full input
once; for each mask generator the student encodes that generator's context and the predictor, with that
generator's mask token, predicts its targets; the loss is averaged over the (context, target) pairs.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from openjepa.config import Config
from openjepa.masks.build import num_mask_generators
from openjepa.methods.base import Method, Metrics, require_teacher, split_decay
from openjepa.methods.flops import forward_flops, mask_token_counts, param_count, trained_flops
from openjepa.methods.registry import register
from openjepa.methods.teachers import EMATeacher, FrozenTeacher
from openjepa.models.build import build_encoder, build_predictor
from openjepa.schedules import linear


def feature_loss(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """The prediction loss between ``[..., D]`` features.

    ``smooth_l1`` (I-JEPA reference code), ``l2`` (squared error) and ``l1`` are means over every predicted
    feature; ``l2norm`` is the mean over predicted patches of the Euclidean norm of the error (TC-JEPA's Eq. 1).
    """
    pred, target = pred.float(), target.float()
    if kind == "l2norm":
        return (pred - target).norm(dim=-1).mean()
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred, target)
    if kind == "l2":
        return F.mse_loss(pred, target)
    if kind == "l1":
        return F.l1_loss(pred, target)
    raise ValueError(f"unknown loss {kind!r} (train.loss): use smooth_l1, l2, l1 or l2norm")


def gather_targets(h: torch.Tensor, tgt_idx: torch.Tensor) -> torch.Tensor:
    """Rows of ``h [B, N, D]`` at ``tgt_idx [B, T, Kt]``: ``[B, T, Kt, D]``."""
    b, t, kt = tgt_idx.shape
    flat = tgt_idx.reshape(b, t * kt, 1).expand(-1, -1, h.shape[-1])
    return torch.gather(h, 1, flat).reshape(b, t, kt, h.shape[-1])


@register("ijepa")
class IJEPA(Method):
    """I-JEPA (Assran et al., 2023) behind the Method contract.

    Batch keys: ``image [B,3,H,W]`` (or ``video`` for clips) and ``masks``: one
    ``{"ctx_idx": [B,Kc], "tgt_idx": [B,T,Kt]}`` per mask generator.
    """

    sections = ("teacher",)
    zero_mask_tokens = False  # I-JEPA: truncated-normal mask token; V-JEPA: zeros

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        require_teacher(cfg, "ema", cls.name)

    def __init__(self, cfg: Config, total_steps: int, conditioner: nn.Module | None = None):
        super().__init__()
        self.check_config(cfg)
        self.input_key = self.data_needs(cfg).input_key
        self.loss_kind = self.prediction_loss(cfg)
        self.layer_norm_targets = cfg.teacher.layer_norm_targets
        self.ema_start, self.ema_final = cfg.teacher.momentum
        self.total_steps = total_steps
        self.encoder = build_encoder(cfg)
        teacher = self.build_teacher(cfg)
        # The predictor speaks the teacher's width (SALT: a frozen teacher of any size; I-JEPA: the student's).
        self.predictor = build_predictor(
            cfg, self.encoder, conditioner, num_mask_generators(cfg.mask), out_dim=teacher.embed_dim,
            zero_mask_tokens=self.zero_mask_tokens,
        )
        # Registered after the predictor, as before teachers were pluggable: the module order (state-dict keys,
        # parameter order) of I-JEPA / V-JEPA methods is unchanged.
        self.teacher = teacher

    def build_teacher(self, cfg: Config) -> EMATeacher | FrozenTeacher:
        """Where the targets come from: an EMA copy of the student (I-JEPA, V-JEPA, TC-JEPA)."""
        return EMATeacher(self.encoder)

    def param_groups(self) -> list[dict[str, Any]]:
        named = [(f"encoder.{n}", p) for n, p in self.encoder.named_parameters()]
        named += [(f"predictor.{n}", p) for n, p in self.predictor.named_parameters()]
        return split_decay(named)

    @torch.no_grad()
    def teacher_features(self, x: torch.Tensor) -> torch.Tensor:
        """Teacher tokens of the full input, layer-normed without affine (``teacher.layer_norm_targets``)."""
        h = self.teacher(x)
        return F.layer_norm(h, h.shape[-1:]) if self.layer_norm_targets else h

    def targets(self, x: torch.Tensor, tgt_idx: torch.Tensor) -> torch.Tensor:
        """Layer-normed teacher features at the target positions: ``[B, T, Kt, D]``."""
        return gather_targets(self.teacher_features(x), tgt_idx)

    def predict(self, x: torch.Tensor, masks: dict[str, torch.Tensor], index: int = 0, cond: Any = None) -> Any:
        """Student path for one mask pair: context encoder on its context, predictor at its targets."""
        z = self.encoder(x, keep=masks["ctx_idx"])
        return self.predictor(z, masks["ctx_idx"], masks["tgt_idx"], cond, mask_index=index)

    def forward(self, batch: dict[str, Any], step: int) -> tuple[torch.Tensor, Metrics]:
        x = batch[self.input_key]
        h = self.teacher_features(x)
        losses = [
            feature_loss(self.predict(x, m, i), gather_targets(h, m["tgt_idx"]), self.loss_kind)
            for i, m in enumerate(batch["masks"])
        ]
        loss = torch.stack(losses).mean()
        return loss, {"loss": loss.detach()}

    def flops(self, batch: dict[str, Any]) -> dict[str, float]:
        """Teacher forward on the full input (``2ND``), student encoder on each context and predictor on each
        (context + target block) sequence (``6ND``), summed over the mask pairs."""
        x = batch[self.input_key]
        b = int(x.shape[0])
        n_tokens = math.prod(self.encoder.patch_embed.grid(x.shape[2:]))
        ctx_tokens = pred_tokens = 0
        for masks in batch["masks"]:
            kc, t, kt = mask_token_counts(masks)
            ctx_tokens += b * kc
            pred_tokens += b * t * (kc + kt)  # each target block is its own sequence, context included
        return {
            "teacher": forward_flops(param_count(self.teacher), b * n_tokens),
            "student": trained_flops(param_count(self.encoder), ctx_tokens),
            "predictor": trained_flops(param_count(self.predictor), pred_tokens),
        }

    def momentum(self, step: int) -> float:
        """EMA momentum at ``step`` (linear ``teacher.momentum[0] -> [1]`` over the whole run)."""
        return linear(step, self.total_steps, self.ema_start, self.ema_final)

    def after_step(self, step: int) -> None:
        self.teacher.update(self.encoder, self.momentum(step))

    def log_values(self, step: int) -> dict[str, float]:
        return {"ema": self.momentum(step)}

    def encoder_for_eval(self) -> nn.Module:
        return self.teacher.model
