"""Mask statistics and the example-mask picture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from openjepa.config import MaskConfig
from openjepa.masks import MultiBlockMaskSampler, mask_statistics, save_mask_png

REQUIRED = (
    "context_size_mean",
    "target_size_mean",
    "context_row_freq",
    "context_col_freq",
    "target_row_freq",
    "target_col_freq",
    "context_size_before_trim_mean",
    "grid",
    "mode",
    "batches",
    "batch_size",
)


@pytest.mark.parametrize("mode", ["fixed", "faithful"])
def test_statistics_are_json_and_consistent(mode: str) -> None:
    sampler = MultiBlockMaskSampler(MaskConfig(mode=mode), (12, 10), seed=1)
    st = mask_statistics(sampler, batches=5, batch_size=16, start_step=3)
    st = json.loads(json.dumps(st))  # JSON-serializable, and what a reader gets back
    for key in REQUIRED:
        assert key in st, key
    assert st["mode"] == mode and st["grid"] == [12, 10] and st["batches"] == 5 and st["batch_size"] == 16
    assert len(st["context_row_freq"]) == len(st["target_row_freq"]) == 12
    assert len(st["context_col_freq"]) == len(st["target_col_freq"]) == 10
    # A row/column average of the per-patch frequencies is the mean context size over the grid.
    per_patch = sum(st["context_row_freq"]) / 12
    assert per_patch * 120 == pytest.approx(st["context_size_mean"], rel=1e-3)
    assert st["context_size_mean"] <= st["context_size_before_trim_mean"]
    assert st["target_size_mean"] * 1 <= st["target_union_size_mean"] <= st["target_size_mean"] * 4


def test_statistics_reject_empty_runs() -> None:
    sampler = MultiBlockMaskSampler(MaskConfig(), (8, 8))
    with pytest.raises(ValueError):
        mask_statistics(sampler, batches=0, batch_size=4)
    with pytest.raises(ValueError):
        mask_statistics(sampler, batches=1, batch_size=4, global_batch=2)


@pytest.mark.parametrize("mode", ["fixed", "faithful"])
def test_save_mask_png_writes_a_png(tmp_path: Path, mode: str) -> None:
    sampler = MultiBlockMaskSampler(MaskConfig(mode=mode), (16, 16))
    stats = mask_statistics(sampler, batches=2, batch_size=8)
    out = save_mask_png(sampler, tmp_path / "sub" / "m.png", n=10, step=2, stats=stats)
    assert out == tmp_path / "sub" / "m.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out2 = save_mask_png(sampler, tmp_path / "default.png", n=3)  # measures its own bar-plot statistics
    assert out2.stat().st_size > 1000
