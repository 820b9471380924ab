"""scripts/shape_diagnostic.py: the runs behind docs/RESULTS.md section 16 (a tiny run of each model / pool)."""

from __future__ import annotations

import json

import pytest


@pytest.mark.parametrize("args", [
    ["--pool", "mean"], ["--pool", "max", "--stem", "hmlp"], ["--pool", "att", "--embed-scale", "5"],
    ["--model", "cnn", "--pool", "max"],
])
def test_a_short_run_prints_training_and_val_accuracy(capsys, args, load_script):
    mod = load_script("shape_diagnostic")
    common = ["--image-size", "32", "--steps", "4", "--every", "2", "--batch", "8", "--train-size", "16",
              "--tasks", "largest_shape,count", "--objects", "2"]
    assert mod.main(common + args) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["step"] for line in lines[:-1]] == [2, 4]
    for line in lines[:-1]:
        assert set(line["train_acc"]) == {"largest_shape", "count"}
        assert all(0 <= a <= 100 for a in line["train_acc"].values())
    final = lines[-1]
    assert set(final["val_acc"]) == {"largest_shape", "count"}
    assert all(0 <= a <= 100 for a in final["val_acc"].values())
