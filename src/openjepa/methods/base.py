"""The Method contract every pretraining method follows, and the registry the loop builds from.

A method is an ``nn.Module`` with

- ``forward(batch, step) -> (loss, metrics)``: metrics are detached tensors (no host sync in the step);
- ``param_groups()``: AdamW groups, with ``apply_wd`` telling the loop which groups follow the
  weight-decay schedule (biases and other 1-D parameters get none);
- ``after_step(step)``: work after the optimizer step (EMA update, ...);
- ``encoder_for_eval()``: the encoder whose frozen features are evaluated and exported.

A new method is a new file in this folder plus an entry in :data:`METHODS`; the loop does not change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from openjepa.config import Config, ConfigError

Metrics = dict[str, torch.Tensor]


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
    """Base class: subclasses implement ``forward``; the defaults below cover the usual cases.

    Class attributes tell the data pipeline what a batch must carry: ``needs_masks`` (context/target
    indices) and ``needs_text`` (caption embeddings ``text_emb``, ``text_mask``, ``caption_mask``).
    """

    needs_masks = True
    needs_text = False

    def param_groups(self) -> list[dict[str, Any]]:
        """AdamW parameter groups over every trainable parameter."""
        return split_decay(self.named_parameters())

    def after_step(self, step: int) -> None:
        """Called after each optimizer step with the step number that was just taken."""

    def encoder_for_eval(self) -> nn.Module:
        """The encoder to evaluate and export."""
        raise NotImplementedError


MethodFactory = Callable[[Config, int], Method]
METHODS: dict[str, str] = {
    "ijepa": "openjepa.methods.ijepa:IJEPA",
    "tcjepa": "openjepa.methods.tcjepa:TCJEPA",
    "clip": "openjepa.methods.clip:CLIP",
}


def method_class(name: str) -> type[Method]:
    """The class registered under ``name`` (imported on demand)."""
    import importlib

    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r} (config key 'method'); choose one of {', '.join(METHODS)}")
    module, attr = METHODS[name].split(":")
    return getattr(importlib.import_module(module), attr)


def build_method(cfg: Config, total_steps: int) -> Method:
    """Instantiates ``cfg.method`` (schedules inside the method, e.g. EMA momentum, need ``total_steps``)."""
    return method_class(cfg.method)(cfg, total_steps)
