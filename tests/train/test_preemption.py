"""Stopping and resuming (issue 13): signals checkpoint the step reached, --resume remembers the config."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from openjepa.checkpoints import load_checkpoint
from openjepa.cli import main
from openjepa.config import dump_yaml, load_config
from openjepa.errors import ConfigError
from openjepa.train.logger import read_metrics
from openjepa.train.loop import train
from openjepa.train.signals import EXIT_INTERRUPTED


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _wait_for_step(metrics: Path, step: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"training ended early: {proc.stderr.read()[-2000:]}")
        if metrics.is_file() and any(r["step"] >= step for r in read_metrics(metrics)):
            return
        time.sleep(0.05)
    raise AssertionError(f"step {step} not reached in {timeout} s")


def _pretrain(args: list[str], **kw) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "openjepa", "pretrain", *args, "--no-eval"]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300, **kw)


def _interrupt(tmp_path: Path, overrides: list[str], sig: signal.Signals) -> tuple[Path, int, str]:
    """Starts a run in a subprocess, sends ``sig`` once step 3 is logged; returns (run, stopped step, stderr)."""
    cfg = load_config(None, overrides)
    (tmp_path / "cfg.yaml").write_text(dump_yaml(cfg))
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "openjepa", "pretrain", str(tmp_path / "cfg.yaml"), "--out", str(run), "--no-eval"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_step(run / "metrics.jsonl", 3, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_INTERRUPTED, err[-2000:]
    assert "Traceback" not in err
    stopped = load_checkpoint(run)["step"]
    assert f"after step {stopped}" in err and "--resume" in err
    return run, stopped, err


def test_sigterm_checkpoints_the_step_reached_and_resume_equals_uninterrupted(tmp_path, tiny_overrides):
    overrides = [*tiny_overrides, "train.epochs=6", "train.log_every=1", "train.ckpt_every=1000"]
    run, stopped, _ = _interrupt(tmp_path, overrides, signal.SIGTERM)
    assert 3 <= stopped < 48  # the step it was in was finished and written (ckpt_every is far away)
    resumed = _pretrain(["--resume", "--out", str(run)])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # The reference runs in a subprocess too: same thread count, so the float results can be bitwise equal.
    full = _pretrain([str(tmp_path / "cfg.yaml"), "--out", str(tmp_path / "full")])
    assert full.returncode == 0, full.stderr[-2000:]
    a, b = load_checkpoint(run), load_checkpoint(tmp_path / "full")
    assert a["step"] == b["step"] == 48
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGUSR1])
def test_ctrl_c_and_slurm_warning_stop_cleanly(tmp_path, tiny_overrides, sig):
    overrides = [*tiny_overrides, "train.epochs=40", "train.log_every=1", "train.ckpt_every=1000"]
    _, stopped, err = _interrupt(tmp_path, overrides, sig)
    assert 3 <= stopped < 320 and "stopped by " + sig.name in err


def _tiny_run(tmp_path, tiny_overrides, *extra):
    cfg = load_config(None, [*tiny_overrides, "train.max_steps=4", *extra])
    (tmp_path / "cfg.yaml").write_text(dump_yaml(cfg))
    train(cfg, tmp_path / "r")
    return cfg


def test_resume_uses_the_stored_config_without_repeating_overrides(tmp_path, tiny_overrides, capsys):
    _tiny_run(tmp_path, tiny_overrides, "optim.lr=0.002")
    # No CONFIG, no overrides: the checkpoint's config (lr 0.002, max_steps 4) is used; extend the run.
    assert main(["pretrain", "--resume", "--out", str(tmp_path / "r"), "--no-eval", "train.max_steps=8"]) == 0
    state = load_checkpoint(tmp_path / "r")
    assert state["step"] == 8 and state["config"]["optim"]["lr"] == 0.002


def test_resume_refuses_experiment_changes_and_names_them(tmp_path, tiny_overrides, capsys):
    _tiny_run(tmp_path, tiny_overrides)
    code = main(["pretrain", "--resume", "--out", str(tmp_path / "r"), "optim.lr=0.5", "model.drop_path=0.1"])
    err = capsys.readouterr().err
    assert code == 2 and "model.drop_path" in err and "optim.lr" in err and "Traceback" not in err
    with pytest.raises(ConfigError, match="optim.lr"):
        train(load_config(None, [*tiny_overrides, "optim.lr=0.5"]), tmp_path / "r", resume=True)


def test_extending_epochs_is_allowed(tmp_path, tiny_overrides):
    cfg = _tiny_run(tmp_path, tiny_overrides)
    longer = load_config(None, [*tiny_overrides, "train.epochs=3", "train.max_steps=0"])
    result = train(longer, tmp_path / "r", resume=True)
    assert result.step == result.total_steps == 24 and cfg.train.epochs == 2


def test_a_finished_run_says_so(tmp_path, tiny_overrides, capsys):
    cfg = load_config(None, tiny_overrides)
    train(cfg, tmp_path / "r")
    capsys.readouterr()
    result = train(cfg, tmp_path / "r", resume=True)
    err = capsys.readouterr().err
    assert "is finished (step 16 of 16)" in err and "loss nan" not in err
    assert result.step == 16


def test_default_run_folders_differ_per_method():
    from openjepa.cli import default_run_folder

    assert default_run_folder("configs/ijepa/demo.yaml") != default_run_folder("configs/tcjepa/demo.yaml")
    assert default_run_folder("configs/ijepa/demo.yaml") == Path("runs/ijepa-demo")


def test_missing_cuda_is_one_line_with_the_fix(tmp_path, tiny_overrides, capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(dump_yaml(load_config(None, tiny_overrides)))
    code = main(["pretrain", str(cfg_file), "--out", str(tmp_path / "r"), "train.device=cuda"])
    err = capsys.readouterr().err
    assert code == 2 and "train.device=cuda" in err and "train.device=cpu" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
