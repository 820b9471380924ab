"""CLIP / SigLIP baseline: losses against direct float64 loops, caption selection and masking, gradient flow,
parameter groups, and a short optimisation that must lower the loss."""

import math

import pytest
import torch
import torch.nn.functional as F

from openjepa.config import ConfigError, load_config
from openjepa.methods import build_method
from openjepa.methods.clip import (
    CLIP,
    CLIP_INIT_LOG_SCALE,
    CLIP_MAX_LOG_SCALE,
    SIGLIP_INIT_BIAS,
    SIGLIP_INIT_LOG_T,
    first_real_caption,
    masked_mean,
)
from openjepa.methods.contrastive_losses import clip_loss, i2t_accuracy, siglip_loss

TEXT_DIM = 16
SMALL = [
    "method=clip", "model.arch=vit_pico", "data.image_size=32", "model.patch_size=8", "clip.dim=32",
    f"text.dim={TEXT_DIM}",
]


def _unit(n, d, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=-1)


def _loop_clip(img, txt, scale):
    """CLIP loss written out pair by pair in float64 (math module, no tensor ops on the logits)."""
    img, txt, n = img.double().tolist(), txt.double().tolist(), len(img)
    logit = [[scale * sum(a * b for a, b in zip(img[i], txt[j])) for j in range(n)] for i in range(n)]

    def ce(rows):
        total = 0.0
        for i in range(n):
            total += -rows[i][i] + math.log(sum(math.exp(v) for v in rows[i]))
        return total / n

    transposed = [[logit[j][i] for j in range(n)] for i in range(n)]
    return (ce(logit) + ce(transposed)) / 2


def _loop_siglip(img, txt, t, b):
    """-(1/|B|) sum_i sum_j log sigmoid(z_ij (t x_i.y_j + b)) in float64."""
    img, txt, n = img.double().tolist(), txt.double().tolist(), len(img)
    total = 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            u = z * (t * sum(a * c for a, c in zip(img[i], txt[j])) + b)
            total += -math.log(1.0 / (1.0 + math.exp(-u)))
    return total / n


@pytest.mark.parametrize("scale", [1.0, 1 / 0.07, 100.0])
def test_clip_loss_matches_float64_loop(scale):
    img, txt = _unit(7, 5, 0), _unit(7, 5, 1)
    got = clip_loss(img, txt, torch.tensor(scale, dtype=torch.float64))
    assert got.item() == pytest.approx(_loop_clip(img, txt, scale), rel=1e-10)
    # The transposed term matters: swapping the towers gives the same value only because both terms are there.
    assert clip_loss(txt, img, torch.tensor(scale, dtype=torch.float64)).item() == pytest.approx(got.item(), rel=1e-10)
    one_way = F.cross_entropy(scale * img @ txt.t(), torch.arange(7))
    assert abs(one_way.item() - got.item()) > 1e-6


def test_clip_loss_float32_close_to_float64():
    img, txt = _unit(16, 8, 2), _unit(16, 8, 3)
    got = clip_loss(img.float(), txt.float(), torch.tensor(1 / 0.07))
    assert got.item() == pytest.approx(_loop_clip(img, txt, 1 / 0.07), rel=1e-5)


@pytest.mark.parametrize(("t", "b"), [(10.0, -10.0), (3.0, 0.5), (50.0, -2.0)])
def test_siglip_loss_matches_float64_loop(t, b):
    img, txt = _unit(6, 4, 4), _unit(6, 4, 5)
    got = siglip_loss(img, txt, torch.tensor(t, dtype=torch.float64), torch.tensor(b, dtype=torch.float64))
    expected = _loop_siglip(img, txt, t, b)
    assert got.item() == pytest.approx(expected, rel=1e-10)
    # normalized by |B|, not by the |B|^2 pairs
    assert got.item() != pytest.approx(expected * 6 / 36, rel=1e-3)


def test_perfect_alignment_gives_low_loss_and_full_accuracy():
    q, _ = torch.linalg.qr(torch.randn(16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    emb = q[:8]  # 8 orthonormal vectors: every pair is matched, every non-pair orthogonal
    scale = torch.tensor(100.0, dtype=torch.float64)
    loss = clip_loss(emb, emb, scale)
    assert loss.item() < 1e-30 + 8 * math.exp(-100) * 2
    assert i2t_accuracy(scale * emb @ emb.t()).item() == 1.0
    sig = siglip_loss(emb, emb, scale, torch.tensor(-50.0, dtype=torch.float64))
    assert sig.item() < 1e-18
    # the opposite: aligned with the wrong caption gives a large loss and accuracy 0
    wrong = emb.roll(1, 0)
    assert clip_loss(emb, wrong, scale).item() > 50
    assert i2t_accuracy(scale * emb @ wrong.t()).item() == 0.0


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_excluded_pairs_equal_loss_on_kept_subset(kind):
    img, txt = _unit(9, 6, 6), _unit(9, 6, 7)
    valid = torch.tensor([1, 0, 1, 1, 0, 1, 1, 1, 0], dtype=torch.bool)
    s, b = torch.tensor(7.0, dtype=torch.float64), torch.tensor(-3.0, dtype=torch.float64)
    if kind == "clip":
        masked, subset = clip_loss(img, txt, s, valid), clip_loss(img[valid], txt[valid], s)
        expected = _loop_clip(img[valid], txt[valid], 7.0)
    else:
        masked, subset = siglip_loss(img, txt, s, b, valid), siglip_loss(img[valid], txt[valid], s, b)
        expected = _loop_siglip(img[valid], txt[valid], 7.0, -3.0)
    assert masked.item() == pytest.approx(subset.item(), rel=1e-12)
    assert masked.item() == pytest.approx(expected, rel=1e-10)
    logits = s * img @ txt.t()
    assert i2t_accuracy(logits, valid).item() == pytest.approx(i2t_accuracy(logits[valid][:, valid]).item())


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_no_valid_pair_gives_exact_zero_with_finite_grads(kind):
    img = _unit(4, 3, 8).requires_grad_()
    txt = _unit(4, 3, 9).requires_grad_()
    s = torch.tensor(14.0, dtype=torch.float64, requires_grad=True)
    none = torch.zeros(4, dtype=torch.bool)
    if kind == "clip":
        loss = clip_loss(img, txt, s, none)
    else:
        loss = siglip_loss(img, txt, s, torch.tensor(-10.0, dtype=torch.float64), none)
    loss.backward()
    assert loss.item() == 0.0
    for g in (img.grad, txt.grad, s.grad):
        assert g is not None and torch.isfinite(g).all() and (g == 0).all()


# ----------------------------------------------------------------------------- the module


def _cfg(kind="clip", extra=()):
    return load_config(None, [*SMALL, f"clip.loss={kind}", *extra])


def _batch(b=6, n=3, s=5, seed=0, dtype=torch.float16):
    g = torch.Generator().manual_seed(seed)
    text_mask = torch.rand(b, n, s, generator=g) > 0.3
    text_mask[..., 0] = True  # every caption has a word; caption_mask decides which are real
    caption_mask = torch.ones(b, n, dtype=torch.bool)
    caption_mask[1, 0] = False  # image 1: first real caption is caption 1
    caption_mask[2] = False  # image 2: no caption at all
    return {
        "image": torch.randn(b, 3, 32, 32, generator=g),
        "text_emb": torch.randn(b, n, s, TEXT_DIM, generator=g).to(dtype),
        "text_mask": text_mask,
        "caption_mask": caption_mask,
        "ctx_idx": torch.zeros(b, 4, dtype=torch.long),  # present in JEPA batches; CLIP ignores it
    }


def _subset(batch, keep):
    return {k: v[keep] for k, v in batch.items()}


def _model(kind="clip", seed=0):
    torch.manual_seed(seed)
    return CLIP(_cfg(kind), total_steps=10)


def test_first_real_caption_and_masked_mean():
    emb = torch.arange(2 * 3 * 2 * 1, dtype=torch.float32).reshape(2, 3, 2, 1)
    text_mask = torch.tensor([[[0, 0], [1, 0], [1, 1]], [[1, 1], [1, 1], [0, 0]]], dtype=torch.bool)
    caption_mask = torch.tensor([[1, 1, 1], [0, 0, 1]], dtype=torch.bool)
    e, m, valid = first_real_caption(emb, text_mask, caption_mask)
    # image 0: caption 0 has no word -> caption 1; image 1: only caption 2 is "real" but it has no word -> none
    assert valid.tolist() == [True, False]
    torch.testing.assert_close(e[0], emb[0, 1])
    assert m[0].tolist() == [True, False]
    pooled = masked_mean(e, m)
    assert pooled[0].item() == emb[0, 1, 0, 0].item()
    # a caption with no real word pools to 0, not NaN
    assert masked_mean(e, torch.zeros_like(m)).abs().sum().item() == 0.0
    # one caption per image ([B, S, d_t]) is accepted too
    e3, _, v3 = first_real_caption(emb[:, 2], text_mask[:, 2], None)
    assert v3.tolist() == [True, False] and torch.equal(e3, emb[:, 2])


def test_module_selects_first_real_caption():
    m = _model()
    batch = _batch()
    txt, valid = m.encode_text(batch)
    assert valid.tolist() == [True, True, False, True, True, True]
    mask1 = batch["text_mask"][1, 1]
    expected = m.text_proj(batch["text_emb"][1, 1][mask1].float().mean(0, keepdim=True))
    torch.testing.assert_close(txt[1:2], expected)


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_image_without_caption_is_excluded(kind):
    m = _model(kind)
    batch = _batch()
    loss, metrics = m(batch, 0)
    keep = torch.tensor([0, 1, 3, 4, 5])
    loss_kept, metrics_kept = m(_subset(batch, keep), 0)
    torch.testing.assert_close(loss, loss_kept, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(metrics["acc_i2t"], metrics_kept["acc_i2t"])


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_batch_without_captions_gives_zero_loss_and_defined_grads(kind):
    m = _model(kind)
    batch = _batch()
    batch["caption_mask"][:] = False
    loss, metrics = m(batch, 0)
    loss.backward()
    assert loss.item() == 0.0 and metrics["acc_i2t"].item() == 0.0
    # every parameter still gets a (zero) gradient, so DDP finds no unused parameter
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_gradients_reach_encoder_heads_and_temperature_not_text(kind):
    m = _model(kind)
    batch = _batch(dtype=torch.float32)
    batch["text_emb"].requires_grad_()
    loss, metrics = m(batch, 0)
    loss.backward()
    assert batch["text_emb"].grad is None  # the text encoder is frozen
    assert all(not v.requires_grad for v in metrics.values())
    for p in (
        m.encoder.patch_embed.proj.weight,
        m.encoder.blocks[0].attn.qkv.weight,
        m.encoder.norm.weight,
        m.image_proj.weight,
        m.text_proj.norm.weight,
        m.text_proj.fc1.weight,
        m.text_proj.fc2.weight,
        m.logit_scale,
    ):
        assert p.grad is not None and p.grad.abs().sum() > 0
    if kind == "siglip":
        assert m.logit_bias.grad is not None and m.logit_bias.grad.abs() > 0


def test_init_values_metrics_and_contract():
    clip, sig = _model("clip"), _model("siglip")
    assert clip.logit_scale.item() == pytest.approx(math.log(1 / 0.07)) == pytest.approx(CLIP_INIT_LOG_SCALE)
    assert clip.logit_bias is None
    assert sig.logit_scale.item() == pytest.approx(math.log(10)) == pytest.approx(SIGLIP_INIT_LOG_T)
    assert sig.logit_bias.item() == SIGLIP_INIT_BIAS
    _, metrics = clip(_batch(), 0)
    assert set(metrics) == {"loss", "logit_scale", "acc_i2t"}
    assert metrics["logit_scale"].item() == pytest.approx(1 / 0.07, rel=1e-5)
    _, metrics = sig(_batch(), 0)
    assert set(metrics) == {"loss", "logit_scale", "acc_i2t", "logit_bias"}
    assert metrics["logit_scale"].item() == pytest.approx(10.0, rel=1e-5)
    assert clip.uses_masks is False
    assert clip.encoder_for_eval() is clip.encoder
    assert clip.encoder_for_eval()(torch.randn(2, 3, 32, 32)).shape == (2, 16, 96)


def test_logit_scale_capped_at_100():
    m = _model("clip")
    with torch.no_grad():
        m.logit_scale.fill_(10.0)
    assert m.scale().item() == pytest.approx(100.0)
    m.after_step(0)  # the parameter itself is brought back, so the gradient can lower it again
    assert m.logit_scale.item() == pytest.approx(CLIP_MAX_LOG_SCALE)
    loss, _ = m(_batch(), 0)
    loss.backward()
    assert m.logit_scale.grad.abs() > 0


def test_param_groups_no_decay_on_biases_norms_and_temperature():
    m = _model("siglip")
    decay, no_decay = m.param_groups()
    assert decay["apply_wd"] and not no_decay["apply_wd"] and no_decay["weight_decay"] == 0.0
    ids = {id(p) for p in no_decay["params"]}
    for p in (m.logit_scale, m.logit_bias, m.text_proj.fc1.bias, m.text_proj.norm.weight, m.encoder.norm.bias):
        assert id(p) in ids
    assert all(p.ndim >= 2 for p in decay["params"])
    assert {id(p) for p in m.parameters()} == ids | {id(p) for p in decay["params"]}


def test_loss_is_float32_under_bf16_autocast():
    m = _model("clip")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = m(_batch(), 0)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_text_dim_must_be_set():
    with pytest.raises(ConfigError, match="text.dim"):
        CLIP(load_config(None, [*SMALL, "text.dim=0"]), 10)


def test_wrong_text_width_and_missing_keys_are_clear_errors():
    m = _model()
    batch = _batch()
    batch["text_emb"] = torch.randn(6, 3, 5, TEXT_DIM + 1)
    with pytest.raises(ValueError, match="width"):
        m(batch, 0)
    with pytest.raises(KeyError, match="text_emb"):
        m({"image": torch.randn(2, 3, 32, 32)}, 0)


def test_registered_in_methods():
    assert isinstance(build_method(_cfg(), 10), CLIP)


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_short_optimisation_lowers_the_loss(kind):
    """30 Adam steps on 16 fixed random image/caption pairs: the real module must learn to match them."""
    m = _model(kind)
    batch = _batch(b=16, seed=3, dtype=torch.float32)
    batch["caption_mask"][:] = True
    opt = torch.optim.Adam([g for g in m.param_groups()], lr=1e-3)
    losses, accs = [], []
    for step in range(30):
        loss, metrics = m(batch, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        m.after_step(step)
        losses.append(loss.item())
        accs.append(metrics["acc_i2t"].item())
    assert losses[-1] < 0.5 * losses[0], losses
    assert accs[-1] >= 0.75 and accs[-1] > accs[0], accs
