"""Reference rows: raw-pixel features (shapes and values), random init, the supervised ceiling and its cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from openjepa.config import Config
from openjepa.eval import baselines
from openjepa.eval.baselines import (
    DEFAULT_CEILING_STEPS,
    CeilingSpec,
    PixelEncoder,
    ceiling_head_accuracy,
    pixel_encoder_like,
    random_encoder_like,
    supervised_ceiling,
)
from openjepa.eval.features import extract_features
from openjepa.eval.report import resolve_ceiling
from openjepa.models.pos_embed import position_table
from openjepa.models.vit import VisionTransformer


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny models: extra OpenMP threads only add contention on a shared CPU.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_encoder(seed: int = 0, **kwargs) -> VisionTransformer:
    torch.manual_seed(seed)
    return VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, **kwargs)


class Squares(Dataset):
    """A red (class 0) or blue (class 1) square at a random place on grey: an easy, fingerprintable task."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self.tasks = {"color": 2}

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng([self.seed, i])
        label = int(rng.integers(2))
        img = np.full((32, 32, 3), 128, np.uint8)
        x, y = rng.integers(0, 20, size=2)
        img[y : y + 12, x : x + 12] = (220, 30, 30) if label == 0 else (30, 30, 220)
        return {"image": Image.fromarray(img), "labels": {"color": label}, "index": i}

    def fingerprint(self) -> dict:
        return {"n": self.n, "seed": self.seed}


def test_pixel_tokens_are_area_averaged_cells_plus_a_position_code():
    pix = PixelEncoder(img_size=32, patch_size=8, cell=2)
    x = torch.randn(3, 3, 32, 32)
    tokens = pix(x)
    assert pix.grid_size == (4, 4) and tokens.shape == (3, 16, 3 * 2 * 2 + 12) == (3, 16, pix.embed_dim)
    small = F.interpolate(x, size=(8, 8), mode="area")  # 4x4 tokens of 2x2 pixels
    # Token (row 1, column 2) holds the 2x2 pixels of that cell, channel-major.
    expected = small[:, :, 2:4, 4:6].reshape(3, -1)
    torch.testing.assert_close(tokens[:, 1 * 4 + 2, :12], expected)
    torch.testing.assert_close(tokens[0, :, 12:], position_table(12, (4, 4)))
    # The pooled features are the downsampled image (a permutation of its pixels), without positions.
    pooled = pix.pool(tokens)
    assert pooled.shape == (3, 16 * 12)
    torch.testing.assert_close(pooled.sort(dim=1).values, small.reshape(3, -1).sort(dim=1).values)


def test_constant_image_gives_constant_pixel_tokens():
    pix = PixelEncoder(img_size=16, patch_size=8, cell=3)
    x = torch.ones(1, 3, 16, 16) * torch.tensor([0.5, -1.0, 2.0]).view(1, 3, 1, 1)
    tokens = pix(x)[0, :, : pix.pixel_dim].reshape(4, 3, 9)
    torch.testing.assert_close(tokens, torch.tensor([0.5, -1.0, 2.0]).view(1, 3, 1).expand(4, 3, 9))


def test_pixel_encoder_for_video_averages_tubelet_frames():
    pix = PixelEncoder(img_size=16, patch_size=8, cell=2, num_frames=4, tubelet_size=2)
    x = torch.randn(2, 3, 4, 16, 16)
    tokens = pix(x)
    assert pix.grid_size == (2, 2, 2) and tokens.shape == (2, 8, 12 + 12)
    small = F.adaptive_avg_pool3d(x, (2, 4, 4))
    torch.testing.assert_close(tokens[:, 0, :12], small[:, :, 0, 0:2, 0:2].reshape(2, -1))


def test_pixel_features_through_the_extractor():
    enc = tiny_encoder()
    pix = pixel_encoder_like(enc, cell=4)
    feats = extract_features(pix, Squares(6, 0), batch_size=4, device="cpu", progress=False, pool=pix.pool)
    assert feats["pooled"].shape == (6, 16 * 3 * 16) and feats["patches"].shape == (6, 16, 48 + 12)


def test_random_encoder_like_is_seeded_and_keeps_the_architecture():
    enc = tiny_encoder()
    torch.manual_seed(42)
    state = torch.get_rng_state()
    a, b, c = random_encoder_like(enc, 0), random_encoder_like(enc, 0), random_encoder_like(enc, 1)
    assert torch.equal(torch.get_rng_state(), state)
    assert a.config() == enc.config()
    wa, wb, wc = (m.blocks[0].attn.qkv.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert not torch.equal(wa, enc.blocks[0].attn.qkv.weight)


def test_ceiling_spec_warms_up_then_decays_to_zero_on_the_cosine_schedule():
    spec = CeilingSpec(steps=100, lr=1e-3, warmup=0.1, schedule="cosine")
    assert spec.lr_at(0) == pytest.approx(1e-4)
    assert spec.lr_at(9) == pytest.approx(1e-3)
    assert spec.lr_at(10) == pytest.approx(1e-3)
    assert spec.lr_at(55) == pytest.approx(0.5e-3, rel=0.05)
    assert spec.lr_at(99) < 2e-6


def test_ceiling_spec_holds_the_peak_on_the_constant_schedule_the_default():
    spec = CeilingSpec(steps=100, lr=1e-3, warmup=0.1)
    assert spec.schedule == "constant"
    assert spec.lr_at(0) == pytest.approx(1e-4)  # the same warmup
    assert spec.lr_at(9) == pytest.approx(1e-3)
    assert [spec.lr_at(s) for s in (10, 55, 99)] == [1e-3, 1e-3, 1e-3]


def test_ceiling_spec_names_the_field_of_an_unknown_schedule():
    with pytest.raises(ValueError, match="eval.ceiling_schedule"):
        CeilingSpec(schedule="linear")


@pytest.mark.parametrize("pool", ["max", "mean"])
def test_supervised_ceiling_learns_an_easy_task_and_is_cached(tmp_path, monkeypatch, pool):
    enc = tiny_encoder()
    train, val = Squares(96, 0), Squares(48, 1)
    spec = CeilingSpec(steps=60, batch_size=16, lr=3e-3, seed=0, pool=pool)
    ceiling = supervised_ceiling(enc, train, {"color": 2}, spec, "cpu", cache_root=tmp_path, progress=False)
    assert not ceiling.cached and ceiling.info["cache_key"]
    assert ceiling.encoder.config() == enc.config()
    assert ceiling.heads.pool == pool
    feats = extract_features(ceiling.encoder, val, batch_size=16, device="cpu", progress=False,
                             patch_tokens=pool == "max")
    acc = ceiling_head_accuracy(ceiling, feats)
    assert acc["color"] >= 0.9  # chance is about 0.5
    assert ceiling.info["train_acc"]["color"] >= 0.8

    # Same architecture, data, steps and seed: read from the cache, no training.
    def no_training(*args, **kwargs):
        raise AssertionError("the cached ceiling was trained again")

    monkeypatch.setattr(baselines, "train_supervised", no_training)
    again = supervised_ceiling(enc, train, {"color": 2}, spec, "cpu", cache_root=tmp_path, progress=False)
    assert again.cached
    for (name, p), q in zip(ceiling.encoder.state_dict().items(), again.encoder.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    for (name, p), q in zip(ceiling.heads.state_dict().items(), again.heads.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    # Another seed (or step count) is another ceiling.
    with pytest.raises(AssertionError, match="trained again"):
        other = CeilingSpec(steps=60, batch_size=16, lr=3e-3, seed=1, pool=pool)
        supervised_ceiling(enc, train, {"color": 2}, other, "cpu", cache_root=tmp_path, progress=False)


def test_ceiling_steps_follow_the_documented_precedence():
    cfg = Config()
    cfg.data.batch_size, cfg.optim.accum_steps = 32, 2
    assert resolve_ceiling(cfg, None, None, None, 0).steps == DEFAULT_CEILING_STEPS
    assert resolve_ceiling(cfg, None, None, 576, 0).steps == 576  # the pretraining's steps
    assert resolve_ceiling(cfg, None, 50, 576, 0).steps == 50  # --ceiling-steps wins
    spec = resolve_ceiling(cfg, True, None, 576, 3)
    assert spec.batch_size == 64 and spec.seed == 3 and spec.schedule == "constant"
    cfg.eval.ceiling_schedule = "cosine"
    assert resolve_ceiling(cfg, True, None, 576, 0).schedule == "cosine"
    assert resolve_ceiling(cfg, False, None, 576, 0) is None


def test_ceiling_refuses_zero_steps():
    with pytest.raises(ValueError, match="steps=0"):
        baselines.train_supervised(tiny_encoder(), Squares(4, 0), {"color": 2}, CeilingSpec(steps=0), "cpu")


class CountingSquares(Squares):
    """Squares that count how often each item is read."""

    def __init__(self, n: int, seed: int, broken: int | None = None):
        super().__init__(n, seed)
        self.reads = 0
        self.broken = broken

    def __getitem__(self, i: int) -> dict:
        self.reads += 1
        if i == self.broken:
            raise FileNotFoundError(f"item {i}: no such file")
        return super().__getitem__(i)


def _train(data: Dataset, steps: int = 7) -> baselines.Ceiling:
    spec = CeilingSpec(steps=steps, batch_size=4, lr=3e-3, seed=0)
    return baselines.train_supervised(tiny_encoder(), data, {"color": 2}, spec, "cpu", progress=False)


def test_ceiling_inputs_prepared_once_train_exactly_the_streamed_ceiling(monkeypatch):
    # 10 items, batches of 4 (the last 2 dropped): 7 steps cross three epochs, so the epoch order matters.
    kept = CountingSquares(10, 0)
    in_memory = _train(kept)
    assert kept.reads == 10  # read once, not once per epoch
    monkeypatch.setattr(baselines, "MATERIALIZE_MAX_BYTES", 0)  # force streaming
    streamed_data = CountingSquares(10, 0)
    streamed = _train(streamed_data)
    assert streamed_data.reads == 7 * 4  # every epoch reads its batches again
    for (name, p), q in zip(in_memory.encoder.state_dict().items(), streamed.encoder.state_dict().values(),
                            strict=True):
        assert torch.equal(p, q), name
    assert torch.equal(in_memory.heads.heads["color"].weight, streamed.heads.heads["color"].weight)
    assert in_memory.info["final_loss"] == streamed.info["final_loss"]


def test_ceiling_streams_when_the_inputs_do_not_fit_or_an_item_is_unreadable(monkeypatch):
    broken = CountingSquares(10, 0, broken=3)
    ceiling = _train(broken)
    assert ceiling.info["skipped"] > 0  # skipped and counted, as when streaming
    assert broken.reads > 10
    monkeypatch.setattr(baselines, "MATERIALIZE_MAX_BYTES", 10 * 3 * 32 * 32 * 4 - 1)  # one float short
    too_big = CountingSquares(10, 0)
    _train(too_big)
    assert too_big.reads > 10
    # Less than one epoch: nothing is prepared ahead.
    short = CountingSquares(10, 0)
    _train(short, steps=2)
    assert short.reads == 8


def test_ceiling_heads_pool_tokens_and_average_clips():
    torch.manual_seed(0)
    tasks = {"a": 3, "b": 2}
    heads = baselines.CeilingHeads(16, tasks).eval()
    for p in heads.parameters():  # non-zero heads
        torch.nn.init.normal_(p, std=0.3)
    tokens = torch.randn(5, 7, 16)
    out = heads(tokens)
    assert {k: v.shape for k, v in out.items()} == {"a": (5, 3), "b": (5, 2)}
    torch.testing.assert_close(out["b"], heads.heads["b"](tokens.amax(1)))  # max over tokens, per channel
    mean_heads = baselines.CeilingHeads(16, tasks, "mean")
    mean_heads.load_state_dict(heads.state_dict())
    torch.testing.assert_close(mean_heads(tokens)["a"], heads.heads["a"](tokens.mean(1)))
    # Video: each clip is pooled and the clips' logits averaged.
    clips = torch.randn(6, 2, 7, 16).half()
    labels = {t: torch.randint(0, n, (6,)) for t, n in tasks.items()}
    logits = {t: torch.stack([heads(clips[:, c])[t] for c in range(2)]).mean(0) for t in tasks}
    ceiling = baselines.Ceiling(tiny_encoder(), heads)
    acc = ceiling_head_accuracy(ceiling, {"patches": clips, "labels": labels})
    for t in tasks:
        assert acc[t] == pytest.approx(float((logits[t].argmax(1) == labels[t]).float().mean()))
    with pytest.raises(ValueError, match="patch_tokens=True"):
        ceiling_head_accuracy(ceiling, {"pooled": torch.randn(6, 16), "labels": labels})
    with pytest.raises(ValueError, match="eval.ceiling_pool"):
        CeilingSpec(pool="attentive")
