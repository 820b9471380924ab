"""What the loop does to the optimizer, checked by values (issue 14).

The schedules as the loop applies them (every group, every step, with the warmup length and end point the
loop derives from epochs), gradient accumulation and clipping through ``TrainStep`` with plain SGD (Adam's
scale invariance hides a gradient off by a constant factor) and through the loop, and the loop's
checkpoint writes surviving a failed write. Runs are tiny: 32 images of 32 px, a handful of steps.
"""

from __future__ import annotations

import errno
import io
import math

import pytest
import torch
from torch import nn

from openjepa.checkpoints import load_checkpoint
from openjepa.config import load_config
from openjepa.methods import build_method
from openjepa.methods.base import Method
from openjepa.runtime import Precision
from openjepa.schedules import cosine_ramp, warmup_cosine
from openjepa.train.logger import read_metrics
from openjepa.train.loop import train
from openjepa.train.step import TrainStep

CPU = torch.device("cpu")


# ---------------------------------------------------------------------------------------------------------
# TrainStep on a method whose gradient is known: y = W x + b under a summed squared error, averaged over samples.


class TinyRegression(Method):
    """A linear regression behind the Method contract (not registered: only these tests use it)."""

    uses_masks = False

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, batch, step):
        loss = ((self.linear(batch["x"]) - batch["y"]) ** 2).sum(-1).mean()
        return loss, {"loss": loss.detach()}

    def encoder_for_eval(self) -> nn.Module:
        return self.linear


def _data(n: int = 8, scale: float = 1.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    return {"x": torch.randn(n, 4, generator=g), "y": scale * torch.randn(n, 3, generator=g)}


def _full_batch_gradient(batch) -> tuple[list[torch.Tensor], float]:
    """The gradient of the mean loss over the whole batch, by autograd on a fresh copy; and the loss."""
    torch.manual_seed(0)
    m = TinyRegression()
    loss, _ = m(batch, 0)
    loss.backward()
    return [p.grad.clone() for p in m.parameters()], float(loss.detach())


def _sgd_step(micro_batches, lr: float = 0.1, clip_grad: float = 0.0):
    """One TrainStep with plain SGD from the same init; returns (updates per parameter, metrics)."""
    torch.manual_seed(0)
    m = TinyRegression()
    opt = torch.optim.SGD(m.param_groups(), lr=lr)
    before = [p.detach().clone() for p in m.parameters()]
    metrics = TrainStep(m, m, opt, Precision(None, False), CPU, clip_grad=clip_grad)(micro_batches, 0)
    return [p.detach() - b for p, b in zip(m.parameters(), before)], metrics


def _norm(tensors) -> float:
    return math.sqrt(sum(float(t.double().pow(2).sum()) for t in tensors))


def test_two_micro_batches_give_the_update_of_one_concatenated_batch():
    batch, lr = _data(8), 0.1
    halves = [{k: v[:4] for k, v in batch.items()}, {k: v[4:] for k, v in batch.items()}]
    grads, loss = _full_batch_gradient(batch)
    one, m1 = _sgd_step([batch], lr)
    two, m2 = _sgd_step(halves, lr)
    for u1, u2, g in zip(one, two, grads):
        torch.testing.assert_close(u1, -lr * g, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(u2, -lr * g, rtol=1e-5, atol=1e-7)
    # The logged loss of an accumulated step is the mean over the whole batch too.
    assert float(m1["loss"]) == pytest.approx(loss, rel=1e-6)
    assert float(m2["loss"]) == pytest.approx(loss, rel=1e-6)


def test_clip_grad_bounds_the_update_and_logs_the_norm_before_clipping():
    batch, lr = _data(8, scale=10.0), 0.1
    grads, _ = _full_batch_gradient(batch)
    raw = _norm(grads)
    assert raw > 1.0
    # Clipping active: the whole gradient (one global norm, not per tensor) is scaled to norm c.
    c = raw / 4
    update, metrics = _sgd_step([batch], lr, clip_grad=c)
    assert _norm(update) == pytest.approx(lr * c, rel=1e-5)
    for u, g in zip(update, grads):
        torch.testing.assert_close(u, -lr * g * (c / raw), rtol=1e-4, atol=1e-7)
    assert float(metrics["grad_norm"]) == pytest.approx(raw, rel=1e-5)
    # Clipping inactive (c above the norm): the plain SGD update, and the same logged norm.
    update, metrics = _sgd_step([batch], lr, clip_grad=10 * raw)
    assert _norm(update) == pytest.approx(lr * raw, rel=1e-5)
    assert float(metrics["grad_norm"]) == pytest.approx(raw, rel=1e-5)
    # Clipping applies to the accumulated gradient, not to each micro-batch's.
    halves = [{k: v[:4] for k, v in batch.items()}, {k: v[4:] for k, v in batch.items()}]
    update, metrics = _sgd_step(halves, lr, clip_grad=c)
    assert _norm(update) == pytest.approx(lr * c, rel=1e-5)
    assert float(metrics["grad_norm"]) == pytest.approx(raw, rel=1e-5)


# ---------------------------------------------------------------------------------------------------------
# The loop. 32 images in batches of 8: 4 steps per epoch.

SMALL_DATA = ["data.train_size=32", "train.progress=false"]


def _cfg(tiny_overrides, *extra: str):
    return load_config(None, [*tiny_overrides, *SMALL_DATA, *extra])


@pytest.fixture(autouse=True)
def no_curves(monkeypatch):
    """Skips the end-of-run plot (matplotlib costs seconds per run and nothing here reads it)."""
    monkeypatch.setattr("openjepa.train.loop.plot_training_curves", lambda *args, **kwargs: None)


@pytest.fixture
def adamw_groups(monkeypatch):
    """Records, at every AdamW step, each parameter group's (lr, weight_decay, apply_wd, grad norm)."""
    seen: list[list[tuple[float, float, bool, float]]] = []
    real = torch.optim.AdamW.step

    def step(self, *args, **kwargs):
        seen.append([
            (g["lr"], g["weight_decay"], g["apply_wd"], _norm([p.grad for p in g["params"] if p.grad is not None]))
            for g in self.param_groups
        ])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    return seen


def test_every_group_gets_the_scheduled_lr_and_weight_decay_at_every_step(tmp_path, tiny_overrides, adamw_groups):
    start, peak, final, wd0, wd1 = 1e-4, 2e-3, 3e-5, 0.05, 0.3
    cfg = _cfg(
        tiny_overrides,
        # warmup round(0.65 * 4) = 3 steps (not int(2.6) = 2, not 0.65); total round(2.5 * 4) = 10 steps,
        # of which the run takes 5 (max_steps stops early but must not move the schedule's end point).
        "optim.warmup_epochs=0.65", "train.epochs=2.5", "train.max_steps=5",
        f"optim.start_lr={start}", f"optim.lr={peak}", f"optim.final_lr={final}",
        f"optim.weight_decay={wd0}", f"optim.final_weight_decay={wd1}",
        "train.log_every=1", "train.ckpt_every=100",
    )
    result = train(cfg, tmp_path / "run")
    assert (result.step, result.total_steps) == (5, 10)
    warmup, total = 3, 10
    lr = [warmup_cosine(s, total, warmup, start, peak, final) for s in range(5)]
    wd = [cosine_ramp(s, total, wd0, wd1) for s in range(5)]
    assert lr[warmup] == pytest.approx(peak) and lr[0] == pytest.approx(start)

    assert len(adamw_groups) == 5
    for s, groups in enumerate(adamw_groups):
        assert {g[2] for g in groups} == {True, False}, "expected a decay and a no-decay group"
        for group_lr, group_wd, apply_wd, _ in groups:
            assert group_lr == pytest.approx(lr[s], rel=1e-12), f"lr of a group at step {s}"
            assert group_wd == (pytest.approx(wd[s], rel=1e-12) if apply_wd else 0.0), f"weight decay at step {s}"
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, 6))
    for r in records:  # record `done` logs the values of step done - 1
        assert r["lr"] == pytest.approx(lr[r["step"] - 1], rel=1e-12)
        assert r["wd"] == pytest.approx(wd[r["step"] - 1], rel=1e-12)


def test_clip_grad_bounds_the_gradient_at_every_optimizer_step_of_a_run(tmp_path, tiny_overrides, adamw_groups):
    c = 1e-4  # far below the tiny model's gradient norm, so every step clips
    cfg = _cfg(tiny_overrides, f"optim.clip_grad={c}", "train.max_steps=2", "train.log_every=1")
    train(cfg, tmp_path / "run")
    logged = [r["grad_norm"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")]
    at_step = [math.sqrt(sum(g[3] ** 2 for g in groups)) for groups in adamw_groups]
    assert len(logged) == len(at_step) == 2
    for before, after in zip(logged, at_step):
        assert before > 10 * c  # the logged norm is the one before clipping
        assert after == pytest.approx(c, rel=1e-3)  # what the optimizer sees is clipped to c


def _sgd_optimizer(groups, cfg, device):
    return torch.optim.SGD(groups, lr=cfg.start_lr)


def _update(cfg, run) -> torch.Tensor:
    """All floating weights of a finished run minus the init (the loop seeds with train.seed before building)."""
    torch.manual_seed(cfg.train.seed)
    init = build_method(cfg, load_checkpoint(run)["total_steps"]).state_dict()
    final = load_checkpoint(run)["model"]
    return torch.cat([(final[k] - init[k]).flatten() for k in init if init[k].is_floating_point()])


def test_accumulation_in_the_loop_equals_one_batch_with_plain_sgd(tmp_path, tiny_overrides, monkeypatch):
    # Plain SGD in the loop (Adam would hide a gradient scaled by the number of micro-batches), no weight
    # decay (so the update is the gradient), every per-sample random draw on (drop path, crop + flip, masks).
    monkeypatch.setattr("openjepa.train.loop.build_optimizer", _sgd_optimizer)
    common = (
        "train.max_steps=2", "optim.start_lr=0.05", "optim.lr=0.05", "optim.weight_decay=0",
        "optim.final_weight_decay=0", "model.drop_path=0.2", "data.hflip=true",
    )
    one = _cfg(tiny_overrides, *common, "data.batch_size=8", "optim.accum_steps=1")
    two = _cfg(tiny_overrides, *common, "data.batch_size=4", "optim.accum_steps=2")
    train(one, tmp_path / "one")
    train(two, tmp_path / "two")
    u1, u2 = _update(one, tmp_path / "one"), _update(two, tmp_path / "two")
    assert u1.norm() > 0
    assert (u1 - u2).norm() <= 1e-4 * u1.norm()


def test_a_failed_checkpoint_write_in_a_run_keeps_the_previous_checkpoint(tmp_path, tiny_overrides, monkeypatch):
    real_save = torch.save
    calls = []

    def save(obj, f, *args, **kwargs):
        if not (isinstance(obj, dict) and "format" in obj):  # not a checkpoint: leave it alone
            return real_save(obj, f, *args, **kwargs)
        calls.append(f)
        if len(calls) < 2:
            return real_save(obj, f, *args, **kwargs)
        buf = io.BytesIO()  # the second checkpoint: half of it reaches the disk, then the disk is full
        real_save(obj, buf)
        half = buf.getvalue()[: len(buf.getvalue()) // 2]
        if isinstance(f, (str, bytes)) or hasattr(f, "__fspath__"):
            with open(f, "wb") as out:
                out.write(half)
        else:
            f.write(half)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", save)
    cfg = _cfg(tiny_overrides, "train.max_steps=2", "train.ckpt_every=1", "train.log_every=1")
    with pytest.raises(OSError, match="No space"):
        train(cfg, tmp_path / "run")
    monkeypatch.undo()
    assert len(calls) == 2
    assert load_checkpoint(tmp_path / "run")["step"] == 1
    leftovers = [p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(".") or "tmp" in p.name]
    assert not leftovers
