"""Issue 11's end to end path: pretrain on the user's files, then probe on the user's labelled data.

Images: a generated folder with class subfolders, `openjepa pretrain ... data.source=folder` for 2 epochs,
then `openjepa eval RUN --train --val` reports every probe (linear, attentive, k-NN) with the random-init,
raw-pixel and supervised-ceiling rows. Video: the same on an exported sprites list (mp4 files).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from openjepa.cli import main

TINY = [
    "model.arch=vit_pico", "model.patch_size=8", "model.pred_dim=48", "model.pred_depth=2", "data.batch_size=8",
    "mask.min_keep=2", "optim.warmup_epochs=1", "train.epochs=2", "train.log_every=2", "train.rankme_every=0",
    "train.progress=false", "train.tensorboard=false", "eval.after_pretrain=false",
]
PROBES = ["eval.attentive_epochs=3", "eval.probe_epochs=10", "--ceiling-steps", "6", "--quiet"]


def _class_folder(root: Path, n: int, offset: int) -> Path:
    colors = {"blue": (30, 30, 220), "red": (220, 30, 30), "green": (30, 200, 30)}
    for c, (name, color) in enumerate(colors.items()):
        for i in range(n):
            rng = np.random.default_rng(offset + 100 * c + i)
            img = rng.integers(90, 160, (32, 32, 3), dtype=np.uint8)
            x, y = rng.integers(0, 18, size=2)
            img[y : y + 14, x : x + 14] = color
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(root / name / f"{i:03d}.png")
    return root


def _check_report(path: Path, tasks: set[str]) -> dict:
    report = json.loads(path.read_text())
    for row in ("pretrained", "random_init", "pixels", "ceiling"):
        assert row in report, row
        for probe in ("linear", "attentive", "knn"):
            assert set(report[row][probe]) == tasks, (row, probe)
            assert all(0.0 <= v <= 1.0 for v in report[row][probe].values())
    return report


def test_pretrain_on_an_image_folder_then_probe_it(tmp_path, capsys):
    train = _class_folder(tmp_path / "train", 16, 0)
    val = _class_folder(tmp_path / "val", 6, 10_000)
    run = tmp_path / "run"
    overrides = [*TINY, "data.source=folder", f"data.path={train}", "data.image_size=32", "mask.target_scale=[0.1,0.2]"]
    assert main(["pretrain", str(_config(tmp_path)), "--out", str(run), "--no-eval", *overrides]) == 0
    capsys.readouterr()
    out = tmp_path / "eval.json"
    assert main(["eval", str(run), "--train", str(train), "--val", str(val), "--json", str(out), *PROBES]) == 0
    report = _check_report(out, {"class"})
    assert report["data"]["input"] == "image" and report["pretrained"]["n_train"] == 48
    # The colour of a big square is read off the raw pixels: the calibration row is not at chance.
    assert report["pixels"]["linear"]["class"] > 0.9
    table = capsys.readouterr().out
    assert "random init" in table and "raw pixels" in table and "sup. ceiling" in table


def test_pretrain_on_a_video_list_then_probe_it(tmp_path, capsys):
    for split, count in (("train", 16), ("val", 8)):
        assert main([
            "data", "sprites", "--split", split, "--count", str(count), "--out", str(tmp_path / split),
            "--image-size", "32", "--length", "8", "--no-progress",
        ]) == 0
    run = tmp_path / "run"
    video = ["data.num_frames=4", "data.frame_step=1", "model.tubelet_size=2", "mask.kind=multiblock3d",
             "data.image_size=32", "data.source=videos", f"data.path={tmp_path / 'train' / 'list.txt'}"]
    config = tmp_path / "vjepa.yaml"
    config.write_text("method: vjepa\n")
    assert main(["pretrain", str(config), "--out", str(run), "--no-eval", *TINY, *video]) == 0
    capsys.readouterr()
    out = tmp_path / "eval.json"
    argv = ["eval", str(run), "--train", str(tmp_path / "train" / "list.txt"), "--val",
            str(tmp_path / "val" / "list.txt"), "--json", str(out), *PROBES]
    assert main(argv) == 0
    report = _check_report(out, {"class"})
    assert report["data"]["input"] == "video" and report["pretrained"]["n_train"] == 16


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "ijepa.yaml"
    path.write_text("method: ijepa\n")
    return path
