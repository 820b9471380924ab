"""Closed forms: spec example values, agreement with numerical ODE / quadrature, series, scaling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from openjepa.theory.closed_form import (
    critical_time_closed,
    critical_time_series,
    jepa_F,
    jepa_series,
    jepa_series_remainder_bound,
    jepa_time_naive,
    log_critical_time_closed,
    mae_G_hypergeometric,
    mae_leading_term,
    mae_logistic_wbar,
    mae_time_hypergeometric,
    time_to_reach,
)
from openjepa.theory.model import InvalidParameterError, fixed_point
from openjepa.theory.odes import critical_time_ode, critical_time_quad, solve_trajectory


def test_spec_example_jepa() -> None:
    # spec/deep-linear.md: λ = 1, ρ = 0.7, ε = 1e-3, p = 0.5, L = 2: τ* ≈ 22643, Theorem 4.5 sum 22639.
    tau = critical_time_closed("jepa", 2, 1e-3, 1.0, 0.7, 0.5)
    assert tau == pytest.approx(22643, abs=0.5)
    assert tau == pytest.approx(22642.8497, rel=1e-8)
    assert jepa_series(2, 1e-3, 1.0, 0.7) == pytest.approx(22639, abs=0.5)
    # The printed formula L [F(ψ) − F(ψ0)] / (λ ρ^{2L−1}) gives the same number at these moderate values.
    assert jepa_time_naive(2, 1e-3, 1.0, 0.7, 0.5 * 0.7**2) == pytest.approx(tau, rel=1e-12)


def test_spec_example_mae() -> None:
    tau = critical_time_closed("mae", 2, 1e-3, 1.0, 0.7, 0.5)
    assert tau == pytest.approx(60.73, abs=0.005)
    assert mae_leading_term(2, 1e-3, 1.0) == pytest.approx(63.25, abs=0.005)
    # The hypergeometric form of the spec agrees where scipy's hyp2f1 is reliable.
    assert mae_time_hypergeometric(2, 1e-3, 1.0, 0.7, 0.5 * 0.7 ** (2 / 3)) == pytest.approx(tau, rel=1e-10)


@pytest.mark.parametrize("objective", ["jepa", "mae"])
@pytest.mark.parametrize("depth", [1, 2, 3, 6])
def test_closed_form_matches_numerical_ode(objective: str, depth: int) -> None:
    # Issue #4: closed forms vs numerical ODE critical times within 1e-6 relative.
    for rho in (0.35, 0.7, 1.0, 1.8):
        eps = min(1e-3, (0.5 * rho) ** depth)  # stay inside ε^{1/L} < ρ
        for p in (0.1, 0.5, 0.95):
            closed = critical_time_closed(objective, depth, eps, 1.3, rho, p)
            if closed == 0.0:
                continue
            ode = critical_time_ode(objective, depth, eps, 1.3, rho, p)
            assert ode == pytest.approx(closed, rel=1e-6), (objective, depth, rho, p)


def test_closed_form_matches_quadrature_over_the_whole_domain(random_inputs) -> None:
    # Large L, tiny ε, ρ > 1, p near 0 or 1, ε near the validity edge.
    for args in random_inputs(150, 7):
        closed = critical_time_closed(*args)
        if closed == 0.0 or math.isinf(closed):
            continue
        assert critical_time_quad(*args) == pytest.approx(closed, rel=1e-8), args
        assert critical_time_ode(*args) == pytest.approx(closed, rel=1e-6), args


def test_closed_form_matches_high_precision_reference(reference_tau, random_inputs) -> None:
    for args in random_inputs(60, 11):
        closed = critical_time_closed(*args)
        if math.isinf(closed):
            continue
        assert closed == pytest.approx(reference_tau(*args), rel=1e-10, abs=0.0), args


def test_extreme_inputs_stay_finite_in_log_space() -> None:
    # τ* far beyond float64: the log is still exact (compare with the leading term of Theorem 4.5:
    # τ ≈ L / ((2L − 1) λ ε^{(2L−1)/L}) for tiny ε, in logs).
    log_tau = log_critical_time_closed("jepa", 3, 1e-300, 1.0, 2.0, 0.5)
    assert critical_time_closed("jepa", 3, 1e-300, 1.0, 2.0, 0.5) == math.inf
    leading = math.log(3 / 5) - 5 / 3 * math.log(1e-300)
    assert log_tau == pytest.approx(leading, rel=1e-12)
    # Deep and tiny but representable.
    tau = critical_time_closed("jepa", 200, 1e-100, 1.0, 0.5, 0.5)
    assert math.isfinite(tau) and tau == pytest.approx(critical_time_quad("jepa", 200, 1e-100, 1.0, 0.5), rel=1e-9)


def test_exact_one_over_lambda_scaling() -> None:
    for objective in ("jepa", "mae"):
        for depth in (1, 2, 5):
            base = critical_time_closed(objective, depth, 1e-3, 1.0, 0.8)
            for lam in (1e-3, 0.37, 2.0, 1e4):
                assert lam * critical_time_closed(objective, depth, 1e-3, lam, 0.8) == pytest.approx(base, rel=1e-13)
                assert lam * critical_time_series(objective, depth, 1e-3, lam, 0.8) == pytest.approx(
                    critical_time_series(objective, depth, 1e-3, 1.0, 0.8), rel=1e-13
                )
            # The ODE knows nothing of the closed form, and scales the same way.
            assert 7.0 * critical_time_ode(objective, depth, 1e-3, 7.0, 0.8) == pytest.approx(base, rel=1e-8)


@pytest.mark.parametrize("depth", [1, 2, 4])
@pytest.mark.parametrize("rho", [0.6, 1.0, 1.5])
def test_theorem_4_5_series_within_its_log_remainder(depth: int, rho: float) -> None:
    lam = 1.0
    for eps in (1e-2, 1e-4, 1e-6, 1e-8):
        if math.log(eps) / depth >= math.log(rho):
            continue
        exact = critical_time_closed("jepa", depth, eps, lam, rho)
        series = jepa_series(depth, eps, lam, rho)
        assert abs(exact - series) <= jepa_series_remainder_bound(depth, eps, lam, rho), eps
        # ...and the remainder is small next to the sum itself (it is lower order).
        assert abs(exact - series) < 0.05 * exact or eps == 1e-2


@pytest.mark.parametrize("depth", [1, 2, 4])
@pytest.mark.parametrize("rho", [0.6, 1.0, 1.5])
def test_theorem_4_5_remainder_grows_like_log_one_over_eps(depth: int, rho: float) -> None:
    # Θ(log 1/ε): the remainder exact − sum grows linearly in log(1/ε) with slope 1/(λ ρ^{2L−1}) (the
    # log ψ0 term). For tiny ε the subtraction is beyond float64, so the literal F of the spec is
    # evaluated in 150-digit arithmetic (an implementation independent of the log-space one).
    mp = pytest.importorskip("mpmath")
    with mp.workdps(150):
        _check_remainder_slope(mp, depth, rho)


def _check_remainder_slope(mp, depth: int, rho: float) -> None:
    lam, p = mp.mpf(1), mp.mpf("0.5")

    def remainder(eps: float) -> mp.mpf:
        r, e = mp.mpf(rho), mp.mpf(eps)

        def big_f(psi: mp.mpf) -> mp.mpf:
            return -mp.fsum(1 / (n * psi**n) for n in range(1, 2 * depth)) + mp.log(psi) - mp.log(1 - psi)

        psi0, psip = e ** (mp.mpf(1) / depth) / r, p ** (mp.mpf(1) / depth)
        exact = depth * (big_f(psip) - big_f(psi0)) / (lam * r ** (2 * depth - 1))
        series = mp.fsum(depth / (n * r ** (2 * depth - n - 1) * e ** (mp.mpf(n) / depth)) for n in range(1, 2 * depth))
        # The float pipeline agrees with this exact value (sanity check of both).
        assert float(exact) == pytest.approx(critical_time_closed("jepa", depth, eps, 1.0, rho), rel=1e-12)
        return exact - series

    e1, e2 = 1e-30, 1e-60
    slope = float((remainder(e2) - remainder(e1)) / mp.log(mp.mpf(e1) / mp.mpf(e2)))
    assert slope == pytest.approx(1 / rho ** (2 * depth - 1), rel=1e-6)


@pytest.mark.parametrize("depth", [2, 3, 8])
def test_mae_leading_term_has_bounded_remainder(depth: int) -> None:
    rem = [
        critical_time_closed("mae", depth, eps, 1.0, 0.7) - mae_leading_term(depth, eps, 1.0)
        for eps in (1e-3, 1e-6, 1e-9, 1e-12)
    ]
    # Θ(1): bounded and converging (the corrections shrink like ε^{1/L}) while the leading term diverges.
    assert max(abs(r) for r in rem) < 2 * depth
    steps = np.abs(np.diff(rem))
    assert np.all(steps[1:] < steps[:-1])
    assert mae_leading_term(depth, 1e-12, 1.0) > 1e3 * abs(rem[-1])


def test_mae_depth_one_is_the_logistic_solution() -> None:
    eps, lam, rho, p = 1e-3, 1.7, 0.7, 0.5
    # Invert w̄(τ)² = ρ / (1 + (ρ/ε² − 1) e^{−2λτ}) at w̄ = p √ρ.
    expected = math.log((rho / eps**2 - 1) / (1 / p**2 - 1)) / (2 * lam)
    assert critical_time_closed("mae", 1, eps, lam, rho, p) == pytest.approx(expected, rel=1e-13)
    taus = np.linspace(0, 10, 50)
    assert solve_trajectory("mae", 1, eps, lam, rho, taus) == pytest.approx(
        mae_logistic_wbar(taus, eps, lam, rho), rel=1e-7
    )


def test_literal_antiderivatives_differentiate_to_the_ode() -> None:
    # dF/dψ = 1/(ψ^{2L}(1 − ψ)) and dG/dψ = ψ^{−a}/(1 − ψ): check by central differences.
    for depth in (1, 2, 5):
        psi, h = 0.4, 1e-6
        d_f = (jepa_F(psi + h, depth) - jepa_F(psi - h, depth)) / (2 * h)
        assert d_f == pytest.approx(1 / (psi ** (2 * depth) * (1 - psi)), rel=1e-6)
    for depth in (2, 5):
        a = 2 * depth / (depth + 1)
        psi, h = 0.3, 1e-6
        d_g = (mae_G_hypergeometric(psi + h, depth) - mae_G_hypergeometric(psi - h, depth)) / (2 * h)
        assert d_g == pytest.approx(psi ** (-a) / (1 - psi), rel=1e-6)


def test_time_to_reach_is_the_inverse_of_the_trajectory() -> None:
    for objective in ("jepa", "mae"):
        taus = np.array([0.0, 100.0, 5000.0, 20000.0]) if objective == "jepa" else np.array([0.0, 10.0, 40.0, 60.0])
        wbar = solve_trajectory(objective, 2, 1e-3, 1.0, 0.7, taus)
        for tau, w in zip(taus[1:], wbar[1:], strict=True):
            assert time_to_reach(objective, 2, 1e-3, 1.0, 0.7, float(w)) == pytest.approx(tau, rel=1e-6)
        w_star = math.exp(math.log(fixed_point(objective, 2, 0.7)) + 1e-12)  # at/above w̄*: never
        assert time_to_reach(objective, 2, 1e-3, 1.0, 0.7, w_star) == math.inf


def test_already_learned_at_start_means_zero_time() -> None:
    # ε >= p w̄*: reached at τ = 0 (ε^{1/L} < ρ still holds).
    assert critical_time_closed("jepa", 5, 0.6 * 0.5**5, 1.0, 0.5, 0.5) == 0.0
    assert critical_time_ode("jepa", 5, 0.6 * 0.5**5, 1.0, 0.5, 0.5) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"rho": 0.0}, "rho"),
        ({"rho": -0.5}, "rho"),
        ({"eps": 0.5}, "eps^(1/L) < rho"),
        ({"depth": 0}, "depth"),
        ({"p": 1.0}, "p"),
        ({"p": 0.0}, "p"),
        ({"lam": 0.0}, "lam"),
        ({"eps": float("nan")}, "eps"),
    ],
)
def test_invalid_inputs_raise_clear_errors(kwargs: dict, word: str) -> None:
    args = {"objective": "jepa", "depth": 2, "eps": 1e-3, "lam": 1.0, "rho": 0.7, "p": 0.5} | kwargs
    with pytest.raises(InvalidParameterError, match=word.replace("^", r"\^").replace("(", r"\(").replace(")", r"\)")):
        critical_time_closed(**args)
