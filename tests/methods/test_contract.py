"""The Method contract, checked for every registered method (as timm tests every entry of ``list_models()``).

Each method's shipped demo config (``configs/<method>/demo.yaml``) is shrunk to a tiny model on tiny data
with every source of randomness on (stochastic depth, loader workers, crop + flip, masks, caption sampling),
and then: a finite loss with gradients, optimizer groups covering each trainable parameter exactly once, an
``after_step`` that touches only parameters the optimizer does not own (the teacher), a state dict that
round-trips, resume == uninterrupted (bitwise) and 2-process DDP == 1 process. Registering a method (and
giving it its demo config) is all it takes to be tested.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from openjepa.checkpoints import load_checkpoint, save_encoder
from openjepa.config import dump_yaml, load_config
from openjepa.data.pipeline import PretrainPipeline
from openjepa.methods import build_method, list_methods, method_class
from openjepa.models.build import build_encoder
from openjepa.models.stochastic import sample_keys
from openjepa.train.logger import read_metrics
from openjepa.train.loop import train

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

SHRINK = [
    "model.arch=vit_pico", "model.patch_size=8", "model.pred_dim=48", "model.pred_depth=2", "model.drop_path=0.2",
    "data.image_size=32", "data.train_size=32", "data.batch_size=8", "data.hflip=true",
    "mask.min_keep=2", "optim.warmup_epochs=1", "train.epochs=2", "train.log_every=2", "train.ckpt_every=4",
    "train.rankme_every=0", "train.progress=false", "train.tensorboard=false", "eval.after_pretrain=false",
    "text.encoder=hash:24", "text.dim=24", "text.num_captions=2",
]
# Clips of 4 frames cut from 8-frame sprites videos: a 2x4x4 tubelet grid.
SHRINK_VIDEO = ["data.num_frames=4", "data.frame_step=1", "model.tubelet_size=2", "data.sprites.length=8"]
SHRINK_IMAGE = ["mask.target_scale=[0.1,0.2]"]


def tiny_overrides(method: str, tmp: Path) -> list[str]:
    """The tiny version of ``configs/<method>/demo.yaml`` (as overrides on top of that file)."""
    cfg = load_config(CONFIGS / method / "demo.yaml")
    out = [*SHRINK, f"text.cache={tmp / 'text.sqlite'}"]
    out += SHRINK_VIDEO if cfg.data.num_frames > 1 else SHRINK_IMAGE
    if cfg.teacher.kind == "frozen":  # a frozen teacher of the student's grid, written for the test
        teacher_cfg = load_config(CONFIGS / method / "demo.yaml", out)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(123)
            enc = build_encoder(teacher_cfg, drop_path=0.0)
        weights, _ = save_encoder(enc, tmp / "teacher.safetensors", {"source": "test"})
        out.append(f"teacher.checkpoint={weights}")
    return out


def tiny_config(method: str, tmp: Path, extra: tuple[str, ...] = ()):
    return load_config(CONFIGS / method / "demo.yaml", [*tiny_overrides(method, tmp), *extra])


METHODS = list_methods()


def test_every_method_has_a_demo_config():
    for name in METHODS:
        assert (CONFIGS / name / "demo.yaml").is_file(), f"method {name!r} has no configs/{name}/demo.yaml"


@pytest.fixture(params=METHODS)
def method_name(request):
    return request.param


def _first_batch(cfg):
    pipe = PretrainPipeline(cfg, method_class(cfg.method).data_needs(cfg))
    return next(iter(pipe.loader(0, 1))), pipe


def test_forward_gives_a_finite_loss_and_gradients(method_name, tmp_path):
    cfg = tiny_config(method_name, tmp_path)
    batch, _ = _first_batch(cfg)
    torch.manual_seed(0)
    method = build_method(cfg, total_steps=10).train()
    with sample_keys(0, 0, batch["slots"]):
        loss, metrics = method(batch, 0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert all(not v.requires_grad for v in metrics.values()) and "loss" in metrics
    loss.backward()
    trainable = [p for g in method.param_groups() for p in g["params"]]
    with_grad = sum(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)
    assert with_grad >= 0.9 * len(trainable)


def test_param_groups_cover_each_trainable_parameter_once(method_name, tmp_path):
    cfg = tiny_config(method_name, tmp_path)
    method = build_method(cfg, total_steps=10)
    ids = [id(p) for g in method.param_groups() for p in g["params"]]
    assert len(ids) == len(set(ids)), "a parameter is in two optimizer groups"
    trainable = {id(p) for p in method.parameters() if p.requires_grad}
    assert set(ids) == trainable
    for g in method.param_groups():
        assert "apply_wd" in g
        if not g["apply_wd"]:
            assert g["weight_decay"] == 0.0


def test_after_step_touches_only_what_the_optimizer_does_not_own(method_name, tmp_path):
    cfg = tiny_config(method_name, tmp_path)
    method = build_method(cfg, total_steps=10)
    owned = {id(p) for g in method.param_groups() for p in g["params"]}
    with torch.no_grad():
        for p in method.parameters():
            if id(p) in owned:
                p.add_(0.01)  # a student that moved, so an EMA teacher has something to follow
    before = {n: p.detach().clone() for n, p in method.named_parameters()}
    method.after_step(0)
    for name, p in method.named_parameters():
        if id(p) in owned:
            assert torch.equal(p, before[name]), f"after_step changed the trained parameter {name}"


def test_state_dict_round_trips(method_name, tmp_path):
    cfg = tiny_config(method_name, tmp_path)
    batch, _ = _first_batch(cfg)
    torch.manual_seed(0)
    a = build_method(cfg, total_steps=10).eval()
    torch.manual_seed(1)
    b = build_method(cfg, total_steps=10).eval()
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    with torch.no_grad():
        la, _ = a(batch, 0)
        lb, _ = b(batch, 0)
    assert torch.equal(la, lb)
    assert a.encoder_prefix() and any(k.startswith(a.encoder_prefix()) for k in a.state_dict())


def _assert_same_weights(a, b, exact=True, max_update=0.0):
    """Equal weights; ``exact=False`` allows float noise of the gradient reduction order.

    Under AdamW an element whose true gradient is zero (attention *key* biases, which softmax ignores) moves by
    up to the learning rate per step on pure rounding noise, in a direction that depends on the reduction
    order. So away from exact equality: 99.9% of all elements within 1e-4 relative, and none further than
    the run's total learning rate (``max_update``).
    """
    assert a.keys() == b.keys()
    close, total = 0, 0
    for k in a:
        if exact or not a[k].is_floating_point():
            assert torch.equal(a[k], b[k]), k
            continue
        close += int(torch.isclose(a[k], b[k], rtol=1e-4, atol=1e-5).sum())
        total += a[k].numel()
        assert (a[k] - b[k]).abs().max() <= max_update, k
    assert close >= 0.999 * total, f"{total - close} of {total} weights differ"


def test_resume_equals_uninterrupted(method_name, tmp_path):
    # Loader workers on, so the workers' seeding is part of what must not matter.
    cfg = tiny_config(method_name, tmp_path, ("data.num_workers=1",))
    full = train(cfg, tmp_path / "full")
    first = tiny_config(method_name, tmp_path, ("data.num_workers=1", "train.max_steps=3"))
    assert train(first, tmp_path / "split").step == 3
    assert train(cfg, tmp_path / "split", resume=True).step == full.step
    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "split")
    _assert_same_weights(a["model"], b["model"])
    for k in a["optimizer"]["state"]:
        for name in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(a["optimizer"]["state"][k][name], b["optimizer"]["state"][k][name])
    la = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "full" / "metrics.jsonl")}
    lb = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "split" / "metrics.jsonl")}
    # Logged losses are means since the previous record; after the first record following the resume the
    # windows coincide again.
    assert la[6] == lb[6] and la[8] == lb[8]


def test_two_process_ddp_equals_one_process(method_name, tmp_path):
    base = ("train.max_steps=4", "train.log_every=1")
    single = tiny_config(method_name, tmp_path, (*base, "data.batch_size=8"))
    train(single, tmp_path / "single")
    ddp_cfg = tiny_config(method_name, tmp_path, (*base, "data.batch_size=4", "data.num_workers=1"))
    cfg_file = tmp_path / "ddp.yaml"
    cfg_file.write_text(dump_yaml(ddp_cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "openjepa", "pretrain", str(cfg_file), "--out", str(tmp_path / "ddp"), "--no-eval",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stderr
    a, b = load_checkpoint(tmp_path / "single"), load_checkpoint(tmp_path / "ddp")
    assert a["step"] == b["step"] == 4 and b["world_size"] == 2
    la = [r["loss"] for r in read_metrics(tmp_path / "single" / "metrics.jsonl")]
    lb = [r["loss"] for r in read_metrics(tmp_path / "ddp" / "metrics.jsonl")]
    lrs = [r["lr"] for r in read_metrics(tmp_path / "single" / "metrics.jsonl")]
    _assert_same_weights(a["model"], b["model"], exact=False, max_update=1.5 * sum(lrs))
    assert len(la) == len(lb) == 4
    for x, y in zip(la, lb):
        assert abs(x - y) <= 1e-5 * max(1.0, abs(x))
    # Equal weights must not be the trivial "nothing was trained": they moved away from the init.
    torch.manual_seed(single.train.seed)
    init = build_method(single, a["total_steps"]).state_dict()
    moved = [k for k in init if init[k].is_floating_point() and not torch.allclose(init[k], a["model"][k])]
    assert moved
