"""Schedules: exact values at the landmarks, purity in the step."""

import math

import pytest

from openjepa.schedules import cosine_ramp, linear, warmup_cosine


def test_warmup_cosine_values():
    f = lambda s: warmup_cosine(s, total=110, warmup=10, start=2e-4, peak=1e-3, final=1e-6)  # noqa: E731
    assert f(0) == pytest.approx(2e-4)
    assert f(5) == pytest.approx(2e-4 + 0.5 * 8e-4)
    assert f(10) == pytest.approx(1e-3)
    assert f(60) == pytest.approx(1e-6 + 0.5 * (1e-3 - 1e-6))  # half-way through the cosine
    assert f(110) == pytest.approx(1e-6)
    assert f(500) == pytest.approx(1e-6)  # clamped after the end


def test_weight_decay_cosine_increase_and_ema_linear():
    assert cosine_ramp(0, 100, 0.04, 0.4) == pytest.approx(0.04)
    assert cosine_ramp(50, 100, 0.04, 0.4) == pytest.approx(0.22)
    assert cosine_ramp(100, 100, 0.04, 0.4) == pytest.approx(0.4)
    assert cosine_ramp(25, 100, 0.04, 0.4) == pytest.approx(0.4 + 0.5 * (0.04 - 0.4) * (1 + math.cos(math.pi / 4)))
    assert linear(0, 200, 0.996, 1.0) == pytest.approx(0.996)
    assert linear(100, 200, 0.996, 1.0) == pytest.approx(0.998)
    assert linear(300, 200, 0.996, 1.0) == pytest.approx(1.0)
