"""The SQLite embedding cache and the cached encoder."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from openjepa.config import TextConfig
from openjepa.models.text import CachedTextEncoder, EmbeddingCache, HashTextEncoder, build_text_encoder, cache_key


def _arrays(rng: np.random.Generator, lengths: list[int], dim: int = 8) -> list[np.ndarray]:
    return [rng.standard_normal((n, dim)).astype(np.float32) for n in lengths]


def test_miss_then_hit_with_counters_and_float16_values(tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    assert cache.get_many("enc", ["a", "b"]) == [None, None]
    assert cache.stats() == {"hits": 0, "misses": 2}
    arrays = _arrays(np.random.default_rng(0), [3, 5])
    cache.put_many("enc", ["a", "b"], arrays)
    got = cache.get_many("enc", ["b", "a", "zzz", "a"])
    assert got[2] is None
    for g, want in zip([got[0], got[1], got[3]], [arrays[1], arrays[0], arrays[0]]):
        assert g.dtype == np.float16 and g.shape == want.shape
        np.testing.assert_array_equal(g, want.astype(np.float16))  # only float16 rounding
    assert cache.stats() == {"hits": 3, "misses": 3}
    assert len(cache) == 2 and cache.encoders() == {"enc": 8}


def test_other_encoder_name_never_reads_these_entries(tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    cache.put_many("model-A@1", ["a red circle"], _arrays(np.random.default_rng(0), [4]))
    assert cache.get_many("model-B@1", ["a red circle"]) == [None]
    assert cache.get_many("model-A@1", ["a red circle"])[0] is not None
    # The NUL separator keeps (name, caption) pairs apart even when their concatenations agree.
    assert cache_key("ab", "c") != cache_key("a", "bc")


def test_entries_persist_across_reopen_and_pickling(tmp_path):
    path = tmp_path / "sub" / "c.sqlite"
    cache = EmbeddingCache(path)
    arrays = _arrays(np.random.default_rng(1), [2, 7])
    cache.put_many("enc", ["x", "y"], arrays)
    cache.close()
    again = EmbeddingCache(path)
    np.testing.assert_array_equal(again.get_many("enc", ["y"])[0], arrays[1].astype(np.float16))
    clone = pickle.loads(pickle.dumps(again))  # the connection is not pickled; the clone opens its own
    assert clone._conn is None and len(clone) == 2 and clone.stats() == {"hits": 0, "misses": 0}


class _CountingEncoder(HashTextEncoder):
    """Counts the captions it is asked to encode."""

    def __init__(self) -> None:
        super().__init__(dim=8, max_length=6)
        self.calls: list[list[str]] = []

    def encode(self, captions):
        self.calls.append(list(captions))
        return super().encode(captions)


def test_cached_encoder_encodes_only_misses_in_one_batch(tmp_path):
    inner = _CountingEncoder()
    enc = CachedTextEncoder(inner, tmp_path / "c.sqlite")
    assert (enc.name, enc.dim, enc.max_length) == (inner.name, 8, 6)
    first, mask1 = enc.encode(["red circle", "blue square big", "red circle"])
    assert inner.calls == [["red circle", "blue square big"]]  # deduplicated, one call
    second, mask2 = enc.encode(["green star", "red circle", "blue square big"])
    assert inner.calls[1] == ["green star"]
    assert enc.cache.stats() == {"hits": 2, "misses": 3}
    assert torch.equal(second[1, :2], first[0, :2]) and torch.equal(mask2[2], mask1[1])
    # Hits and fresh results are the same float16-rounded values: resuming cannot change inputs.
    direct, dmask = inner.encode(["red circle", "blue square big", "red circle"])
    assert torch.equal(dmask, mask1)
    torch.testing.assert_close(first, direct.half().float(), atol=0, rtol=0)
    assert enc.warm(["red circle", "new one", "new one", "another"], batch_size=2) == 2


@pytest.mark.text
def test_cached_minilm_equals_direct_minilm(tmp_path, minilm):
    captions = ["A red circle.", "two blue squares left of a star", "A red circle."]
    enc = CachedTextEncoder(minilm, EmbeddingCache(tmp_path / "c.sqlite"))
    direct, dmask = minilm.encode(captions)
    for _ in range(2):  # miss, then hit
        emb, mask = enc.encode(captions)
        assert torch.equal(mask, dmask) and emb.dtype == torch.float32
        torch.testing.assert_close(emb, direct, atol=2e-2, rtol=1e-3)  # float16 of values up to ~4
        assert (emb - direct).abs().max() <= direct.abs().max() * 2**-10
    assert enc.cache.stats() == {"hits": 2, "misses": 2}


class _CaptionSet(Dataset):
    def __init__(self, encoder: CachedTextEncoder, captions: list[list[str]]):
        self.encoder = encoder
        self.captions = captions

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, i: int) -> dict:
        import os

        emb, mask = self.encoder.encode(self.captions[i])
        loaded = getattr(self.encoder.encoder, "loaded", None)
        return {"emb": emb, "mask": mask, "pid": os.getpid(), "stats": self.encoder.cache.stats(), "loaded": loaded}


def _run_workers(encoder: CachedTextEncoder, captions: list[list[str]]) -> list[dict]:
    loader = DataLoader(_CaptionSet(encoder, captions), batch_size=None, num_workers=2)
    return list(loader)


def test_cache_is_shared_by_two_loader_workers(tmp_path):
    captions = [[f"caption {i % 5} of {j}" for j in range(3)] for i in range(12)]
    enc = CachedTextEncoder(HashTextEncoder(dim=8, max_length=6), tmp_path / "c.sqlite")
    enc.encode(["caption 0 of 0"])  # the parent's connection is open when the workers fork
    items = _run_workers(enc, captions)
    assert len({it["pid"] for it in items}) == 2
    unique = {c for caps in captions for c in caps}
    assert len(enc.cache) == len(unique)  # both workers wrote to the same file
    fresh = CachedTextEncoder(HashTextEncoder(dim=8, max_length=6), tmp_path / "c.sqlite")
    for it, caps in zip(items, captions):
        emb, mask = fresh.encode(caps)
        assert torch.equal(it["emb"], emb) and torch.equal(it["mask"], mask)
    assert fresh.cache.stats()["misses"] == 0


@pytest.mark.text
def test_warm_cache_lets_workers_skip_loading_the_model(tmp_path, minilm):
    captions = [["A red circle.", "a blue square"], ["a green star"], ["a blue square"]]
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    CachedTextEncoder(minilm, cache).warm(c for caps in captions for c in caps)
    cold = pickle.loads(pickle.dumps(minilm))  # what a spawned worker would receive: no weights
    items = _run_workers(CachedTextEncoder(cold, cache), captions)
    assert all(it["loaded"] is False for it in items)  # every lookup was a hit: MiniLM never loaded
    assert all(it["stats"]["misses"] == 0 for it in items)
    direct, _ = minilm.encode(captions[0])
    torch.testing.assert_close(items[0]["emb"], direct, atol=2e-2, rtol=1e-3)


def test_build_text_encoder_with_a_cache_wraps_once(tmp_path):
    enc = build_text_encoder(TextConfig(encoder="hash:8", max_length=4), cache=tmp_path / "c.sqlite")
    assert isinstance(enc, CachedTextEncoder) and isinstance(enc.encoder, HashTextEncoder)
    assert enc.name == "hash:d8:len4" and enc.cache.path == tmp_path / "c.sqlite"
    again = CachedTextEncoder(enc, enc.cache)  # wrapping a cached encoder does not look up twice
    assert again.encoder is enc.encoder
    again.encode(["a b"])
    assert again.cache.stats() == {"hits": 0, "misses": 1}
