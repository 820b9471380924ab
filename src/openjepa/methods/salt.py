"""SALT, stage 2: a student predicts a frozen teacher's latents (Li et al., 2025, "Rethinking JEPA").

Stage 1 trains the teacher by masked pixel reconstruction (``method: vpixel``, :mod:`openjepa.methods.vpixel`).
Stage 2 is this method: the teacher (``teacher.kind=frozen``, ``teacher.checkpoint=PATH``, any encoder
openjepa can read) encodes the full clip once; a freshly initialized student encoder sees each mask
generator's context and the predictor, with that generator's zero-initialized mask token, predicts the
teacher's layer-normed final tokens (``teacher.layer_norm_targets``) at its targets; L1 (``train.loss=auto``
or ``l1``), averaged over the mask pairs. No EMA, no regularizer. The predictor outputs the *teacher's*
width, so teacher and student sizes are independent. The student is the encoder that is evaluated and
exported.

Everything but the teacher is :class:`~openjepa.methods.ijepa.IJEPA`'s (V-JEPA's settings on video; on
images it is I-JEPA with a frozen teacher, e.g. an MAE trained with ``method: vpixel``).
"""

from __future__ import annotations

from torch import nn

from openjepa.config import Config, ConfigError
from openjepa.methods.ijepa import IJEPA
from openjepa.methods.registry import register
from openjepa.methods.teachers import FrozenTeacher

__all__ = ["SALT", "check_teacher_fits"]


def _describe(encoder: nn.Module) -> str:
    grid = "x".join(map(str, encoder.grid_size))  # type: ignore[union-attr]
    if encoder.is_video:  # type: ignore[union-attr]
        cut = f"{encoder.tubelet_size}x{encoder.patch_size}x{encoder.patch_size} tubelets"
        size = f"{encoder.num_frames} frames of {encoder.img_size[0]}x{encoder.img_size[1]} px"
    else:
        cut = f"{encoder.patch_size}x{encoder.patch_size} patches"
        size = f"{encoder.img_size[0]}x{encoder.img_size[1]} px images"
    return f"grid {grid} ({cut}, {size})"


def check_teacher_fits(teacher: nn.Module, student: nn.Module, path: str) -> None:
    """The student predicts the teacher's token at each masked position: both must cut the input alike.

    Raises:
        ConfigError: another token grid, patch or tubelet (the message names both and the keys to change).
    """
    same = (
        tuple(teacher.grid_size) == tuple(student.grid_size)  # type: ignore[arg-type]
        and teacher.patch_size == student.patch_size
        and teacher.tubelet_size == student.tubelet_size
    )
    if not same:
        raise ConfigError(
            f"teacher.checkpoint={path}: the teacher's {_describe(teacher)} does not match the student's "
            f"{_describe(student)}; the student predicts the teacher's token at each masked position, so both must "
            "cut the input into the same tokens. Set data.image_size, data.num_frames, model.patch_size and "
            "model.tubelet_size to the teacher's, or train a teacher with the student's settings"
        )


@register("salt")
class SALT(IJEPA):
    """SALT's student behind the Method contract. Batch keys: ``video [B,3,T,H,W]`` (or ``image``) and one
    mask pair per generator (``mask.kind=multiblock3d``: V-JEPA's short- and long-range masks)."""

    zero_mask_tokens = True  # V-JEPA's predictor
    default_loss = "l1"  # the paper's (V-JEPA's) loss

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        if cfg.teacher.kind != "frozen":
            raise ConfigError(
                f"method=salt learns from a frozen teacher: set teacher.kind=frozen and teacher.checkpoint=PATH, got "
                f"teacher.kind={cfg.teacher.kind!r} (an EMA teacher is method=vjepa for video, ijepa for images)"
            )
        if not cfg.teacher.checkpoint:
            raise ConfigError(
                "method=salt needs teacher.checkpoint=PATH: the frozen teacher's run folder, training checkpoint or "
                "exported .safetensors (stage 1: `openjepa pretrain configs/salt/demo-teacher.yaml` writes "
                "runs/salt-demo-teacher)"
            )

    def build_teacher(self, cfg: Config) -> FrozenTeacher:  # type: ignore[override]
        """The frozen teacher of ``teacher.checkpoint``, checked against the student's tokens."""
        path = str(cfg.teacher.checkpoint)
        teacher = FrozenTeacher.from_checkpoint(path)
        check_teacher_fits(teacher.model, self.encoder, path)
        return teacher

    def after_step(self, step: int) -> None:
        """Nothing: the teacher is frozen (no EMA)."""

    def log_values(self, step: int) -> dict[str, float]:
        return {}

    def encoder_for_eval(self) -> nn.Module:
        """The student (only the student is evaluated)."""
        return self.encoder

    def prior_flops(self) -> float | None:
        """The teacher run's training FLOPs (stage 1, and its own earlier stages), as its checkpoint records them;
        None when its file does not say (an export without them, an official checkpoint)."""
        return self.teacher.recorded_flops
