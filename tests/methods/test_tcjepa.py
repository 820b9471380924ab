"""TC-JEPA method: total loss, gradients into the conditioner, diagnostics, ablation modes."""

import pytest
import torch

from openjepa.config import load_config
from openjepa.methods.ijepa import feature_loss
from openjepa.methods.tcjepa import TCJEPA

SMALL = [
    "method=tcjepa", "model.arch=vit_pico", "data.image_size=32", "model.patch_size=8", "model.pred_dim=48",
    "model.pred_depth=3", "text.dim=12",
]


def _batch(b=2, n=3, s=5):
    g = torch.Generator().manual_seed(3)
    cm = torch.ones(b, n, dtype=torch.bool)
    cm[1, 2] = False
    wm = torch.ones(b, n, s, dtype=torch.bool)
    wm[:, :, -1] = False
    return {
        "image": torch.randn(b, 3, 32, 32, generator=g),
        "masks": [
            {
                "ctx_idx": torch.stack([torch.randperm(16, generator=g)[:9].sort().values for _ in range(b)]),
                "tgt_idx": torch.stack([torch.randperm(16, generator=g)[:8].reshape(2, 4) for _ in range(b)]),
            }
        ],
        "text_emb": torch.randn(b, n, s, 12, generator=g),
        "text_mask": wm,
        "caption_mask": cm,
    }


def test_total_loss_and_diagnostics():
    torch.manual_seed(0)
    m = TCJEPA(load_config(None, SMALL), 10)
    batch = _batch()
    loss, metrics = m(batch, 0)
    expected = metrics["loss_pred"] + 0.1 * metrics["loss_sparse"] + 0.5 * metrics["loss_consistency"]
    torch.testing.assert_close(loss.detach(), expected)
    target = m.targets(batch["image"], batch["masks"][0]["tgt_idx"])
    z = m.encoder(batch["image"], keep=batch["masks"][0]["ctx_idx"])
    cond = {k: batch[k] for k in ("text_emb", "text_mask", "caption_mask")}
    pred = m.predictor(z, batch["masks"][0]["ctx_idx"], batch["masks"][0]["tgt_idx"], cond)
    torch.testing.assert_close(metrics["loss_pred"], feature_loss(pred, target, "smooth_l1").detach())
    for layer in range(3):
        assert 0 <= metrics[f"pos_frac/l{layer}"] <= 1
        assert 0 <= metrics[f"attn_entropy/l{layer}"] <= torch.log(torch.tensor(5.0)) + 1e-4
    loss.backward()
    blk = m.predictor.conditioner.blocks[0]
    assert blk.k.weight.grad.abs().sum() > 0 and blk.q.weight.grad.abs().sum() > 0
    assert m.encoder.blocks[0].mlp.fc1.weight.grad.abs().sum() > 0


def test_regularizer_weights_and_missing_text():
    torch.manual_seed(0)
    m = TCJEPA(load_config(None, [*SMALL, "tcjepa.sparse_weight=0", "tcjepa.consistency_weight=0"]), 10)
    loss, metrics = m(_batch(), 0)
    torch.testing.assert_close(loss.detach(), metrics["loss_pred"])
    batch = _batch()
    del batch["text_emb"]
    with pytest.raises(KeyError, match="text_emb"):
        m(batch, 0)


@pytest.mark.parametrize("mode", ["adaln", "append"])
def test_ablation_modes_train(mode):
    torch.manual_seed(0)
    m = TCJEPA(load_config(None, [*SMALL, f"tcjepa.mode={mode}"]), 10)
    loss, metrics = m(_batch(), 0)
    assert torch.isfinite(loss) and metrics["loss_sparse"] == 0
    loss.backward()
    assert m.encoder.blocks[0].mlp.fc1.weight.grad.abs().sum() > 0


def test_append_mode_ignores_padded_words():
    torch.manual_seed(0)
    m = TCJEPA(load_config(None, [*SMALL, "tcjepa.mode=append"]), 10).eval()
    batch = _batch()
    loss_a, _ = m(batch, 0)
    batch["text_emb"][~batch["text_mask"]] = 1e4  # garbage in padded positions
    batch["text_emb"][1, 2] = -1e4  # and in the padded caption
    loss_b, _ = m(batch, 0)
    torch.testing.assert_close(loss_a, loss_b)
