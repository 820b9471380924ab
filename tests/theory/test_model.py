"""Moments and generative models: λ and ρ mean what the spec says."""

from __future__ import annotations

import numpy as np
import pytest

from openjepa.theory.model import (
    DynamicSequence,
    InvalidParameterError,
    Moments,
    StaticViews,
    check_feature,
    empirical_moments,
)


def test_moments_from_features() -> None:
    m = Moments.from_features([2.0, 0.5], [0.4, 1.0])
    assert np.allclose(m.syx, np.diag([2.0, 0.5]))
    assert np.allclose(m.sxx, np.diag([5.0, 0.5]))  # Σxx = λ/ρ
    lam, rho = m.feature_params()
    assert np.allclose(lam, [2.0, 0.5]) and np.allclose(rho, [0.4, 1.0])
    q = np.array([[0.0, 1.0], [1.0, 0.0]])
    assert np.allclose(m.rotated(q).sxx, np.diag([0.5, 5.0]))


def test_static_views_lambda_rho_and_samples() -> None:
    model = StaticViews(gamma=np.array([1.0, 2.0]), noise_var=np.array([0.0, 3.0]))
    lam, rho = model.lam_rho()
    assert np.allclose(lam, [1.0, 2.0]) and np.allclose(rho, [1.0, 0.4])  # ρ = γ/(γ + s²)
    x, y = model.sample(200_000, np.random.default_rng(0))
    emp = empirical_moments(x, y)
    pop = model.moments()
    # Sampling error of a second moment ~ (variance scale) / sqrt(n) ≈ 0.01 here.
    assert np.allclose(emp.sxx, pop.sxx, atol=0.05)
    assert np.allclose(emp.syx, pop.syx, atol=0.05)


def test_dynamic_sequence_lambda_rho_and_samples() -> None:
    model = DynamicSequence(gamma=np.array([1.0, 1.0]), noise_var=np.array([0.0, 1.0]), alpha=np.array([0.9, 0.5]))
    lam, rho = model.lam_rho()
    assert np.allclose(lam, [0.9, 0.5])  # λ = αγ
    assert np.allclose(rho, [0.9, 0.25])  # ρ = αγ/(γ + s²)
    x, y = model.sample(100_000, np.random.default_rng(1))
    assert np.allclose(x[1:], y[:-1])  # consecutive steps of one sequence
    emp = empirical_moments(x, y)
    assert np.allclose(np.diag(emp.syx), lam, atol=0.05)
    assert np.allclose(np.diag(emp.sxx), [1.0, 2.0], atol=0.05)


def test_generative_models_reject_bad_parameters() -> None:
    with pytest.raises(InvalidParameterError):
        StaticViews(gamma=np.array([-1.0]), noise_var=np.array([0.0]))
    with pytest.raises(InvalidParameterError):
        DynamicSequence(gamma=np.array([1.0]), noise_var=np.array([0.0]), alpha=np.array([1.5]))
    with pytest.raises(InvalidParameterError):
        Moments.from_features([1.0, 2.0], [1.0])


def test_check_feature_names_the_flag() -> None:
    names = {"rho": "--rho", "eps": "--eps", "depth": "--depth"}
    with pytest.raises(InvalidParameterError, match=r"--rho must be > 0"):
        check_feature("jepa", 2, 1e-3, 1.0, -0.5, 0.5, names=names)
    with pytest.raises(InvalidParameterError, match=r"use --eps below rho\^L = 0\.09"):
        check_feature("jepa", 2, 0.1, 1.0, 0.3, 0.5, names=names)
    # The boundary itself is outside the domain (ε^{1/L} = ρ: w̄ starts at the JEPA fixed point).
    with pytest.raises(InvalidParameterError):
        check_feature("jepa", 2, 0.25, 1.0, 0.5)
    check_feature("mae", 2, 0.2499, 1.0, 0.5)
