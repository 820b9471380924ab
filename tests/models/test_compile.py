"""Regional compilation (``compile_blocks``) gives the eager model's values and gradients."""

import copy

import torch

from openjepa.models.compile import compile_blocks
from openjepa.models.conditioner import TextConditioner
from openjepa.models.predictor import Predictor


def _predict_and_grads(model: Predictor, z, ctx_idx, tgt_idx, cond):
    pred, state = model(z, ctx_idx, tgt_idx, cond, return_state=True)
    loss = pred.square().mean() + sum(model.conditioner.regularizers(state))
    model.zero_grad()
    loss.backward()
    return pred.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_compiled_tcjepa_predictor_matches_eager():
    torch.manual_seed(0)
    conditioner = TextConditioner(dim=32, text_dim=12, depth=2, heads=4)
    eager = Predictor((4, 4), embed_dim=24, pred_dim=32, depth=2, num_heads=4, conditioner=conditioner)
    compiled = copy.deepcopy(eager)
    # Two transformer blocks and two cross-attention layers.
    assert compile_blocks(compiled) == 4
    z = torch.randn(2, 6, 24)
    ctx_idx = torch.stack([torch.randperm(16)[:6] for _ in range(2)])
    tgt_idx = torch.stack([torch.randperm(16)[:6].view(2, 3) for _ in range(2)])
    cond = {
        "text_emb": torch.randn(2, 3, 5, 12),
        "text_mask": torch.rand(2, 3, 5) > 0.3,
        "caption_mask": torch.tensor([[True, True, False], [True, False, False]]),
    }
    ref_pred, ref_grads = _predict_and_grads(eager, z, ctx_idx, tgt_idx, cond)
    pred, grads = _predict_and_grads(compiled, z, ctx_idx, tgt_idx, cond)
    torch.testing.assert_close(pred, ref_pred, rtol=1e-4, atol=1e-5)
    assert grads.keys() == ref_grads.keys()
    for name, g in grads.items():
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-3, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
