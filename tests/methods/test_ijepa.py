"""I-JEPA method: EMA math, targets, losses, parameter groups, gradient flow."""

import copy

import pytest
import torch
import torch.nn.functional as F

from openjepa.config import load_config
from openjepa.methods import build_method
from openjepa.methods.base import split_decay
from openjepa.methods.ijepa import IJEPA, feature_loss
from openjepa.methods.teachers import EMATeacher

SMALL = ["model.arch=vit_pico", "data.image_size=32", "model.patch_size=8", "model.pred_dim=48", "model.pred_depth=2"]


def _batch(b=3):
    g = torch.Generator().manual_seed(1)
    return {
        "image": torch.randn(b, 3, 32, 32, generator=g),
        "masks": [
            {
                "ctx_idx": torch.stack([torch.randperm(16, generator=g)[:9].sort().values for _ in range(b)]),
                "tgt_idx": torch.stack([torch.randperm(16, generator=g)[:8].reshape(2, 4) for _ in range(b)]),
            }
        ],
    }


def test_ema_update_math():
    torch.manual_seed(0)
    student = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    teacher = EMATeacher(student)
    before = [p.clone() for p in teacher.model.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    teacher.update(student, 0.9)
    for t0, t1, s in zip(before, teacher.model.parameters(), student.parameters()):
        torch.testing.assert_close(t1, 0.9 * t0 + 0.1 * s)
        assert not t1.requires_grad
    teacher.update(student, 1.0)  # momentum 1: frozen
    t0, s0 = next(iter(teacher.model.parameters())), next(iter(student.parameters()))
    torch.testing.assert_close(t0, 0.9 * before[0] + 0.1 * s0)
    teacher.train()
    assert not teacher.model.training  # targets never use dropout / drop-path


def test_targets_are_layer_normed_teacher_features_at_target_positions():
    cfg = load_config(None, SMALL)
    m = IJEPA(cfg, 10)
    batch = _batch()
    t = m.targets(batch["image"], batch["masks"][0]["tgt_idx"])
    h = m.teacher(batch["image"])
    h = (h - h.mean(-1, keepdim=True)) / torch.sqrt(h.var(-1, unbiased=False, keepdim=True) + 1e-5)
    b, k = 1, 1
    torch.testing.assert_close(t[b, k], h[b, batch["masks"][0]["tgt_idx"][b, k]], rtol=1e-4, atol=1e-4)
    assert t.shape == (3, 2, 4, m.encoder.embed_dim)


def test_losses():
    p, t = torch.tensor([0.0, 2.0, 0.5]), torch.tensor([0.0, 0.0, 0.0])
    assert feature_loss(p, t, "l1") == pytest.approx((0 + 2 + 0.5) / 3)
    assert feature_loss(p, t, "l2") == pytest.approx((0 + 4 + 0.25) / 3)
    assert feature_loss(p, t, "smooth_l1") == pytest.approx((0 + 1.5 + 0.125) / 3)


def test_gradients_reach_encoder_and_predictor_not_teacher():
    cfg = load_config(None, SMALL)
    m = build_method(cfg, 10)
    loss, metrics = m(_batch(), 0)
    loss.backward()
    assert metrics["loss"].requires_grad is False
    assert m.encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert m.predictor.mask_tokens.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.teacher.parameters())


def test_param_groups_no_decay_on_biases_and_norms():
    cfg = load_config(None, SMALL)
    m = IJEPA(cfg, 10)
    decay, no_decay = m.param_groups()
    assert decay["apply_wd"] and not no_decay["apply_wd"] and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"])
    assert all(p.ndim <= 1 or p is m.predictor.mask_tokens for p in no_decay["params"])
    ids = {id(p) for p in m.teacher.parameters()}
    assert not ids & {id(p) for g in (decay, no_decay) for p in g["params"]}
    n_train = sum(p.numel() for p in m.encoder.parameters()) + sum(p.numel() for p in m.predictor.parameters())
    assert sum(p.numel() for g in (decay, no_decay) for p in g["params"]) == n_train
    named = [("a.weight", torch.nn.Parameter(torch.ones(2, 2))), ("a.bias", torch.nn.Parameter(torch.ones(2)))]
    groups = split_decay(named)
    assert len(groups[0]["params"]) == 1 and len(groups[1]["params"]) == 1


def test_momentum_schedule_and_after_step():
    cfg = load_config(None, [*SMALL, "teacher.momentum=[0.5,1.0]"])
    m = IJEPA(cfg, 10)
    assert m.momentum(0) == pytest.approx(0.5) and m.momentum(5) == pytest.approx(0.75)
    teacher_before = copy.deepcopy(m.teacher.model)
    with torch.no_grad():
        for p in m.encoder.parameters():
            p.add_(1.0)
    m.after_step(0)
    for tb, ta, s in zip(teacher_before.parameters(), m.teacher.model.parameters(), m.encoder.parameters()):
        torch.testing.assert_close(ta, 0.5 * tb + 0.5 * s)
    assert F.mse_loss(m.encoder_for_eval()(torch.zeros(1, 3, 32, 32)), m.teacher(torch.zeros(1, 3, 32, 32))) == 0
