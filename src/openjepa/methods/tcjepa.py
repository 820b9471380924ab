"""TC-JEPA: I-JEPA whose predictor is conditioned on caption words (spec/tc-jepa.md).

Only the predictor changes: the context encoder, EMA target encoder, masks and the feature loss are
I-JEPA's. The total loss is ``L_predict + λ·L_sparse + β·L_consistency`` (the regularizers are already
averaged over the real captions, i.e. the spec's (λ/N) Σ_n form).
"""

from __future__ import annotations

from typing import Any

import torch

from openjepa.config import Config, ConfigError
from openjepa.methods.base import Metrics
from openjepa.methods.ijepa import IJEPA, feature_loss
from openjepa.models.conditioner import TextConditioner

TEXT_KEYS = ("text_emb", "text_mask", "caption_mask")


def build_conditioner(cfg: Config, encoder_heads: int) -> TextConditioner:
    """The text conditioner described by ``cfg.text`` for the predictor of ``cfg.model``."""
    if cfg.text.dim <= 0:
        raise ConfigError(
            "text.dim is not set: the training loop fills it from the text encoder; when building TC-JEPA "
            "by hand pass text.dim=<word embedding width> (384 for all-MiniLM-L6-v2)"
        )
    return TextConditioner(
        dim=cfg.model.pred_dim,
        text_dim=cfg.text.dim,
        depth=cfg.model.pred_depth,
        layers=cfg.text.layers,
        heads=cfg.text.heads or cfg.model.pred_heads or encoder_heads,
        pooling=cfg.text.pooling,
        mlp=cfg.text.mlp,
        mode=cfg.text.mode,
        qk_bias=cfg.text.qk_bias,
        center_keys=cfg.text.center_keys,
    )


class TCJEPA(IJEPA):
    """Text-conditioned JEPA. Batch keys: I-JEPA's plus ``text_emb``, ``text_mask``, ``caption_mask``."""

    needs_text = True

    def __init__(self, cfg: Config, total_steps: int):
        from openjepa.models.vit import vit_spec

        conditioner = build_conditioner(cfg, vit_spec(cfg.model.arch).num_heads)
        super().__init__(cfg, total_steps, conditioner=conditioner)
        self.sparse_weight = cfg.text.sparse_weight
        self.consistency_weight = cfg.text.consistency_weight
        self.reg_warmup_steps = round(cfg.text.reg_warmup * total_steps)

    def regularizer_scale(self, step: int) -> float:
        """Linear ramp 0 -> 1 of lambda and beta over ``text.reg_warmup`` of the run (1 without warmup)."""
        return min(1.0, step / self.reg_warmup_steps) if self.reg_warmup_steps > 0 else 1.0

    def forward(self, batch: dict[str, Any], step: int) -> tuple[torch.Tensor, Metrics]:
        missing = [k for k in TEXT_KEYS if k not in batch]
        if missing:
            raise KeyError(f"TC-JEPA needs caption embeddings in the batch; missing {missing} (is text.* set up?)")
        target = self.targets(batch["image"], batch["tgt_idx"])
        cond = {k: batch[k] for k in TEXT_KEYS}
        z = self.encoder(batch["image"], keep=batch["ctx_idx"])
        pred, state = self.predictor(z, batch["ctx_idx"], batch["tgt_idx"], cond, return_state=True)
        loss_pred = feature_loss(pred, target, self.loss_kind)
        sparse, consistency = self.predictor.conditioner.regularizers(state)  # type: ignore[union-attr]
        scale = self.regularizer_scale(step)
        loss = loss_pred + scale * (self.sparse_weight * sparse + self.consistency_weight * consistency)
        metrics: Metrics = {
            "loss": loss.detach(),
            "loss_pred": loss_pred.detach(),
            "loss_sparse": sparse.detach(),
            "loss_consistency": consistency.detach(),
        }
        # Seeing inside: a conditioner whose similarities are all negative is "dead" (no gradient through O).
        real = state.word_mask[:, :, None, :]
        for layer, (o, ent) in zip(self.predictor.conditioner.layer_ids, zip(state.sims, state.entropies)):  # type: ignore[union-attr]
            positive = ((o > 0) & real).sum() / real.sum().clamp_min(1) / o.shape[2]
            metrics[f"pos_frac/l{layer}"] = positive.detach()
            metrics[f"attn_entropy/l{layer}"] = ent
        return loss, metrics
