"""Schedules as pure functions of the global step: resuming needs nothing but the step number.

Used by the training loop (learning rate, weight decay) and by methods (EMA momentum), so it lives
beside both rather than inside either.
"""

from __future__ import annotations

import math


def warmup_cosine(step: int, total: int, warmup: int, start: float, peak: float, final: float) -> float:
    """Linear warmup ``start -> peak`` over ``warmup`` steps, then cosine ``peak -> final`` at ``total``."""
    if step < warmup:
        return start + (peak - start) * step / max(warmup, 1)
    progress = min(1.0, (step - warmup) / max(total - warmup, 1))
    return final + 0.5 * (peak - final) * (1.0 + math.cos(math.pi * progress))


def cosine_ramp(step: int, total: int, start: float, final: float) -> float:
    """Cosine-shaped move from ``start`` (step 0) to ``final`` (step ``total``); I-JEPA's weight decay."""
    progress = min(1.0, step / max(total, 1))
    return final + 0.5 * (start - final) * (1.0 + math.cos(math.pi * progress))


def linear(step: int, total: int, start: float, final: float) -> float:
    """Linear move from ``start`` to ``final`` over ``total`` steps (EMA momentum 0.996 -> 1.0)."""
    return start + (final - start) * min(1.0, step / max(total, 1))
