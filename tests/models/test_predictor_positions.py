"""The predictor scores target tokens at their positions (issue 14), checked by values, not shapes.

What these catch: reading the output at a context token (or off by one) instead of at the mask tokens; mask
tokens without their position (every target of a block would get the same prediction); context tokens
placed by their order in the sequence instead of by their indices; the wrong learned mask token.
"""

from __future__ import annotations

import pytest
import torch

from openjepa.models.predictor import Predictor

GRID = (4, 4)
N = 16
POS = ["sincos", "rope"]


def _predictor(pos: str, depth: int = 2, zero_mask_tokens: bool = False, **kwargs) -> Predictor:
    """A predictor with weights of a trained scale: at init (std 0.02) its outputs barely depend on the inputs."""
    torch.manual_seed(0)
    pred = Predictor(GRID, embed_dim=32, pred_dim=24, depth=depth, num_heads=2, pos=pos, **kwargs).eval()
    with torch.no_grad():
        for name, p in pred.named_parameters():
            if name == "mask_tokens":
                p.copy_(torch.zeros_like(p) if zero_mask_tokens else torch.randn_like(p))
            elif p.ndim >= 2:
                p.copy_(torch.randn_like(p) / p.shape[1] ** 0.5)
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
    return pred


def _inputs(b: int = 2, kc: int = 6, t: int = 2, kt: int = 4):
    """Context and target indices disjoint per sample, as the mask samplers make them."""
    g = torch.Generator().manual_seed(5)
    ctx_idx, tgt_idx = [], []
    for _ in range(b):
        perm = torch.randperm(N, generator=g)
        ctx_idx.append(perm[:kc].sort().values)
        tgt_idx.append(torch.stack([perm[kc:][torch.randperm(N - kc, generator=g)[:kt]] for _ in range(t)]))
    return torch.randn(b, kc, 32, generator=g), torch.stack(ctx_idx), torch.stack(tgt_idx)


@pytest.mark.parametrize("pos", POS)
def test_permuting_target_indices_permutes_the_predictions(pos):
    pred = _predictor(pos)
    ctx, ctx_idx, tgt_idx = _inputs()
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        out = pred(ctx, ctx_idx, tgt_idx)
        out_perm = pred(ctx, ctx_idx, tgt_idx[:, :, perm])
    torch.testing.assert_close(out_perm, out[:, :, perm], rtol=1e-5, atol=1e-5)
    # Not trivially so: the permuted output is a different tensor.
    assert (out_perm - out).abs().max() > 1e-3


@pytest.mark.parametrize("pos", POS)
def test_two_target_positions_give_two_different_predictions(pos):
    # Zero-initialized mask tokens (V-JEPA): only the position tells targets apart.
    pred = _predictor(pos, zero_mask_tokens=True)
    ctx, ctx_idx, tgt_idx = _inputs()
    with torch.no_grad():
        out = pred(ctx, ctx_idx, tgt_idx)
        # One target per block, at two different positions, with the same context.
        single = pred(ctx, ctx_idx, tgt_idx[:, 0, :1].reshape(2, 1, 1).expand(2, 2, 1).clone())
        pair = pred(ctx, ctx_idx, tgt_idx[:, 0, :2].reshape(2, 2, 1))
    # Within a block, every target has its own prediction.
    diffs = (out[:, :, :, None] - out[:, :, None, :]).norm(dim=-1)
    off_diag = ~torch.eye(4, dtype=torch.bool)
    assert diffs[..., off_diag].min() > 1e-2
    # Two blocks holding the same position agree; two blocks at different positions do not.
    torch.testing.assert_close(single[:, 0], single[:, 1], rtol=1e-5, atol=1e-5)
    assert (pair[:, 0] - pair[:, 1]).norm(dim=-1).min() > 1e-2


@pytest.mark.parametrize("pos", POS)
def test_context_enters_by_its_positions_not_by_its_order(pos):
    pred = _predictor(pos)
    ctx, ctx_idx, tgt_idx = _inputs()
    perm = torch.tensor([3, 5, 0, 2, 4, 1])
    with torch.no_grad():
        out = pred(ctx, ctx_idx, tgt_idx)
        # The same (token, position) pairs in another order: the same predictions.
        same = pred(ctx[:, perm], ctx_idx[:, perm], tgt_idx)
        # The same token values at other positions: other predictions.
        moved = pred(ctx, ctx_idx[:, perm], tgt_idx)
    torch.testing.assert_close(same, out, rtol=1e-5, atol=1e-5)
    assert (moved - out).abs().max() > 1e-3


@pytest.mark.parametrize("pos", POS)
def test_a_prediction_reads_the_context(pos):
    # The output is at the mask tokens, which see the context through attention: a context change moves it.
    pred = _predictor(pos)
    ctx, ctx_idx, tgt_idx = _inputs()
    with torch.no_grad():
        out = pred(ctx, ctx_idx, tgt_idx)
        other = pred(ctx + torch.randn_like(ctx), ctx_idx, tgt_idx)
    assert (other - out).abs().max() > 1e-3


def test_without_blocks_a_prediction_is_the_mask_token_at_its_target_position():
    # No blocks: nothing mixes tokens, so the output at target k is exactly proj(norm(mask token + pos[k])).
    # This pins down which sequence positions are read out and that mask tokens carry their position.
    pred = _predictor("sincos", depth=0, num_mask_tokens=2)
    ctx, ctx_idx, tgt_idx = _inputs()
    for index in (0, 1):
        with torch.no_grad():
            out = pred(ctx, ctx_idx, tgt_idx, mask_index=index)
            expected = pred.proj(pred.norm(pred.mask_tokens[index, 0] + pred.pos_embed[tgt_idx]))
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pos", POS)
def test_each_mask_generator_uses_its_own_mask_token(pos):
    pred = _predictor(pos, num_mask_tokens=2)
    ctx, ctx_idx, tgt_idx = _inputs()
    with torch.no_grad():
        a = pred(ctx, ctx_idx, tgt_idx, mask_index=0)
        b = pred(ctx, ctx_idx, tgt_idx, mask_index=1)
        pred.mask_tokens[1].copy_(pred.mask_tokens[0])
        b_same = pred(ctx, ctx_idx, tgt_idx, mask_index=1)
    assert (a - b).abs().max() > 1e-3
    torch.testing.assert_close(b_same, a, rtol=0, atol=0)
