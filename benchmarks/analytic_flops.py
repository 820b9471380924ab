"""Exact matrix-multiply FLOPs of I-JEPA / TC-JEPA steps from shapes (attention's quadratic term included).

A finer count than the methods' own 6·N·D convention (``Method.flops``), used to compare TC-JEPA's cost
with I-JEPA's (``benchmarks/tcjepa_cost.py``): 2 FLOPs per multiply-add, backward = 2x forward.
"""

from __future__ import annotations

from dataclasses import dataclass

from openjepa.config import Config
from openjepa.models.vit import vit_spec


def vit_forward_flops(tokens: int, dim: int, depth: int, mlp_ratio: float = 4.0) -> float:
    """FLOPs of ``depth`` pre-norm transformer blocks on one sequence of ``tokens`` tokens."""
    dense = 2 * tokens * dim * (3 * dim + dim + 2 * int(dim * mlp_ratio))  # qkv, proj, mlp
    attn = 2 * 2 * tokens * tokens * dim  # scores and weighted sum
    return depth * (dense + attn)


@dataclass
class StepFlops:
    """Analytic FLOPs of one JEPA step, split by part."""

    teacher: float
    student: float
    predictor: float
    conditioner: float = 0.0

    @property
    def total(self) -> float:
        return self.teacher + self.student + self.predictor + self.conditioner


def conditioner_forward_flops(cfg: Config, seq_tokens: int, captions: int, words: int) -> float:
    """Forward FLOPs of TC-JEPA's text conditioner on one predictor sequence of ``seq_tokens`` tokens.

    Per conditioned layer: the query projection once; key/value projections, attention, rectified cosines and
    the output projection once per caption; the MLP once after pooling (``tcjepa.mlp=after_pool``) or once per
    caption (``per_caption``).
    """
    if cfg.tcjepa.mode != "xattn":
        return 0.0
    d, dt, n, s, length = cfg.model.pred_dim, cfg.text.dim, captions, words, seq_tokens
    # Words are projected to width d once per image (shared by all layers), then to keys and values once per
    # image and layer: both are divided over the image's `num_targets` sequences.
    t = cfg.mask.num_targets
    text_proj = n * 2 * s * dt * d / t
    kv = 2 * 2 * s * d * d / t
    per_caption = kv + 2 * 2 * length * s * d + 2 * length * s * d + 2 * length * d * d
    mlp = 2 * length * d * 4 * d * 2 * (n if cfg.tcjepa.mlp == "per_caption" else 1)
    layers = len(cfg.tcjepa.layers) if cfg.tcjepa.layers is not None else cfg.model.pred_depth
    return text_proj + layers * (2 * length * d * d + n * per_caption + mlp)


def step_flops(cfg: Config, batch_size: int, kc: int, t: int, kt: int, captions: int = 0, words: int = 0) -> StepFlops:
    """FLOPs of one step (teacher fwd on all patches, student and predictor fwd + bwd = 3x fwd), from shapes."""
    spec = vit_spec(cfg.model.arch)
    d, depth, mlp = spec.embed_dim, spec.depth, spec.mlp_ratio
    p = cfg.model.patch_size
    n = (cfg.data.image_size // p) ** 2
    stem = 2 * 3 * p * p * d
    teacher = batch_size * (n * stem + vit_forward_flops(n, d, depth, mlp))
    student = 3 * batch_size * (n * stem + vit_forward_flops(kc, d, depth, mlp))
    pd = cfg.model.pred_dim
    pred_fwd = batch_size * (2 * kc * d * pd) + batch_size * t * (
        vit_forward_flops(kc + kt, pd, cfg.model.pred_depth) + 2 * kt * pd * d
    )
    cond = 0.0
    if cfg.method == "tcjepa":  # the conditioner only exists in TC-JEPA
        cond = 3 * batch_size * t * conditioner_forward_flops(cfg, kc + kt, captions, words)
    return StepFlops(teacher, student, 3 * pred_fwd, cond)


