"""Deep linear JEPA vs MAE: the implicit-bias theory as a tool (spec/deep-linear.md, docs/theory.md).

Simulation (full-matrix gradient descent), per-feature ODEs, exact critical times, Theorem 4.5's series,
the MAE leading term, Figure 2, the depth sweep and the JEPA/MAE order flip. Times are in the paper's
convention τ = L · t, t = learning rate × steps. Only numpy, scipy and (for figures) matplotlib are used.

The names below are loaded on first use, so that ``openjepa --help`` (which imports ``theory.cli``) does
not pay for importing scipy.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CriticalTime": "analysis",
    "critical_time": "analysis",
    "depth_sweep": "analysis",
    "order_flip": "analysis",
    "critical_time_closed": "closed_form",
    "critical_time_series": "closed_form",
    "jepa_series": "closed_form",
    "mae_leading_term": "closed_form",
    "time_to_reach": "closed_form",
    "DynamicSequence": "model",
    "InvalidParameterError": "model",
    "Moments": "model",
    "StaticViews": "model",
    "empirical_moments": "model",
    "fixed_point": "model",
    "critical_time_ode": "odes",
    "fixed_points": "odes",
    "rate": "odes",
    "solve_trajectory": "odes",
    "SimulationConfig": "simulate",
    "SimulationResult": "simulate",
    "critical_time_gd": "simulate",
}
# The function simulate() is not re-exported: its module has the same name, and importing the module
# (which other submodules do) would shadow the function. Use ``from openjepa.theory.simulate import simulate``.

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'openjepa.theory' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"openjepa.theory.{module}"), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
