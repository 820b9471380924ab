"""The pixel decoder, patchify and the per-token normalized pixel targets."""

import pytest
import torch

from openjepa.models.decoder import NORM_EPS, PixelDecoder, patchify, pixel_targets
from openjepa.models.layers import PatchEmbed2D, PatchEmbed3D


def _embed_by_hand(patches: torch.Tensor, conv: torch.nn.Module) -> torch.Tensor:
    """The patch embedding as a matrix product on patchify's rows: the conv weight laid out like a row."""
    w = conv.weight  # [D, C, (t,) p, p]
    if w.ndim == 4:
        w = w.unsqueeze(2)
    rows = w.permute(0, 2, 3, 4, 1).reshape(w.shape[0], -1)  # (frame, row, column, channel), channel last
    return patches @ rows.T + conv.bias


@pytest.mark.parametrize("video", [False, True])
def test_patchify_puts_each_tubelet_in_the_token_the_encoder_makes_from_it(video):
    torch.manual_seed(0)
    if video:
        embed = PatchEmbed3D(patch_size=4, embed_dim=16, tubelet_size=2)
        x = torch.randn(2, 3, 6, 8, 12)  # 3x2x3 tubelets, non-square
        patches = patchify(x, 4, 2)
        assert patches.shape == (2, 3 * 2 * 3, 2 * 4 * 4 * 3)
    else:
        embed = PatchEmbed2D(patch_size=4, embed_dim=16)
        x = torch.randn(2, 3, 8, 12)
        patches = patchify(x, 4)
        assert patches.shape == (2, 2 * 3, 4 * 4 * 3)
    torch.testing.assert_close(_embed_by_hand(patches, embed.proj), embed(x), rtol=1e-5, atol=1e-5)


def test_patchify_layout_by_hand():
    x = torch.arange(2 * 3 * 4 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4, 4)  # B, C, T, H, W
    p = patchify(x, patch=2, tubelet=2)  # grid 2x2x2
    b, t, h, w = 1, 1, 0, 1  # the last time slice, top row, right column
    token = t * 4 + h * 2 + w
    expected = x[b, :, 2 * t : 2 * t + 2, 2 * h : 2 * h + 2, 2 * w : 2 * w + 2].permute(1, 2, 3, 0).reshape(-1)
    assert torch.equal(p[b, token], expected)


def test_patchify_rejects_sizes_that_do_not_divide():
    with pytest.raises(ValueError, match="not divisible"):
        patchify(torch.zeros(1, 3, 3, 8, 8), 4, 2)


def test_targets_are_normalized_per_tubelet_and_channel_like_a_direct_computation():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 8, 8) * 3 + 1
    x[1, :, :2, :4, :4] = 0.5  # a flat tubelet: std 0, so only the 1e-6 keeps it finite
    patches = patchify(x, 4, 2)  # grid 2x2x2
    idx = torch.tensor([[[0, 5, 7]], [[0, 3, 6]]])
    got = pixel_targets(patches, idx, norm=True)
    assert got.shape == (2, 1, 3, 2 * 4 * 4 * 3)
    for b in range(2):
        for k, token in enumerate(idx[b, 0].tolist()):
            t, h, w = token // 4, token // 2 % 2, token % 2
            block = x[b, :, 2 * t : 2 * t + 2, 4 * h : 4 * h + 4, 4 * w : 4 * w + 4]
            for c in range(3):
                v = block[c].reshape(-1)
                mean = sum(v.tolist()) / len(v)
                var = sum((e - mean) ** 2 for e in v.tolist()) / (len(v) - 1)  # unbiased, as VideoMAE
                want = (block[c] - mean) / (var**0.5 + NORM_EPS)
                row = got[b, 0, k].reshape(2, 4, 4, 3)[..., c]
                torch.testing.assert_close(row, want, rtol=1e-4, atol=1e-4)
    flat = got[1, 0, 0]
    assert torch.isfinite(flat).all() and flat.abs().max() == 0


def test_raw_targets_are_the_pixels():
    x = torch.randn(1, 3, 8, 8)
    patches = patchify(x, 4)
    idx = torch.tensor([[2, 1]])
    assert torch.equal(pixel_targets(patches, idx, norm=False), patches[0, [2, 1]].unsqueeze(0))


def test_decoder_shapes_and_every_target_block_in_one_sequence():
    torch.manual_seed(0)
    dec = PixelDecoder((2, 4, 4), embed_dim=24, pixels_per_token=2 * 4 * 4 * 3, dim=32, depth=1, num_heads=4,
                       num_mask_tokens=2).eval()
    ctx_idx = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    ctx = torch.randn(2, 4, 24)
    tgt = torch.tensor([[[8, 9], [10, 11]], [[12, 13], [14, 15]]])  # T=2 blocks of 2
    out = dec(ctx, ctx_idx, tgt, mask_index=1)
    assert out.shape == (2, 2, 2, 96)
    # One sequence per sample: decoding the blocks flattened as one block gives the same pixels (the blocks
    # see each other), unlike the JEPA predictor, where each block is its own sequence.
    flat = dec(ctx, ctx_idx, tgt.reshape(2, 1, 4), mask_index=1)
    torch.testing.assert_close(out.reshape(2, 4, 96), flat.reshape(2, 4, 96))
    alone = dec(ctx, ctx_idx, tgt[:, :1], mask_index=1)
    assert not torch.allclose(alone[:, 0], out[:, 0])
    # Each generator has its own learned mask token.
    assert dec.mask_tokens.shape == (2, 1, 32)
    assert not torch.allclose(dec(ctx, ctx_idx, tgt, mask_index=0), out)
