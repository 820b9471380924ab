"""scripts/summarize_seeds.py: the mean ± std and sigma margins the RESULTS tables (and issue verdicts) use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def _write(root: Path, name: str, seed: int, pre: float, rnd: float, report: str = "eval.json") -> None:
    folder = root / f"{name}-s{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    rep = {"pretrained": {"attentive": {"speed": pre}}, "random_init": {"attentive": {"speed": rnd}},
           "config": {"dataset_seed": seed}}
    (folder / report).write_text(json.dumps(rep))


def test_margin_in_units_of_the_larger_seed_std(tmp_path, capsys, load_script):
    mod = load_script("summarize_seeds")
    # pretrained 0.90 / 0.92 / 0.94 (std 2 points), random 0.80 / 0.81 / 0.82 (std 1): margin 11 = 5.5 sigma.
    for seed, (pre, rnd) in enumerate([(0.90, 0.80), (0.92, 0.81), (0.94, 0.82)]):
        _write(tmp_path, "vjepa", seed, pre, rnd, report="eval-long.json")
    _write(tmp_path, "vjepa", 10, 0.10, 0.10)  # another report file: not read with --report eval-long.json
    assert mod.main([str(tmp_path), "--groups", "vjepa", "--report", "eval-long.json", "--per-seed"]) == 0
    out = capsys.readouterr().out
    assert "| vjepa | 3 | 92.0 ± 2.0 |" in out
    assert "| vjepa: random init | 3 | 81.0 ± 1.0 |" in out
    assert "| vjepa | random init | +11.0 (+5.5σ) |" in out
    assert "| vjepa | 2 | 94.0 / 82.0 |" in out


def test_a_run_folder_is_a_group_of_one(tmp_path, capsys, load_script):
    mod = load_script("summarize_seeds")
    for seed, pre in enumerate([0.90, 0.94]):
        _write(tmp_path, "ijepa", seed, pre, 0.80)
    single = tmp_path / "ijepa-small-context"  # a one-seed ablation, no -s<seed> suffix
    single.mkdir()
    (single / "eval.json").write_text((tmp_path / "ijepa-s0" / "eval.json").read_text())
    assert mod.main([str(tmp_path), "--groups", "ijepa", "ijepa-small-context", "--against", "ijepa"]) == 0
    out = capsys.readouterr().out
    assert "| ijepa | 2 | 92.0 ± 2.8 |" in out
    assert "| ijepa-small-context | 1 | 90.0 |" in out
    assert "| ijepa-small-context | ijepa | -2.0 (-0.7σ) |" in out


def test_no_report_is_a_clear_error(tmp_path, capsys, load_script):
    with pytest.raises(SystemExit):
        load_script("summarize_seeds").main([str(tmp_path), "--groups", "vjepa"])
    assert "no eval.json in any" in capsys.readouterr().err
