"""Full-matrix gradient descent: gradients, agreement with the ODEs, and the variants outside the theory."""

from __future__ import annotations

import math

import numpy as np
import pytest

from openjepa.theory.closed_form import critical_time_closed
from openjepa.theory.model import InvalidParameterError, Moments
from openjepa.theory.odes import solve_trajectory
from openjepa.theory.simulate import (
    SimulationConfig,
    chain,
    critical_time_gd,
    gradients,
    loss,
    simulate,
)

# The spec's setup: aligned balanced init, L = 2, ε = 1e-3; the spec's example feature (λ 1, ρ 0.7) and
# its noisy high-covariance feature (λ 2, ρ 0.3).
SPEC_LAM = np.array([1.0, 2.0])
SPEC_RHO = np.array([0.7, 0.3])


def _random_model(rng: np.random.Generator, d: int, depth: int) -> tuple[list[np.ndarray], np.ndarray, Moments]:
    layers = [rng.standard_normal((d, d)) * 0.5 for _ in range(depth)]
    predictor = rng.standard_normal((d, d)) * 0.5
    a = rng.standard_normal((d, d))
    sxx = a @ a.T + d * np.eye(d)
    syx = rng.standard_normal((d, d))
    return layers, predictor, Moments(sxx=sxx, syx=syx, syy=sxx.copy())


@pytest.mark.parametrize("objective", ["jepa", "mae"])
@pytest.mark.parametrize("depth", [1, 3])
def test_gradients_match_finite_differences(objective: str, depth: int) -> None:
    rng = np.random.default_rng(0)
    layers, predictor, moments = _random_model(rng, 3, depth)
    # Stop-gradient: the JEPA target T = W̄ is frozen at its current value while differentiating.
    target = chain(layers) if objective == "jepa" else np.eye(3)
    grads, grad_v = gradients(layers, predictor, target, moments)
    h = 1e-6

    def f(ls: list[np.ndarray], v: np.ndarray) -> float:
        return loss(objective, ls, v, moments, target=target)

    for a in range(depth):
        for i, j in ((0, 0), (1, 2), (2, 1)):
            plus = [w.copy() for w in layers]
            minus = [w.copy() for w in layers]
            plus[a][i, j] += h
            minus[a][i, j] -= h
            numeric = (f(plus, predictor) - f(minus, predictor)) / (2 * h)
            assert grads[a][i, j] == pytest.approx(numeric, rel=1e-5, abs=1e-8)
    vp, vm = predictor.copy(), predictor.copy()
    vp[1, 0] += h
    vm[1, 0] -= h
    assert grad_v[1, 0] == pytest.approx((f(layers, vp) - f(layers, vm)) / (2 * h), rel=1e-5, abs=1e-8)
    # target=None is the JEPA shortcut for T = W̄.
    if objective == "jepa":
        grads2, grad_v2 = gradients(layers, predictor, None, moments)
        assert all(np.allclose(g1, g2) for g1, g2 in zip(grads, grads2, strict=True))
        assert np.allclose(grad_v, grad_v2)


@pytest.mark.parametrize(("objective", "lr", "tau_end"), [("jepa", 0.1, 26000.0), ("mae", 0.01, 90.0)])
def test_gradient_descent_follows_the_ode(objective: str, lr: float, tau_end: float) -> None:
    # Issue #4: gradient descent vs ODE, max |Δw̄| <= 0.02, with τ = L · lr · steps.
    depth, eps = 2, 1e-3
    moments = Moments.from_features(SPEC_LAM, SPEC_RHO)
    steps = int(tau_end / (depth * lr))
    config = SimulationConfig(objective=objective, depth=depth, eps=eps, lr=lr, steps=steps, record_every=10)
    result = simulate(moments, config)
    assert result.tau[-1] == pytest.approx(depth * lr * steps)
    for i, (lam, rho) in enumerate(zip(SPEC_LAM, SPEC_RHO, strict=True)):
        ode = solve_trajectory(objective, depth, eps, lam, rho, result.tau)
        assert np.max(np.abs(result.wbar[:, i] - ode)) <= 0.02
        # Both features finished the transition within the run...
        assert result.wbar[-1, i] > 0.9 * result.fixed_points[i]
        # ...at the theoretical critical time (the Euler error of GD is O(lr) in t).
        assert result.critical_tau[i] == pytest.approx(critical_time_closed(objective, depth, eps, lam, rho), rel=2e-3)
    # Aligned init: every matrix stays diagonal (features decouple) and V equals every layer (balance).
    for w in [*result.layers, result.predictor]:
        assert np.allclose(w, np.diag(np.diag(w)), atol=1e-14)
        assert np.allclose(w, result.layers[0], rtol=1e-10)


def test_spec_example_by_gradient_descent() -> None:
    res = critical_time_gd("jepa", 2, 1e-3, 1.0, 0.7, 0.5)
    assert res.tau == pytest.approx(22643, rel=1e-4)
    res = critical_time_gd("mae", 2, 1e-3, 1.0, 0.7, 0.5)
    assert res.tau == pytest.approx(60.73, rel=1e-4)


def test_scalar_gd_equals_matrix_gd() -> None:
    # critical_time_gd's two scalar recurrences are the d = 1 full-matrix gradient descent.
    lr, depth, eps = 0.05, 2, 1e-2
    res = critical_time_gd("jepa", depth, eps, 1.0, 0.7, 0.5, lr=lr)
    config = SimulationConfig(objective="jepa", depth=depth, eps=eps, lr=lr, steps=res.steps, record_every=1)
    sim = simulate(Moments.from_features([1.0], [0.7]), config)
    assert sim.critical_tau[0] == pytest.approx(res.tau, rel=1e-12)


def test_ema_with_zero_momentum_is_the_stop_gradient() -> None:
    moments = Moments.from_features([1.0, 2.0], [1.0, 0.4])
    base = SimulationConfig(depth=2, eps=1e-2, lr=0.05, steps=12000, record_every=50)
    plain = simulate(moments, base)
    ema0 = simulate(moments, SimulationConfig(**{**base.__dict__, "target": "ema", "ema_momentum": 0.0}))
    assert np.array_equal(plain.wbar, ema0.wbar)
    # A slow target delays learning (the lagging target slows the growth of W̄), more so the slower it is.
    taus = [plain.critical_tau]
    for m in (0.99, 0.999):
        run = simulate(moments, SimulationConfig(**{**base.__dict__, "target": "ema", "ema_momentum": m}))
        taus.append(np.where(np.isnan(run.critical_tau), np.inf, run.critical_tau))
    assert np.all(taus[1] > taus[0]) and np.all(taus[2] > taus[1])


def test_unbalanced_init_moves_the_fixed_point_by_the_conservation_law() -> None:
    # Gradient flow conserves a² − v² (layer vs predictor); at the JEPA fixed point v = ρ, so
    # a = sqrt(ρ² + a0² − v0²) and w̄ = a^L instead of ρ^L.
    moments = Moments.from_features([1.0, 1.5], [1.0, 0.6])
    config = SimulationConfig(
        depth=2, eps=0.04, lr=0.05, steps=20000, init="unbalanced", unbalance=0.5, record_every=100
    )
    result = simulate(moments, config)
    a0, v0 = 0.2, 0.1
    for i, rho in enumerate((1.0, 0.6)):
        assert result.predictor[i, i] == pytest.approx(rho, rel=1e-6)
        assert result.wbar[-1, i] == pytest.approx((rho**2 + a0**2 - v0**2) ** (2 / 2), rel=1e-3)


def test_random_init_is_seeded_and_leaves_the_aligned_manifold() -> None:
    moments = Moments.from_features([1.0, 2.0], [1.0, 0.4])
    config = SimulationConfig(objective="mae", depth=2, eps=1e-2, lr=0.01, steps=8000, init="random", seed=3)
    a = simulate(moments, config)
    b = simulate(moments, config)
    assert np.array_equal(a.wbar, b.wbar)
    c = simulate(moments, SimulationConfig(**{**config.__dict__, "seed": 4}))
    assert not np.array_equal(a.wbar, c.wbar)
    wbar = a.encoder
    assert np.max(np.abs(wbar - np.diag(np.diag(wbar)))) > 1e-3  # features are mixed
    # MAE still ends at the regression solution V W̄ = diag(ρ) = Σyx Σxx^{-1}.
    assert np.allclose(a.predictor @ wbar, np.diag([1.0, 0.4]), atol=1e-3)


def test_invalid_configs_are_rejected() -> None:
    moments = Moments.from_features([1.0], [1.0])
    with pytest.raises(InvalidParameterError, match="EMA"):
        simulate(moments, SimulationConfig(objective="mae", target="ema"))
    with pytest.raises(InvalidParameterError, match="init"):
        simulate(moments, SimulationConfig(init="orthogonal"))
    with pytest.raises(InvalidParameterError, match="lr"):
        simulate(moments, SimulationConfig(lr=-1.0))


def test_never_learned_feature_reports_nan() -> None:
    moments = Moments.from_features([1.0, 1e-3], [1.0, 1.0])  # the second is 1000x slower
    config = SimulationConfig(depth=1, eps=1e-2, lr=0.1, steps=1500, record_every=10)
    result = simulate(moments, config)
    assert math.isfinite(result.critical_tau[0]) and math.isnan(result.critical_tau[1])
    assert result.learning_order() == [0]
