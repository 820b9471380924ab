"""TC-JEPA: I-JEPA whose predictor is conditioned on caption words (docs/tcjepa.md).

Only the predictor changes: the context encoder, EMA target encoder, masks and the feature loss are
I-JEPA's. The total loss is ``L_predict + λ·L_sparse + β·L_consistency`` (the regularizers are already
averaged over the real captions, i.e. the paper's (λ/N) Σ_n form), averaged over the mask pairs.
"""

from __future__ import annotations

from typing import Any

import torch

from openjepa.config import Config, ConfigError
from openjepa.methods.base import Metrics
from openjepa.methods.ijepa import IJEPA, feature_loss, gather_targets
from openjepa.methods.registry import register
from openjepa.models.conditioner import TextConditioner
from openjepa.models.vit import vit_spec

TEXT_KEYS = ("text_emb", "text_mask", "caption_mask")


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
