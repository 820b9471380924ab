"""TC-JEPA text conditioner: the paper's equations written out independently, regularizers averaged per image
(Eq. 4), pooling over captions, padding, the MLP / LayerNorm placement."""

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


def test_regularizers_average_per_image_then_over_images_by_hand():
    # Eq. 4: image 0 has captions with ||O||_1 = 1 and 3 -> (1 + 3) / 2 = 2; image 1 one caption with 10 -> 10;
    # image 2 none -> 0 (its prediction loss still counts). Mean over the 3 images: 4. The mean over the 3 real
    # (image, caption) pairs would be 14 / 3, and over captioned images only 6.
    o = torch.zeros(3, 2, 1, 2)  # [B, N, L=1 token, S=2]
    o[0, 0, 0] = torch.tensor([1.0, 0.0])
    o[0, 1, 0] = torch.tensor([1.0, 2.0])
    o[1, 0, 0] = torch.tensor([4.0, 6.0])
    caption_mask = torch.tensor([[True, True], [True, False], [False, False]])
    sparse, cons = sparsity_and_consistency([o, o], caption_mask)
    assert sparse.item() == pytest.approx(4.0) and cons.item() == 0.0  # same O at both layers: consistent


def _eq4_by_loops(sims: list[torch.Tensor], caption_mask: torch.Tensor) -> tuple[float, float]:
    """Eq. 4 term by term: per caption mean over tokens of (1/L) Σ_l, (1/N_b) Σ_n per image, mean over images."""
    num_layers, (b, n, tokens, _) = len(sims), sims[0].shape
    per_image_sparse, per_image_cons = [], []
    for i in range(b):
        sparse_sum = cons_sum = 0.0
        real = [c for c in range(n) if caption_mask[i, c]]
        for c in real:
            for tok in range(tokens):
                layers = [float(o[i, c, tok].sum()) for o in sims]
                mean_o = sum(o[i, c, tok] for o in sims) / num_layers
                sparse_sum += sum(layers) / num_layers / tokens
                cons_sum += sum(float((o[i, c, tok] - mean_o).abs().sum()) for o in sims) / num_layers / tokens
        per_image_sparse.append(sparse_sum / len(real) if real else 0.0)
        per_image_cons.append(cons_sum / len(real) if real else 0.0)
    return sum(per_image_sparse) / b, sum(per_image_cons) / b


def test_regularizers_match_eq4_computed_directly():
    g = torch.Generator().manual_seed(0)
    sims = [torch.rand(4, 3, 5, 6, generator=g, dtype=torch.float64).clamp_min(0.4) - 0.4 for _ in range(3)]
    caption_mask = torch.tensor([[True, True, True], [True, False, False], [False, False, False], [False, True, True]])
    for o in sims:  # padded captions have zero similarities (ConditionState.word_mask excludes them)
        o *= caption_mask[:, :, None, None]
    sparse, cons = sparsity_and_consistency(sims, caption_mask)
    ref_sparse, ref_cons = _eq4_by_loops(sims, caption_mask)
    assert sparse.item() == pytest.approx(ref_sparse, rel=1e-12)
    assert cons.item() == pytest.approx(ref_cons, rel=1e-12)
    # Images with 3, 1, 0 and 2 captions: averaging over (image, caption) pairs would give another value.
    pair_mean = sum(o.sum(-1).mean(-1) for o in sims).sum() / len(sims) / caption_mask.sum()
    assert abs(pair_mean.item() - ref_sparse) > 1e-3


def _state(text, word_mask, caption_mask, repeats=1):
    return ConditionState.build(text, word_mask, caption_mask, repeats)


def _layer(pooling="max", mlp="per_caption", seed=0, center_keys=True):
    torch.manual_seed(seed)
    return CrossAttentionLayer(dim=16, text_dim=12, heads=4, pooling=pooling, mlp=mlp, center_keys=center_keys).eval()


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


@pytest.mark.parametrize("center_keys", [True, False])
@pytest.mark.parametrize("mlp", ["after_pool", "per_caption"])
def test_padded_words_and_captions_are_never_used(mlp, center_keys):
    layer = _layer(mlp=mlp, center_keys=center_keys)
    x = torch.randn(2, 5, 16)
    text = torch.randn(2, 1, 3, 12)
    ones = torch.ones(2, 1, 3, dtype=torch.bool)
    ref_state = _state(text, ones, torch.ones(2, 1, dtype=torch.bool))
    ref = layer(x, ref_state)
    # Extra padded words with huge values, and a whole padded caption: same output as before.
    padded_text = torch.cat([text, 1e3 * torch.randn(2, 1, 2, 12)], dim=2)
    padded_text = torch.cat([padded_text, 1e3 * torch.randn(2, 1, 5, 12)], dim=1)
    wm = torch.zeros(2, 2, 5, dtype=torch.bool)
    wm[:, 0, :3] = True
    wm[:, 1, :] = True  # words of the padded caption look real, but the caption itself is padding
    cm = torch.tensor([[True, False], [True, False]])
    state = _state(padded_text, wm, cm)
    out = layer(x, state)
    torch.testing.assert_close(out, ref)
    assert torch.isfinite(out).all()
    # The rectified cosines of the real words, and so the regularizers, are the same; padding gets exactly 0.
    torch.testing.assert_close(state.sims[0][:, :1, :, :3], ref_state.sims[0])
    assert torch.all(state.sims[0][:, 1] == 0) and torch.all(state.sims[0][:, :, :, 3:] == 0)
    regularizers = sparsity_and_consistency(state.sims, cm)
    torch.testing.assert_close(regularizers, sparsity_and_consistency(ref_state.sims, cm[:, :1]))
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
    # Eq. 4: mean over the image's tokens (its T sequences), over its real captions, then over the images.
    sparse = sparsity_and_consistency(state.sims, cm)[0]
    per_caption = ref_sims.sum(-1).mean(-1).reshape(b, t, n).mean(1)  # [B, N]
    ref_sparse = ((per_caption * cm).sum(1) / cm.sum(1).clamp_min(1)).mean()
    torch.testing.assert_close(sparse, ref_sparse)
    weights = torch.randn_like(out)
    ((out * weights).sum() + sparse).backward()
    ((ref * weights).sum() + ref_sparse).backward()
    for (name, p0), p1 in zip(layers[0].named_parameters(), layers[1].parameters()):
        torch.testing.assert_close(p0.grad, p1.grad, msg=lambda m, name=name: f"{name}: {m}")


# ---- The paper's equations, written out independently of the implementation -----------------------------------
# Only the parameter tensors are shared with the module (so gradients can be compared); every operation is
# spelled out per image, per predictor sequence, per caption and per head, from the spec and docs/tcjepa.md:
#   t      = W_t LN_t(words) + b_t                      words normed and projected once per image
#   Q      = W_Q LN_q(x) + b_Q,  K = W_K t + b_K,  V = W_V t + b_V
#   O_i    = max(cos(Q_i, K_s), 0) over the caption's real words (K centered over them if center_keys)
#   a_n    = W_O [softmax_s(Q^h_i . K^h_s / sqrt(d_h)) V^h_s summed over s]_h + b_O
#   x_n    = x + a_n                                   residual cross-attention, per caption
#   x      = max_n x_n  (element-wise, real captions)  then  x = LN(x + MLP(x)), MLP = W_2 GELU(W_1 x + b_1) + b_2
#            (mlp=per_caption: x_n = LN(x_n + MLP(x_n)) before the max)


def _paper_layer_norm(z: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor:
    mean = z.mean(-1, keepdim=True)
    var = ((z - mean) ** 2).mean(-1, keepdim=True)  # biased, as LayerNorm
    return (z - mean) / torch.sqrt(var + 1e-6) * norm.weight + norm.bias


def _paper_linear(z: torch.Tensor, linear: torch.nn.Linear) -> torch.Tensor:
    return torch.einsum("...i,oi->...o", z, linear.weight) + linear.bias


def _paper_mlp_then_norm(z: torch.Tensor, blk: CrossAttentionLayer) -> torch.Tensor:
    hidden = _paper_linear(z, blk.mlp.fc1)
    hidden = 0.5 * hidden * (1 + torch.erf(hidden / 2**0.5))  # exact GELU
    return _paper_layer_norm(z + _paper_linear(hidden, blk.mlp.fc2), blk.norm)


def _paper_conditioner(c: TextConditioner, x, text, word_mask, caption_mask, t: int, center: bool):
    """Conditioned tokens after each of ``c``'s layers in turn, and (L_sparse, L_consistency) by Eq. 4."""
    b_img, n_cap = caption_mask.shape
    dh = x.shape[-1] // c.blocks[0].heads
    words = _paper_linear(_paper_layer_norm(text, c.text_norm), c.text_proj)  # [B, N, S, d]
    # (image, caption) -> per conditioned layer, the O of each of the image's sequences
    sims: dict[tuple[int, int], list[list[torch.Tensor]]] = {}
    for j, blk in enumerate(c.blocks):
        rows = []
        for r in range(x.shape[0]):
            b = r // t  # sequences are sample-major: image b owns rows b*T .. b*T+T-1
            q = _paper_linear(_paper_layer_norm(x[r], blk.norm_q), blk.q)  # [L, d]
            branches = []
            for n in range(n_cap):
                real = word_mask[b, n] & caption_mask[b, n]
                if not real.any():
                    continue
                k = _paper_linear(words[b, n][real], blk.k)  # [S_real, d]
                v = _paper_linear(words[b, n][real], blk.v)
                k_cos = k - k.mean(0) if center else k
                cos = torch.einsum("ld,sd->ls", q, k_cos) / (q.norm(dim=-1)[:, None] * k_cos.norm(dim=-1)[None, :])
                sims.setdefault((b, n), [[] for _ in c.blocks])[j].append(cos.clamp_min(0))
                heads = []
                for h in range(blk.heads):
                    sl = slice(h * dh, (h + 1) * dh)
                    logits = torch.einsum("ld,sd->ls", q[:, sl], k[:, sl]) / dh**0.5
                    heads.append(torch.einsum("ls,sd->ld", logits.softmax(-1), v[:, sl]))
                x_n = x[r] + _paper_linear(torch.cat(heads, -1), blk.proj)
                branches.append(_paper_mlp_then_norm(x_n, blk) if blk.mlp_position == "per_caption" else x_n)
            if not branches:  # no caption: the token is not conditioned, the MLP and LayerNorm still apply
                rows.append(_paper_mlp_then_norm(x[r], blk))
                continue
            pooled = torch.stack(branches).amax(0)
            rows.append(pooled if blk.mlp_position == "per_caption" else _paper_mlp_then_norm(pooled, blk))
        x = torch.stack(rows)
    # Eq. 4: per caption, mean over the image's tokens i of (1/L) Σ_l ||O_i||_1 (and of the consistency);
    # (1/N_b) Σ_n per image; mean over the B images (0 for an image without captions).
    zero = x.new_zeros(())
    sparse_per_image, cons_per_image = [], []
    for b in range(b_img):
        captions = [n for n in range(n_cap) if (b, n) in sims]
        sparse_sum, cons_sum = zero, zero
        for n in captions:
            o = torch.stack([torch.cat(per_sequence) for per_sequence in sims[(b, n)]])  # [L, T*tokens, S_real]
            sparse_sum = sparse_sum + o.sum(-1).mean(0).mean()
            cons_sum = cons_sum + (o - o.mean(0)).abs().sum(-1).mean(0).mean()
        sparse_per_image.append(sparse_sum / max(len(captions), 1))
        cons_per_image.append(cons_sum / max(len(captions), 1))
    return x, torch.stack(sparse_per_image).mean(), torch.stack(cons_per_image).mean()


def _randomize(module: torch.nn.Module, seed: int) -> None:
    """Moves every parameter off its init (LayerNorm gains and biases too), so no term can hide behind 1 or 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))


@pytest.mark.parametrize("mlp,center_keys", [("after_pool", False), ("per_caption", False), ("after_pool", True)])
def test_conditioner_matches_independent_implementation_of_the_paper(mlp, center_keys):
    """Literal path (uncentered keys) and the centered one: outputs, regularizers and gradients.

    Three images x two sequences (T=2), three caption slots with padded words, a padded caption and an image
    without captions; predictor layers 0 and 2 of 3 conditioned (layer 1 passes through).
    """
    b, t, n, s, length, dt = 3, 2, 3, 5, 4, 12
    g = torch.Generator().manual_seed(7)
    c = TextConditioner(dim=16, text_dim=dt, depth=3, layers=[0, 2], heads=4, mlp=mlp, center_keys=center_keys)
    c = c.double()
    _randomize(c, seed=1)
    x = torch.randn(b * t, length, 16, generator=g, dtype=torch.float64)
    text = torch.randn(b, n, s, dt, generator=g, dtype=torch.float64)
    word_mask = torch.rand(b, n, s, generator=g) > 0.3
    word_mask[..., 0] = True
    caption_mask = torch.tensor([[True, True, False], [False, True, True], [False, False, False]])
    text[~word_mask] = 1e3  # garbage where nothing may look
    text[~caption_mask] = -1e3
    cond = {"text_emb": text, "text_mask": word_mask, "caption_mask": caption_mask}

    state = c.prepare(cond, repeats=t)
    out = x
    for layer in range(3):
        out = c(layer, out, state)
    sparse, cons = c.regularizers(state)
    ref, ref_sparse, ref_cons = _paper_conditioner(c, x, text, word_mask, caption_mask, t, center_keys)

    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(sparse, ref_sparse, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(cons, ref_cons, rtol=1e-9, atol=1e-12)
    assert sparse > 0.01 and cons > 0.01  # both terms are live, so the comparison means something
    weights = torch.randn(out.shape, generator=g, dtype=torch.float64)
    params = list(c.parameters())
    grads = torch.autograd.grad((out * weights).sum() + 0.1 * sparse + 0.5 * cons, params, allow_unused=True)
    ref_total = (ref * weights).sum() + 0.1 * ref_sparse + 0.5 * ref_cons
    ref_grads = torch.autograd.grad(ref_total, params, allow_unused=True)
    for (name, _), grad, ref_grad in zip(c.named_parameters(), grads, ref_grads):
        assert grad is not None and ref_grad is not None, name
        torch.testing.assert_close(grad, ref_grad, rtol=1e-7, atol=1e-9, msg=lambda m, name=name: f"{name}: {m}")


def test_layer_norm_comes_after_the_residual_mlp():
    """``x = LN(x + MLP(x))`` ends the layer: with the LayerNorm's init gain 1 and bias 0 every output token is
    standardized, which pre-norm (``x + MLP(LN(x))``) would not give. With ``per_caption`` the max over captions
    follows the LayerNorm, so one caption per image is used there."""
    torch.manual_seed(0)
    x = 5 * torch.randn(2, 6, 16) + 3  # far from standardized
    for mlp, n in (("after_pool", 2), ("per_caption", 1)):
        layer = CrossAttentionLayer(dim=16, text_dim=16, heads=4, pooling="max", mlp=mlp)
        caption_mask = torch.ones(2, n, dtype=torch.bool)
        caption_mask[1, n - 1] = n == 1  # the second image has one caption in both cases
        out = layer(x, _state(torch.randn(2, n, 4, 16), torch.ones(2, n, 4, dtype=torch.bool), caption_mask))
        torch.testing.assert_close(out.mean(-1), torch.zeros(2, 6), atol=1e-5, rtol=0)
        torch.testing.assert_close(out.var(-1, unbiased=False), torch.ones(2, 6), atol=1e-3, rtol=0)
