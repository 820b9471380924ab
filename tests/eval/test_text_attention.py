"""`openjepa inspect text-attention`: attention maps of a TC-JEPA checkpoint, drawn per word."""

import math

import matplotlib
import matplotlib.axes
import numpy as np
import pytest
import torch
from PIL import Image

from openjepa.cli import main
from openjepa.config import load_config
from openjepa.eval.text_attention import (
    MIN_COLOR_RATIO,
    contrast_to_uniform,
    draw_text_attention,
    max_ratio_over_uniform,
    text_attention_maps,
    uniformity_note,
)
from openjepa.methods.tcjepa import TCJEPA
from openjepa.models.text import HashTextEncoder

TINY = [
    "method=tcjepa", "text.encoder=hash", "model.arch=vit_pico", "model.patch_size=8", "model.pred_dim=48",
    "model.pred_depth=2", "data.image_size=32", "data.train_size=32", "data.batch_size=8", "mask.min_keep=2",
    "mask.target_scale=[0.1,0.2]", "train.epochs=1", "train.max_steps=2", "train.rankme_every=0",
    "train.progress=false", "train.tensorboard=false", "eval.after_pretrain=false",
]


def test_maps_are_distributions_over_the_real_words():
    torch.manual_seed(0)
    method = TCJEPA(load_config(None, [*TINY, "text.dim=64"]), 10).eval()
    enc = HashTextEncoder(dim=64)
    emb, mask = enc.encode(["a red star on the left"])
    padded = torch.cat([emb[0], torch.zeros(3, 64)])  # padding words must receive no attention
    pmask = torch.cat([mask[0], torch.zeros(3, dtype=torch.bool)])
    maps = text_attention_maps(method, torch.randn(3, 32, 32), padded, pmask)
    assert maps.shape == (2, 9, 4, 4)  # layers, words (6 real + 3 padding), grid
    torch.testing.assert_close(maps.sum(1), torch.ones(2, 4, 4))
    assert torch.all(maps[:, 6:] == 0)


def test_cli_draws_a_png(tmp_path, monkeypatch, capsys):
    # Imported here: the drawing tests below need neither the training loop nor a checkpoint.
    from openjepa.data.scenes import ScenesDataset
    from openjepa.train.loop import train

    monkeypatch.setenv("OPENJEPA_CACHE", str(tmp_path / "cache"))
    train(load_config(None, TINY), tmp_path / "run")

    ScenesDataset("val", 1, 32)[0]["image"].save(tmp_path / "scene.png")
    out = tmp_path / "att.png"
    code = main(["inspect", "text-attention", str(tmp_path / "run"), "--image", str(tmp_path / "scene.png"),
                 "--caption", "a small red star", "--png", str(out)])
    assert code == 0 and out.stat().st_size > 1000
    assert "x uniform" in capsys.readouterr().err  # the one-line summary states the max ratio over uniform
    ijepa_run = tmp_path / "ijepa"
    train(load_config(None, [t for t in TINY if not t.startswith(("method", "text"))]), ijepa_run)
    assert main(["inspect", "text-attention", str(ijepa_run), "--image", str(tmp_path / "scene.png"),
                 "--caption", "x", "--png", str(out)]) == 2


# ----------------------------------------------------------------------------- the drawing, on synthetic maps

WORDS = ["a", "red", "star", "left"]


def _uniform_maps(layers: int = 2, words: int = 4, grid: int = 4) -> torch.Tensor:
    return torch.full((layers, words, grid, grid), 1.0 / words)


def _peaked_maps() -> torch.Tensor:
    """Every patch gives "star" 0.7 (2.8x uniform) and 0.1 to each other word; patch (0, 0) is uniform."""
    maps = torch.full((2, 4, 4, 4), 0.1)
    maps[:, 2] = 0.7
    maps[:, :, 0, 0] = 0.25
    return maps


def test_contrast_is_zero_for_uniform_attention():
    assert torch.equal(contrast_to_uniform(_uniform_maps()), torch.zeros(2, 4, 4, 4))
    assert max_ratio_over_uniform(_uniform_maps(words=7)) == pytest.approx(1.0)


def test_contrast_of_peaked_attention_is_the_log_ratio_to_uniform():
    contrast = contrast_to_uniform(_peaked_maps())
    torch.testing.assert_close(contrast[:, 2, 1:, 1:], torch.full((2, 3, 3), math.log2(0.7 * 4)))
    torch.testing.assert_close(contrast[:, 0, 1:, 1:], torch.full((2, 3, 3), math.log2(0.1 * 4)))
    assert torch.all(contrast[:, :, 0, 0] == 0)
    assert max_ratio_over_uniform(_peaked_maps()) == pytest.approx(2.8)
    # The ratio is taken after the mean over layers: a peaked layer and a uniform one average out.
    mixed = torch.cat([_peaked_maps()[:1], _uniform_maps(layers=1)])
    assert max_ratio_over_uniform(mixed) == pytest.approx((0.7 + 0.25) / 2 * 4)
    # Zero attention (a padding word) stays finite.
    assert torch.isfinite(contrast_to_uniform(torch.tensor([[[1.0]], [[0.0]]]))).all()


def test_title_calls_near_uniform_maps_so():
    assert "near uniform" in uniformity_note(1.07) and "1.07x" in uniformity_note(1.07)
    assert "near uniform" not in uniformity_note(2.8) and "2.80x" in uniformity_note(2.8)


@pytest.fixture
def plotted(monkeypatch) -> list[dict]:
    """Records the contrast arrays the drawing hands to imshow (the overlays, not the plain image)."""
    calls: list[dict] = []
    original = matplotlib.axes.Axes.imshow

    def recording(self, data, *args, **kwargs):
        if kwargs.get("cmap") is not None:
            calls.append({"data": np.asarray(data), **kwargs})
        return original(self, data, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "imshow", recording)
    return calls


def test_draw_plots_the_contrast_of_a_peaked_map(tmp_path, plotted):
    image = np.full((32, 32, 3), 128, dtype=np.uint8)
    out = draw_text_attention(image, WORDS, _peaked_maps(), tmp_path / "sub" / "peaked.png", "scene.png")
    assert out.exists() and Image.open(out).size[0] > 400
    assert len(plotted) == len(WORDS)
    expected = contrast_to_uniform(_peaked_maps().mean(0)).numpy()
    for k, call in enumerate(plotted):
        np.testing.assert_allclose(call["data"], expected[k], rtol=1e-6)
        # One diverging scale for all panels, centred on uniform and wide enough for the peak.
        assert call["cmap"] == "RdBu_r" and call["vmin"] == -call["vmax"]
        assert call["vmax"] == pytest.approx(math.log2(2.8))
        assert call["extent"] == (0, 32, 32, 0)  # the 4x4 grid stretched over the whole image


def test_draw_keeps_a_uniform_map_pale(tmp_path, plotted):
    image = np.full((48, 48, 3), 128, dtype=np.uint8)
    out = draw_text_attention(image, WORDS[:3], _uniform_maps(words=3, grid=3), tmp_path / "uniform.png")
    assert out.exists() and out.stat().st_size > 1000
    assert all(np.allclose(call["data"], 0.0, atol=1e-6) for call in plotted)  # 1/3 is not exact in float
    # Noise around uniform is not stretched to full colour: the scale keeps its floor of 0.5x..2x.
    assert all(call["vmax"] == pytest.approx(math.log2(MIN_COLOR_RATIO)) for call in plotted)


def test_draw_rejects_maps_that_do_not_match_the_words(tmp_path):
    with pytest.raises(ValueError, match="3 attention maps for 4 tokens"):
        draw_text_attention(np.zeros((32, 32, 3), np.uint8), WORDS, _uniform_maps(words=3), tmp_path / "x.png")


def test_color_ratio_one_stretches_the_scale_to_a_weak_pattern(tmp_path, plotted):
    maps = _uniform_maps()
    maps[:, 1, 0, 0], maps[:, 0, 0, 0] = 0.3, 0.2  # "red" at 1.2x uniform on one patch, "a" at 0.8x
    draw_text_attention(np.zeros((32, 32, 3), np.uint8), WORDS, maps, tmp_path / "weak.png", min_color_ratio=1.0)
    # The farthest ratio from uniform either way sets the range: 0.8x is farther than 1.2x on a log scale.
    assert all(call["vmax"] == pytest.approx(-math.log2(0.8)) for call in plotted)
    with pytest.raises(ValueError, match="min_color_ratio"):
        draw_text_attention(np.zeros((32, 32, 3), np.uint8), WORDS, maps, tmp_path / "x.png", min_color_ratio=0.5)
