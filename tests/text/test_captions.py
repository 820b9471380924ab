"""Sentence splitting, caption sampling, the text batcher and caption tables."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from openjepa.data.captions import (
    CaptionTableDataset,
    TextBatcher,
    caption_list,
    sample_captions,
    split_sentences,
)
from openjepa.data.images import CorruptImageError, SkipCorrupt
from openjepa.models.text import CachedTextEncoder, HashTextEncoder

# ----------------------------------------------------------------------------- sentences


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("A dog runs. A cat sleeps!", ["A dog runs.", "A cat sleeps!"]),
        ("Mr. Smith holds e.g. a cup. It is 3.5 m tall.", ["Mr. Smith holds e.g. a cup.", "It is 3.5 m tall."]),
        ("What is it? Nobody knows... Then it left", ["What is it?", "Nobody knows...", "Then it left"]),
        ("Apples, pears, etc. The table is wooden.", ["Apples, pears, etc.", "The table is wooden."]),
        ("apples, pears, etc. and more.", ["apples, pears, etc. and more."]),
        ('He said "hi." Then he left.', ['He said "hi."', "Then he left."]),
        (
            "Room No. 5 is red. Dr. J. Smith i.e. the owner waves.",
            ["Room No. 5 is red.", "Dr. J. Smith i.e. the owner waves."],
        ),
        ("Taken in the U.S. It shows a car.", ["Taken in the U.S.", "It shows a car."]),
        ("a cat.   the dog.\nA bird", ["a cat.", "the dog.", "A bird"]),
        ("  no terminator  ", ["no terminator"]),
        ("", []),
        (" . ", ["."]),
        ("   ", []),
    ],
)
def test_split_sentences(text, want):
    assert split_sentences(text) == want


def test_caption_list_splits_every_caption_and_drops_empties():
    raw = ["A red circle. A blue square.", "  ", "A star"]
    assert caption_list(raw, split=True) == ["A red circle.", "A blue square.", "A star"]
    assert caption_list(raw, split=False) == ["A red circle. A blue square.", "A star"]
    assert caption_list("One. Two.", split=True) == ["One.", "Two."]
    assert caption_list(None, split=True) == []


def test_sample_captions_without_replacement_and_deterministic():
    caps = [f"c{i}" for i in range(10)]
    draws = [sample_captions(caps, 4, np.random.default_rng(s)) for s in range(50)]
    assert all(len(d) == 4 and len(set(d)) == 4 for d in draws)
    assert sample_captions(caps, 4, np.random.default_rng(3)) == draws[3]
    assert len({tuple(d) for d in draws}) > 40
    assert {c for d in draws for c in d} == set(caps)
    few = sample_captions(caps[:3], 8, np.random.default_rng(0))
    assert sorted(few) == caps[:3]  # all of them, shuffled
    assert {tuple(sample_captions(caps[:3], 8, np.random.default_rng(s))) for s in range(30)} != {tuple(caps[:3])}
    assert sample_captions([], 8, np.random.default_rng(0)) == []


# ----------------------------------------------------------------------------- batcher


def _batcher(tmp_path=None, n: int = 3, seed: int = 0) -> TextBatcher:
    enc = HashTextEncoder(dim=8, max_length=5)
    if tmp_path is not None:
        enc = CachedTextEncoder(enc, tmp_path / "c.sqlite")
    return TextBatcher(enc, num_captions=n, split_sentences=True, seed=seed)


IMAGES = [
    ["A red circle. A big blue square on the left side.", "A star", "Two shapes", "A scene"],  # 5 sentences
    ["Only one caption"],
    [],
]


@pytest.mark.parametrize("cached", [False, True])
def test_batcher_shapes_and_masks(tmp_path, cached):
    out = _batcher(tmp_path if cached else None)(IMAGES, step=7, slots=[0, 1, 2])
    assert set(out) == {"text_emb", "text_mask", "caption_mask"}
    emb, tmask, cmask = out["text_emb"], out["text_mask"], out["caption_mask"]
    assert emb.dtype == torch.float16 and tmask.dtype == torch.bool and cmask.dtype == torch.bool
    assert emb.shape == (3, 3, 5, 8) and tmask.shape == (3, 3, 5)  # S = 5: the longest chosen (truncated)
    assert cmask.tolist() == [[True, True, True], [True, False, False], [False, False, False]]
    assert not tmask[~cmask].any() and torch.all(emb[~tmask] == 0)  # padded captions: no real word
    assert tmask[1, 0].sum() == 3  # "only one caption"
    assert (emb[tmask].float().abs().sum(-1) > 0).all()


def test_batcher_is_a_pure_function_of_seed_step_slot(tmp_path):
    batcher = _batcher()
    a = batcher(IMAGES, step=3, slots=[10, 11, 12])
    # The same image at the same (step, slot) in another batch, at another position, with other companions.
    b = _batcher(tmp_path)([["Other"], IMAGES[0]], step=3, slots=[99, 10])
    n = int(a["text_mask"][0].sum(-1).max())
    assert torch.equal(a["caption_mask"][0], b["caption_mask"][1])
    assert torch.equal(a["text_emb"][0, :, :n], b["text_emb"][1, :, :n])
    # Survives pickling into a worker, and another step / seed draws other captions.
    again = pickle.loads(pickle.dumps(batcher))(IMAGES, step=3, slots=[10, 11, 12])
    assert all(torch.equal(a[k], again[k]) for k in a)
    choices = {tuple(batcher.choose(IMAGES[0], step, 10)) for step in range(20)}
    assert len(choices) > 5
    other_seed = _batcher(seed=1)
    assert any(other_seed.choose(IMAGES[0], 3, slot) != batcher.choose(IMAGES[0], 3, slot) for slot in range(10))


@pytest.mark.text
def test_batcher_with_minilm(minilm):
    out = TextBatcher(minilm, num_captions=2, split_sentences=True, seed=0)(IMAGES, step=0, slots=[0, 1, 2])
    emb, tmask = out["text_emb"], out["text_mask"]
    assert emb.shape[:2] == (3, 2) and emb.shape[3] == 384 and emb.dtype == torch.float16
    chosen = TextBatcher(minilm, 2, True, 0).choose(IMAGES[1], 0, 1)
    direct, mask = minilm.encode(chosen)
    n = int(mask[0].sum())
    assert int(tmask[1, 0].sum()) == n
    torch.testing.assert_close(emb[1, 0, :n].float(), direct[0, :n], atol=2e-2, rtol=1e-3)


def test_batcher_with_no_captions_at_all_keeps_valid_shapes():
    out = _batcher()([[], []], step=0, slots=[0, 1])
    assert out["text_emb"].shape == (2, 3, 1, 8) and not out["caption_mask"].any() and not out["text_mask"].any()


# ----------------------------------------------------------------------------- caption tables


def _write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def test_jsonl_table_both_forms_grouped_by_image(tmp_path, image_file):
    pixels = image_file(tmp_path / "img" / "a.png", 0)
    image_file(tmp_path / "img" / "b.png", 1)
    rows = [
        {"image": "img/a.png", "captions": ["A red circle.", "A circle"]},
        {"image": "img/b.png", "caption": "A blue square"},
        {"image": "img/a.png", "caption": "Red, round"},
    ]
    path = _write(tmp_path / "list.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    ds = CaptionTableDataset(path)
    assert len(ds) == 2
    assert ds[0]["captions"] == ["A red circle.", "A circle", "Red, round"] and ds[1]["captions"] == ["A blue square"]
    item = ds[0]
    assert np.array_equal(np.asarray(item["image"]), pixels)
    assert item["index"] == 0 and item["path"] == str(tmp_path / "img" / "a.png")
    assert ds.all_captions(split=True)[:2] == ["A red circle.", "A circle"]


def test_csv_table_one_caption_per_row_and_json_list_cells(tmp_path, image_file):
    image_file(tmp_path / "a.png", 0)
    image_file(tmp_path / "b.png", 1)
    one = _write(
        tmp_path / "one.csv",
        'id,image,caption\n1,a.png,"A red circle, small."\n2,b.png,A square\n3,a.png,"Multi\nline"\n',
    )
    ds = CaptionTableDataset(one)
    assert [ds[i]["captions"] for i in range(2)] == [["A red circle, small.", "Multi\nline"], ["A square"]]
    many = _write(tmp_path / "many.csv", 'image,captions\na.png,"[""x"", ""y""]"\nb.png,[]\n')
    ds = CaptionTableDataset(many)
    assert ds.captions == [["x", "y"], []]
    with pytest.raises(ValueError, match="exactly one of `caption` / `captions`"):
        CaptionTableDataset(_write(tmp_path / "bad.csv", "image,caption,captions\na.png,x,[]\n"))


def test_malformed_lines_strict_and_lenient(tmp_path, image_file):
    image_file(tmp_path / "a.png", 0)
    lines = ['{"image": "a.png", "caption": "ok"}', "{not json", '{"image": "a.png"}', '{"caption": "x"}']
    path = _write(tmp_path / "list.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"list\.jsonl:2: invalid JSON.*strict=False"):
        CaptionTableDataset(path)
    with pytest.warns(UserWarning, match="skipped 3 malformed line"):
        ds = CaptionTableDataset(path, strict=False)
    assert len(ds) == 1 and [s.split(": ", 1)[0] for s in ds.skipped_lines] == [f"{path}:{n}" for n in (2, 3, 4)]
    assert 'missing "caption"' in ds.skipped_lines[1]
    csv_path = _write(tmp_path / "t.csv", 'image,captions\na.png,"[""x""]"\na.png,not json\n,"[]"\na.png\n')
    with pytest.raises(ValueError, match=r"t\.csv:3: the `captions` cell is not a JSON list"):
        CaptionTableDataset(csv_path)
    with pytest.warns(UserWarning, match="skipped 3"):
        ds = CaptionTableDataset(csv_path, strict=False)
    assert ds.captions == [["x"]] and "1 fields" in ds.skipped_lines[2]


def test_missing_and_corrupt_images(tmp_path, image_file):
    image_file(tmp_path / "a.png", 0)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    names = ["a.png", "gone1.png", "bad.png", "gone2.png"]
    path = _write(tmp_path / "l.jsonl", "".join(json.dumps({"image": n, "caption": n}) + "\n" for n in names))
    with pytest.raises(FileNotFoundError, match=r"2 of 4 listed images are missing.*gone1\.png \(line 2\)"):
        CaptionTableDataset(path)
    with pytest.raises(FileNotFoundError, match="caption list not found"):
        CaptionTableDataset(tmp_path / "nope.jsonl")
    ds = CaptionTableDataset(path, check_files=False)
    with pytest.raises(CorruptImageError):
        ds[2]
    skipping = SkipCorrupt(ds)
    item = skipping[1]  # gone1 (missing) and bad.png (corrupt) are skipped, wrapping to a.png
    assert item["path"].endswith("a.png") and len(item["skipped"]) == 3
