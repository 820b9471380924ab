"""V-Pixel / MAE: which pixels the loss sees, the loss value, 2-D and 3-D inputs, configuration errors."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from openjepa.config import ConfigError, load_config
from openjepa.data.pipeline import PretrainPipeline
from openjepa.methods import build_method, method_class
from openjepa.methods.vpixel import VPixel, reconstruction_loss
from openjepa.models.decoder import patchify, pixel_targets

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = [
    "model.arch=vit_pico", "model.patch_size=8", "data.image_size=32", "data.train_size=16", "data.batch_size=4",
    "data.num_workers=0", "mask.min_keep=2", "decoder.dim=32", "decoder.depth=1", "decoder.heads=4",
]
TINY_VIDEO = ["data.num_frames=4", "data.frame_step=1", "model.tubelet_size=2", "data.sprites.length=8"]


def _video_cfg(*extra):
    return load_config(CONFIGS / "vpixel" / "demo.yaml", [*TINY, *TINY_VIDEO, *extra])


def _batch(b=2, seed=0):
    """A clip batch on a 2x4x4 grid: context 0..7 (first time slice), targets 8..12; tokens 13..15 unused."""
    g = torch.Generator().manual_seed(seed)
    ctx = torch.arange(8).repeat(b, 1)
    tgt = torch.arange(8, 13).repeat(b, 1, 1)
    return {"video": torch.randn(b, 3, 4, 32, 32, generator=g), "masks": [{"ctx_idx": ctx, "tgt_idx": tgt}]}


def _set_token(x, token, value):
    """Writes ``value`` into every pixel of one tubelet of a 2x4x4 grid of 2x8x8 tubelets."""
    t, h, w = token // 16, token // 4 % 4, token % 4
    x[:, :, 2 * t : 2 * t + 2, 8 * h : 8 * h + 8, 8 * w : 8 * w + 8] = value


def test_loss_sees_only_the_masked_tubelets():
    torch.manual_seed(0)
    method = VPixel(_video_cfg("mask.kind=tube"), 10).eval()
    batch = _batch()
    with torch.no_grad():
        base, _ = method(batch, 0)
        unused = {**batch, "video": batch["video"].clone()}
        _set_token(unused["video"], 14, 7.0)  # neither context nor target
        same, _ = method(unused, 0)
        masked = {**batch, "video": batch["video"].clone()}
        _set_token(masked["video"], 9, torch.randn(3, 2, 8, 8))  # a target: only its target pixels change
        moved, _ = method(masked, 0)
    assert torch.equal(base, same)
    assert not torch.equal(base, moved)


def test_reconstruction_loss_ignores_the_pixels_of_unmasked_tokens():
    torch.manual_seed(0)
    patches = torch.randn(2, 16, 96)
    tgt = torch.tensor([[[1, 4, 9]], [[0, 2, 3]]])
    pred = torch.randn(2, 1, 3, 96)
    loss = reconstruction_loss(pred, patches, tgt, norm=True)
    other = patches.clone()
    keep = torch.ones(2, 16, dtype=torch.bool)
    keep[0, [1, 4, 9]] = False
    keep[1, [0, 2, 3]] = False
    other[keep] = torch.randn(int(keep.sum()), 96) * 5
    assert torch.equal(loss, reconstruction_loss(pred, other, tgt, norm=True))
    other[0, 4] += 1.0  # a shift of a whole token: the per-channel normalization removes it
    torch.testing.assert_close(loss, reconstruction_loss(pred, other, tgt, norm=True))
    other[0, 4, :6] += 1.0  # a change of its contents: seen
    assert not torch.equal(loss, reconstruction_loss(pred, other, tgt, norm=True))


def test_loss_is_the_mean_squared_error_averaged_over_the_generators():
    torch.manual_seed(0)
    cfg = _video_cfg()  # multiblock3d: two generators, two mask tokens
    method = VPixel(cfg, 10).eval()
    assert method.decoder.mask_tokens.shape[0] == 2
    batch = _batch()
    second = {"ctx_idx": torch.arange(4, 12).repeat(2, 1), "tgt_idx": torch.tensor([0, 1, 12, 15]).repeat(2, 1, 1)}
    batch["masks"].append(second)
    with torch.no_grad():
        loss, metrics = method(batch, 0)
        patches = patchify(batch["video"], 8, 2)
        want = []
        for i, m in enumerate(batch["masks"]):
            z = method.encoder(batch["video"], keep=m["ctx_idx"])
            pred = method.decoder(z, m["ctx_idx"], m["tgt_idx"], mask_index=i)
            assert pred.shape == (2, 1, m["tgt_idx"].shape[2], 2 * 8 * 8 * 3)
            want.append(F.mse_loss(pred, pixel_targets(patches, m["tgt_idx"])))
    torch.testing.assert_close(loss, (want[0] + want[1]) / 2)
    assert not metrics["loss"].requires_grad


@pytest.mark.parametrize("kind", ["multiblock", "tube"])
def test_mae_on_images_from_overrides(kind):
    """V-Pixel on images is MAE: multi-block masks or random patches, from the I-JEPA demo's settings."""
    over = ["method=vpixel", f"mask.kind={kind}", "mask.tube_ratio=0.75", *TINY]
    cfg = load_config(CONFIGS / "ijepa" / "demo.yaml", over)
    pipe = PretrainPipeline(cfg, method_class("vpixel").data_needs(cfg))
    batch = next(iter(pipe.loader(0, 1)))
    torch.manual_seed(0)
    method = build_method(cfg, 10)
    loss, _ = method(batch, 0)
    assert torch.isfinite(loss)
    loss.backward()
    assert method.encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert method.decoder.proj.out_features == 8 * 8 * 3  # the pixels of an image patch
    assert method.encoder_for_eval() is method.encoder


def test_configuration_errors_name_the_key_and_the_fix():
    with pytest.raises(ConfigError, match=r"train.loss=l2"):
        VPixel(_video_cfg("train.loss=l1"), 10)
    VPixel.check_config(_video_cfg("train.loss=auto"))  # auto: V-Pixel's own loss, MSE
    with pytest.raises(ConfigError, match=r"decoder.dim=30 .*decoder.heads=4"):
        VPixel(_video_cfg("decoder.dim=30"), 10)
