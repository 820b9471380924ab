"""Teacher targets are layer-normed (issue 14): checked with a teacher whose final LayerNorm has a real affine.

At init the encoder's final LayerNorm has weight 1 and bias 0, so its output is already (almost) normalized
per token and a method that forgets to layer-norm its targets passes any test run at init. Here the
teacher's final norm gets a random weight and bias first, so raw tokens are far from zero mean / unit variance.
"""

from __future__ import annotations

import torch

from openjepa.config import load_config
from openjepa.methods.ijepa import IJEPA, feature_loss

SMALL = [
    "model.arch=vit_pico", "data.image_size=32", "model.patch_size=8", "model.pred_dim=48", "model.pred_depth=1",
]


def _method(*extra: str) -> IJEPA:
    torch.manual_seed(0)
    m = IJEPA(load_config(None, [*SMALL, *extra]), total_steps=10).eval()
    norm = m.teacher.model.norm
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        norm.weight.copy_(0.5 + 2.0 * torch.rand(norm.weight.shape, generator=g))
        norm.bias.copy_(torch.randn(norm.bias.shape, generator=g))
    return m


def _batch(b: int = 2) -> dict:
    g = torch.Generator().manual_seed(1)
    ctx = torch.stack([torch.randperm(16, generator=g)[:8].sort().values for _ in range(b)])
    tgt = torch.stack([torch.randperm(16, generator=g)[:6].reshape(2, 3) for _ in range(b)])
    return {"image": torch.randn(b, 3, 32, 32, generator=g), "masks": [{"ctx_idx": ctx, "tgt_idx": tgt}]}


def _rows(h: torch.Tensor, tgt_idx: torch.Tensor) -> torch.Tensor:
    """``h[b, tgt_idx[b, t, k]]`` by explicit loops (independent of ``gather_targets``)."""
    b, t, k = tgt_idx.shape
    return torch.stack([
        torch.stack([torch.stack([h[i, int(tgt_idx[i, j, n])] for n in range(k)]) for j in range(t)])
        for i in range(b)
    ])


def test_targets_have_zero_mean_unit_variance_per_token_after_an_affine_final_norm():
    m = _method()
    batch = _batch()
    x, tgt_idx = batch["image"], batch["masks"][0]["tgt_idx"]
    raw = m.teacher(x)
    # The affine makes the raw tokens far from normalized, so the check below means something.
    assert raw.mean(-1).abs().max() > 0.1 and (raw.var(-1, unbiased=False) - 1).abs().max() > 0.3

    targets = m.targets(x, tgt_idx)
    assert targets.shape == (2, 2, 3, m.encoder.embed_dim)
    torch.testing.assert_close(targets.mean(-1), torch.zeros(targets.shape[:-1]), rtol=0, atol=1e-5)
    torch.testing.assert_close(targets.var(-1, unbiased=False), torch.ones(targets.shape[:-1]), rtol=0, atol=1e-3)
    # And they are the teacher's tokens at the target positions, normalized (no affine).
    mu, var = raw.mean(-1, keepdim=True), raw.var(-1, unbiased=False, keepdim=True)
    expected = _rows((raw - mu) / torch.sqrt(var + 1e-5), tgt_idx)
    torch.testing.assert_close(targets, expected, rtol=1e-4, atol=1e-4)


def test_the_training_loss_uses_the_layer_normed_targets():
    # forward() computes its targets itself: check the loss it returns against normalized targets.
    m = _method()
    batch = _batch()
    x, masks = batch["image"], batch["masks"][0]
    with torch.no_grad():
        loss, _ = m(batch, 0)
        raw = m.teacher(x)
        normed = (raw - raw.mean(-1, keepdim=True)) / torch.sqrt(raw.var(-1, unbiased=False, keepdim=True) + 1e-5)
        pred = m.predict(x, masks)
        expected = feature_loss(pred, _rows(normed, masks["tgt_idx"]), m.loss_kind)
        unnormed = feature_loss(pred, _rows(raw, masks["tgt_idx"]), m.loss_kind)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    assert abs(float(unnormed) - float(expected)) > 1e-2  # the two choices are told apart


def test_layer_norm_targets_false_gives_the_raw_teacher_tokens():
    m = _method("teacher.layer_norm_targets=false")
    batch = _batch()
    x, tgt_idx = batch["image"], batch["masks"][0]["tgt_idx"]
    targets = m.targets(x, tgt_idx)
    torch.testing.assert_close(targets, _rows(m.teacher(x), tgt_idx), rtol=0, atol=0)
    assert targets.mean(-1).abs().max() > 0.1
