"""Predictor: output shapes, one sequence per target block, the conditioning hook."""

import torch
from torch import nn

from openjepa.models.predictor import Predictor


def _inputs(b=2, kc=6, t=3, kt=4, d=32, n=16):
    g = torch.Generator().manual_seed(0)
    ctx = torch.randn(b, kc, d, generator=g)
    ctx_idx = torch.stack([torch.randperm(n, generator=g)[:kc] for _ in range(b)])
    tgt_idx = torch.stack([torch.stack([torch.randperm(n, generator=g)[:kt] for _ in range(t)]) for _ in range(b)])
    return ctx, ctx_idx, tgt_idx


def test_shapes():
    pred = Predictor((4, 4), embed_dim=32, pred_dim=24, depth=2, num_heads=2)
    ctx, ci, ti = _inputs()
    assert pred(ctx, ci, ti).shape == (2, 3, 4, 32)


def test_blocks_are_independent_sequences():
    torch.manual_seed(0)
    pred = Predictor((4, 4), embed_dim=32, pred_dim=24, depth=2, num_heads=2).eval()
    ctx, ci, ti = _inputs()
    full = pred(ctx, ci, ti)
    # Predicting block k alone gives the same result: blocks never attend to each other.
    for k in range(3):
        alone = pred(ctx, ci, ti[:, k : k + 1])
        torch.testing.assert_close(alone[:, 0], full[:, k], rtol=1e-5, atol=1e-5)


class RecordingConditioner(nn.Module):
    """Adds a learned per-sample offset and records what the predictor hands over."""

    def __init__(self, dim):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.calls = []

    def prepare(self, cond, repeats):
        return cond.repeat_interleave(repeats, dim=0)

    def prefix(self, state):
        return None

    def forward(self, layer, tokens, state):
        self.calls.append((layer, tokens.shape))
        return tokens + self.scale * state[:, None, :]


def test_conditioner_hook_called_every_layer_with_repeated_state():
    cond_mod = RecordingConditioner(24)
    pred = Predictor((4, 4), embed_dim=32, pred_dim=24, depth=3, num_heads=2, conditioner=cond_mod)
    ctx, ci, ti = _inputs()
    cond = torch.randn(2, 24)
    out = pred(ctx, ci, ti, cond=cond)
    assert [c[0] for c in cond_mod.calls] == [0, 1, 2]
    assert cond_mod.calls[0][1] == (2 * 3, 6 + 4, 24)  # B*T sequences of context + target tokens
    out.sum().backward()
    assert cond_mod.scale.grad is not None and cond_mod.scale.grad != 0
