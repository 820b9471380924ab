"""Numerical side of the per-feature dynamics: the ODE right-hand sides, scipy integration, fixed points.

Everything is in the paper's time τ = L · t. The integrations work with s = log w̄: w̄ spans many orders
of magnitude between ε and w̄*, and in log scale the solver's relative tolerance means the same thing
on the long plateau and during the fast transition.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import integrate

from openjepa.theory.model import check_feature, check_objective, log_fixed_point


def rate(objective: str, wbar: float | np.ndarray, depth: int, lam: float, rho: float) -> float | np.ndarray:
    """dw̄/dτ of one feature.

    JEPA: λ w̄^{3 − 1/L} − (λ/ρ) w̄^3;  MAE: λ w̄^{2 − 1/L} − (λ/ρ) w̄^3.
    """
    check_objective(objective)
    wbar = np.asarray(wbar, dtype=np.float64)
    lead = 3 - 1 / depth if objective == "jepa" else 2 - 1 / depth
    out = lam * wbar**lead - lam / rho * wbar**3
    return float(out) if out.ndim == 0 else out


def log_rate(objective: str, s: float, depth: int, lam: float, rho: float) -> float:
    """d(log w̄)/dτ at s = log w̄, written so that nothing overflows: λ w̄^{m} (1 − ψ).

    m = 2 − 1/L and ψ = w̄^{1/L}/ρ (JEPA); m = 1 − 1/L and ψ = w̄^{(L+1)/L}/ρ (MAE).
    """
    if objective == "jepa":
        m, power = 2 - 1 / depth, 1 / depth
    else:
        m, power = 1 - 1 / depth, (depth + 1) / depth
    return lam * math.exp(m * s) * -math.expm1(power * s - math.log(rho))


@dataclass(frozen=True)
class FixedPoint:
    """A fixed point of dw̄/dτ on w̄ >= 0.

    Attributes:
        wbar: location.
        slope: d(dw̄/dτ)/dw̄ there (0 at the degenerate origin).
        stable: whether nearby positive w̄ flows into it.
    """

    wbar: float
    slope: float
    stable: bool


def fixed_points(objective: str, depth: int, lam: float, rho: float) -> list[FixedPoint]:
    """The fixed points on w̄ >= 0: the origin (degenerate, unstable from above) and w̄* (stable).

    The slope at w̄* is −λ ρ^{2L−1}/L (JEPA) or −λ (L+1)/L · ρ^{(L−1)/(L+1)} (MAE); it sets the time
    scale of the final approach.
    """
    check_objective(objective)
    w_star = math.exp(log_fixed_point(objective, depth, rho))
    if objective == "jepa":
        slope = -lam * rho ** (2 * depth - 1) / depth
    else:
        slope = -lam * (depth + 1) / depth * rho ** ((depth - 1) / (depth + 1))
    # dw̄/dτ ~ λ w̄^{m} near 0 with m > 1 (m = 1 for MAE at L = 1): zero slope, but it pushes w̄ away.
    origin_slope = lam if (objective == "mae" and depth == 1) else 0.0
    return [FixedPoint(0.0, origin_slope, False), FixedPoint(w_star, slope, True)]


def critical_time_ode(
    objective: str, depth: int, eps: float, lam: float, rho: float, p: float = 0.5, rtol: float = 1e-12
) -> float:
    """Critical time τ* by integrating the ODE numerically (scipy DOP853) until w̄ = p w̄*.

    Independent of the closed forms; used to check them. τ* can exceed 1e60 while the final transition
    takes O(1), which no solver stepping in τ resolves. So the ODE is integrated on its own clock σ,
    dσ = λ w̄^m dτ (m as in :func:`log_rate`), where it reads d(log w̄)/dσ = 1 − ψ (regular, O(1)), and
    τ rides along as a second state, dτ/dσ = e^{−m log w̄}/λ > 0, so its relative accuracy is the
    solver's.
    """
    check_feature(objective, depth, eps, lam, rho, p)
    s0 = math.log(eps)
    s_target = math.log(p) + log_fixed_point(objective, depth, rho)
    if s0 >= s_target:
        return 0.0
    if objective == "jepa":
        m, power = 2 - 1 / depth, 1 / depth
    else:
        m, power = 1 - 1 / depth, (depth + 1) / depth
    log_rho = math.log(rho)
    # On the way up 1 − ψ >= 1 − ψ_p, so σ needs at most (s_target − s0)/(1 − ψ_p).
    horizon = 2 * (s_target - s0) / -math.expm1(power * math.log(p)) + 1.0
    # τ is integrated in units of its natural size e^{−m s0}/λ: the scaled state ends O(1), so the
    # absolute tolerance on it is a relative one on τ.
    scale_log = -m * s0

    def rhs(_sigma: float, y: np.ndarray) -> list[float]:
        s = float(y[0])
        # Clamps only touch trial stages of oversized steps (which error control then rejects); they
        # keep those stages finite instead of overflowing.
        return [-math.expm1(min(power * s - log_rho, 50.0)), math.exp(min(-m * s - scale_log, 700.0))]

    def hit(_sigma: float, y: np.ndarray) -> float:
        return float(y[0]) - s_target

    hit.terminal = True  # type: ignore[attr-defined]
    hit.direction = 1  # type: ignore[attr-defined]
    sol = integrate.solve_ivp(
        rhs,
        (0.0, horizon),
        [s0, 0.0],
        method="DOP853",
        events=hit,
        rtol=rtol,
        atol=[1e-13, 1e-14],
        dense_output=False,
    )
    if sol.y_events[0].shape[0] == 0:
        raise RuntimeError(f"ODE integration did not reach p w̄* before σ = {horizon:g}: {sol.message}")
    scaled_tau = float(sol.y_events[0][0][1])
    return _exp_or_inf(math.log(scaled_tau) + scale_log - math.log(lam)) if scaled_tau > 0 else 0.0


def critical_time_quad(objective: str, depth: int, eps: float, lam: float, rho: float, p: float = 0.5) -> float:
    """Critical time by quadrature of dτ = dw̄ / f(w̄) from ε to p w̄* (another independent check).

    Integrated in s = log w̄ on unit-length pieces: the integrand e^{−m s}/(λ(1 − ψ)) changes by at
    most e^{2} on each, which Gauss–Kronrod integrates to machine precision.
    """
    check_feature(objective, depth, eps, lam, rho, p)
    s0 = math.log(eps)
    s1 = math.log(p) + log_fixed_point(objective, depth, rho)
    if s0 >= s1:
        return 0.0
    # Pieces finer near the top: the factor 1/(1 − ψ) grows there when p is close to 1.
    edges = [*np.arange(s0, s1, 1.0).tolist(), s1]
    width = s1 - edges[-2]
    top = [s1 - width * 2.0**-j for j in range(1, 30) if width * 2.0**-j > 1e-9 * (1 + abs(s1))]
    edges = sorted(set(edges) | set(top))

    if objective == "jepa":
        m, power = 2 - 1 / depth, 1 / depth
    else:
        m, power = 1 - 1 / depth, (depth + 1) / depth
    log_rho = math.log(rho)

    def integrand(s: float) -> float:
        # 1 / (d log w̄/dτ) in units of e^{−m s0}/λ, so that nothing overflows for tiny ε.
        return math.exp(-m * (s - s0)) / -math.expm1(power * s - log_rho)

    # The lowest piece carries the largest integrand, so it sets the scale of an absolute tolerance
    # that the tiny pieces near the top can meet without fighting roundoff.
    epsabs = 1e-15 * integrand(s0)
    total = 0.0
    with warnings.catch_warnings():
        # Pieces next to a near-singular top (p -> 1) report roundoff before reaching epsrel; their
        # absolute error is still far below epsabs, i.e. below 1e-15 of the total.
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        for lo, hi in itertools.pairwise(edges):
            piece, _ = integrate.quad(integrand, lo, hi, epsabs=epsabs, epsrel=1e-13, limit=200)
            total += piece
    return _exp_or_inf(math.log(total) - m * s0 - math.log(lam))


def _exp_or_inf(log_value: float) -> float:
    return math.exp(log_value) if log_value < 709.78 else math.inf


def solve_trajectory(
    objective: str,
    depth: int,
    eps: float,
    lam: float,
    rho: float,
    taus: np.ndarray,
    rtol: float = 1e-10,
) -> np.ndarray:
    """w̄(τ) at the requested (sorted, >= 0) times, by numerical integration of the ODE (scipy LSODA).

    Args:
        objective: ``"jepa"`` or ``"mae"``.
        depth: encoder depth L.
        eps: initial value w̄(0).
        lam: covariance λ.
        rho: regression coefficient ρ.
        taus: times in the paper's convention τ = L t.
        rtol: relative tolerance of the solver on log w̄.

    Returns:
        Array of w̄ values, same shape as ``taus``.
    """
    check_feature(objective, depth, eps, lam, rho)
    taus = np.asarray(taus, dtype=np.float64)
    if taus.size == 0:
        return taus.copy()
    if np.any(np.diff(taus) < 0) or taus[0] < 0:
        raise ValueError("taus must be sorted and non-negative")

    def rhs(_tau: float, y: np.ndarray) -> list[float]:
        return [log_rate(objective, float(y[0]), depth, lam, rho)]

    # LSODA: the problem turns stiff once w̄ saturates (decay rate |f'(w̄*)| against a long horizon), where
    # an explicit Runge–Kutta method would crawl; LSODA switches to BDF there by itself.
    sol = integrate.solve_ivp(
        rhs, (0.0, float(taus[-1])), [math.log(eps)], method="LSODA", t_eval=taus, rtol=rtol, atol=1e-12
    )
    if not sol.success:
        raise RuntimeError(f"ODE integration failed: {sol.message}")
    return np.exp(sol.y[0])
