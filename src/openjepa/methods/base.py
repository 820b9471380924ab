"""The Method contract every pretraining method follows.

A method is an ``nn.Module`` with

- ``forward(batch, step) -> (loss, metrics)``: metrics are detached tensors (no host sync in the step);
- ``param_groups()``: AdamW groups, with ``apply_wd`` telling the loop which groups follow the
  weight-decay schedule (biases and other 1-D parameters get none);
- ``after_step(step)``: work after the optimizer step (EMA update, ...);
- ``log_values(step)``: host-side numbers worth logging on logging steps (the EMA momentum, ...);
- ``encoder_for_eval()``: the encoder whose frozen features are evaluated and exported;
- ``flops(batch)``: the training FLOPs of one micro-batch, split by part, from tensor shapes only
  (:mod:`openjepa.methods.flops` has the convention); ``prior_flops()``: FLOPs spent before this run on
  what it builds on (SALT: its teacher's run), so a compute budget can cover every stage.

It also *declares* what it needs, so the data pipeline and the loop never test for a method, a modality or
an attribute: :meth:`Method.data_needs` (input key, masks, captions), :meth:`Method.check_config`
(method-specific settings), and ``sections`` (the config sections it reads beyond the common ones).

A new method is a new file in this folder, decorated with ``@register("name")`` and imported in
``methods/__init__.py``; the loop does not change.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from openjepa.config import Config, ConfigError
from openjepa.methods.flops import param_count, trained_flops

Metrics = dict[str, torch.Tensor]


@dataclass(frozen=True)
class DataNeeds:
    """What a batch must carry for a method.

    Attributes:
        input_key: ``"image"`` (``[B, 3, H, W]``) or ``"video"`` (``[B, 3, T, H, W]``).
        masks: whether the batch carries ``masks`` (one ``{"ctx_idx", "tgt_idx"}`` per generator of ``cfg.mask``).
        text: whether it carries caption embeddings (``text_emb``, ``text_mask``, ``caption_mask``).
    """

    input_key: str
    masks: bool
    text: bool


def input_key_for(cfg: Config) -> str:
    """``"video"`` when clips have several frames (``data.num_frames > 1``), else ``"image"``."""
    return "video" if cfg.data.num_frames > 1 else "image"


def split_decay(named_params: Iterable[tuple[str, nn.Parameter]]) -> list[dict[str, Any]]:
    """Two AdamW groups: weights with weight decay, biases and 1-D parameters (norms, tokens) without."""
    decay, no_decay = [], []
    for name, p in named_params:
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    groups = [{"params": decay, "apply_wd": True}, {"params": no_decay, "apply_wd": False, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


class Method(nn.Module):
    """Base class: subclasses implement ``__init__(cfg, total_steps)`` and ``forward``.

    Class attributes: ``name`` (set by :func:`~openjepa.methods.registry.register`), ``default_loss`` (what
    ``train.loss=auto`` means), ``uses_masks``, ``uses_text`` and ``sections`` (config sections read besides
    model/mask/data/optim/train/eval).
    """

    name: ClassVar[str] = ""
    default_loss: ClassVar[str] = "smooth_l1"  # what train.loss=auto means for this method
    uses_masks: ClassVar[bool] = True
    uses_text: ClassVar[bool] = False
    sections: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def data_needs(cls, cfg: Config) -> DataNeeds:
        """What the data pipeline must put in each batch for this method under ``cfg``."""
        return DataNeeds(input_key_for(cfg), cls.uses_masks, cls.uses_text)

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        """Raises :class:`ConfigError` for settings this method cannot run with (before anything is built)."""

    @classmethod
    def prediction_loss(cls, cfg: Config) -> str:
        """``train.loss``, with ``auto`` resolved to the method's paper's loss (:attr:`default_loss`)."""
        return cls.default_loss if cfg.train.loss == "auto" else cfg.train.loss

    def param_groups(self) -> list[dict[str, Any]]:
        """AdamW parameter groups over every trainable parameter."""
        return split_decay(self.named_parameters())

    def after_step(self, step: int) -> None:
        """Called after each optimizer step with the step number that was just taken."""

    def log_values(self, step: int) -> dict[str, float]:
        """Host-side values logged beside the loss on logging steps (no device sync expected)."""
        return {}

    def encoder_for_eval(self) -> nn.Module:
        """The encoder to evaluate and export."""
        raise NotImplementedError

    def flops(self, batch: dict[str, Any]) -> dict[str, float]:
        """Training FLOPs of one forward + backward on ``batch`` (this process's micro-batch), by part.

        Reads shapes only (no device sync). The default fits methods that encode the whole input once with
        the evaluated encoder, trained, plus small heads applied once per sample (CLIP):
        ``student = 6 * N_encoder * B * tokens`` and ``heads = 6 * N_rest * B`` over the other trainable
        parameters. Methods that mask their input or run a teacher override it.
        """
        x = next(batch[k] for k in ("video", "image") if k in batch)  # the input, whichever the method reads
        encoder = self.encoder_for_eval()
        b = int(x.shape[0])
        tokens = b * math.prod(encoder.patch_embed.grid(x.shape[2:]))  # type: ignore[operator,union-attr]
        in_encoder = {id(p) for p in encoder.parameters()}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in in_encoder]
        parts = {"student": trained_flops(param_count(encoder), tokens)}
        if rest:
            parts["heads"] = trained_flops(param_count(rest), b)
        return parts

    def prior_flops(self) -> float | None:
        """Training FLOPs spent before this run on what it starts from (0: nothing; SALT: its teacher's run).

        None means there is an earlier stage whose cost is unknown (the loop then counts this run only and
        says so in the log).
        """
        return 0.0

    def encoder_prefix(self) -> str:
        """The state-dict prefix of :meth:`encoder_for_eval` inside this method (e.g. ``"teacher.model."``).

        Checkpoints record it, so an encoder can be read from a training checkpoint without rebuilding the
        whole method.
        """
        target = self.encoder_for_eval()
        for name, module in self.named_modules():
            if module is target:
                return f"{name}." if name else ""
        raise RuntimeError(f"{type(self).__name__}.encoder_for_eval() is not a submodule of the method")


def require_teacher(cfg: Config, kind: str, method: str) -> None:
    """Checks ``teacher.kind`` for methods that support one kind of teacher only."""
    if cfg.teacher.kind != kind:
        hint = " (a frozen teacher is SALT: method=salt)" if kind == "ema" else ""
        raise ConfigError(f"method={method} needs teacher.kind={kind}, got {cfg.teacher.kind!r}{hint}")
