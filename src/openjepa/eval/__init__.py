"""Frozen-feature evaluation: feature extraction, linear / k-NN / dense probes, the evaluation report.

``evaluate(encoder, cfg, device)`` is the entry point; see ``docs/evaluation.md`` for the protocol.
RankMe lives in :mod:`openjepa.metrics` because the training loop uses it too.
"""

from openjepa.eval.features import extract_features
from openjepa.eval.probes import dense_probe, knn_classify, linear_probe
from openjepa.eval.report import evaluate, evaluate_encoder, format_report, save_report_json

__all__ = [
    "dense_probe",
    "evaluate",
    "evaluate_encoder",
    "extract_features",
    "format_report",
    "knn_classify",
    "linear_probe",
    "save_report_json",
]
