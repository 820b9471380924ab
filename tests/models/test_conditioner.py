"""TC-JEPA text conditioner: regularizers on hand-computed inputs, pooling over captions, padding."""

import pytest
import torch
import torch.nn.functional as F

from openjepa.models.conditioner import (
    ConditionState,
    CrossAttentionLayer,
    TextConditioner,
    center_words,
    rectified_cosine,
    sparsity_and_consistency,
)


def test_rectified_cosine_by_hand():
    q = torch.tensor([[[2.0, 0.0]]])  # [BT=1, L=1, d=2]
    k = torch.tensor([[[[1.0, 0.0], [0.0, 3.0], [-1.0, 0.0], [1.0, 1.0], [5.0, 0.0]]]])  # [1, N=1, S=5, 2]
    mask = torch.tensor([[[True, True, True, True, False]]])
    o = rectified_cosine(q, k, mask)
    expected = torch.tensor([1.0, 0.0, 0.0, 2**-0.5, 0.0])  # cos 1, 0, -1 (rectified), 45 deg, padded word
    torch.testing.assert_close(o[0, 0, 0], expected)


def test_sparsity_and_consistency_by_hand():
    # Two layers, one sequence, two captions (the second padded), one token, two words.
    o1 = torch.tensor([[[[1.0, 0.0]], [[9.0, 9.0]]]])  # [BT=1, N=2, L=1, S=2]
    o2 = torch.tensor([[[[0.0, 0.0]], [[9.0, 9.0]]]])
    sparse, cons = sparsity_and_consistency([o1, o2], torch.tensor([[True, False]]))
    # ||O1||_1 = 1, ||O2||_1 = 0 -> sparse = (1 + 0) / 2; mean O = [0.5, 0] -> (|0.5| + |0.5|) / 2 = 0.5
    assert sparse.item() == pytest.approx(0.5)
    assert cons.item() == pytest.approx(0.5)
    # Two tokens with different values: the mean over tokens i.
    a = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])  # [1, 1, L=2, S=2]
    sparse, cons = sparsity_and_consistency([a], torch.tensor([[True]]))
    assert sparse.item() == pytest.approx((2.0 + 0.0) / 2) and cons.item() == 0.0


def _state(text, word_mask, caption_mask, repeats=1):
    return ConditionState.build(text, word_mask, caption_mask, repeats)


def _layer(pooling="max", mlp="per_caption", seed=0):
    torch.manual_seed(seed)
    return CrossAttentionLayer(dim=16, text_dim=12, heads=4, pooling=pooling, mlp=mlp).eval()


def test_max_over_captions_is_elementwise_max_of_single_captions():
    layer = _layer(mlp="per_caption")
    x = torch.randn(3, 5, 16)
    text = torch.randn(3, 2, 4, 12)
    wm = torch.ones(3, 2, 4, dtype=torch.bool)
    both = layer(x, _state(text, wm, torch.ones(3, 2, dtype=torch.bool)))
    one = torch.ones(3, 1, dtype=torch.bool)
    singles = [layer(x, _state(text[:, i : i + 1], wm[:, i : i + 1], one)) for i in range(2)]
    torch.testing.assert_close(both, torch.maximum(*singles))
    mean_layer = _layer(pooling="mean", mlp="per_caption")
    mean_both = mean_layer(x, _state(text, wm, torch.ones(3, 2, dtype=torch.bool)))
    mean_singles = [mean_layer(x, _state(text[:, i : i + 1], wm[:, i : i + 1], one)) for i in range(2)]
    torch.testing.assert_close(mean_both, (mean_singles[0] + mean_singles[1]) / 2)


@pytest.mark.parametrize("mlp", ["after_pool", "per_caption"])
def test_padded_words_and_captions_are_never_used(mlp):
    layer = _layer(mlp=mlp)
    x = torch.randn(2, 5, 16)
    text = torch.randn(2, 1, 3, 12)
    ones = torch.ones(2, 1, 3, dtype=torch.bool)
    ref = layer(x, _state(text, ones, torch.ones(2, 1, dtype=torch.bool)))
    # Extra padded words with huge values, and a whole padded caption: same output as before.
    padded_text = torch.cat([text, 1e3 * torch.randn(2, 1, 2, 12)], dim=2)
    padded_text = torch.cat([padded_text, 1e3 * torch.randn(2, 1, 5, 12)], dim=1)
    wm = torch.zeros(2, 2, 5, dtype=torch.bool)
    wm[:, 0, :3] = True
    wm[:, 1, :] = True  # words of the padded caption look real, but the caption itself is padding
    cm = torch.tensor([[True, False], [True, False]])
    out = layer(x, _state(padded_text, wm, cm))
    torch.testing.assert_close(out, ref)
    assert torch.isfinite(out).all()
    # An image without any caption keeps its tokens unconditioned (and finite).
    none = layer(x, _state(padded_text, wm, torch.zeros(2, 2, dtype=torch.bool)))
    assert torch.isfinite(none).all()


def test_conditioner_layers_and_modes():
    cond = {"text_emb": torch.randn(2, 3, 4, 12), "text_mask": torch.ones(2, 3, 4, dtype=torch.bool),
            "caption_mask": torch.tensor([[True, True, False], [True, False, False]])}
    c = TextConditioner(dim=16, text_dim=12, depth=4, layers=[1, 3], heads=4)
    state = c.prepare(cond, repeats=2)
    assert state.text.shape == (2, 3, 4, 16) and state.caption_mask[1].tolist() == [True, False, False]
    # Padded caption slots hold a copy of the image's first real caption (for attention only).
    torch.testing.assert_close(state.text[1, 2], state.text[1, 0])
    assert state.attn_mask[1].all() and state.word_mask[1].tolist() == [[True] * 4, [False] * 4, [False] * 4]
    x = torch.randn(4, 6, 16)
    assert torch.equal(c(0, x, state), x)  # unconditioned layer: untouched
    y = c(1, x, state)
    assert y.shape == x.shape and not torch.equal(y, x)
    sparse, cons = c.regularizers(state)
    assert sparse > 0 and cons == 0  # one conditioned layer so far: nothing to be inconsistent with
    c(3, y, state)
    assert c.regularizers(state)[1] > 0
    with pytest.raises(ValueError, match="tcjepa.layers"):
        TextConditioner(dim=16, text_dim=12, depth=4, layers=[4])
    ada = TextConditioner(dim=16, text_dim=12, depth=2, mode="adaln")
    torch.testing.assert_close(ada(0, x, ada.prepare(cond, 2)), x)  # zero-init modulation: identity at start
    app = TextConditioner(dim=16, text_dim=12, depth=2, mode="append")
    tokens, key_mask = app.prefix(app.prepare(cond, 2))
    assert tokens.shape == (4, 12, 16) and key_mask[2].sum() == 4 * 1  # second image: one real caption


def test_centered_keys_keep_attention_and_prevent_all_negative_cosines():
    torch.manual_seed(0)
    text = torch.randn(2, 1, 5, 12) + 3.0  # a large common direction, as sentence encoders have
    wm = torch.ones(2, 1, 5, dtype=torch.bool)
    wm[1, 0, 3:] = False
    state = _state(text, wm, torch.ones(2, 1, dtype=torch.bool))
    centered, plain = _layer(), _layer()
    plain.center_keys = False
    x = torch.randn(2, 7, 16)
    # Softmax attention is shift-invariant per query: same outputs with or without centering.
    torch.testing.assert_close(centered(x, _state(text, wm, torch.ones(2, 1, dtype=torch.bool))), plain(x, state))
    torch.testing.assert_close(centered.attention_weights(x, state), plain.attention_weights(x, state))
    # Centered keys sum to zero over the real words, so every query has a positive similarity with some word.
    k = center_words(centered.k(text), wm)
    torch.testing.assert_close(k.sum(2), torch.zeros(2, 1, 16), atol=1e-5, rtol=0)
    assert torch.all(k[1, 0, 3:] == 0)
    o = rectified_cosine(centered.q(centered.norm_q(x)), k, wm)
    assert torch.all(o.amax(-1) > 0)


def _reference_layer(layer, x, text, word_mask, caption_mask, t):
    """A direct per-sequence, per-caption loop: the spec's equations with nothing batched or reordered."""
    d, h = x.shape[-1], layer.heads
    dh = d // h
    out, sims = [], []
    for i in range(x.shape[0]):
        b = i // t
        q = layer.q(layer.norm_q(x[i]))  # [L, d]
        branches, per_caption_sims = [], []
        for n in range(text.shape[1]):
            real = word_mask[b, n] & caption_mask[b, n]
            k = layer.k(text[b, n])
            k = (k - k[real].mean(0)) * real[:, None] if real.any() else k * 0
            per_caption_sims.append((F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).T).clamp_min(0) * real)
            if not real.any():
                continue
            v = layer.v(text[b, n][real])
            heads = []
            for j in range(h):
                sl = slice(j * dh, (j + 1) * dh)
                w = (q[:, sl] @ k[real][:, sl].T / dh**0.5).softmax(-1)
                heads.append(w @ v[:, sl])
            y = x[i] + layer.proj(torch.cat(heads, -1))
            branches.append(layer._mlp_norm(y) if layer.mlp_position == "per_caption" else y)
        sims.append(torch.stack(per_caption_sims))
        if not branches:
            out.append(layer._mlp_norm(x[i]))
            continue
        stack = torch.stack(branches)
        pooled = stack.amax(0) if layer.pooling == "max" else stack.mean(0)
        out.append(pooled if layer.mlp_position == "per_caption" else layer._mlp_norm(pooled))
    return torch.stack(out), torch.stack(sims)  # sims per sequence: [BT, N, L, S]


@pytest.mark.parametrize("pooling,mlp", [("max", "after_pool"), ("max", "per_caption"), ("mean", "after_pool")])
def test_batched_layer_matches_direct_loop_values_and_gradients(pooling, mlp):
    """Several sequences per image (T=3), padded words, a padded caption and an image without captions."""
    torch.manual_seed(1)
    b, t, n, s, length = 3, 3, 3, 5, 4
    x = torch.randn(b * t, length, 16, dtype=torch.float64)
    text = torch.randn(b, n, s, 12, dtype=torch.float64)
    wm = torch.rand(b, n, s) > 0.3
    wm[..., 0] = True
    cm = torch.tensor([[True, False, True], [False, True, True], [False, False, False]])
    layers = [_layer(pooling=pooling, mlp=mlp, seed=3).double() for _ in range(2)]
    layers[1].load_state_dict(layers[0].state_dict())
    state = _state(text, wm, cm, repeats=t)
    out = layers[0](x, state)
    ref, ref_sims = _reference_layer(layers[1], x, text, wm, cm, t)
    torch.testing.assert_close(out, ref)
    # The image's T sequences form one query row block: [B, N, T*L, S] holds the same cosines.
    sims = state.sims[0].reshape(b, n, t, length, s).transpose(1, 2).reshape(b * t, n, length, s)
    torch.testing.assert_close(sims, ref_sims)
    # Same regularizer value as averaging over every (sequence, real caption) pair.
    sparse = sparsity_and_consistency(state.sims, cm)[0]
    ref_sparse = (ref_sims.sum(-1).mean(-1) * cm.repeat_interleave(t, 0)).sum() / (cm.sum() * t)
    torch.testing.assert_close(sparse, ref_sparse)
    weights = torch.randn_like(out)
    ((out * weights).sum() + sparse).backward()
    ((ref * weights).sum() + ref_sparse).backward()
    for (name, p0), p1 in zip(layers[0].named_parameters(), layers[1].parameters()):
        torch.testing.assert_close(p0.grad, p1.grad, msg=lambda m, name=name: f"{name}: {m}")
