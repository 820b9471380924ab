"""Shared helpers of the theory tests: an independent high-precision critical time, random valid inputs."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest


def _mpmath_critical_time(objective: str, depth: int, eps: float, lam: float, rho: float, p: float) -> float:
    """τ* = ∫ dw̄ / (dw̄/dτ) from ε to p w̄*, by mpmath tanh-sinh quadrature at 30 digits.

    Written from the ODE alone (no closed form). With s = log w̄ the integrand is e^{-m s}/(λ (1 − ψ)); the
    substitution u = e^{-m (s − s0)} removes the exponential, leaving ∫ du / (1 − ψ) over [u1, 1] with
    ψ = ψ0 u^{-k}, a bounded integrand (tanh-sinh copes with its near-singular end when p -> 1).
    """
    import mpmath as mp

    if objective == "jepa":
        m, power, log_wstar = mp.mpf(2) - mp.mpf(1) / depth, mp.mpf(1) / depth, depth * mp.log(rho)
    else:
        m, power = mp.mpf(1) - mp.mpf(1) / depth, mp.mpf(depth + 1) / depth
        log_wstar = mp.mpf(depth) / (depth + 1) * mp.log(rho)
    s0 = mp.log(mp.mpf(eps))
    s1 = mp.log(mp.mpf(p)) + log_wstar
    if s0 >= s1:
        return 0.0
    log_rho = mp.log(mp.mpf(rho))

    def one_minus_psi(s: mp.mpf) -> mp.mpf:
        return -mp.expm1(power * s - log_rho)

    if m == 0:  # MAE at L = 1: no exponential to remove
        value = mp.quad(lambda s: 1 / one_minus_psi(s), [s0, s1]) / lam
        return float(value)
    u1 = mp.exp(-m * (s1 - s0))
    integral = mp.quad(lambda u: 1 / one_minus_psi(s0 - mp.log(u) / m), [u1, 1])
    return float(mp.exp(-m * s0) / (lam * m) * integral)


def _mpmath_critical_time_30(*args: object) -> float:
    import mpmath as mp

    with mp.workdps(30):
        return _mpmath_critical_time(*args)  # type: ignore[arg-type]


@pytest.fixture
def reference_tau() -> Callable[..., float]:
    """The independent mpmath critical time (skips the test if mpmath is missing)."""
    pytest.importorskip("mpmath")
    return _mpmath_critical_time_30


def random_valid_inputs(n: int, seed: int) -> list[tuple[str, int, float, float, float, float]]:
    """``n`` random valid (objective, L, ε, λ, ρ, p) spread over the whole domain, extremes included."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        objective = str(rng.choice(["jepa", "mae"]))
        depth = int(rng.choice([1, 2, 3, 5, 8, 13, 30, 100]))
        rho = float(10 ** rng.uniform(-1.3, 0.8))
        lam = float(10 ** rng.uniform(-3, 3))
        p = float(rng.choice([1e-6, 0.01, 0.3, 0.5, 0.9, 1 - 1e-6, rng.uniform(0.01, 0.99)]))
        # ε^{1/L} = ρ · (a fraction): near 0, mid-range, or close to the validity edge.
        frac = float(rng.choice([1e-12, 1e-3, 0.1, 0.5, 0.9, 0.999]))
        log_eps = depth * (math.log(rho) + math.log(frac))
        if log_eps < -700:  # keep ε a normal float64
            continue
        log_level = math.log(p) + (depth if objective == "jepa" else depth / (depth + 1)) * math.log(rho)
        if abs(log_eps - log_level) < 1e-6:  # ε ≈ p w̄*: τ* ≈ 0 is ill-conditioned in relative terms
            continue
        out.append((objective, depth, math.exp(log_eps), lam, rho, p))
    return out


@pytest.fixture
def random_inputs() -> Callable[[int, int], list[tuple[str, int, float, float, float, float]]]:
    """:func:`random_valid_inputs` as a fixture (test modules cannot import each other under importlib)."""
    return random_valid_inputs
