"""Questions the theory answers: critical times by any method, the depth sweep, the order flip.

``critical_time`` is the one front door over the four ways of computing a critical time:

- ``closed``: the exact solution (numerically robust closed form; the default),
- ``ode``: numerical integration of the per-feature ODE (scipy),
- ``series``: Theorem 4.5's sum (JEPA) or the MAE leading term — asymptotic, p-independent,
- ``gd``: literally run gradient descent (d = 1, aligned balanced init) and count steps.

All times are in the paper's convention τ = L · t.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from openjepa.theory.closed_form import critical_time_closed, critical_time_series, log_critical_time_closed
from openjepa.theory.model import InvalidParameterError, check_feature, fixed_point, product_fixed_point
from openjepa.theory.odes import critical_time_ode, critical_time_quad
from openjepa.theory.simulate import critical_time_gd

METHODS = ("closed", "ode", "series", "gd", "quad")


@dataclass(frozen=True)
class CriticalTime:
    """A critical time and what it refers to.

    Attributes:
        objective: ``"jepa"`` or ``"mae"``.
        depth: L.
        eps: initial w̄.
        lam: λ.
        rho: ρ.
        p: fraction of the fixed point.
        method: how ``tau`` was computed.
        tau: critical time in paper time τ = L t (inf if beyond float range).
        t: the same in gradient-descent time t = lr × steps (τ / L).
        log10_tau: log10 of tau, finite even when tau overflows (closed method).
        fixed_point: w̄* (ρ^L for JEPA, ρ^{L/(L+1)} for MAE).
        product_fixed_point: V W̄ at the fixed point (ρ^{L+1} or ρ).
        level: the w̄ value that counts as learned, p · w̄*.
        lr: learning rate (gd method only).
        steps: gradient steps (gd method only).
    """

    objective: str
    depth: int
    eps: float
    lam: float
    rho: float
    p: float
    method: str
    tau: float
    t: float
    log10_tau: float
    fixed_point: float
    product_fixed_point: float
    level: float
    lr: float | None = None
    steps: int | None = None

    def to_dict(self) -> dict[str, float | int | str | None]:
        """JSON-ready dict (infinite times become ``None``; see ``log10_tau``)."""
        out = asdict(self)
        for key in ("tau", "t"):
            if isinstance(out[key], float) and not math.isfinite(out[key]):
                out[key] = None
        if not math.isfinite(out["log10_tau"]):
            out["log10_tau"] = None
        return out


def critical_time(
    objective: str,
    depth: int,
    eps: float,
    lam: float,
    rho: float,
    p: float = 0.5,
    method: str = "closed",
    lr: float | None = None,
) -> CriticalTime:
    """Critical time τ*: the first τ with w̄(τ) >= p w̄*, by ``method``.

    Raises:
        InvalidParameterError: inputs outside the theory's domain (λ, ρ, ε > 0, ε^{1/L} < ρ, L >= 1,
            0 < p < 1) or an unknown method.
    """
    if method not in METHODS:
        raise InvalidParameterError(f"method must be one of {', '.join(METHODS)} (got {method!r})")
    check_feature(objective, depth, eps, lam, rho, p)
    steps = None
    if method == "closed":
        log_tau = log_critical_time_closed(objective, depth, eps, lam, rho, p)
        tau = critical_time_closed(objective, depth, eps, lam, rho, p)
        log10_tau = log_tau / math.log(10) if log_tau > -math.inf else -math.inf
    else:
        if method == "ode":
            tau = critical_time_ode(objective, depth, eps, lam, rho, p)
        elif method == "quad":
            tau = critical_time_quad(objective, depth, eps, lam, rho, p)
        elif method == "series":
            tau = critical_time_series(objective, depth, eps, lam, rho)
        else:
            result = critical_time_gd(objective, depth, eps, lam, rho, p, lr=lr)
            tau, lr, steps = result.tau, result.lr, result.steps
        log10_tau = math.log10(tau) if tau > 0 else -math.inf
    w_star = fixed_point(objective, depth, rho)
    return CriticalTime(
        objective=objective,
        depth=depth,
        eps=eps,
        lam=lam,
        rho=rho,
        p=p,
        method=method,
        tau=tau,
        t=tau / depth,
        log10_tau=log10_tau,
        fixed_point=w_star,
        product_fixed_point=product_fixed_point(objective, depth, rho),
        level=p * w_star,
        lr=lr if method == "gd" else None,
        steps=steps,
    )


# --------------------------------------------------------------------------------------------------
# Depth sweep


def valid_depth(depth: int, eps: float, rhos: tuple[float, ...], p: float) -> str | None:
    """Why a depth is unusable for features with these ρ (None if usable).

    Unusable: ε^{1/L} >= ρ (outside the theory), or ε >= p ρ^L for JEPA (the feature starts already
    "learned", critical time 0, so ratios would say nothing).
    """
    for rho in rhos:
        if math.log(eps) / depth >= math.log(rho):
            return f"eps^(1/L) >= rho = {rho:g}"
        if math.log(eps) >= math.log(p) + depth * math.log(rho):
            return f"eps >= p rho^L for rho = {rho:g} (starts above the learned level)"
    return None


def auto_depths(eps: float, rhos: tuple[float, ...], p: float, max_depth: int = 12) -> list[int]:
    """All depths 1..max_depth usable for these features (see :func:`valid_depth`)."""
    return [d for d in range(1, max_depth + 1) if valid_depth(d, eps, rhos, p) is None]


def depth_sweep(
    depths: list[int],
    eps: float = 1e-3,
    lam: float = 1.0,
    rho_low: float = 0.5,
    rho_high: float = 1.0,
    p: float = 0.5,
    method: str = "closed",
) -> list[dict[str, float | int | str | None]]:
    """The ratio t*(ρ_low) / t*(ρ_high) of both objectives at each depth (same λ).

    Above 1 means the high-ρ feature is learned first. JEPA's ratio grows with depth; MAE's stays near 1
    (its leading term ignores ρ).

    Returns:
        One row per depth: depth, the four critical times, ``jepa_ratio``, ``mae_ratio`` and ``note``
        (why a depth was skipped, else None).
    """
    rows: list[dict[str, float | int | str | None]] = []
    for depth in depths:
        reason = valid_depth(depth, eps, (rho_low, rho_high), p)
        row: dict[str, float | int | str | None] = {"depth": depth, "note": reason}
        if reason is None:
            for objective in ("jepa", "mae"):
                low = critical_time(objective, depth, eps, lam, rho_low, p, method).tau
                high = critical_time(objective, depth, eps, lam, rho_high, p, method).tau
                row[f"{objective}_tau_low"] = low
                row[f"{objective}_tau_high"] = high
                row[f"{objective}_ratio"] = low / high
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------------
# Order flip


def order_flip(
    depths: list[int],
    feature_a: tuple[float, float] = (1.0, 1.0),
    feature_b: tuple[float, float] = (2.0, 0.3),
    eps: float = 1e-3,
    p: float = 0.5,
    method: str = "closed",
) -> tuple[list[dict[str, float | int | str | None]], int | None]:
    """Which of two features (λ, ρ) each objective learns first, depth by depth.

    The default pair is the spec's: A = (λ 1, ρ 1) clean, B = (λ 2, ρ 0.3) noisy but higher covariance.

    Returns:
        (rows, flip_depth): rows with both objectives' critical times and the feature learned first
        (``"A"``, ``"B"`` or ``"tie"``); flip_depth is the first depth where JEPA and MAE learn different
        features first (None if never).
    """
    rows: list[dict[str, float | int | str | None]] = []
    flip: int | None = None
    for depth in depths:
        reason = valid_depth(depth, eps, (feature_a[1], feature_b[1]), p)
        row: dict[str, float | int | str | None] = {"depth": depth, "note": reason}
        if reason is None:
            for objective in ("jepa", "mae"):
                ta = critical_time(objective, depth, eps, feature_a[0], feature_a[1], p, method).tau
                tb = critical_time(objective, depth, eps, feature_b[0], feature_b[1], p, method).tau
                row[f"{objective}_tau_a"] = ta
                row[f"{objective}_tau_b"] = tb
                row[f"{objective}_first"] = "A" if ta < tb else ("B" if tb < ta else "tie")
            if flip is None and row["jepa_first"] != row["mae_first"]:
                flip = depth
        rows.append(row)
    return rows, flip
