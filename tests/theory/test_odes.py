"""Per-feature ODEs: derived from the model's gradients, fixed points, trajectories."""

from __future__ import annotations

import numpy as np
import pytest

from openjepa.theory.closed_form import critical_time_closed
from openjepa.theory.model import Moments, fixed_point, product_fixed_point
from openjepa.theory.odes import critical_time_ode, fixed_points, rate, solve_trajectory
from openjepa.theory.simulate import gradients


@pytest.mark.parametrize("objective", ["jepa", "mae"])
@pytest.mark.parametrize("depth", [1, 2, 4])
def test_rate_is_the_gradient_flow_of_the_model(objective: str, depth: int) -> None:
    # On the aligned balanced manifold (every layer and V equal a), gradient flow of the d = 1 model gives
    # dw̄/dt = L a^{L−1} da/dt; the paper's time τ = L t then gives dw̄/dτ = a^{L−1} da/dt.
    lam, rho = 1.7, 0.6
    moments = Moments.from_features([lam], [rho])
    for a in (0.05, 0.3, 0.55):
        layers = [np.array([[a]]) for _ in range(depth)]
        predictor = np.array([[a]])
        target = None if objective == "jepa" else np.eye(1)
        grads, grad_v = gradients(layers, predictor, target, moments)
        # Every layer and V receive the same gradient: the manifold is invariant.
        for g in grads:
            assert g[0, 0] == pytest.approx(grad_v[0, 0], rel=1e-12)
        dwbar_dtau = a ** (depth - 1) * -grads[0][0, 0]
        assert rate(objective, a**depth, depth, lam, rho) == pytest.approx(dwbar_dtau, rel=1e-12)


@pytest.mark.parametrize("objective", ["jepa", "mae"])
@pytest.mark.parametrize("depth", [1, 3])
def test_fixed_points(objective: str, depth: int) -> None:
    lam, rho = 2.0, 0.8
    origin, star = fixed_points(objective, depth, lam, rho)
    assert origin.wbar == 0.0 and not origin.stable
    expected = rho**depth if objective == "jepa" else rho ** (depth / (depth + 1))
    assert star.wbar == pytest.approx(expected, rel=1e-14) == fixed_point(objective, depth, rho)
    assert rate(objective, star.wbar, depth, lam, rho) == pytest.approx(0.0, abs=1e-14)
    h = 1e-6
    slope = (rate(objective, star.wbar + h, depth, lam, rho) - rate(objective, star.wbar - h, depth, lam, rho)) / (
        2 * h
    )
    assert star.slope == pytest.approx(slope, rel=1e-6)
    assert star.stable and star.slope < 0
    # V W̄ at the fixed point: JEPA ρ^{L+1}; MAE ρ (the linear regression coefficient).
    assert product_fixed_point(objective, depth, rho) == pytest.approx(
        rho ** (depth + 1) if objective == "jepa" else rho
    )


@pytest.mark.parametrize("objective", ["jepa", "mae"])
def test_trajectory_rises_monotonically_to_the_fixed_point(objective: str) -> None:
    depth, eps, lam, rho = 3, 1e-3, 1.0, 0.7
    tau_star = critical_time_closed(objective, depth, eps, lam, rho)
    taus = np.linspace(0, 6 * tau_star, 400)
    wbar = solve_trajectory(objective, depth, eps, lam, rho, taus)
    assert wbar[0] == pytest.approx(eps)
    assert np.all(np.diff(wbar) > -1e-9 * wbar[-1])  # up to the solver's tolerance at saturation
    assert wbar[-1] == pytest.approx(fixed_point(objective, depth, rho), rel=1e-3)
    # Half the fixed point is crossed at the critical time.
    half = np.interp(0.5 * fixed_point(objective, depth, rho), wbar, taus)
    assert half == pytest.approx(tau_star, rel=5e-3)


def test_critical_time_ode_handles_astronomical_times() -> None:
    # τ* ~ 1e58: stepping in τ is hopeless; the ODE runs on its own clock and still agrees.
    closed = critical_time_closed("jepa", 30, 1e-30, 1.0, 0.3)
    assert closed > 1e58
    assert critical_time_ode("jepa", 30, 1e-30, 1.0, 0.3) == pytest.approx(closed, rel=1e-8)
