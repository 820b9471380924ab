"""`openjepa inspect text-attention`: attention maps of a TC-JEPA checkpoint, drawn per word."""

import torch

from openjepa.cli import main
from openjepa.config import load_config
from openjepa.eval.text_attention import text_attention_maps
from openjepa.methods.tcjepa import TCJEPA
from openjepa.models.text import HashTextEncoder
from openjepa.train.loop import train

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


def test_cli_draws_a_png(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENJEPA_CACHE", str(tmp_path / "cache"))
    train(load_config(None, TINY), tmp_path / "run")
    from openjepa.data.scenes import ScenesDataset

    ScenesDataset("val", 1, 32)[0]["image"].save(tmp_path / "scene.png")
    out = tmp_path / "att.png"
    code = main(["inspect", "text-attention", str(tmp_path / "run"), "--image", str(tmp_path / "scene.png"),
                 "--caption", "a small red star", "--png", str(out)])
    assert code == 0 and out.stat().st_size > 1000
    ijepa_run = tmp_path / "ijepa"
    train(load_config(None, [t for t in TINY if not t.startswith(("method", "text"))]), ijepa_run)
    assert main(["inspect", "text-attention", str(ijepa_run), "--image", str(tmp_path / "scene.png"),
                 "--caption", "x", "--png", str(out)]) == 2
