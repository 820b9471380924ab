"""TC-JEPA method: the paper's loss (Eq. 1) and regularizer averaging (Eq. 4), captions conditioning their own
image, padding, gradients into the conditioner, diagnostics, ablation modes."""

import warnings
from pathlib import Path

import pytest
import torch

from openjepa.config import Config, load_config
from openjepa.methods.ijepa import feature_loss
from openjepa.methods.tcjepa import TCJEPA

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SMALL = [
    "method=tcjepa", "model.arch=vit_pico", "data.image_size=32", "model.patch_size=8", "model.pred_dim=48",
    "model.pred_depth=3", "text.dim=12", "train.loss=l2norm",
]
TEXT_KEYS = ("text_emb", "text_mask", "caption_mask")


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
    torch.testing.assert_close(metrics["loss_pred"], feature_loss(pred, target, "l2norm").detach())
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


@pytest.mark.parametrize(
    "overrides",
    [["tcjepa.center_keys=false"], ["tcjepa.center_keys=true"], ["tcjepa.mlp=per_caption", "tcjepa.center_keys=false"],
     ["tcjepa.mode=append"], ["tcjepa.mode=adaln"]],
)
def test_padded_captions_and_words_never_influence_anything(overrides):
    torch.manual_seed(0)
    m = TCJEPA(load_config(None, [*SMALL, *overrides]), 10).eval()
    _perturb(m.predictor.conditioner)  # off the near-zero init (adaln: zero), so any leak would show clearly
    batch = _batch()
    loss_a, metrics_a = m(batch, 0)
    pred_a = _predict(m, batch)
    g = torch.Generator().manual_seed(9)
    # Random garbage (a constant one would vanish in the words' LayerNorm) in padded words ...
    padded = ~batch["text_mask"]
    batch["text_emb"][padded] = 1e3 * torch.randn(int(padded.sum()), 12, generator=g)
    batch["text_emb"][1, 2] = 1e3 * torch.randn(5, 12, generator=g)  # ... and in the padded caption,
    batch["text_mask"][1, 2] = True  # whose words even claim to be real
    loss_b, metrics_b = m(batch, 0)
    torch.testing.assert_close(_predict(m, batch), pred_a)
    torch.testing.assert_close(loss_b, loss_a)
    for key in ("loss_pred", "loss_sparse", "loss_consistency"):
        torch.testing.assert_close(metrics_b[key], metrics_a[key])


def _perturb(module: torch.nn.Module, scale: float = 0.1, seed: int = 5) -> None:
    """Moves parameters off their near-zero init, so the captions' effect on the predictions is large."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def _predict(m: TCJEPA, batch: dict, cond: dict | None = None, rows: slice = slice(None)) -> torch.Tensor:
    """The predictor's output ``[B, T, Kt, D]`` for the images ``rows`` of the batch (first mask pair)."""
    masks = batch["masks"][0]
    cond = {k: v[rows] for k, v in (cond or {k: batch[k] for k in TEXT_KEYS}).items()}
    ctx, tgt = masks["ctx_idx"][rows], masks["tgt_idx"][rows]
    with torch.no_grad():
        return m.predictor(m.encoder(batch["image"][rows], keep=ctx), ctx, tgt, cond)


def test_demo_uses_the_papers_loss_and_ijepa_keeps_smooth_l1():
    from openjepa.methods import method_class

    assert load_config(CONFIGS / "tcjepa" / "demo.yaml").train.loss == "l2norm"
    ijepa = load_config(CONFIGS / "ijepa" / "demo.yaml")
    assert ijepa.train.loss == Config().train.loss == "auto"  # each method's own paper's loss
    assert method_class("ijepa").prediction_loss(ijepa) == "smooth_l1"
    assert method_class("tcjepa").prediction_loss(Config()) == "l2norm"
    assert method_class("vjepa").prediction_loss(Config()) == "l1"


def test_l2norm_loss_is_the_papers_eq1():
    """Eq. 1: the mean over predicted patches (every image, target block, patch) of ||ŝ − s||_2, not squared."""
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 3, 4, 8, generator=g), torch.randn(2, 3, 4, 8, generator=g)
    norms = [
        torch.sqrt(sum((pred[b, k, j, d] - target[b, k, j, d]) ** 2 for d in range(8)))
        for b in range(2) for k in range(3) for j in range(4)
    ]
    torch.testing.assert_close(feature_loss(pred, target, "l2norm"), torch.stack(norms).mean())
    # Unsquared: doubling the error doubles the loss (a squared error would quadruple it).
    torch.testing.assert_close(feature_loss(target + 2 * (pred - target), target, "l2norm"),
                               2 * torch.stack(norms).mean())


def test_warns_when_the_papers_weights_meet_another_loss():
    with pytest.warns(UserWarning, match="train.loss=l2norm"):
        TCJEPA.check_config(load_config(None, [*SMALL, "train.loss=smooth_l1"]))
    quiet = [
        SMALL,  # the paper's loss
        [*SMALL, "train.loss=smooth_l1", "tcjepa.sparse_weight=0.004", "tcjepa.consistency_weight=0.02"],  # rescaled
        [*SMALL, "train.loss=smooth_l1", "tcjepa.mode=adaln"],  # no regularizers
    ]
    for overrides in quiet:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            TCJEPA.check_config(load_config(None, overrides))


def test_regularizers_average_per_image_through_the_method():
    """Eq. 4 divides each image's sums by its own N: repeating an image's caption 3 times changes nothing
    (the max over identical copies is that copy), while a mean over (image, caption) pairs would weight that
    image 3 times."""
    torch.manual_seed(0)
    m = TCJEPA(load_config(None, [*SMALL, "tcjepa.center_keys=false"]), 10).eval()
    batch = _batch(b=2, n=3)
    batch["caption_mask"][:] = torch.tensor([[True, False, False], [True, False, False]])
    loss_one, metrics_one = m(batch, 0)
    repeated = {**batch, "caption_mask": torch.tensor([[True, False, False], [True, True, True]])}
    repeated["text_emb"] = batch["text_emb"].clone()
    repeated["text_emb"][1, 1:] = batch["text_emb"][1, :1]
    repeated["text_mask"] = batch["text_mask"].clone()
    repeated["text_mask"][1, 1:] = batch["text_mask"][1, :1]
    loss_rep, metrics_rep = m(repeated, 0)
    torch.testing.assert_close(_predict(m, repeated), _predict(m, batch))
    for key in ("loss_pred", "loss_sparse", "loss_consistency"):
        torch.testing.assert_close(metrics_rep[key], metrics_one[key])
    torch.testing.assert_close(loss_rep, loss_one)
    # The two images' regularizers differ, so weighting one of them 3 times would have shown.
    _, state = m.predictor(m.encoder(batch["image"], keep=batch["masks"][0]["ctx_idx"]),
                           batch["masks"][0]["ctx_idx"], batch["masks"][0]["tgt_idx"],
                           {k: batch[k] for k in TEXT_KEYS}, return_state=True)
    per_image = torch.stack(state.sims).sum(-1).mean(-1).mean(0)[:, 0]  # [B]: first caption of each image
    assert abs(per_image[0] - per_image[1]) > 1e-3
    torch.testing.assert_close(metrics_one["loss_sparse"], per_image.mean())


def test_captions_condition_their_own_image():
    """Each image's predictions (its T=2 target blocks) depend on its own captions only: the batched output equals
    one-image runs, permuting captions across images changes every image's predictions, and reordering the
    captions within an image (max pooling) changes nothing, loss included."""
    torch.manual_seed(0)
    m = TCJEPA(load_config(None, [*SMALL, "tcjepa.center_keys=false"]), 10).eval()
    _perturb(m.predictor.conditioner)
    batch = _batch(b=3, n=3)
    own = _predict(m, batch)
    for i in range(3):
        torch.testing.assert_close(_predict(m, batch, rows=slice(i, i + 1))[0], own[i], rtol=1e-5, atol=1e-5)

    cond = {k: batch[k] for k in TEXT_KEYS}
    shifted = {k: v.roll(1, dims=0) for k, v in cond.items()}  # image i gets image i-1's captions
    other = _predict(m, batch, shifted)
    for i in range(3):
        assert (other[i] - own[i]).abs().max() > 1e-2, f"image {i} ignores which captions it gets"
        torch.testing.assert_close(_predict(m, batch, shifted, rows=slice(i, i + 1))[0], other[i],
                                   rtol=1e-5, atol=1e-5)

    perms = [torch.tensor([2, 0, 1]), torch.tensor([1, 2, 0]), torch.tensor([0, 2, 1])]  # one per image
    within = {k: torch.stack([v[i, perms[i]] for i in range(3)]) for k, v in cond.items()}
    assert not torch.equal(within["caption_mask"], cond["caption_mask"])  # the padded slot moved too
    torch.testing.assert_close(_predict(m, batch, within), own, rtol=1e-5, atol=1e-6)
    loss, metrics = m(batch, 0)
    loss_within, metrics_within = m({**batch, **within}, 0)
    torch.testing.assert_close(loss_within, loss)
    torch.testing.assert_close(metrics_within["loss_sparse"], metrics["loss_sparse"])
