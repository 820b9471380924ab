"""The deep linear model: per-feature parameters, validation, second moments and generative models.

A *feature* i is described by two numbers (spec/deep-linear.md):

- ``lam`` (λ_i = (Σyx)_ii), the covariance between the two views, and
- ``rho`` (ρ_i = (Σyx)_ii / (Σxx)_ii), the regression coefficient ("influence") of x_i on y_i,

so Σxx = diag(λ/ρ) and Σyx = diag(λ). The generative models below give these numbers a meaning: two noisy
views of a latent (static) or a noisy AR(1) process observed at consecutive steps (dynamic).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

OBJECTIVES = ("jepa", "mae")


class InvalidParameterError(ValueError):
    """A parameter outside the theory's domain; the message names the parameter and the fix."""


def _flag(names: Mapping[str, str] | None, key: str) -> str:
    # The command line passes its flag names (``--rho``) so that errors point at what the user typed.
    return (names or {}).get(key, key)


def _check_positive(value: float, key: str, names: Mapping[str, str] | None, hint: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise InvalidParameterError(f"{_flag(names, key)} must be a finite number (got {value!r}); {hint}")
    if value <= 0:
        raise InvalidParameterError(f"{_flag(names, key)} must be > 0 (got {value:g}); {hint}")


def check_depth(depth: int, names: Mapping[str, str] | None = None) -> None:
    """Raise :class:`InvalidParameterError` unless ``depth`` is an integer >= 1."""
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 1:
        raise InvalidParameterError(
            f"{_flag(names, 'depth')} must be an integer >= 1 (got {depth!r}): it is the number L of "
            f"encoder layers; use e.g. {_flag(names, 'depth')} 2"
        )


def check_objective(objective: str, names: Mapping[str, str] | None = None) -> None:
    """Raise :class:`InvalidParameterError` unless ``objective`` is ``"jepa"`` or ``"mae"``."""
    if objective not in OBJECTIVES:
        raise InvalidParameterError(
            f"{_flag(names, 'objective')} must be one of {', '.join(OBJECTIVES)} (got {objective!r})"
        )


def check_fraction(p: float, names: Mapping[str, str] | None = None) -> None:
    """Raise :class:`InvalidParameterError` unless ``0 < p < 1``."""
    key = _flag(names, "p")
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not math.isfinite(p) or not 0 < p < 1:
        raise InvalidParameterError(
            f"{key} must be strictly between 0 and 1 (got {p!r}): it is the fraction of the feature's own "
            f"fixed point that counts as 'learned'; use e.g. {key} 0.5"
        )


def check_feature(
    objective: str,
    depth: int,
    eps: float,
    lam: float,
    rho: float,
    p: float | None = None,
    names: Mapping[str, str] | None = None,
) -> None:
    """Validate one feature's parameters against the theory's domain.

    The theory needs λ > 0, ρ > 0, a positive initial scale ε with ε^{1/L} < ρ (the initial layer value
    must lie below the JEPA fixed point ρ, the condition the spec states for both objectives), L >= 1 and,
    when given, a fraction 0 < p < 1.

    Args:
        objective: ``"jepa"`` or ``"mae"``.
        depth: number of encoder layers L.
        eps: initial value ε of w̄ = ε (every layer starts at ε^{1/L}).
        lam: covariance λ of the feature.
        rho: regression coefficient ρ of the feature.
        p: fraction of the fixed point defining the critical time (optional).
        names: display names of the parameters (the command line passes its flags).

    Raises:
        InvalidParameterError: naming the parameter and the fix.
    """
    check_objective(objective, names)
    check_depth(depth, names)
    _check_positive(lam, "lam", names, "λ is the covariance between the two views of the feature")
    _check_positive(rho, "rho", names, "ρ = Σyx/Σxx is the feature's regression coefficient, positive in this theory")
    _check_positive(eps, "eps", names, "ε is the (small) initial value of w̄, e.g. 1e-3")
    if p is not None:
        check_fraction(p, names)
    # Compare in logs: for tiny ε and large L, ε^{1/L} computed directly could round the wrong way.
    if math.log(eps) / depth >= math.log(rho):
        limit = rho**depth
        raise InvalidParameterError(
            f"{_flag(names, 'eps')} is too large for {_flag(names, 'rho')} {rho:g} at "
            f"{_flag(names, 'depth')} {depth}: the theory needs eps^(1/L) < rho "
            f"(got {eps:g}^(1/{depth}) = {eps ** (1 / depth):.4g} >= {rho:g}); use {_flag(names, 'eps')} "
            f"below rho^L = {limit:.4g}, a larger {_flag(names, 'rho')}, or a smaller {_flag(names, 'depth')}"
        )


def fixed_point(objective: str, depth: int, rho: float) -> float:
    """The stable fixed point w̄* of the per-feature dynamics.

    JEPA: w̄* = ρ^L (so V W̄ -> ρ^{L+1}); MAE: w̄* = ρ^{L/(L+1)} (so V W̄ -> ρ, linear regression).
    """
    check_objective(objective)
    if objective == "jepa":
        return float(rho) ** depth
    return float(rho) ** (depth / (depth + 1))


def log_fixed_point(objective: str, depth: int, rho: float) -> float:
    """log w̄*, exact even where w̄* itself under- or overflows (large L)."""
    check_objective(objective)
    if objective == "jepa":
        return depth * math.log(rho)
    return depth / (depth + 1) * math.log(rho)


def product_fixed_point(objective: str, depth: int, rho: float) -> float:
    """The fixed point of the predictor times encoder, V W̄: ρ^{L+1} (JEPA) or ρ (MAE)."""
    check_objective(objective)
    return float(rho) ** (depth + 1) if objective == "jepa" else float(rho)


# --------------------------------------------------------------------------------------------------
# Second moments


@dataclass(frozen=True)
class Moments:
    """Second moments of a pair (x, y) in R^d.

    Attributes:
        sxx: Σxx = E[x xᵀ], shape (d, d).
        syx: Σyx = E[y xᵀ], shape (d, d).
        syy: Σyy = E[y yᵀ], shape (d, d); only needed for loss values.
    """

    sxx: np.ndarray
    syx: np.ndarray
    syy: np.ndarray

    @property
    def dim(self) -> int:
        """The dimension d."""
        return int(self.sxx.shape[0])

    @classmethod
    def from_features(cls, lam: np.ndarray | list[float], rho: np.ndarray | list[float]) -> Moments:
        """Diagonal population moments with per-feature λ and ρ (Σyy = Σxx: the views are exchangeable)."""
        lam_arr, rho_arr = _as_features(lam, rho)
        sxx = np.diag(lam_arr / rho_arr)
        return cls(sxx=sxx, syx=np.diag(lam_arr), syy=sxx.copy())

    def rotated(self, q: np.ndarray) -> Moments:
        """The same moments in a rotated basis (x -> Q x, y -> Q y)."""
        return Moments(sxx=q @ self.sxx @ q.T, syx=q @ self.syx @ q.T, syy=q @ self.syy @ q.T)

    def feature_params(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-coordinate (λ, ρ) read off the diagonals (exact when the moments are diagonal)."""
        lam = np.diag(self.syx).copy()
        return lam, lam / np.diag(self.sxx)


def _as_features(lam: np.ndarray | list[float], rho: np.ndarray | list[float]) -> tuple[np.ndarray, np.ndarray]:
    lam_arr = np.atleast_1d(np.asarray(lam, dtype=np.float64))
    rho_arr = np.atleast_1d(np.asarray(rho, dtype=np.float64))
    if lam_arr.shape != rho_arr.shape or lam_arr.ndim != 1:
        raise InvalidParameterError(
            f"lam and rho must be 1-D of the same length (got {lam_arr.shape}, {rho_arr.shape})"
        )
    if np.any(~np.isfinite(lam_arr)) or np.any(lam_arr <= 0):
        raise InvalidParameterError(f"every lam must be > 0 (got {lam_arr.tolist()})")
    if np.any(~np.isfinite(rho_arr)) or np.any(rho_arr <= 0):
        raise InvalidParameterError(f"every rho must be > 0 (got {rho_arr.tolist()})")
    return lam_arr, rho_arr


# --------------------------------------------------------------------------------------------------
# Generative models


@dataclass(frozen=True)
class StaticViews:
    """Two noisy views of a latent: x = z + ξ, y = z + ξ', z ~ N(0, diag γ), ξ, ξ' ~ N(0, diag s²).

    Per feature λ = γ and ρ = γ / (γ + s²): noisy features have low ρ.

    Attributes:
        gamma: latent variances γ_i > 0.
        noise_var: observation noise variances s_i² >= 0.
    """

    gamma: np.ndarray
    noise_var: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "gamma", np.atleast_1d(np.asarray(self.gamma, dtype=np.float64)))
        object.__setattr__(
            self,
            "noise_var",
            np.broadcast_to(np.asarray(self.noise_var, dtype=np.float64), self.gamma.shape).copy(),
        )
        if np.any(self.gamma <= 0) or np.any(self.noise_var < 0):
            raise InvalidParameterError("StaticViews needs gamma > 0 and noise_var >= 0")

    def lam_rho(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-feature (λ, ρ)."""
        return self.gamma.copy(), self.gamma / (self.gamma + self.noise_var)

    def moments(self) -> Moments:
        """Population moments."""
        lam, rho = self.lam_rho()
        return Moments.from_features(lam, rho)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` pairs; returns (X, Y), each of shape (n, d)."""
        d = self.gamma.size
        z = rng.standard_normal((n, d)) * np.sqrt(self.gamma)
        x = z + rng.standard_normal((n, d)) * np.sqrt(self.noise_var)
        y = z + rng.standard_normal((n, d)) * np.sqrt(self.noise_var)
        return x, y


@dataclass(frozen=True)
class DynamicSequence:
    """Next-step prediction: z_{t+1} = α z_t + sqrt(1 − α²) η_t, x_t = z_t + ξ_t, pairs (x_t, x_{t+1}).

    z is stationary with variance γ; per feature λ = α γ and ρ = α γ / (γ + s²): JEPA favours slow
    (α near 1), low-noise features.

    Attributes:
        gamma: stationary latent variances γ_i > 0.
        noise_var: observation noise variances s_i² >= 0.
        alpha: autocorrelations α_i in (0, 1].
    """

    gamma: np.ndarray
    noise_var: np.ndarray
    alpha: np.ndarray

    def __post_init__(self) -> None:
        gamma = np.atleast_1d(np.asarray(self.gamma, dtype=np.float64))
        object.__setattr__(self, "gamma", gamma)
        for name in ("noise_var", "alpha"):
            value = np.broadcast_to(np.asarray(getattr(self, name), dtype=np.float64), gamma.shape).copy()
            object.__setattr__(self, name, value)
        if np.any(gamma <= 0) or np.any(self.noise_var < 0) or np.any(self.alpha <= 0) or np.any(self.alpha > 1):
            raise InvalidParameterError("DynamicSequence needs gamma > 0, noise_var >= 0 and 0 < alpha <= 1")

    def lam_rho(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-feature (λ, ρ)."""
        lam = self.alpha * self.gamma
        return lam, lam / (self.gamma + self.noise_var)

    def moments(self) -> Moments:
        """Population moments (stationary, so Σyy = Σxx)."""
        lam, rho = self.lam_rho()
        return Moments.from_features(lam, rho)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One stationary sequence of n + 1 steps; returns (X, Y) = (x_0..x_{n-1}, x_1..x_n)."""
        d = self.gamma.size
        z = np.empty((n + 1, d))
        z[0] = rng.standard_normal(d) * np.sqrt(self.gamma)  # start in the stationary law
        innovation = np.sqrt((1 - self.alpha**2) * self.gamma)
        for t in range(n):
            z[t + 1] = self.alpha * z[t] + innovation * rng.standard_normal(d)
        x = z + rng.standard_normal((n + 1, d)) * np.sqrt(self.noise_var)
        return x[:-1], x[1:]


def empirical_moments(x: np.ndarray, y: np.ndarray) -> Moments:
    """Sample second moments (uncentred, like the population ones) of paired rows of X and Y."""
    n = x.shape[0]
    return Moments(sxx=x.T @ x / n, syx=y.T @ x / n, syy=y.T @ y / n)
