"""The training loop: resume == uninterrupted, NaN handling, run-folder safety, logs, export."""

import json

import pytest
import torch

from openjepa.checkpoints import export_encoder, load_checkpoint, load_encoder
from openjepa.config import ConfigError, load_config
from openjepa.errors import CheckpointError, NonFiniteLossError
from openjepa.methods.ijepa import IJEPA
from openjepa.train.logger import read_metrics
from openjepa.train.loop import train


def _weights(path):
    return load_checkpoint(path)["model"]


def test_short_run_writes_everything_and_learns(tmp_path, tiny_overrides):
    cfg = load_config(None, [*tiny_overrides, "train.epochs=4", "train.rankme_every=4"])
    result = train(cfg, tmp_path / "run")
    assert result.step == result.total_steps == 32  # 64 images / batch 8 = 8 steps per epoch, 4 epochs
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "checkpoint-latest.pt", "training_curves.png"):
        assert (run / name).is_file(), name
    records = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(2, 33, 2))
    assert all(k in records[0] for k in ("loss", "lr", "wd", "ema", "samples_per_s", "epoch", "skipped"))
    assert "rankme" in records[1] and 1.0 <= records[1]["rankme"] <= 96
    # lr follows warmup (8 steps) then cosine; the loss goes down over the run.
    assert records[0]["lr"] < records[3]["lr"]
    assert records[-1]["loss"] < records[0]["loss"]
    assert load_config(run / "config.yaml") == cfg


def test_resume_equals_uninterrupted(tmp_path, tiny_overrides):
    full = load_config(None, tiny_overrides)
    train(full, tmp_path / "full")
    first = load_config(None, [*tiny_overrides, "train.max_steps=5"])
    r1 = train(first, tmp_path / "split")
    assert r1.step == 5 and load_checkpoint(tmp_path / "split")["step"] == 5
    r2 = train(full, tmp_path / "split", resume=True)
    assert r2.step == 16
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "split")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    oa, ob = load_checkpoint(tmp_path / "full")["optimizer"], load_checkpoint(tmp_path / "split")["optimizer"]
    for k in oa["state"]:
        for name in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(oa["state"][k][name], ob["state"][k][name])
    la = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "full" / "metrics.jsonl")}
    lb = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "split" / "metrics.jsonl")}
    assert la[16] == lb[16] and la[8] == lb[8]


def test_resume_refuses_changed_experiment(tmp_path, tiny_overrides):
    cfg = load_config(None, [*tiny_overrides, "train.max_steps=2"])
    train(cfg, tmp_path / "r")
    with pytest.raises(ConfigError, match="optim"):
        train(load_config(None, [*tiny_overrides, "optim.lr=0.5"]), tmp_path / "r", resume=True)


def test_run_folder_safety(tmp_path, tiny_overrides):
    cfg = load_config(None, [*tiny_overrides, "train.max_steps=2"])
    with pytest.raises(FileNotFoundError, match="--resume given but .*checkpoint-latest.pt does not exist"):
        train(cfg, tmp_path / "none", resume=True)
    train(cfg, tmp_path / "r")
    with pytest.raises(ConfigError, match="already holds a run.*--resume.*--overwrite"):
        train(cfg, tmp_path / "r")
    assert train(cfg, tmp_path / "r", overwrite=True).step == 2


def test_corrupt_or_missing_checkpoint_is_a_clear_error(tmp_path, tiny_overrides):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    cfg = load_config(None, [*tiny_overrides, "train.max_steps=2"])
    train(cfg, tmp_path / "r")
    latest = tmp_path / "r" / "checkpoint-latest.pt"
    latest.write_bytes(latest.read_bytes()[:1000])  # truncated, as after a crash of a non-atomic writer
    with pytest.raises(CheckpointError, match="corrupt or incomplete"):
        train(cfg, tmp_path / "r", resume=True)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "junk.pt")


def test_nan_loss_stops_with_step_and_last_good_checkpoint(tmp_path, tiny_overrides, monkeypatch):
    original = IJEPA.forward

    def poisoned(self, batch, step):
        loss, metrics = original(self, batch, step)
        if step >= 5:
            loss = loss * float("nan")
            metrics = {"loss": loss.detach()}
        return loss, metrics

    monkeypatch.setattr(IJEPA, "forward", poisoned)
    cfg = load_config(None, tiny_overrides)
    with pytest.raises(NonFiniteLossError, match=r"NaN/inf at step 5.*checkpoint-latest.pt \(step 4\)"):
        train(cfg, tmp_path / "r")
    state = load_checkpoint(tmp_path / "r")
    assert state["step"] == 4  # the NaN state was never written over the good checkpoint
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_export_roundtrip(tmp_path, tiny_overrides):
    cfg = load_config(None, [*tiny_overrides, "train.max_steps=2"])
    train(cfg, tmp_path / "r")
    weights, config = export_encoder(tmp_path / "r", tmp_path / "enc.safetensors")
    meta = json.loads(config.read_text())
    assert meta["arch"] == "vit_pico" and meta["kwargs"]["patch_size"] == 8
    exported = load_encoder(weights)
    teacher = load_encoder(tmp_path / "r")
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(exported(x), teacher(x))
    with pytest.raises(ValueError, match=r"\.safetensors"):
        export_encoder(tmp_path / "r", tmp_path / "enc.bin")


def _image_folder(root, n=40, corrupt=(0,)):
    from openjepa.data.scenes import ScenesDataset

    ds = ScenesDataset("train", n, 32)
    for i in range(n):
        ds[i]["image"].save(root / f"{i:03d}.png")
    for i in corrupt:  # truncated files, as after an interrupted copy
        data = (root / f"{i:03d}.png").read_bytes()
        (root / f"{i:03d}.png").write_bytes(data[: len(data) // 3])


def test_corrupt_images_are_skipped_counted_and_reported(tmp_path, tiny_overrides, capsys):
    from openjepa.errors import DataError

    folder = tmp_path / "images"
    folder.mkdir()
    _image_folder(folder)
    base = [o for o in tiny_overrides if not o.startswith("data.train_size")]
    cfg = load_config(None, [*base, "data.source=folder", f"data.path={folder}", "data.max_skip_fraction=0.2"])
    result = train(cfg, tmp_path / "r")
    assert result.step == 10  # 40 images / batch 8 = 5 steps per epoch, 2 epochs
    records = read_metrics(tmp_path / "r" / "metrics.jsonl")
    assert records[-1]["skipped"] == 2  # the bad file is met once per epoch, and never trained on
    assert any("000.png" in s for s in result.skipped)
    assert "skipped 2 unreadable file(s)" in capsys.readouterr().err
    # Too many bad files: the run stops and names them instead of training on what is left.
    bad = tmp_path / "bad"
    bad.mkdir()
    _image_folder(bad, corrupt=range(0, 40, 2))
    cfg = load_config(None, [*base, "data.source=folder", f"data.path={bad}", "train.epochs=3"])
    with pytest.raises(DataError, match=r"unreadable.*data.max_skip_fraction"):
        train(cfg, tmp_path / "r2")


def test_missing_data_folder_is_a_clear_error(tmp_path, tiny_overrides):
    cfg = load_config(None, [*tiny_overrides, "data.source=folder", f"data.path={tmp_path / 'nope'}"])
    with pytest.raises(FileNotFoundError, match="nope"):
        train(cfg, tmp_path / "r")
