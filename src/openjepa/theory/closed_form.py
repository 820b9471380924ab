"""Closed forms of the per-feature dynamics: exact solutions, critical times, series and leading terms.

Time is the paper's τ = L · t (t = learning rate × steps). With w̄(0) = ε the per-feature ODEs are

    JEPA: dw̄/dτ = λ w̄^{3 − 1/L} − (λ/ρ) w̄^3,     w̄* = ρ^L
    MAE:  dw̄/dτ = λ w̄^{2 − 1/L} − (λ/ρ) w̄^3,     w̄* = ρ^{L/(L+1)}

Both are separable, so τ(w̄) = ∫_ε^w̄ dw̄'/f(w̄') in closed form (spec/deep-linear.md). The formulas as
printed subtract huge, nearly equal numbers for small ε or large L (F(ψ) has terms up to ψ^{-(2L-1)}) and
lose everything near ψ -> 1. The functions here rewrite each time as a sum of *positive* pieces and add
them in log space, so the result keeps full relative precision over the whole valid domain (tiny ε,
large L, ρ > 1, p near 0 or 1). The literal formulas are kept as ``*_naive`` / ``*_hypergeometric`` for
checking.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import integrate, special

from openjepa.theory.model import check_feature, check_objective


def _logsumexp(logs: np.ndarray) -> float:
    finite = logs[np.isfinite(logs)]
    if finite.size == 0:
        return -math.inf if np.all(logs == -math.inf) else math.inf
    if np.any(logs == math.inf):
        return math.inf
    top = float(finite.max())
    return top + math.log(float(np.exp(finite - top).sum()))


def _log_pos_log1p_ratio(log_psi0: float, log_psi1: float) -> float:
    """log of log((1 − ψ0)/(1 − ψ1)) for 0 < ψ0 < ψ1 < 1, without cancellation.

    (1 − ψ0)/(1 − ψ1) = 1 + (ψ1 − ψ0)/(1 − ψ1) and ψ1 − ψ0 = ψ1 (1 − ψ0/ψ1), each factor from expm1.
    """
    psi1 = math.exp(log_psi1)
    gap = psi1 * -math.expm1(log_psi0 - log_psi1)
    one_minus_psi1 = -math.expm1(log_psi1)
    if one_minus_psi1 == 0.0:
        return math.inf
    value = math.log1p(gap / one_minus_psi1)
    return math.log(value) if value > 0 else -math.inf


def _safe_log(x: float) -> float:
    return math.log(x) if x > 0 else -math.inf


# --------------------------------------------------------------------------------------------------
# JEPA


def jepa_F(psi: float | np.ndarray, depth: int) -> float | np.ndarray:
    """The spec's antiderivative F(ψ) = −Σ_{n=1}^{2L−1} 1/(n ψ^n) + log ψ − log(1 − ψ), literally.

    Fine for moderate ψ and L; differences of F lose precision for small ψ0 or large L (use
    :func:`jepa_log_time_between`).
    """
    psi = np.asarray(psi, dtype=np.float64)
    n = np.arange(1, 2 * depth, dtype=np.float64)
    series = (1.0 / (n * psi[..., None] ** n)).sum(axis=-1)
    out = -series + np.log(psi) - np.log1p(-psi)
    return float(out) if out.ndim == 0 else out


def jepa_log_time_between(depth: int, lam: float, rho: float, log_psi0: float, log_psi1: float) -> float:
    """log of the JEPA time τ(ψ1) − τ(ψ0) = L [F(ψ1) − F(ψ0)] / (λ ρ^{2L−1}), for ψ = w̄^{1/L}/ρ.

    Every piece of F(ψ1) − F(ψ0) is positive when ψ0 < ψ1 < 1:
    Σ_n (ψ0^{-n} − ψ1^{-n})/n,  log(ψ1/ψ0)  and  log((1 − ψ0)/(1 − ψ1));
    each is computed from expm1/log1p and they are added in log space (no overflow for tiny ψ0).

    Returns:
        log τ; −inf when ψ1 <= ψ0 (no time needed) and +inf when ψ1 >= 1 (never reached).
    """
    if log_psi1 <= log_psi0:
        return -math.inf
    if log_psi1 >= 0.0:
        return math.inf
    lr = log_psi0 - log_psi1  # log(ψ0/ψ1) < 0
    n = np.arange(1, 2 * depth, dtype=np.float64)
    with np.errstate(divide="ignore"):
        series = -np.log(n) - n * log_psi0 + np.log(-np.expm1(n * lr))
    pieces = np.concatenate([series, [math.log(-lr), _log_pos_log1p_ratio(log_psi0, log_psi1)]])
    log_prefactor = math.log(depth) - math.log(lam) - (2 * depth - 1) * math.log(rho)
    return log_prefactor + _logsumexp(pieces)


def jepa_time_naive(depth: int, eps: float, lam: float, rho: float, wbar: float) -> float:
    """τ at which w̄ reaches ``wbar``, from the literal formula L[F(ψ) − F(ψ0)]/(λ ρ^{2L−1}) (for checks)."""
    psi0 = eps ** (1 / depth) / rho
    psi = wbar ** (1 / depth) / rho
    return depth * (jepa_F(psi, depth) - jepa_F(psi0, depth)) / (lam * rho ** (2 * depth - 1))


def jepa_series(depth: int, eps: float, lam: float, rho: float) -> float:
    """Theorem 4.5's sum: τ* ≈ (1/λ) Σ_{n=1}^{2L−1} L / (n ρ^{2L−n−1} ε^{n/L}), up to Θ(log 1/ε).

    It does not depend on the fraction p: p only enters the Θ(log 1/ε) remainder.
    """
    n = np.arange(1, 2 * depth, dtype=np.float64)
    logs = math.log(depth) - np.log(n) - (2 * depth - n - 1) * math.log(rho) - n / depth * math.log(eps)
    return _exp(_logsumexp(logs) - math.log(lam))


# --------------------------------------------------------------------------------------------------
# MAE


def mae_G_hypergeometric(psi: float | np.ndarray, depth: int) -> float | np.ndarray:
    """The spec's MAE antiderivative G(ψ) = ψ^{1−a}/(1−a) · ₂F₁(1, 1−a; 2−a; ψ), a = 2L/(L+1), L >= 2.

    Literal (scipy's hyp2f1); accurate for moderate ψ, unreliable as ψ -> 1 (the function diverges
    logarithmically there). Use :func:`mae_log_time_between` for critical times.
    """
    if depth < 2:
        raise ValueError("the hypergeometric form needs L >= 2 (L = 1 is the logistic solution)")
    a = 2 * depth / (depth + 1)
    psi = np.asarray(psi, dtype=np.float64)
    out = psi ** (1 - a) / (1 - a) * special.hyp2f1(1.0, 1 - a, 2 - a, psi)
    return float(out) if out.ndim == 0 else out


def mae_time_hypergeometric(depth: int, eps: float, lam: float, rho: float, wbar: float) -> float:
    """τ at which the MAE w̄ reaches ``wbar``, from the literal hypergeometric formula (for checks)."""
    a = 2 * depth / (depth + 1)
    psi0 = eps ** ((depth + 1) / depth) / rho
    psi = wbar ** ((depth + 1) / depth) / rho
    pref = depth / ((depth + 1) * lam) * rho ** (1 - a)
    return pref * (mae_G_hypergeometric(psi, depth) - mae_G_hypergeometric(psi0, depth))


def _mae_smooth_part(depth: int, log_psi0: float, log_psi1: float) -> float:
    """C = ∫_{ψ0}^{ψ1} (t^{−c} − 1)/(1 − t) dt with c = (L−1)/(L+1), by quadrature on a smooth variable.

    With t = x^k, k = (L+1)/2, the integrand becomes k (1 − x^{k−1})/(1 − x^k): bounded between
    (k−1)/k and 1 on [0, 1], so Gauss–Kronrod reaches machine precision. The interval is written as
    x = x1 (1 − u), u in [0, 1 − x0/x1], so that a short interval keeps its relative precision.
    """
    k = (depth + 1) / 2
    if k == 1.0:
        return 0.0
    log_x1 = log_psi1 / k
    x1 = math.exp(log_x1)
    width = -math.expm1((log_psi0 - log_psi1) / k)

    def integrand(u: float) -> float:
        log_x = log_x1 + math.log1p(-u)
        den = math.expm1(k * log_x)
        if den == 0.0:  # x -> 1: the ratio tends to (k − 1)/k
            return (k - 1) / k
        return math.expm1((k - 1) * log_x) / den

    value, _ = integrate.quad(integrand, 0.0, width, epsabs=0.0, epsrel=1e-13, limit=200)
    return k * x1 * value


def mae_log_time_between(depth: int, lam: float, rho: float, log_psi0: float, log_psi1: float) -> float:
    """log of the MAE time between ψ0 and ψ1, ψ = w̄^{(L+1)/L}/ρ.

    τ = L/((L+1) λ) ρ^{1−a} ∫ ψ^{−a}/(1 − ψ) dψ with a = 2L/(L+1) = 1 + c. Splitting
    ψ^{−a}/(1 − ψ) = ψ^{−a} + 1/(1 − ψ) + (ψ^{−c} − 1)/(1 − ψ) gives three positive pieces:
    A = (ψ0^{−c} − ψ1^{−c})/c (the leading term; log ψ1/ψ0 when L = 1), B = log((1 − ψ0)/(1 − ψ1))
    (the divergence at ψ -> 1) and the bounded rest C (quadrature, zero for L = 1).

    Returns:
        log τ; −inf when ψ1 <= ψ0 and +inf when ψ1 >= 1.
    """
    if log_psi1 <= log_psi0:
        return -math.inf
    if log_psi1 >= 0.0:
        return math.inf
    lr = log_psi0 - log_psi1
    c = (depth - 1) / (depth + 1)
    # A = (ψ0^{−c} − ψ1^{−c}) / c, or log(ψ1/ψ0) in the limit c -> 0 (L = 1).
    log_a = math.log(-lr) if depth == 1 else -c * log_psi0 + math.log(-math.expm1(c * lr)) - math.log(c)
    log_b = _log_pos_log1p_ratio(log_psi0, log_psi1)
    log_c = _safe_log(_mae_smooth_part(depth, log_psi0, log_psi1))
    log_prefactor = math.log(depth / (depth + 1)) - math.log(lam) - c * math.log(rho)  # ρ^{1−a} = ρ^{−c}
    return log_prefactor + _logsumexp(np.array([log_a, log_b, log_c]))


def mae_logistic_wbar(tau: float | np.ndarray, eps: float, lam: float, rho: float) -> float | np.ndarray:
    """The exact MAE solution at L = 1: w̄(τ)² = ρ / (1 + (ρ/ε² − 1) e^{−2λτ})."""
    tau = np.asarray(tau, dtype=np.float64)
    out = np.sqrt(rho / (1 + (rho / eps**2 - 1) * np.exp(-2 * lam * tau)))
    return float(out) if out.ndim == 0 else out


def mae_leading_term(depth: int, eps: float, lam: float) -> float:
    """MAE critical time at leading order: (1/λ) L / ((L − 1) ε^{(L−1)/L}) (+ Θ(1)); L >= 2.

    For L = 1 the critical time is logarithmic; this returns its leading term (1/λ) log(1/ε).
    """
    if depth == 1:
        return math.log(1 / eps) / lam
    log_value = math.log(depth / (depth - 1)) - (depth - 1) / depth * math.log(eps) - math.log(lam)
    return _exp(log_value)


# --------------------------------------------------------------------------------------------------
# Front doors


def _log_psis(objective: str, depth: int, eps: float, rho: float, log_wbar: float) -> tuple[float, float]:
    # ψ = w̄^{1/L}/ρ (JEPA) or w̄^{(L+1)/L}/ρ (MAE); both equal 1 at the fixed point.
    power = 1 / depth if objective == "jepa" else (depth + 1) / depth
    return power * math.log(eps) - math.log(rho), power * log_wbar - math.log(rho)


def log_time_to_reach(objective: str, depth: int, eps: float, lam: float, rho: float, log_wbar: float) -> float:
    """log τ at which w̄, started at ε, first reaches exp(``log_wbar``) (−inf: at once; +inf: never)."""
    check_feature(objective, depth, eps, lam, rho)
    log_psi0, log_psi1 = _log_psis(objective, depth, eps, rho, log_wbar)
    if objective == "mae" and log_psi0 >= 0.0:
        # ε above the MAE fixed point (possible only for ε >= 1): w̄ decreases to w̄* and never drops
        # below it, so any level <= ε is "reached" at once and any higher level never.
        return -math.inf if log_wbar <= math.log(eps) else math.inf
    fn = jepa_log_time_between if objective == "jepa" else mae_log_time_between
    return fn(depth, lam, rho, log_psi0, log_psi1)


def time_to_reach(objective: str, depth: int, eps: float, lam: float, rho: float, wbar: float) -> float:
    """τ at which w̄, started at ε, first reaches ``wbar`` (0 if ε >= wbar, inf if wbar >= w̄*)."""
    if wbar <= 0:
        return 0.0
    return _exp(log_time_to_reach(objective, depth, eps, lam, rho, math.log(wbar)))


def log_critical_time_closed(objective: str, depth: int, eps: float, lam: float, rho: float, p: float = 0.5) -> float:
    """log of the exact critical time: first τ with w̄(τ) >= p w̄* (−inf when ε >= p w̄* already).

    The target level is passed as log(p) + log w̄* so that ψ_p = p^{1/L} (JEPA) or p^{(L+1)/L} (MAE)
    comes out exactly, whatever ρ.
    """
    check_feature(objective, depth, eps, lam, rho, p)
    check_objective(objective)
    power = 1 / depth if objective == "jepa" else (depth + 1) / depth
    log_psi0 = power * math.log(eps) - math.log(rho)
    log_psi1 = power * math.log(p)
    if objective == "mae" and log_psi0 >= 0.0:
        return -math.inf  # starts at or above w̄* >= p w̄* (ε >= 1 only); see log_time_to_reach
    fn = jepa_log_time_between if objective == "jepa" else mae_log_time_between
    return fn(depth, lam, rho, log_psi0, log_psi1)


def critical_time_closed(objective: str, depth: int, eps: float, lam: float, rho: float, p: float = 0.5) -> float:
    """Exact critical time τ* (paper time) at fraction ``p`` of the feature's own fixed point.

    Example (spec/deep-linear.md): ``critical_time_closed("jepa", 2, 1e-3, 1.0, 0.7)`` ≈ 22643 and
    ``critical_time_closed("mae", 2, 1e-3, 1.0, 0.7)`` ≈ 60.73.
    """
    return _exp(log_critical_time_closed(objective, depth, eps, lam, rho, p))


def critical_time_series(objective: str, depth: int, eps: float, lam: float, rho: float) -> float:
    """The asymptotic critical time: Theorem 4.5's sum (JEPA) or the MAE leading term."""
    check_feature(objective, depth, eps, lam, rho)
    if objective == "jepa":
        return jepa_series(depth, eps, lam, rho)
    return mae_leading_term(depth, eps, lam)


def jepa_series_remainder_bound(depth: int, eps: float, lam: float, rho: float, p: float = 0.5) -> float:
    """A rigorous bound on |τ*_exact − Theorem 4.5 sum|, which is Θ(log 1/ε).

    The exact time minus the sum is L/(λ ρ^{2L−1}) [−Σ ψ_p^{−n}/n + log(ψ_p/ψ0) + log((1−ψ0)/(1−ψ_p))];
    the triangle inequality bounds it by the prefactor times Σ ψ_p^{−n}/n + log(ψ_p/ψ0) − log(1 − ψ_p).
    """
    log_psi0 = math.log(eps) / depth - math.log(rho)
    log_psip = math.log(p) / depth
    n = np.arange(1, 2 * depth, dtype=np.float64)
    inner = float(np.sum(np.exp(-n * log_psip) / n)) + (log_psip - log_psi0) - math.log(-math.expm1(log_psip))
    return depth / (lam * rho ** (2 * depth - 1)) * inner


def _exp(log_value: float) -> float:
    if log_value == -math.inf:
        return 0.0
    return math.exp(log_value) if log_value < 709.78 else math.inf
