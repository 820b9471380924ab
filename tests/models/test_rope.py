"""Rotary positions: V-JEPA 2's formula, the relative-position property, kept subsets, encoder and predictor."""

import math

import pytest
import torch
import torch.nn.functional as F

from openjepa.models.layers import gather_tokens
from openjepa.models.predictor import Predictor
from openjepa.models.rope import RotaryEmbedding, apply_rope, axis_dim, grid_coordinates
from openjepa.models.vit import VisionTransformer


def direct_rotation(x: torch.Tensor, coords: list[tuple[int, int, int]], variant: str) -> torch.Tensor:
    """V-JEPA 2's rotation written channel by channel (float64), independently of openjepa.models.rope.

    Per head: three segments of d = 2 * ((head_dim // 3) // 2) channels for (t, h, w), the rest untouched.
    Channel j of a segment uses frequency 10000 ** (-f / (d/2)) with f = j // 2 (a true rotation of the pair
    (2i, 2i+1)) or f = j mod d/2 (the released V-JEPA 2 tiling). Its partner is j + 1 (sign -) for even j and
    j - 1 (sign +) for odd j.
    """
    n, head_dim = x.shape
    d = 2 * ((head_dim // 3) // 2)
    half = d // 2
    out = x.double().clone()
    src = x.double()
    for token in range(n):
        for axis in range(3):
            for j in range(d):
                c = axis * d + j
                f = j // 2 if variant == "rope" else j % half
                angle = coords[token][axis] * 10000.0 ** (-f / half)
                partner, sign = (c + 1, -1.0) if j % 2 == 0 else (c - 1, 1.0)
                out[token, c] = src[token, c] * math.cos(angle) + sign * src[token, partner] * math.sin(angle)
    return out


def rotate(x: torch.Tensor, index: torch.Tensor, grid: tuple[int, ...], variant: str = "rope") -> torch.Tensor:
    """openjepa's rotation of ``x: [N, head_dim]`` (one head) at raster indices ``index: [N]``."""
    cos, sin = RotaryEmbedding(x.shape[-1], variant)(index, grid)
    return apply_rope(x[None, None], cos, sin)[0, 0]


def raster(coords: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    t, h, w = coords.unbind(-1)
    return (t * grid[1] + h) * grid[2] + w


def test_head_split_and_coordinates():
    assert [axis_dim(hd) for hd in (64, 80, 32, 16)] == [20, 26, 10, 4]  # 64 -> 20+20+20, 4 unrotated
    coords = grid_coordinates(torch.arange(24), (2, 3, 4))
    assert coords[13].tolist() == [1.0, 0.0, 1.0]  # 13 = 1 * 12 + 0 * 4 + 1
    assert coords[23].tolist() == [1.0, 2.0, 3.0]
    # A 2-D grid is one frame: t = 0, so image tokens leave the time channels alone.
    assert grid_coordinates(torch.tensor([7]), (3, 4)).tolist() == [[0.0, 1.0, 3.0]]


@pytest.mark.parametrize("variant", ["rope", "rope_vjepa2"])
@pytest.mark.parametrize("head_dim", [32, 64])
def test_equals_direct_formula(variant, head_dim):
    torch.manual_seed(0)
    grid = (2, 3, 4)
    x = torch.randn(24, head_dim)
    coords = [tuple(int(v) for v in c) for c in grid_coordinates(torch.arange(24), grid)]
    expected = direct_rotation(x, coords, variant).float()
    torch.testing.assert_close(rotate(x, torch.arange(24), grid, variant), expected, rtol=1e-5, atol=1e-5)
    # Tail channels beyond 3 * d are not rotated at all.
    tail = 3 * axis_dim(head_dim)
    assert torch.equal(rotate(x, torch.arange(24), grid, variant)[:, tail:], x[:, tail:])


@pytest.mark.parametrize(
    "offset", [(0, 0, 3), (0, 2, -1), (1, 2, 1)], ids=["1d-offset", "2d-offset", "3d-offset"]
)
def test_scores_depend_only_on_offsets(offset):
    torch.manual_seed(0)
    grid = (8, 8, 8)
    q, k = torch.randn(10, 64), torch.randn(10, 64)
    coords = torch.randint(1, 4, (10, 3))
    shifted = coords + torch.tensor(offset)  # still inside the grid
    scores = rotate(q, raster(coords, grid), grid) @ rotate(k, raster(coords, grid), grid).T
    moved = rotate(q, raster(shifted, grid), grid) @ rotate(k, raster(shifted, grid), grid).T
    torch.testing.assert_close(moved, scores, rtol=1e-5, atol=1e-4)
    # ... and they do depend on the offsets: move only the keys and the scores change.
    keys_moved = rotate(q, raster(coords, grid), grid) @ rotate(k, raster(shifted, grid), grid).T
    assert (keys_moved - scores).abs().max() > 0.1


def test_rotation_preserves_norms():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 30, 48)
    cos, sin = RotaryEmbedding(48)(torch.randint(0, 5 * 6 * 7, (2, 30)), (5, 6, 7))
    torch.testing.assert_close(apply_rope(x, cos, sin).norm(dim=-1), x.norm(dim=-1))


def test_released_vjepa2_variant_is_not_a_rotation():
    # Why two variants exist: the released V-JEPA 2 weights need frequencies tiled across each pair, which
    # changes norms and makes scores depend on absolute positions. openjepa trains with the true rotation.
    torch.manual_seed(0)
    grid = (6, 6, 6)
    q, k = torch.randn(10, 64), torch.randn(10, 64)
    coords = torch.randint(1, 4, (10, 3))
    idx, idx2 = raster(coords, grid), raster(coords + torch.tensor([1, 1, 1]), grid)
    rq = rotate(q, idx, grid, "rope_vjepa2")
    assert (rq.norm(dim=-1) - q.norm(dim=-1)).abs().max() > 1e-2
    scores = rq @ rotate(k, idx, grid, "rope_vjepa2").T
    moved = rotate(q, idx2, grid, "rope_vjepa2") @ rotate(k, idx2, grid, "rope_vjepa2").T
    assert (moved - scores).abs().max() > 1e-2


def manual_encoder(model: VisionTransformer, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """A one-block rotary encoder computed by hand on the kept tokens (softmax attention, direct rotation)."""
    grid = model.grid_size
    (blk,) = model.blocks
    heads, hd = model.num_heads, model.embed_dim // model.num_heads
    tokens = gather_tokens(model.patch_embed(x), keep)
    outs = []
    for b in range(x.shape[0]):
        coords = [tuple(int(v) for v in c) for c in grid_coordinates(keep[b], grid)]
        h = blk.norm1(tokens[b])
        q, k, v = blk.attn.qkv(h).reshape(len(coords), 3, heads, hd).unbind(1)
        mixed = []
        for head in range(heads):
            qr = direct_rotation(q[:, head], coords, model.pos).float()
            kr = direct_rotation(k[:, head], coords, model.pos).float()
            attn = torch.softmax(qr @ kr.T / math.sqrt(hd), dim=-1)
            mixed.append(attn @ v[:, head])
        y = tokens[b] + blk.attn.proj(torch.cat(mixed, dim=-1))
        y = y + blk.mlp.fc2(F.gelu(blk.mlp.fc1(blk.norm2(y))))
        outs.append(model.norm(y))
    return torch.stack(outs)


@pytest.mark.parametrize("variant", ["rope", "rope_vjepa2"])
@pytest.mark.parametrize("video", [False, True], ids=["image", "video"])
def test_kept_tokens_attend_among_themselves_at_their_own_positions(variant, video):
    torch.manual_seed(0)
    frames = dict(num_frames=4, tubelet_size=2) if video else {}
    model = VisionTransformer(img_size=16, patch_size=4, embed_dim=64, depth=1, num_heads=2, pos=variant, **frames)
    model.eval()
    x = torch.randn(2, 3, 4, 16, 16) if video else torch.randn(2, 3, 16, 16)
    keep = torch.stack([torch.randperm(model.num_patches)[:7] for _ in range(2)])
    with torch.no_grad():
        torch.testing.assert_close(model(x, keep=keep), manual_encoder(model, x, keep), rtol=1e-5, atol=1e-5)


def test_kept_block_equals_the_cropped_input():
    # Scores depend only on offsets, so a kept block of tokens sees exactly what the same pixels, cropped
    # and encoded on their own, see: true for rotary positions, false for an absolute table.
    torch.manual_seed(0)
    model = VisionTransformer(
        img_size=16, patch_size=4, embed_dim=64, depth=2, num_heads=2, pos="rope", num_frames=4, tubelet_size=2
    ).eval()
    x = torch.randn(2, 3, 4, 16, 16)
    t, h, w = torch.meshgrid(torch.tensor([1]), torch.arange(1, 3), torch.arange(1, 4), indexing="ij")
    keep = raster(torch.stack([t, h, w], -1).reshape(-1, 3), model.grid_size).expand(2, -1)
    crop = x[:, :, 2:4, 4:12, 4:16]  # tubelet 1, patch rows 1-2, patch columns 1-3
    with torch.no_grad():
        torch.testing.assert_close(model(x, keep=keep), model(crop), rtol=1e-5, atol=1e-5)
        sincos = VisionTransformer(
            img_size=16, patch_size=4, embed_dim=64, depth=2, num_heads=2, num_frames=4, tubelet_size=2
        ).eval()
        assert (sincos(x, keep=keep) - sincos(crop)).abs().max() > 1e-2


@pytest.mark.parametrize("video", [False, True], ids=["image", "video"])
def test_rope_encoder_and_predictor_with_keep(video):
    torch.manual_seed(0)
    frames = dict(num_frames=4, tubelet_size=2) if video else {}
    enc = VisionTransformer(img_size=16, patch_size=4, embed_dim=64, depth=2, num_heads=2, pos="rope", **frames)
    pred = Predictor(enc.grid_size, 64, pred_dim=48, depth=2, num_heads=2, num_mask_tokens=2, pos="rope")
    enc.eval(), pred.eval()
    with torch.no_grad():  # sharper attention than at initialization, so positions visibly matter
        for blk in pred.blocks:
            blk.attn.qkv.weight.mul_(30)
    assert "pos_embed" not in enc.state_dict() and enc.config()["pos"] == "rope"
    n = enc.num_patches
    x = torch.randn(2, 3, 4, 16, 16) if video else torch.randn(2, 3, 16, 16)
    perm = torch.stack([torch.randperm(n) for _ in range(2)])
    ctx_idx, tgt_idx = perm[:, :6], perm[:, 6:12].reshape(2, 2, 3)
    with torch.no_grad():
        ctx = enc(x, keep=ctx_idx)
        out = pred(ctx, ctx_idx, tgt_idx, mask_index=1)
        assert ctx.shape == (2, 6, 64) and out.shape == (2, 2, 3, 64) and torch.isfinite(out).all()
        # Context tokens are a set: shuffling them with their indices changes nothing.
        shuffle = torch.randperm(6)
        torch.testing.assert_close(pred(ctx[:, shuffle], ctx_idx[:, shuffle], tgt_idx, mask_index=1), out)
        # Mask tokens are identical but for their positions: predictions follow the target positions.
        swapped = pred(ctx, ctx_idx, tgt_idx.flip(-1), mask_index=1)
        torch.testing.assert_close(swapped, out.flip(2), rtol=1e-5, atol=1e-5)
        assert (out[:, :, 0] - out[:, :, 1]).abs().max() > 1e-2
        # The positions of the context tokens matter too.
        moved = pred(ctx, ctx_idx.roll(1, dims=1), tgt_idx, mask_index=1)
        assert (moved - out).abs().max() > 1e-2


def test_predictor_prefix_tokens_are_not_rotated():
    # A conditioner's prefix (caption tokens) has no grid position: identity rotation, and it takes part.
    class Prefix(torch.nn.Module):
        def __init__(self, tokens):
            super().__init__()
            self.tokens = tokens

        def prepare(self, cond, repeats):
            return cond.repeat_interleave(repeats, dim=0)

        def prefix(self, state):
            return state, torch.ones(state.shape[:2], dtype=torch.bool)

        def forward(self, layer, tokens, state):
            return tokens

    torch.manual_seed(0)
    pred = Predictor((4, 4), 32, pred_dim=48, depth=1, num_heads=2, pos="rope", conditioner=Prefix(None)).eval()
    ctx_idx, tgt_idx = torch.arange(5).expand(2, -1), torch.arange(5, 9).reshape(1, 2, 2).expand(2, -1, -1)
    ctx = torch.randn(2, 5, 32)
    with torch.no_grad():
        a = pred(ctx, ctx_idx, tgt_idx, cond=torch.randn(2, 3, 48))
        b = pred(ctx, ctx_idx, tgt_idx, cond=torch.randn(2, 3, 48))
    assert a.shape == (2, 2, 2, 32) and (a - b).abs().max() > 1e-4


def test_build_predictor_follows_the_encoder():
    from openjepa.config import Config
    from openjepa.models.build import build_encoder, build_predictor

    cfg = Config()
    cfg.model.arch, cfg.model.patch_size, cfg.data.image_size = "vit_pico", 8, 32
    cfg.model.pred_dim, cfg.model.pred_depth = 48, 1
    for pos in ("rope", "sincos"):
        cfg.model.pos = pos
        encoder = build_encoder(cfg)
        predictor = build_predictor(cfg, encoder)
        assert (encoder.pos, predictor.pos) == (pos, pos)
        assert (predictor.rope is None) == (pos == "sincos")


def test_rope_needs_a_usable_head_size():
    with pytest.raises(ValueError, match="even head size"):
        VisionTransformer(img_size=16, patch_size=4, embed_dim=8, depth=1, num_heads=2, pos="rope")
    with pytest.raises(ValueError, match="pos='rotary'"):
        VisionTransformer(img_size=16, patch_size=4, embed_dim=64, depth=1, num_heads=2, pos="rotary")
