"""Checkpoint files that fail clearly (issue 11.4): one line naming the file, what is wrong and what to do,
no traceback, never advice to turn off ``weights_only``; and a checkpoint that survives a SIGKILL mid-write."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from openjepa.checkpoints import load_checkpoint, load_encoder
from openjepa.cli import main
from openjepa.config import dump_yaml, load_config
from openjepa.errors import CheckpointError
from openjepa.train.loop import train


def _bad_files(tmp_path: Path, good: Path) -> dict[str, Path]:
    data = good.read_bytes()
    files = {
        "truncated": data[: len(data) // 2],
        "empty": b"",
        "garbage": random.Random(0).randbytes(4096),
    }
    out = {}
    for name, content in files.items():
        out[name] = tmp_path / f"{name}.pt"
        out[name].write_bytes(content)
    out["wrong format"] = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3), "epoch": 7}, out["wrong format"])  # someone else's checkpoint
    return out


def test_bad_checkpoint_files_give_one_clear_line(tmp_path, tiny_overrides, capsys):
    cfg = load_config(None, [*tiny_overrides, "train.max_steps=2"])
    good = train(cfg, tmp_path / "run").checkpoint
    capsys.readouterr()
    for name, path in _bad_files(tmp_path, good).items():
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(path)
        message = str(err.value)
        assert str(path) in message, name
        assert ("corrupt" in message or "empty" in message or "not an openjepa" in message), (name, message)
        assert "arbitrary code" not in message, (name, message)
        assert "weights_only=False" not in message and "weights_only" not in message.replace("weights_only=True", "")
        for command in (["export", str(path), "--out", str(tmp_path / "x.safetensors")], ["eval", str(path)]):
            code = main(command)
            out = capsys.readouterr().err.strip()
            assert code == 2, (name, command, out)
            assert len(out.splitlines()) == 1 and "Traceback" not in out and str(path) in out, (name, out)
    # A loadable file of another program says what to use instead.
    with pytest.raises(CheckpointError, match="load_encoder|convert"):
        load_checkpoint(tmp_path / "other.pt")


def test_random_bytes_always_give_a_checkpoint_error(tmp_path, recwarn):
    """Garbage read as an old-style pickle can fail anywhere in torch's unpickler (an ``IndexError`` on a
    garbled opcode stream made CI fail once, with ``os.urandom`` bytes); every such file must still give the
    one-line CheckpointError, and no warning about a "pickle protocol"."""
    path = tmp_path / "garbage.pt"
    for seed in range(400):
        path.write_bytes(random.Random(seed).randbytes(256))
        with pytest.raises(CheckpointError, match="corrupt"):
            load_checkpoint(path)
    assert not [w for w in recwarn if "pickle protocol" in str(w.message)]


def test_unsafe_pickles_are_refused_without_suggesting_to_unpickle(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save({"format": "openjepa-checkpoint-v2", "object": Path("x")}, path)  # a non-tensor Python object
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert "arbitrary code" in str(err.value) and "weights_only=False" not in str(err.value)


_WRITER = """
import sys, time, torch
from openjepa.checkpoints import atomic_save
path, n = sys.argv[1], 0
payload = {"format": "openjepa-checkpoint-v2", "step": 0, "blob": torch.randn(4_000_000)}
while True:
    n += 1
    payload["step"] = n
    atomic_save(payload, path)
    print(n, flush=True)
"""


def test_sigkill_mid_write_leaves_the_previous_checkpoint_loadable(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    target = tmp_path / "checkpoint-latest.pt"
    killed_mid_write = 0
    for attempt in range(12):
        proc = subprocess.Popen([sys.executable, str(script), str(target)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip()  # at least one complete checkpoint exists
        time.sleep(0.05 + 0.037 * attempt)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        leftovers = list(tmp_path.glob(".checkpoint-latest.pt.tmp-*"))
        killed_mid_write += bool(leftovers)
        state = torch.load(target, weights_only=True)  # the final name always holds a complete file
        assert state["step"] >= 1 and state["blob"].numel() == 4_000_000
        for p in leftovers:
            p.unlink()
        if killed_mid_write >= 2:
            break
    assert killed_mid_write >= 1, "no kill landed during a write; the test did not test anything"


def test_sigkill_during_training_then_resume_continues(tmp_path, tiny_overrides):
    cfg = load_config(None, [*tiny_overrides, "train.epochs=40", "train.ckpt_every=1", "train.log_every=1"])
    (tmp_path / "cfg.yaml").write_text(dump_yaml(cfg))
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "openjepa", "pretrain", str(tmp_path / "cfg.yaml"), "--out", str(run), "--no-eval"]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run / "checkpoint-latest.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    step = load_checkpoint(run)["step"]
    assert step >= 1
    result = subprocess.run(
        [sys.executable, "-m", "openjepa", "pretrain", "--resume", "--out", str(run), "--no-eval",
         f"train.max_steps={step + 2}"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"steps {step}->{step + 2}" in result.stderr
    assert load_checkpoint(run)["step"] == step + 2
    load_encoder(run)  # and the encoder inside it is readable


def test_exports_are_readable_by_others(tmp_path):
    """safetensors writes through a private temporary file; an export follows the umask like any file."""
    from openjepa.checkpoints import save_encoder
    from openjepa.models.vit import VisionTransformer

    old = os.umask(0o022)
    try:
        encoder = VisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2)
        weights, description = save_encoder(encoder, tmp_path / "e.safetensors", {})
    finally:
        os.umask(old)
    assert weights.stat().st_mode & 0o777 == 0o644
    assert description.stat().st_mode & 0o777 == 0o644
