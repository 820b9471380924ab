"""The calibrated report on a tiny encoder: rows, value ranges, seeds, calibration, formatting, comparison."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from openjepa.config import Config
from openjepa.data.scenes import ScenesDataset
from openjepa.eval.report import (
    build_random_encoder,
    calibrate,
    evaluate,
    evaluate_encoder,
    format_comparison,
    format_report,
    save_report_json,
)
from openjepa.models.build import build_encoder

TASKS = ["count", "largest_color", "has_circle"]
ROWS = ("pretrained", "random_init", "pixels", "ceiling")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny models: extra OpenMP threads only add contention on a shared CPU.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tiny_config() -> Config:
    cfg = Config()
    cfg.model.arch = "vit_pico"
    cfg.model.patch_size = 16
    cfg.data.image_size = 64
    cfg.data.batch_size = 16
    cfg.eval.train_size = 96
    cfg.eval.val_size = 48
    cfg.eval.batch_size = 48
    cfg.eval.probe_epochs = 3
    cfg.eval.knn_k = 10
    cfg.eval.attentive_epochs = 2
    return cfg


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    cfg = _tiny_config()
    # A stand-in for a pretrained encoder: another initialization of the same architecture.
    torch.manual_seed(0)
    encoder = build_encoder(cfg)
    return evaluate(
        encoder, cfg, "cpu", seeds=[0, 1], tasks=TASKS, ceiling_steps=6, cache=tmp_path_factory.mktemp("cache"),
        progress=False,
    )


def _check_row(rep: dict, dim: int) -> None:
    for probe in ("linear", "attentive", "knn", "majority"):
        assert list(rep[probe]) == TASKS
        assert all(0.0 <= v <= 1.0 for v in rep[probe].values())
    for probe in ("linear", "attentive", "knn"):
        assert set(rep[f"{probe}_std"]) == set(TASKS) and all(v >= 0 for v in rep[f"{probe}_std"].values())
        assert rep[f"{probe}_mean"] == pytest.approx(sum(rep[probe].values()) / len(TASKS))
        # The row's number is the mean over the seeds.
        for task in TASKS:
            assert rep[probe][task] == pytest.approx(sum(s[probe][task] for s in rep["per_seed"]) / 2)
    for probe in ("linear", "attentive"):
        for task in TASKS:
            assert rep[f"{probe}_lr"][task] in Config().eval.probe_lrs
            assert rep["per_seed"][0][probe][task] == max(rep[f"{probe}_sweep"][task].values())
    assert 0.0 <= rep["dense"]["miou"] <= 1.0 and len(rep["dense"]["per_class_iou"]) == 7
    assert 1.0 <= rep["rankme"] <= min(48, dim)
    assert rep["feature_dim"] == dim and rep["n_train"] == 96 and rep["n_val"] == 48 and rep["num_patches"] == 16
    assert rep["seeds"] == [0, 1] and rep["skipped"] == {"train": [], "val": []}


def test_report_has_every_calibration_row(report):
    assert set(ROWS) <= set(report)
    _check_row(report["pretrained"], 96)
    _check_row(report["random_init"], 96)
    _check_row(report["ceiling"], 96)
    _check_row(report["pixels"], 16 * 16 * 3)  # 64 px seen as 16x16 pixels (4 per token side)
    assert report["pixels"]["token_dim"] == 4 * 4 * 3 + 12
    # Every row saw the same images, so the label-only baselines agree.
    assert all(report[r]["majority"] == report["pretrained"]["majority"] for r in ROWS)
    heads = report["ceiling"]["heads"]
    assert list(heads) == TASKS and all(0.0 <= v <= 1.0 for v in heads.values())
    assert report["ceiling"]["training"]["spec"]["steps"] == 6 and not report["ceiling"]["training"]["cached"]
    assert report["config"]["probe_seeds"] == [0, 1] and report["config"]["ceiling"]["steps"] == 6
    assert report["data"]["name"] == "scenes" and report["data"]["tasks"] == {"count": 4, "largest_color": 8,
                                                                                "has_circle": 2}


def test_attentive_epoch_and_scoring_are_recorded(report):
    # Default: scored after the last epoch only; the report says which epoch each number comes from.
    assert report["config"]["attentive"]["eval_every"] == 0
    assert report["pretrained"]["attentive_epoch"] == {t: 2 for t in TASKS}
    assert "2 epochs, same lrs" in format_report(report)
    scored = copy.deepcopy(report)
    scored["config"]["attentive"]["eval_every"] = 10
    assert "2 epochs (scored every 10, best kept), same lrs" in format_report(scored)


def test_random_init_is_redrawn_per_seed_and_margins_are_differences(report):
    rnd = report["random_init"]
    assert rnd["cache"]["extractions"] == 4  # two seeds, two splits: a fresh encoder per seed
    assert report["pretrained"]["cache"]["extractions"] == 2  # one encoder: extracted once for both seeds
    pre, mar = report["pretrained"], report["margin"]
    for probe in ("linear", "attentive", "knn"):
        for task in TASKS:
            assert mar[probe][task] == pytest.approx(pre[probe][task] - rnd[probe][task])
    assert report["margin_pixels"]["linear"]["count"] == pytest.approx(
        pre["linear"]["count"] - report["pixels"]["linear"]["count"]
    )
    assert mar["rankme"] == pytest.approx(pre["rankme"] - rnd["rankme"])


def test_calibration_marks_tasks_where_the_ceiling_is_at_chance():
    row = {"majority": {"easy": 0.5, "hard": 0.2}, "n_val": 400}
    rep = {
        "pretrained": row,
        "ceiling": {"linear": {"easy": 0.9, "hard": 0.21}, "attentive": {"easy": 0.95, "hard": 0.22},
                    "heads": {"easy": 0.97, "hard": 0.2}},
    }
    calib = calibrate(rep)
    # Two standard errors of 20% on 400 samples is 4 points: 22% is chance, 90% is not.
    assert calib["hard"]["measures_nothing"] and not calib["easy"]["measures_nothing"]
    assert calib["hard"]["threshold"] == pytest.approx(0.2 + 2 * math.sqrt(0.2 * 0.8 / 400))
    assert calib["easy"]["ceiling_best"] == 0.97
    assert calibrate({"pretrained": row})["easy"]["measures_nothing"] is None


def test_format_report_shows_every_row_probe_and_marks_empty_tasks(report):
    text = format_report(report)
    for name in (*TASKS, "pretrained", "random init", "raw pixels", "sup. ceiling", "lin", "att", "knn", "heads",
                 "chance", "dense mIoU", "RankMe", "mean±std over seeds"):
        assert name in text
    lines = text.splitlines()
    table = [line for line in lines if " | " in line]
    assert len(table) == 2 + len(TASKS) + 3  # two header lines, the tasks, mean / dense mIoU / RankMe
    bars = {tuple(i for i, ch in enumerate(line) if ch == "|") for line in table}
    assert len(bars) == 1 and len(bars.pop()) == 4  # fixed width: one column group per row, aligned
    marked = {t for t in TASKS if any(line.startswith(t) and "measures nothing" in line for line in lines)}
    assert marked == set(report["measures_nothing"])
    # A bare evaluate_encoder row formats too.
    assert "pretrained" in format_report(report["pretrained"])


def test_save_report_json_writes_strict_json(report, tmp_path):
    report = {**report, "extra": {"nan": math.nan}}
    path = save_report_json(report, tmp_path / "sub" / "eval.json")
    loaded = json.loads(path.read_text())  # strict: no NaN tokens
    assert loaded["extra"]["nan"] is None
    assert loaded["pretrained"]["linear"].keys() == report["pretrained"]["linear"].keys()
    assert format_report(loaded)  # a report read back from JSON formats


def test_second_evaluation_reads_features_and_ceiling_from_the_cache(tmp_path):
    cfg = _tiny_config()
    cfg.eval.train_size, cfg.eval.val_size = 32, 16
    torch.manual_seed(0)
    enc = build_encoder(cfg)
    kwargs = {"tasks": ["count"], "ceiling_steps": 2, "cache": tmp_path, "progress": False, "pixels": False}
    first = evaluate(enc, cfg, "cpu", **kwargs)
    second = evaluate(enc, cfg, "cpu", **kwargs)
    assert first["pretrained"]["cache"]["hits"] == 0 and second["pretrained"]["cache"]["hits"] == 2
    assert second["ceiling"]["training"]["cached"] and second["ceiling"]["cache"]["hits"] == 2
    assert second["pretrained"]["linear"] == first["pretrained"]["linear"]
    assert second["ceiling"]["heads"] == first["ceiling"]["heads"]


def test_no_references_and_task_subset():
    cfg = _tiny_config()
    cfg.eval.train_size, cfg.eval.val_size, cfg.eval.probe_epochs = 32, 16, 1
    cfg.eval.random_baseline = False
    cfg.eval.attentive = False
    torch.manual_seed(0)
    out = evaluate(build_encoder(cfg), cfg, "cpu", tasks=["count"], progress=False, pixels=False, ceiling=False,
                   cache=False)
    assert {"pretrained", "random_init", "pixels", "ceiling"} & set(out) == {"pretrained"}
    assert list(out["pretrained"]["linear"]) == ["count"] and "attentive" not in out["pretrained"]
    assert out["calibration"]["count"]["measures_nothing"] is None
    text = format_report(out)
    assert "count" in text and "not calibrated" in text
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
        evaluate(build_encoder(other), cfg, "cpu", random_baseline=True, progress=False, tasks=["count"],
                 pixels=False, ceiling=False, cache=False)


def test_comparison_merges_runs_sharing_a_name_and_refuses_other_setups(report):
    other = json.loads(json.dumps(report))
    for probe in ("linear", "attentive", "knn"):
        other["pretrained"][probe] = {t: min(1.0, v + 0.1) for t, v in other["pretrained"][probe].items()}
    text = format_comparison({"a": report, "b": other, "c": report}, names=["I-JEPA", "I-JEPA", "CLIP"])
    assert "I-JEPA" in text and "CLIP" in text and "mean±std over the runs" in text
    assert "raw pixels" in text and "sup. ceiling" in text and "random init" in text
    line = next(line for line in text.splitlines() if line.startswith("count"))
    mean = 100 * (report["pretrained"]["linear"]["count"] + other["pretrained"]["linear"]["count"]) / 2
    assert f"{mean:.1f}±" in line
    bad = json.loads(json.dumps(report))
    bad["config"]["val_size"] = 1000
    with pytest.raises(ValueError, match="val_size"):
        format_comparison({"a": report, "b": bad})
    # A report written before eval.attentive_eval_every existed scored the last epoch: the same protocol.
    older = json.loads(json.dumps(report))
    del older["config"]["attentive"]["eval_every"]
    assert "I-JEPA" in format_comparison({"a": report, "b": older}, names=["I-JEPA", "CLIP"])
    scored = json.loads(json.dumps(report))
    scored["config"]["attentive"]["eval_every"] = 10
    with pytest.raises(ValueError, match="attentive"):
        format_comparison({"a": report, "b": scored})


def test_older_reports_still_format_and_compare():
    old_row = {
        "linear": {"count": 0.4}, "knn": {"count": 0.3}, "majority": {"count": 0.25}, "linear_mean": 0.4,
        "knn_mean": 0.3, "dense": {"miou": 0.2}, "rankme": 12.0, "feature_dim": 192, "n_train": 2000, "n_val": 500,
    }
    old = {
        "config": {"arch": "vit_tiny", "patch_size": 16, "image_size": 64, "probe_lrs": [1e-3], "probe_epochs": 30,
                   "knn_k": 20, "train_size": 2000, "val_size": 500, "dataset_seed": 0},
        "pretrained": old_row, "random_init": old_row,
    }
    assert "40.0" in format_report(old)
    assert "random init" in format_comparison({"x": old, "y": old})
    assert ScenesDataset("val", 1).tasks["count"] == 4  # the probe tasks the old report names still exist


def test_video_encoders_get_the_sprites_report_with_clips(tmp_path):
    cfg = _tiny_config()
    cfg.data.source, cfg.data.image_size, cfg.data.num_frames, cfg.data.frame_step = "sprites", 32, 4, 2
    cfg.data.sprites.length = 8
    cfg.model.patch_size = 16
    cfg.eval.train_size, cfg.eval.val_size = 24, 12
    torch.manual_seed(0)
    encoder = build_encoder(cfg)
    assert encoder.is_video
    rep = evaluate(encoder, cfg, "cpu", ceiling_steps=3, cache=tmp_path, progress=False)
    assert rep["data"]["name"] == "sprites" and rep["data"]["input"] == "video"
    assert set(rep["pretrained"]["attentive"]) == {"direction", "speed", "digit", "count"}
    assert rep["config"]["num_clips"] == 2 and rep["config"]["num_frames"] == 4
    assert rep["pretrained"]["num_patches"] == 8  # (4 / 2) x 2 x 2 tubelet tokens per clip
    assert rep["pixels"]["feature_dim"] == 2 * (2 * 4) ** 2 * 3  # one frame per tubelet, 4 px per token side
    assert "dense" not in rep["pretrained"] and "sup. ceiling" in format_report(rep)
    # Built-in video data is fingerprinted too: a second run reads every feature from the cache.
    again = evaluate(encoder, cfg, "cpu", ceiling_steps=3, cache=tmp_path, progress=False)
    assert again["pretrained"]["cache"]["hits"] == 2 and again["ceiling"]["training"]["cached"]
