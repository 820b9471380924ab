"""Full-matrix gradient descent of the deep linear JEPA and MAE objectives (numpy, float64).

The model is an encoder W̄ = W^L ··· W^1 of L square layers and a linear predictor / decoder V:

    MAE:  ½ E‖V W̄ x − y‖²                 (target: the other view itself)
    JEPA: ½ E‖V W̄ x − StopGrad(T y)‖²     (T = W̄, or an EMA copy of the layers for the EMA variant)

The expectations only involve the second moments, so one gradient step on the population (or on a
finite sample's moments, which is full-batch gradient descent on that sample) costs a few d × d matrix
products. With G = V W̄ Σxx − T Σyx the gradients are ∇_V = G W̄ᵀ and
∇_{W^a} = (V W^L ··· W^{a+1})ᵀ G (W^{a−1} ··· W^1)ᵀ.

Time is reported in the paper's convention τ = L · lr · steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from openjepa.theory.closed_form import critical_time_closed
from openjepa.theory.model import (
    InvalidParameterError,
    Moments,
    check_depth,
    check_feature,
    check_fraction,
    check_objective,
    fixed_point,
)

INITS = ("aligned", "random", "unbalanced")
TARGETS = ("stopgrad", "ema")


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate.

    Attributes:
        objective: ``"jepa"`` or ``"mae"``.
        depth: number L of encoder layers.
        eps: initial scale: each layer starts at ε^{1/L} (so W̄(0) = ε I for the aligned init).
        lr: learning rate of plain gradient descent.
        steps: number of gradient steps.
        init: ``"aligned"`` (balanced: every layer and V equal ε^{1/L} I, the theory's assumption),
            ``"random"`` (every layer and V i.i.d. Gaussian, entries N(0, ε^{2/L}/d)), or
            ``"unbalanced"`` (aligned, but V(0) = κ ε^{1/L} I with κ = ``unbalance``).
        unbalance: κ for the unbalanced init.
        target: ``"stopgrad"`` (target encoder = W̄, the theory) or ``"ema"`` (JEPA only: target layers
            are an exponential moving average of the online layers).
        ema_momentum: m in W_target ← m W_target + (1 − m) W, after every step.
        seed: random seed (random init).
        record_every: keep w̄ every this many steps.
        p: fraction of each feature's fixed point that defines its critical time.
    """

    objective: str = "jepa"
    depth: int = 2
    eps: float = 1e-3
    lr: float = 0.1
    steps: int = 10_000
    init: str = "aligned"
    unbalance: float = 4.0
    target: str = "stopgrad"
    ema_momentum: float = 0.99
    seed: int = 0
    record_every: int = 1
    p: float = 0.5

    def validate(self) -> None:
        """Raise :class:`InvalidParameterError` on a value outside its domain."""
        check_objective(self.objective)
        check_depth(self.depth)
        check_fraction(self.p)
        if not (self.eps > 0 and math.isfinite(self.eps)):
            raise InvalidParameterError(f"eps must be > 0 (got {self.eps!r})")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InvalidParameterError(f"lr must be > 0 (got {self.lr!r})")
        if self.steps < 1 or self.record_every < 1:
            raise InvalidParameterError("steps and record_every must be >= 1")
        if self.init not in INITS:
            raise InvalidParameterError(f"init must be one of {', '.join(INITS)} (got {self.init!r})")
        if self.target not in TARGETS:
            raise InvalidParameterError(f"target must be one of {', '.join(TARGETS)} (got {self.target!r})")
        if self.target == "ema" and self.objective != "jepa":
            raise InvalidParameterError("an EMA target only exists for JEPA (MAE's target is the input y)")
        if not 0 <= self.ema_momentum < 1:
            raise InvalidParameterError(f"ema_momentum must be in [0, 1) (got {self.ema_momentum!r})")
        if not self.unbalance > 0:
            raise InvalidParameterError(f"unbalance must be > 0 (got {self.unbalance!r})")


@dataclass
class SimulationResult:
    """A gradient-descent run.

    Attributes:
        config: the configuration that produced it.
        steps: recorded step numbers, shape (T,).
        tau: the same in paper time τ = L · lr · step, shape (T,).
        wbar: per-feature w̄_i = ‖W̄ q_i‖ (q_i the feature directions), shape (T, d); for the aligned
            init this is the diagonal of W̄.
        fixed_points: each feature's theoretical fixed point w̄*_i (population ρ), shape (d,).
        critical_tau: first τ with w̄_i >= p w̄*_i (linear interpolation between records; NaN if never).
        layers: final encoder layers W^1 .. W^L.
        predictor: final V.
    """

    config: SimulationConfig
    steps: np.ndarray
    tau: np.ndarray
    wbar: np.ndarray
    fixed_points: np.ndarray
    critical_tau: np.ndarray
    layers: list[np.ndarray] = field(repr=False)
    predictor: np.ndarray = field(repr=False)

    @property
    def encoder(self) -> np.ndarray:
        """Final W̄ = W^L ··· W^1."""
        return chain(self.layers)

    def learning_order(self) -> list[int]:
        """Indices of the features that reached p w̄*, by critical time (never-learned ones left out)."""
        learned = np.flatnonzero(~np.isnan(self.critical_tau))
        return [int(i) for i in learned[np.argsort(self.critical_tau[learned], kind="stable")]]


def chain(layers: list[np.ndarray]) -> np.ndarray:
    """The product W^L ··· W^1 of layers given first to last."""
    out = layers[0]
    for w in layers[1:]:
        out = w @ out
    return out


def init_weights(config: SimulationConfig, dim: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Initial encoder layers (first to last) and predictor V for ``config.init``."""
    scale = config.eps ** (1 / config.depth)
    eye = np.eye(dim)
    if config.init == "aligned":
        return [scale * eye for _ in range(config.depth)], scale * eye
    if config.init == "unbalanced":
        return [scale * eye for _ in range(config.depth)], config.unbalance * scale * eye
    rng = np.random.default_rng(config.seed)
    std = scale / math.sqrt(dim)  # rows then have norm ≈ ε^{1/L}, like the aligned init
    layers = [rng.standard_normal((dim, dim)) * std for _ in range(config.depth)]
    return layers, rng.standard_normal((dim, dim)) * std


def gradients(
    layers: list[np.ndarray], predictor: np.ndarray, target: np.ndarray | None, moments: Moments
) -> tuple[list[np.ndarray], np.ndarray]:
    """Gradients of ½ E‖V W̄ x − T y‖² with the target map T held fixed (the stop-gradient).

    Args:
        layers: W^1 .. W^L.
        predictor: V.
        target: T (an EMA product for EMA-JEPA, the identity for MAE); ``None`` means T = W̄ (JEPA).
        moments: Σxx and Σyx.

    Returns:
        (∇_{W^1} .. ∇_{W^L}, ∇_V).
    """
    depth = len(layers)
    # below[a] = W^a ··· W^1 (below[-1] = W̄); the empty product W^0 is skipped rather than built as I.
    below = [layers[0]]
    for w in layers[1:]:
        below.append(w @ below[-1])
    wbar = below[-1]
    g = predictor @ wbar @ moments.sxx - (wbar if target is None else target) @ moments.syx
    grads: list[np.ndarray] = [g] * depth
    above = predictor  # V W^L ··· W^{a+1}
    for a in range(depth - 1, -1, -1):
        left = above.T @ g
        grads[a] = left @ below[a - 1].T if a > 0 else left
        if a > 0:
            above = above @ layers[a]
    return grads, g @ wbar.T


def loss(
    objective: str,
    layers: list[np.ndarray],
    predictor: np.ndarray,
    moments: Moments,
    target: np.ndarray | None = None,
) -> float:
    """The population loss ½ E‖V W̄ x − T y‖² (T = W̄ by default for JEPA, I for MAE)."""
    check_objective(objective)
    wbar = chain(layers)
    if target is None:
        target = wbar if objective == "jepa" else np.eye(wbar.shape[0])
    p = predictor @ wbar
    return 0.5 * float(
        np.trace(p @ moments.sxx @ p.T)
        - 2 * np.trace(p @ moments.syx.T @ target.T)
        + np.trace(target @ moments.syy @ target.T)
    )


def simulate(
    moments: Moments,
    config: SimulationConfig,
    rho: np.ndarray | None = None,
    feature_basis: np.ndarray | None = None,
) -> SimulationResult:
    """Run full-matrix gradient descent and track each feature.

    Args:
        moments: the second moments the gradients use (population, or a finite sample's).
        config: objective, depth, init, learning rate, ...
        rho: each feature's population ρ, for the theoretical fixed points (default: read from the
            diagonal of ``moments``, exact for diagonal population moments).
        feature_basis: columns q_i are the feature directions (default: the coordinate axes).

    Returns:
        The recorded trajectory and per-feature critical times.
    """
    config.validate()
    dim = moments.dim
    if rho is None:
        rho = moments.feature_params()[1]
    rho = np.asarray(rho, dtype=np.float64)
    basis = np.eye(dim) if feature_basis is None else np.asarray(feature_basis, dtype=np.float64)
    w_star = np.array([fixed_point(config.objective, config.depth, float(r)) for r in rho])

    layers, predictor = init_weights(config, dim)
    ema_layers = [w.copy() for w in layers]
    eye = np.eye(dim)
    n_records = config.steps // config.record_every + 1
    rec_steps = np.zeros(n_records, dtype=np.int64)
    rec_wbar = np.zeros((n_records, dim))

    def measure(k: int, step: int) -> None:
        rec_steps[k] = step
        cols = chain(layers) @ basis
        rec_wbar[k] = np.sqrt(np.einsum("ij,ij->j", cols, cols))

    measure(0, 0)
    k = 1
    lr = config.lr
    for step in range(1, config.steps + 1):
        if config.objective == "mae":
            target = eye
        elif config.target == "ema":
            target = chain(ema_layers)
        else:
            target = None  # T = W̄, formed once inside gradients()
        grads, grad_v = gradients(layers, predictor, target, moments)
        for w, gw in zip(layers, grads, strict=True):
            w -= lr * gw
        predictor -= lr * grad_v
        if config.target == "ema":
            m = config.ema_momentum
            for we, w in zip(ema_layers, layers, strict=True):
                we *= m
                we += (1 - m) * w
        if step % config.record_every == 0:
            if not np.isfinite(predictor).all():
                raise FloatingPointError(f"gradient descent diverged by step {step}: lower lr (got {lr:g})")
            measure(k, step)
            k += 1

    tau = config.depth * config.lr * rec_steps.astype(np.float64)
    crit = np.array([_first_crossing(tau, rec_wbar[:, i], config.p * w_star[i]) for i in range(dim)])
    return SimulationResult(config, rec_steps, tau, rec_wbar, w_star, crit, layers, predictor)


def _first_crossing(tau: np.ndarray, values: np.ndarray, level: float) -> float:
    """First τ where ``values`` reaches ``level``, linearly interpolated; NaN if it never does."""
    above = np.flatnonzero(values >= level)
    if above.size == 0:
        return math.nan
    j = int(above[0])
    if j == 0:
        return 0.0
    v0, v1 = values[j - 1], values[j]
    return float(tau[j - 1] + (level - v0) / (v1 - v0) * (tau[j] - tau[j - 1]))


# --------------------------------------------------------------------------------------------------
# One feature, literally: the critical time measured by gradient descent


@dataclass(frozen=True)
class GDCriticalTime:
    """Result of :func:`critical_time_gd`.

    Attributes:
        tau: critical time in paper time τ = L · lr · steps (linear interpolation between steps).
        steps: gradient steps taken.
        lr: learning rate used.
    """

    tau: float
    steps: int
    lr: float


def default_gd_lr(
    objective: str, depth: int, eps: float, lam: float, rho: float, p: float, target_steps: int = 200_000
) -> float:
    """A learning rate for :func:`critical_time_gd`: ~``target_steps`` steps, small enough to be accurate.

    Gradient descent is the ODE's forward Euler scheme. Its time error is about (lr/2) log(g(end)/g(start))
    in t (g the layer velocity), tiny next to τ* for ~1e5 steps. Stability is set by the largest
    eigenvalue of the gradient's Jacobian at the fixed point: λ ρ^{2L−1} (JEPA) or
    (L + 1) λ ρ^{(L−1)/(L+1)} (MAE); lr stays below 0.2 / that.
    """
    tau_ref = critical_time_closed(objective, depth, eps, lam, rho, p)
    if objective == "jepa":
        fast = lam * rho ** (2 * depth - 1)
    else:
        fast = lam * (depth + 1) * rho ** ((depth - 1) / (depth + 1))
    cap = 0.2 / fast
    return min(tau_ref / (depth * target_steps), cap) if tau_ref > 0 else cap


def critical_time_gd(
    objective: str,
    depth: int,
    eps: float,
    lam: float,
    rho: float,
    p: float = 0.5,
    lr: float | None = None,
    max_steps: int = 5_000_000,
) -> GDCriticalTime:
    """Critical time of one feature measured by running gradient descent (aligned balanced init).

    With d = 1 and the aligned init every layer follows the same gradient, so the exact gradient descent
    of the full model is two scalar recurrences: the common layer value a and the predictor v. This runs
    them in plain Python floats (fast for millions of steps) until w̄ = a^L reaches p w̄*.

    Raises:
        InvalidParameterError: if the inputs are outside the theory's domain, if the run would need more
            than ``max_steps`` steps (judged from the exact time before starting), or if it diverges.
    """
    check_feature(objective, depth, eps, lam, rho, p)
    if lr is None:
        lr = default_gd_lr(objective, depth, eps, lam, rho, p)
    if not (lr > 0 and math.isfinite(lr)):
        raise InvalidParameterError(f"--lr must be > 0 (got {lr!r})")
    expected = critical_time_closed(objective, depth, eps, lam, rho, p) / (depth * lr)
    if expected > max_steps:
        raise InvalidParameterError(
            f"--method gd would need about {expected:.3g} gradient steps (more than {max_steps}) at lr {lr:g}; "
            "use --method closed or ode, or a larger --eps"
        )
    level = p * fixed_point(objective, depth, rho)
    a = v = eps ** (1 / depth)
    sxx = lam / rho
    wbar = a**depth
    if wbar >= level:
        return GDCriticalTime(0.0, 0, lr)
    jepa = objective == "jepa"
    # Euler's error shifts the crossing by a small fraction; the margin only guards against a stall.
    for step in range(1, int(1.5 * expected) + 1000):
        prev = wbar
        # G = v w̄ Σxx − T Σyx with T = w̄ (JEPA, stop-gradient) or 1 (MAE).
        g = v * wbar * sxx - (wbar if jepa else 1.0) * lam
        grad_v = g * wbar
        grad_a = v * a ** (depth - 1) * g  # the other layers multiply to a^{L−1}
        a -= lr * grad_a
        v -= lr * grad_v
        wbar = a**depth
        if wbar >= level:
            frac = (level - prev) / (wbar - prev)
            return GDCriticalTime(depth * lr * (step - 1 + frac), step, lr)
        if not math.isfinite(wbar) or abs(a) > 1e150:
            raise InvalidParameterError(f"gradient descent diverged at step {step} with lr {lr:g}: lower --lr")
    raise InvalidParameterError(
        f"gradient descent did not reach p w̄* within {step} steps at lr {lr:g} (unstable?): lower --lr, "
        "or use --method closed"
    )
