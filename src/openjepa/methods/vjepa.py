"""V-JEPA: I-JEPA's feature prediction on video tubelets (Bardes et al., 2024).

The EMA teacher encodes the full clip; two mask generators (short-range and long-range 3-D blocks,
``mask.kind=multiblock3d``) each give a (context, target) pair; the student encodes each context, the
predictor, with one learned zero-initialized mask token per generator, predicts the layer-normed teacher
features of each target; the L1 losses are averaged over the pairs (``train.loss=l1`` in the presets).
Everything else, the loop included, is :class:`~openjepa.methods.ijepa.IJEPA`'s.
"""

from __future__ import annotations

from openjepa.config import Config, ConfigError
from openjepa.methods.ijepa import IJEPA
from openjepa.methods.registry import register


@register("vjepa")
class VJEPA(IJEPA):
    """V-JEPA behind the Method contract. Batch keys: ``video [B,3,T,H,W]`` and one mask pair per generator."""

    zero_mask_tokens = True
    default_loss = "l1"

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        super().check_config(cfg)
        if cfg.data.num_frames < 2:
            raise ConfigError(
                "method=vjepa trains on video clips: set data.num_frames > 1 (16 in the paper) with a video source "
                "(data.source=sprites, or data.source=videos data.path=LIST)"
            )
        if cfg.mask.kind not in ("multiblock3d", "tube"):
            raise ConfigError(
                f"method=vjepa needs video masks: set mask.kind=multiblock3d (or tube), got {cfg.mask.kind!r}"
            )
