"""Mask statistics and the example-mask pictures, for the 2-D sampler and the video samplers."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from openjepa.config import MaskConfig
from openjepa.masks import (
    MultiBlock3DMaskSampler,
    MultiBlockMaskSampler,
    TubeMaskSampler,
    mask_statistics,
    save_mask_png,
    save_video_mask_png,
    video_mask_statistics,
)

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


# ============================================================================= video samplers


@dataclasses.dataclass
class _Gen:
    """Stands in for the config's BlockGeneratorConfig (same field names)."""

    num_blocks: int
    spatial_scale: tuple[float, float]
    temporal_scale: tuple[float, float] = (1.0, 1.0)
    aspect: tuple[float, float] = (0.75, 1.5)


VJEPA_GRID = (8, 14, 14)
VJEPA_PAIR = (_Gen(8, (0.15, 0.15)), _Gen(2, (0.7, 0.7)))  # short range, long range


def _vjepa(mode: str, seed: int = 0) -> list[MultiBlock3DMaskSampler]:
    return [MultiBlock3DMaskSampler(g, VJEPA_GRID, mode=mode, seed=seed, stream=i) for i, g in enumerate(VJEPA_PAIR)]


def test_video_statistics_are_json_and_consistent() -> None:
    samplers = [*_vjepa("fixed"), TubeMaskSampler(VJEPA_GRID, ratio=0.9, stream=2)]
    st = json.loads(json.dumps(video_mask_statistics(samplers, batches=4, batch_size=8, start_step=2)))
    assert st["grid"] == [8, 14, 14] and st["num_tokens"] == 1568 and len(st["generators"]) == 3
    for g in st["generators"]:
        assert len(g["context_time_freq"]) == 8 and len(g["target_row_freq"]) == 14 and len(g["target_col_freq"]) == 14
        assert np.asarray(g["target_freq"]).shape == (8, 14, 14)
        # The per-token frequencies average to the mean sizes.
        assert np.mean(g["context_freq"]) * 1568 == pytest.approx(g["context_size_mean"], rel=1e-3)
        assert np.mean(g["target_time_freq"]) * 1568 == pytest.approx(g["target_size_mean"], rel=1e-3)
        assert g["context_size_mean"] <= g["context_size_before_trim_mean"]
        assert g["target_size_mean"] <= g["target_size_before_trim_mean"]
        assert g["context_size_before_trim_mean"] + g["target_size_before_trim_mean"] == pytest.approx(1568)
        assert g["masking_ratio"] == pytest.approx(1 - g["context_size_mean"] / 1568, abs=1e-4)
    tube = st["generators"][2]
    assert tube["sampler"] == "tube" and tube["target_size_mean"] == 8 * 176 and tube["masking_ratio"] == 0.898
    assert tube["block_thw_counts"] == {"8x1x1": 4}
    assert st["effective_masking_ratio"] == pytest.approx(np.mean([g["masking_ratio"] for g in st["generators"]]),
                                                          abs=1e-4)


def test_vjepa_pair_masks_about_ninety_percent() -> None:
    """spec/salt-vjepa.md: effective masking about 90% for the short + long range pair on 8x14x14."""
    fixed = video_mask_statistics(_vjepa("fixed"), batches=30, batch_size=16, global_batch=256)
    faithful = video_mask_statistics(_vjepa("faithful"), batches=30, batch_size=24)  # the reference's per GPU
    for st in (fixed, faithful):
        assert 0.83 <= st["effective_masking_ratio"] <= 0.93, st["effective_masking_ratio"]
        short, long = st["generators"]
        assert 0.70 <= short["masking_ratio"] < long["masking_ratio"] <= 0.97
        # Before the cut: 8 blocks of 15% cover about 63% of the frame, 2 blocks of 70% about 81%.
        assert 0.55 <= short["masking_ratio_before_trim"] <= 0.70
        assert 0.75 <= long["masking_ratio_before_trim"] <= 0.87
    # A larger batch means a smaller minimum context, so more masking.
    assert fixed["effective_masking_ratio"] > faithful["effective_masking_ratio"]


def test_faithful_raster_cut_biases_time_fixed_mode_stays_flat() -> None:
    faithful = video_mask_statistics(_vjepa("faithful"), batches=20, batch_size=24)
    fixed = video_mask_statistics(_vjepa("fixed"), batches=20, batch_size=24)
    for g in faithful["generators"]:
        ctx = np.asarray(g["context_time_freq"])
        before = np.asarray(g["context_before_trim_time_freq"])
        # Before the cut every frame is the same (blocks span the clip); the cut keeps the first frames.
        assert np.ptp(before) < 1e-9
        assert ctx[0] > 5 * ctx[-1] and (np.diff(ctx) <= 1e-9).all()
        assert g["target_time_freq"][0] > 1.5 * g["target_time_freq"][-1]
    for g in fixed["generators"]:
        for key in ("context_time_freq", "target_time_freq"):
            freq = np.asarray(g[key])
            assert np.ptp(freq) < 0.05 * freq.mean(), key
    # The reference shares the size uniforms between generators; fixed mode draws them independently.
    assert faithful["size_draw_corr"]["aspect"] == pytest.approx(1.0)
    assert abs(fixed["size_draw_corr"]["aspect"]) < 0.6
    assert faithful["size_draw_corr"]["spatial_scale"] is None  # a constant scale has no correlation


def test_video_statistics_reject_bad_runs() -> None:
    with pytest.raises(ValueError, match="share a grid"):
        video_mask_statistics([TubeMaskSampler((4, 8, 8)), TubeMaskSampler((4, 8, 6))], 1, 2)
    with pytest.raises(ValueError):
        video_mask_statistics(TubeMaskSampler((4, 8, 8)), batches=0, batch_size=2)
    with pytest.raises(ValueError):
        video_mask_statistics(TubeMaskSampler((4, 8, 8)), batches=1, batch_size=4, global_batch=2)


def test_save_video_mask_png_writes_pngs(tmp_path: Path) -> None:
    samplers = [MultiBlock3DMaskSampler(g, (4, 8, 8), mode="faithful", stream=i) for i, g in enumerate(VJEPA_PAIR)]
    stats = video_mask_statistics(samplers, batches=2, batch_size=6)
    out = save_video_mask_png(samplers, tmp_path / "sub" / "v.png", n=3, step=1, stats=stats)
    assert out == tmp_path / "sub" / "v.png" and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # One sampler, measured by the function itself; a 2-D tube grid draws a single frame.
    assert save_video_mask_png(TubeMaskSampler((8, 8), ratio=0.75), tmp_path / "mae.png", n=2).stat().st_size > 1000


def test_inspect_masks_reports_video_configs(tmp_path: Path, capsys) -> None:
    """``openjepa inspect masks`` on a video config: every generator of the batch, JSON and text."""
    from openjepa.masks import cli

    config = tmp_path / "v.yaml"
    config.write_text("mask: {kind: multiblock3d}\ndata: {num_frames: 8, image_size: 128, batch_size: 6}\n"
                      "model: {patch_size: 16}\n")
    png = tmp_path / "v.png"
    argv = [str(config), "--batches", "2", "--json", "--png", str(png), "--seed", "3", "mask.mode=faithful"]
    assert cli.main(argv) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["kind"] == "video" and stats["grid"] == [4, 8, 8] and stats["batch_size"] == 6
    assert [(g["num_blocks"], g["seed"], g["stream"], g["mode"]) for g in stats["generators"]] == [
        (8, 3, 0, "faithful"), (2, 3, 1, "faithful")]
    assert stats["png"] == str(png) and png.read_bytes()[:4] == b"\x89PNG"
    assert cli.main([str(config), "--batches", "1", "--batch-size", "1", "--png", str(png), "mask.kind=tube"]) == 0
    out = capsys.readouterr().out
    assert "effective masking ratio" in out and "generator 0: tube" in out and "58 tubes" in out
    # A config the sampler refuses: exit code 2 and the key in the message.
    bad = [str(config), "--png", str(png), "mask.generators=[{num_blocks: 2, spatial_scale: [1.0, 1.0]}]"]
    assert cli.main(bad) == 2
    assert "mask.generators[0].spatial_scale" in capsys.readouterr().err
