"""End-to-end frozen evaluation on a tiny encoder: report structure, value ranges, baseline, formatting."""

from __future__ import annotations

import json
import math

import pytest
import torch

from openjepa.config import Config
from openjepa.eval.report import (
    build_random_encoder,
    evaluate,
    evaluate_encoder,
    format_report,
    save_report_json,
)
from openjepa.methods.ijepa import build_encoder

TASKS = ("count", "largest_shape", "largest_color", "smallest_color", "leftmost_shape")


def _tiny_config() -> Config:
    cfg = Config()
    cfg.model.arch = "vit_pico"
    cfg.model.patch_size = 16
    cfg.data.image_size = 64
    cfg.eval.train_size = 128
    cfg.eval.val_size = 64
    cfg.eval.batch_size = 64
    cfg.eval.probe_epochs = 3
    cfg.eval.knn_k = 10
    return cfg


@pytest.fixture(scope="module")
def report() -> dict:
    cfg = _tiny_config()
    # A stand-in for a pretrained encoder: another initialization of the same architecture.
    torch.manual_seed(0)
    encoder = build_encoder(cfg)
    return evaluate(encoder, cfg, "cpu", random_baseline=True, seed=0, progress=False)


def _check_encoder_report(rep: dict, dim: int) -> None:
    assert set(rep["linear"]) == set(TASKS) == set(rep["knn"]) == set(rep["majority"])
    for group in ("linear", "knn", "majority"):
        for value in rep[group].values():
            assert 0.0 <= value <= 1.0
    assert 0.0 <= rep["dense"]["acc"] <= 1.0 and 0.0 <= rep["dense"]["miou"] <= 1.0
    assert len(rep["dense"]["per_class_iou"]) == 7
    assert 1.0 <= rep["rankme"] <= dim
    assert rep["feature_dim"] == dim
    assert rep["n_train"] == 128 and rep["n_val"] == 64 and rep["num_patches"] == 16
    assert rep["linear_mean"] == pytest.approx(sum(rep["linear"].values()) / 5)
    for task in TASKS:
        assert rep["linear_lr"][task] in Config().eval.probe_lrs
        assert rep["linear"][task] == max(rep["linear_sweep"][task].values())


def test_report_structure_and_ranges(report):
    assert set(report) == {"config", "pretrained", "random_init", "margin"}
    assert report["config"]["arch"] == "vit_pico" and report["config"]["patch_size"] == 16
    _check_encoder_report(report["pretrained"], 96)
    _check_encoder_report(report["random_init"], 96)
    # Both encoders saw the same images, so the label-only baselines agree.
    assert report["pretrained"]["majority"] == report["random_init"]["majority"]


def test_margin_is_pretrained_minus_random(report):
    pre, rnd, mar = report["pretrained"], report["random_init"], report["margin"]
    for task in TASKS:
        assert mar["linear"][task] == pytest.approx(pre["linear"][task] - rnd["linear"][task])
        assert mar["knn"][task] == pytest.approx(pre["knn"][task] - rnd["knn"][task])
    assert mar["dense"]["miou"] == pytest.approx(pre["dense"]["miou"] - rnd["dense"]["miou"])
    assert mar["rankme"] == pytest.approx(pre["rankme"] - rnd["rankme"])
    # Different weights, so something differs (the comparison is not trivially zero).
    assert pre["rankme"] != rnd["rankme"]


def test_format_report_lists_every_task_and_row(report):
    text = format_report(report)
    for name in (*TASKS, "dense_mIoU", "knn_mean", "rankme", "pretrained", "random init", "margin"):
        assert name in text
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("encoder"))
    assert all(len(line) == len(header) for line in lines[lines.index(header) :])  # fixed width
    # A bare evaluate_encoder report formats too.
    assert "pretrained" in format_report(report["pretrained"])


def test_save_report_json_writes_strict_json(report, tmp_path):
    report = {**report, "extra": {"nan": math.nan}}
    path = save_report_json(report, tmp_path / "sub" / "eval.json")
    loaded = json.loads(path.read_text())  # strict: no NaN tokens
    assert loaded["extra"]["nan"] is None
    assert loaded["pretrained"]["linear"].keys() == report["pretrained"]["linear"].keys()


def test_no_baseline_and_task_subset():
    cfg = _tiny_config()
    cfg.eval.train_size, cfg.eval.val_size, cfg.eval.probe_epochs = 32, 16, 1
    cfg.eval.random_baseline = False
    torch.manual_seed(0)
    out = evaluate(build_encoder(cfg), cfg, "cpu", tasks=["count"], progress=False)
    assert set(out) == {"config", "pretrained"}
    assert list(out["pretrained"]["linear"]) == ["count"]
    assert "count" in format_report(out)
    with pytest.raises(ValueError, match="unknown scenes task"):
        evaluate_encoder(build_encoder(cfg), cfg, "cpu", tasks=["colour"], progress=False)


def test_random_encoder_is_seeded_and_leaves_the_global_rng_alone():
    cfg = _tiny_config()
    torch.manual_seed(42)
    state = torch.get_rng_state()
    a = build_random_encoder(cfg, seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    b = build_random_encoder(cfg, seed=0)
    c = build_random_encoder(cfg, seed=1)
    wa, wb, wc = (m.blocks[0].attn.qkv.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_baseline_with_a_mismatched_architecture_is_refused():
    cfg = _tiny_config()
    other = _tiny_config()
    other.model.arch = "vit_tiny"
    with pytest.raises(ValueError, match="width"):
        evaluate(build_encoder(other), cfg, "cpu", random_baseline=True, progress=False)
