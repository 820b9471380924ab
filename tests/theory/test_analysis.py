"""The front door over methods, the depth sweep and the order flip."""

from __future__ import annotations

import itertools
import json
import math

import pytest

from openjepa.theory.analysis import auto_depths, critical_time, depth_sweep, order_flip
from openjepa.theory.closed_form import critical_time_closed, jepa_series
from openjepa.theory.model import InvalidParameterError


@pytest.mark.parametrize("objective", ["jepa", "mae"])
def test_all_methods_agree(objective: str) -> None:
    args = (objective, 2, 1e-3, 1.0, 0.7, 0.5)
    closed = critical_time(*args, method="closed")
    assert critical_time(*args, method="ode").tau == pytest.approx(closed.tau, rel=1e-6)
    assert critical_time(*args, method="quad").tau == pytest.approx(closed.tau, rel=1e-8)
    gd = critical_time(*args, method="gd")
    assert gd.tau == pytest.approx(closed.tau, rel=1e-4) and gd.steps > 1000 and gd.lr > 0
    series = critical_time(*args, method="series").tau
    assert series == pytest.approx(22639.5 if objective == "jepa" else 63.2456, rel=1e-5)
    assert closed.t == pytest.approx(closed.tau / 2)
    assert closed.fixed_point == pytest.approx(0.49 if objective == "jepa" else 0.7 ** (2 / 3))
    assert closed.level == pytest.approx(0.5 * closed.fixed_point)


def test_unknown_method_and_overflow_serialisation() -> None:
    with pytest.raises(InvalidParameterError, match="method"):
        critical_time("jepa", 2, 1e-3, 1.0, 0.7, method="magic")
    huge = critical_time("jepa", 3, 1e-300, 1.0, 2.0)
    assert huge.tau == math.inf and huge.log10_tau == pytest.approx(500.0 - math.log10(5 / 3), rel=1e-9)
    out = json.loads(json.dumps(huge.to_dict(), allow_nan=False))
    assert out["tau"] is None and out["log10_tau"] > 499


def test_depth_sweep_jepa_bias_grows_with_depth() -> None:
    depths = auto_depths(1e-3, (0.5, 1.0), 0.5)
    assert depths == list(range(1, 9))  # 0.5^9 / 2 < 1e-3: at L = 9 the noisy feature starts "learned"
    rows = depth_sweep(depths)
    jepa = [r["jepa_ratio"] for r in rows]
    mae = [r["mae_ratio"] for r in rows]
    assert all(b > a for a, b in itertools.pairwise(jepa))
    assert jepa[0] == pytest.approx(1.0035, abs=1e-4)  # L = 1: no real ρ-bias
    assert jepa[-1] > 3.0
    assert all(0.9 < m < 1.01 for m in mae)  # MAE ignores ρ at leading order
    row2 = rows[1]
    assert row2["jepa_tau_low"] == pytest.approx(critical_time_closed("jepa", 2, 1e-3, 1.0, 0.5))
    assert row2["jepa_ratio"] == pytest.approx(row2["jepa_tau_low"] / row2["jepa_tau_high"])


def test_depth_sweep_marks_unusable_depths() -> None:
    rows = depth_sweep([2, 10])
    assert rows[0]["note"] is None
    assert "eps^(1/L) >= rho" in rows[1]["note"] and "jepa_ratio" not in rows[1]


def test_order_flip_of_the_spec_pair() -> None:
    # A = (λ 1, ρ 1), B = (λ 2, ρ 0.3), ε = 1e-3: MAE learns B first at every depth; JEPA flips to A.
    depths = auto_depths(1e-3, (1.0, 0.3), 0.5)
    assert depths == [1, 2, 3, 4, 5]
    rows, flip = order_flip(depths)
    assert all(r["mae_first"] == "B" for r in rows)
    assert [r["jepa_first"] for r in rows] == ["B", "B", "B", "A", "B"]
    assert flip == 4
    # At L = 5 the noisy feature starts at 41% of its tiny fixed point 0.3^5: it reaches 50% first again.
    start_fraction = 1e-3 / 0.3**5
    assert start_fraction == pytest.approx(0.4115, abs=1e-4)


def test_series_is_p_independent() -> None:
    a = critical_time("jepa", 3, 1e-4, 1.0, 0.8, 0.1, method="series").tau
    b = critical_time("jepa", 3, 1e-4, 1.0, 0.8, 0.9, method="series").tau
    assert a == b == jepa_series(3, 1e-4, 1.0, 0.8)


def test_package_exports_load_lazily() -> None:
    import openjepa.theory as theory

    assert theory.critical_time("jepa", 2, 1e-3, 1.0, 0.7).tau == pytest.approx(22642.85, abs=0.01)
    assert "critical_time" in dir(theory)
    with pytest.raises(AttributeError):
        theory.no_such_name
