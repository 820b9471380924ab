"""Frozen-feature evaluation: features (cached), linear / attentive / k-NN / dense probes, calibrated reports.

``evaluate(encoder, cfg, device)`` (built-in probe data) and ``evaluate_user_data(encoder, train, val, cfg,
device)`` are the entry points; see ``docs/evaluation.md`` for the protocol. RankMe lives in
:mod:`openjepa.metrics` because the training loop uses it too.

Public names are imported lazily (PEP 562), so that ``openjepa.eval.cli``, loaded to build the command line
parser, does not pull in torch.

- :mod:`openjepa.eval.features`: :func:`extract_features`, :func:`write_features_file`, :func:`read_features_file`.
- :mod:`openjepa.eval.probes`: :func:`linear_probe`, :func:`knn_classify`, :func:`dense_probe`.
- :mod:`openjepa.eval.attentive`: :func:`attentive_probe`, :func:`attentive_probes`, :class:`AttentiveClassifier`.
- :mod:`openjepa.eval.baselines`: :class:`PixelEncoder`, :func:`random_encoder_like`, :func:`supervised_ceiling`.
- :mod:`openjepa.eval.cache`: :class:`FeatureCache`, :func:`extract_cached`.
- :mod:`openjepa.eval.userdata`: :func:`read_listing`, :func:`open_labelled_pair`, :func:`open_user_data`.
- :mod:`openjepa.eval.report`: :func:`evaluate`, :func:`evaluate_user_data`, :func:`evaluate_encoder`,
  :func:`format_report`, :func:`format_comparison`, :func:`save_report_json`.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "features": ("extract_features", "write_features_file", "read_features_file"),
    "probes": ("linear_probe", "knn_classify", "dense_probe"),
    "attentive": ("attentive_probe", "attentive_probes", "AttentiveClassifier"),
    "baselines": ("PixelEncoder", "random_encoder_like", "supervised_ceiling", "CeilingSpec"),
    "cache": ("FeatureCache", "extract_cached"),
    "userdata": ("read_listing", "open_labelled_pair", "open_user_data"),
    "report": (
        "evaluate",
        "evaluate_user_data",
        "evaluate_encoder",
        "format_report",
        "format_comparison",
        "save_report_json",
    ),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'openjepa.eval' has no attribute {name!r}")
    return getattr(importlib.import_module(f"openjepa.eval.{module}"), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
