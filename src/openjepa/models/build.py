"""Encoders and predictors from a config: the one place that turns ``model`` / ``data`` settings into modules.

Video is an explicit choice: ``data.num_frames > 1`` builds a 3-D tubelet encoder
(``model.tubelet_size`` frames x ``model.patch_size``^2 pixels per token), ``data.num_frames == 1`` an image
encoder. Nothing here looks at an input's size to decide.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from openjepa.config import Config
from openjepa.models.predictor import Predictor
from openjepa.models.rope import ROPE_VARIANTS
from openjepa.models.vit import VisionTransformer, build_vit

__all__ = ["build_encoder", "build_predictor", "token_grid"]


def build_encoder(cfg: Config, **overrides: Any) -> VisionTransformer:
    """The encoder described by ``cfg.model`` for inputs of ``cfg.data`` (image size, frames per clip).

    Args:
        cfg: the run config.
        **overrides: constructor arguments that replace the config's (e.g. ``drop_path=0.0``).
    """
    kwargs: dict[str, Any] = {
        "qkv_bias": cfg.model.qkv_bias,
        "drop_path": cfg.model.drop_path,
        "rescale_init": cfg.model.rescale_init,
        "num_frames": cfg.data.num_frames,
        "tubelet_size": cfg.model.tubelet_size,
        "pos": cfg.model.pos,
        "stem": cfg.model.stem,
    }
    kwargs.update(overrides)
    return build_vit(cfg.model.arch, img_size=cfg.data.image_size, patch_size=cfg.model.patch_size, **kwargs)


def token_grid(cfg: Config) -> tuple[int, ...]:
    """The encoder's token grid, ``(H, W)`` for images or ``(T, H, W)`` for video, without building it."""
    side = cfg.data.image_size // cfg.model.patch_size
    if cfg.data.num_frames > 1:
        return (cfg.data.num_frames // cfg.model.tubelet_size, side, side)
    return (side, side)


def build_predictor(
    cfg: Config,
    encoder: VisionTransformer,
    conditioner: nn.Module | None = None,
    num_mask_tokens: int = 1,
    out_dim: int | None = None,
    zero_mask_tokens: bool = False,
) -> Predictor:
    """The narrow predictor for ``encoder`` described by ``cfg.model`` (heads default to the encoder's).

    Args:
        cfg: the run config.
        encoder: the context encoder (its grid and width).
        conditioner: optional per-block conditioning module (TC-JEPA).
        num_mask_tokens: one learned mask token per mask generator.
        out_dim: width of the predicted features (default: the encoder's; SALT: the teacher's).
        zero_mask_tokens: zero-initialized mask tokens (V-JEPA) instead of truncated normal (I-JEPA).

    The predictor uses rotary positions when the encoder does (V-JEPA 2), its sin-cos table otherwise
    (also for an encoder with a stored table: the predictor's own table is computed for the grid).
    """
    return Predictor(
        grid_size=encoder.grid_size,
        embed_dim=encoder.embed_dim,
        pred_dim=cfg.model.pred_dim,
        depth=cfg.model.pred_depth,
        num_heads=cfg.model.pred_heads or encoder.num_heads,
        qkv_bias=cfg.model.qkv_bias,
        conditioner=conditioner,
        rescale_init=cfg.model.rescale_init,
        num_mask_tokens=num_mask_tokens,
        out_dim=out_dim,
        zero_mask_tokens=zero_mask_tokens,
        pos=encoder.pos if encoder.pos in ROPE_VARIANTS else "sincos",
    )
