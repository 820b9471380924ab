"""TC-JEPA: I-JEPA whose predictor is conditioned on caption words (docs/tcjepa.md).

Only the predictor changes: the context encoder, EMA target encoder, masks and the feature-loss function are
I-JEPA's. The total loss is the paper's Eq. 4, ``L_predict + (λ/N) Σ_n L_sparse^n + (β/N) Σ_n L_consistency^n``
per image (N: that image's real captions; see :func:`~openjepa.models.conditioner.sparsity_and_consistency`),
then the mean over images, averaged over the mask pairs.

λ = 0.1 and β = 0.5 were set against the paper's Eq. 1 prediction loss, the mean over target patches of the
(unsquared) L2 norm of the error: ``train.loss=l2norm``, which ``configs/tcjepa/demo.yaml`` uses. I-JEPA's
smooth-L1 is 1-2 orders of magnitude smaller, so with it the same λ and β make the regularizers that much
stronger; the method warns when the paper's λ and β meet another loss.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from openjepa.config import Config, ConfigError
from openjepa.methods.base import Metrics
from openjepa.methods.ijepa import IJEPA, feature_loss, gather_targets
from openjepa.methods.registry import register
from openjepa.models.conditioner import TextConditioner
from openjepa.models.vit import vit_spec

TEXT_KEYS = ("text_emb", "text_mask", "caption_mask")
PAPER_LOSS = "l2norm"  # Eq. 1: mean over target patches of ||prediction - target||_2
PAPER_WEIGHTS = (0.1, 0.5)  # λ (sparsity), β (consistency), set against PAPER_LOSS


def check_loss_scale(cfg: Config) -> None:
    """Warns when the paper's λ and β are used with another prediction loss than the paper's.

    The regularizers' weights only mean what the paper means relative to its Eq. 1 loss. At the demo's
    initialization the prediction loss is 38x λ·L_sparse + β·L_consistency under ``l2norm`` but only 1.7x under
    ``smooth_l1``, whose gradient is then smaller than the regularizers' (docs/tcjepa.md). A user who changed
    λ or β has chosen a scale, so only the paper's exact pair is flagged.
    """
    tc = cfg.tcjepa
    loss = TCJEPA.prediction_loss(cfg)
    if loss == PAPER_LOSS or tc.mode != "xattn" or (tc.sparse_weight, tc.consistency_weight) != PAPER_WEIGHTS:
        return
    warnings.warn(
        f"TC-JEPA with train.loss={loss} and the paper's tcjepa.sparse_weight={tc.sparse_weight}, "
        f"tcjepa.consistency_weight={tc.consistency_weight}: these were set against the paper's Eq. 1 loss "
        f"(train.loss={PAPER_LOSS}), which is 1-2 orders of magnitude larger, so the regularizers weigh that much "
        f"more here. Set train.loss={PAPER_LOSS}, or scale both weights to your loss (docs/tcjepa.md).",
        stacklevel=2,  # the same location from every caller, so it is shown once per process
    )


def build_conditioner(cfg: Config, encoder_heads: int) -> TextConditioner:
    """The text conditioner described by ``cfg.tcjepa`` (and ``cfg.text.dim``) for the predictor of ``cfg.model``."""
    if cfg.text.dim <= 0:
        raise ConfigError(
            "text.dim is not set: the training loop fills it from the text encoder; when building TC-JEPA "
            "by hand pass text.dim=<word embedding width> (384 for all-MiniLM-L6-v2)"
        )
    tc = cfg.tcjepa
    return TextConditioner(
        dim=cfg.model.pred_dim,
        text_dim=cfg.text.dim,
        depth=cfg.model.pred_depth,
        layers=tc.layers,
        heads=tc.heads or cfg.model.pred_heads or encoder_heads,
        pooling=tc.pooling,
        mlp=tc.mlp,
        mode=tc.mode,
        qk_bias=tc.qk_bias,
        center_keys=tc.center_keys,
    )


@register("tcjepa")
class TCJEPA(IJEPA):
    """Text-conditioned JEPA. Batch keys: I-JEPA's plus ``text_emb``, ``text_mask``, ``caption_mask``."""

    uses_text = True
    sections = ("teacher", "text", "tcjepa")
    default_loss = PAPER_LOSS

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        super().check_config(cfg)
        check_loss_scale(cfg)

    def __init__(self, cfg: Config, total_steps: int):
        conditioner = build_conditioner(cfg, vit_spec(cfg.model.arch).num_heads)
        super().__init__(cfg, total_steps, conditioner=conditioner)
        self.sparse_weight = cfg.tcjepa.sparse_weight
        self.consistency_weight = cfg.tcjepa.consistency_weight
        self.reg_warmup_steps = round(cfg.tcjepa.reg_warmup * total_steps)

    def regularizer_scale(self, step: int) -> float:
        """Linear ramp 0 -> 1 of lambda and beta over ``tcjepa.reg_warmup`` of the run (1 without warmup)."""
        return min(1.0, step / self.reg_warmup_steps) if self.reg_warmup_steps > 0 else 1.0

    def forward(self, batch: dict[str, Any], step: int) -> tuple[torch.Tensor, Metrics]:
        missing = [k for k in TEXT_KEYS if k not in batch]
        if missing:
            raise KeyError(f"TC-JEPA needs caption embeddings in the batch; missing {missing} (is text.* set up?)")
        x = batch[self.input_key]
        h = self.teacher_features(x)
        cond = {k: batch[k] for k in TEXT_KEYS}
        parts = [self._pair_loss(x, h, m, i, cond, step) for i, m in enumerate(batch["masks"])]
        n = len(parts)
        loss = sum(p[0] for p in parts) / n
        metrics: Metrics = {"loss": loss.detach()}
        for key in parts[0][1]:
            metrics[key] = sum(p[1][key] for p in parts) / n
        return loss, metrics

    def _pair_loss(
        self, x: torch.Tensor, h: torch.Tensor, masks: dict[str, torch.Tensor], index: int, cond: Any, step: int
    ) -> tuple[torch.Tensor, Metrics]:
        """Loss and detached metrics of one (context, target) pair."""
        pred, state = self.predictor(
            self.encoder(x, keep=masks["ctx_idx"]), masks["ctx_idx"], masks["tgt_idx"], cond,
            return_state=True, mask_index=index,
        )
        loss_pred = feature_loss(pred, gather_targets(h, masks["tgt_idx"]), self.loss_kind)
        conditioner = self.predictor.conditioner
        sparse, consistency = conditioner.regularizers(state)  # type: ignore[union-attr]
        scale = self.regularizer_scale(step)
        loss = loss_pred + scale * (self.sparse_weight * sparse + self.consistency_weight * consistency)
        metrics: Metrics = {
            "loss_pred": loss_pred.detach(),
            "loss_sparse": sparse.detach(),
            "loss_consistency": consistency.detach(),
        }
        # Seeing inside: a conditioner whose similarities are all negative is "dead" (no gradient through O).
        real = state.word_mask[:, :, None, :]
        for layer, o, ent in zip(conditioner.layer_ids, state.sims, state.entropies):  # type: ignore[union-attr]
            positive = ((o > 0) & real).sum() / real.sum().clamp_min(1) / o.shape[2]
            metrics[f"pos_frac/l{layer}"] = positive.detach()
            metrics[f"attn_entropy/l{layer}"] = ent
        return loss, metrics
