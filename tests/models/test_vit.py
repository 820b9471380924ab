"""ViT encoder: shapes for every preset, keep-gathering, position tables, non-square grids."""

import math

import pytest
import torch

from openjepa.models.layers import gather_tokens
from openjepa.models.pos_embed import sincos_1d, sincos_2d, sincos_3d
from openjepa.models.vit import VIT_PRESETS, VisionTransformer, build_vit

PARAMS_M = {"vit_tiny": 5.5, "vit_small": 21.6, "vit_base": 85.6, "vit_large": 303.1, "vit_huge": 630.8}


@pytest.mark.parametrize("arch", sorted(VIT_PRESETS))
def test_every_preset_shapes_on_meta(arch):
    # The meta device checks shapes and parameter counts without allocating (giant is 1B params).
    with torch.device("meta"):
        model = build_vit(arch, img_size=224, patch_size=14)
        x = torch.empty(2, 3, 224, 224)
        keep = torch.zeros(2, 50, dtype=torch.long)
        assert model(x).shape == (2, 256, VIT_PRESETS[arch].embed_dim)
        assert model(x, keep=keep).shape == (2, 50, VIT_PRESETS[arch].embed_dim)
    n = sum(p.numel() for p in model.parameters()) / 1e6
    if arch in PARAMS_M:  # the well-known sizes (patch 16 numbers; patch 14 differs only in the stem)
        assert abs(n - PARAMS_M[arch]) / PARAMS_M[arch] < 0.02


def test_keep_equals_gathering_before_blocks():
    torch.manual_seed(0)
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2).eval()
    x = torch.randn(3, 3, 32, 32)
    keep = torch.stack([torch.randperm(16)[:7] for _ in range(3)])
    tokens = gather_tokens(model.embed(x), keep)
    for blk in model.blocks:
        tokens = blk(tokens)
    torch.testing.assert_close(model(x, keep=keep), model.norm(tokens))
    # Keeping every token in raster order is the full forward.
    full = torch.arange(16).expand(3, -1)
    torch.testing.assert_close(model(x, keep=full), model(x), rtol=1e-5, atol=1e-5)


def test_non_square_grid_and_other_resolution():
    model = VisionTransformer(img_size=(32, 48), patch_size=8, embed_dim=32, depth=1, num_heads=2)
    assert model.grid_size == (4, 6) and model.num_patches == 24
    assert model(torch.randn(1, 3, 32, 48)).shape == (1, 24, 32)
    # Fixed sin-cos positions let the same weights run at another resolution.
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 64, 32)
    with pytest.raises(ValueError, match="not divisible"):
        model(torch.randn(1, 3, 30, 48))


def test_video_tubelets():
    model = VisionTransformer(
        img_size=32, patch_size=8, embed_dim=48, depth=1, num_heads=2, num_frames=4, tubelet_size=2
    )
    assert model.grid_size == (2, 4, 4)
    assert model(torch.randn(2, 3, 4, 32, 32)).shape == (2, 32, 48)


def test_sincos_values():
    pos = sincos_1d(4, torch.tensor([0.0, 1.0]))
    # omega = [1, 1/100] for dim 4: [sin(p), sin(p/100), cos(p), cos(p/100)]
    expected = torch.tensor([[0, 0, 1, 1], [math.sin(1), math.sin(0.01), math.cos(1), math.cos(0.01)]])
    torch.testing.assert_close(pos, expected.float())
    table = sincos_2d(8, (2, 3))
    assert table.shape == (6, 8)
    # Row code in the first half, column code in the second half (raster order: index = r * W + c).
    torch.testing.assert_close(table[4, :4], sincos_1d(4, torch.tensor([1.0]))[0])
    torch.testing.assert_close(table[4, 4:], sincos_1d(4, torch.tensor([1.0]))[0])
    torch.testing.assert_close(table[2, 4:], sincos_1d(4, torch.tensor([2.0]))[0])
    assert len({tuple(r.tolist()) for r in table}) == 6  # every position distinct
    assert sincos_3d(48, (2, 3, 4)).shape == (24, 48)


def test_init_statistics():
    torch.manual_seed(0)
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=256, depth=2, num_heads=4)
    w = model.blocks[0].mlp.fc1.weight
    assert w.abs().max() <= 0.04 + 1e-6  # truncated at 2 std
    assert 0.015 < w.std() < 0.02
    assert torch.all(model.blocks[0].mlp.fc1.bias == 0)
    assert torch.all(model.norm.weight == 1)
    # rescale_init divides residual projections by sqrt(2 * layer)
    torch.manual_seed(0)
    scaled = VisionTransformer(img_size=32, patch_size=8, embed_dim=256, depth=2, num_heads=4, rescale_init=True)
    torch.testing.assert_close(scaled.blocks[1].attn.proj.weight, model.blocks[1].attn.proj.weight / 2.0)


def test_hmlp_stem_tokens_depend_on_their_own_patch_only():
    # Masking drops tokens after the stem, so a stem that mixed neighbouring patches would leak the pixels of
    # masked patches into the context. Changing one patch must change that patch's token and no other.
    torch.manual_seed(0)
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, stem="hmlp").eval()
    x = torch.randn(2, 3, 32, 32)
    y = x.clone()
    y[:, :, 8:16, 16:24] += torch.randn(2, 3, 8, 8)  # the patch in row 1, column 2 -> token 1 * 4 + 2
    with torch.no_grad():
        changed = (model.embed(x) - model.embed(y)).abs().amax(dim=(0, 2)) > 0
    assert changed.nonzero().flatten().tolist() == [6]
    # Its embedding is a nonlinear function of the patch (with a linear stem, e(2x) - e(x) == e(x) - e(0)).
    with torch.no_grad():
        e0, e1, e2 = (model.patch_embed(s * x) for s in (0.0, 1.0, 2.0))
    assert not torch.allclose(e2 - e1, e1 - e0, atol=1e-3)


def test_hmlp_stem_config_round_trip_and_errors():
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, stem="hmlp")
    rebuilt = VisionTransformer(**model.config())
    rebuilt.load_state_dict(model.state_dict())  # same parameter names and shapes
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(rebuilt.eval()(x), model.eval()(x))
    assert VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2).config()["stem"] == "linear"
    with pytest.raises(ValueError, match="divisible by 4.*model.patch_size"):
        VisionTransformer(img_size=36, patch_size=6, embed_dim=32, depth=1, num_heads=2, stem="hmlp")
    with pytest.raises(ValueError, match="model.stem.*video"):
        VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_frames=4, stem="hmlp")
    with pytest.raises(ValueError, match="choose one of linear, hmlp, conv"):
        VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, stem="resnet")
    with pytest.raises(ValueError, match="not divisible"):
        model(torch.randn(1, 3, 30, 32))


@pytest.mark.parametrize("stem", ["hmlp", "conv"])
def test_stem_export_round_trip(tmp_path, stem):
    from openjepa.checkpoints import load_encoder, save_encoder

    torch.manual_seed(0)
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, stem=stem).eval()
    weights, _ = save_encoder(model, tmp_path / "e.safetensors", {})
    loaded = load_encoder(weights)
    assert loaded.stem == stem
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_conv_stem_overlaps_but_a_masked_encoder_never_reads_dropped_pixels():
    torch.manual_seed(0)
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, stem="conv").eval()
    assert [c.out_channels for c in model.patch_embed.convs] == [8, 16, 32]  # D/4, D/2, D for 8 px patches
    x = torch.randn(2, 3, 32, 32)
    y = x.clone()
    y[:, :, 8:16, 16:24] += torch.randn(2, 3, 8, 8)  # patch (1, 2) = token 6
    with torch.no_grad():
        changed = (model.embed(x) - model.embed(y)).abs().amax(dim=(0, 2)) > 0
        # The kernels overlap: without masking, the 8 neighbours of token 6 read some of its pixels.
        assert changed.nonzero().flatten().tolist() == [1, 2, 3, 5, 6, 7, 9, 10, 11]
        # With token 6 dropped, the kept tokens are exactly those of an image whose patch 6 is zero.
        keep = torch.tensor([[0, 1, 2, 5, 7, 10, 11], [2, 3, 4, 5, 7, 9, 10]])
        torch.testing.assert_close(model(x, keep=keep), model(y, keep=keep))
        blank = x.clone()
        blank[:, :, 8:16, 16:24] = 0
        torch.testing.assert_close(model(x, keep=keep), model(blank, keep=keep))
        # Keeping every token is the unmasked forward.
        torch.testing.assert_close(model(x, keep=torch.arange(16).expand(2, -1)), model(x), rtol=1e-5, atol=1e-5)
    # Its own init keeps the input's scale (the transformer's std-0.02 init would leave ~1% of it after three
    # layers, and tokens that carry their position only).
    big = VisionTransformer(img_size=64, patch_size=8, embed_dim=96, depth=1, num_heads=3, stem="conv")
    with torch.no_grad():
        ratio = float(big.patch_embed(torch.randn(8, 3, 64, 64)).std())
    assert 0.5 < ratio < 2.0
    with pytest.raises(ValueError, match="power-of-two.*model.patch_size"):
        VisionTransformer(img_size=48, patch_size=12, embed_dim=32, depth=1, num_heads=2, stem="conv")
