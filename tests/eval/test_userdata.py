"""The user's labelled data: folder / JSONL / CSV / list layouts, class mapping, clear errors, skipped files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from openjepa.errors import DataError
from openjepa.eval.cache import dataset_fingerprint
from openjepa.eval.features import extract_features
from openjepa.eval.userdata import class_index, open_labelled_pair, open_user_data, read_listing
from openjepa.models.vit import VisionTransformer

COLORS = {"red": (220, 30, 30), "blue": (30, 30, 220)}


def square(path: Path, color: tuple[int, int, int], seed: int) -> Path:
    rng = np.random.default_rng(seed)
    img = np.full((32, 32, 3), 128, np.uint8)
    x, y = rng.integers(0, 20, size=2)
    img[y : y + 12, x : x + 12] = color
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path


def class_folder(root: Path, per_class: int, seed: int = 0) -> Path:
    for c, (name, color) in enumerate(COLORS.items()):
        for i in range(per_class):
            square(root / name / f"{i:03d}.png", color, seed * 1000 + c * 100 + i)
    return root


def test_class_folder_layout(tmp_path):
    root = class_folder(tmp_path / "train", 3)
    (root / "red" / ".hidden.png").write_bytes(b"x")
    (root / "red" / "notes.txt").write_text("not an image")
    square(root / "blue" / "deeper" / "x.png", COLORS["blue"], 99)
    square(root / "stray.png", COLORS["red"], 98)  # files beside the class folders are ignored
    listing = read_listing(root)
    assert listing.kind == "image" and listing.tasks == ["class"]
    assert [f.relative_to(root).as_posix() for f in listing.files] == [
        "blue/000.png", "blue/001.png", "blue/002.png", "blue/deeper/x.png",
        "red/000.png", "red/001.png", "red/002.png",
    ]
    assert class_index(listing) == {"class": ["blue", "red"]}


def test_jsonl_layout_with_one_or_several_tasks(tmp_path):
    square(tmp_path / "img" / "a.png", COLORS["red"], 0)
    square(tmp_path / "img" / "b.png", COLORS["blue"], 1)
    path = tmp_path / "list.jsonl"
    path.write_text(
        '{"image": "img/a.png", "labels": {"color": "red", "size": 1}}\n\n'
        '{"image": "img/b.png", "labels": {"color": "blue", "size": 0}}\n'
    )
    listing = read_listing(path)
    assert listing.files == [tmp_path / "img" / "a.png", tmp_path / "img" / "b.png"]
    assert class_index(listing) == {"color": ["blue", "red"], "size": [0, 1]}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image": "img/a.png", "label": "red"}\n{"image": "img/b.png", "label": true}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: label 'class' must be an integer or a class name"):
        read_listing(bad)
    bad.write_text('{"image": "img/a.png", "label": "red"}\nnot json\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: invalid JSON"):
        read_listing(bad)


def test_csv_layout(tmp_path):
    for i in range(2):
        square(tmp_path / f"{i}.png", COLORS["red"], i)
    path = tmp_path / "data.csv"
    path.write_text("image,label,label_size,notes\n0.png,10,big,x\n1.png,9,small,y\n")
    listing = read_listing(path)
    # Integer labels sort numerically (9 before 10), extra tasks come from label_<task> columns.
    assert class_index(listing) == {"class": [9, 10], "size": ["big", "small"]}
    path.write_text("file,label\n0.png,1\n")
    with pytest.raises(DataError, match="exactly one file column named image, video or path"):
        read_listing(path)
    path.write_text("image,label\n0.png,1\n1.png\n")
    with pytest.raises(DataError, match=r"data.csv:3: 1 columns but the header has 2"):
        read_listing(path)


def test_list_file_layout(tmp_path):
    square(tmp_path / "my images" / "a b.png", COLORS["red"], 0)
    square(tmp_path / "c.png", COLORS["blue"], 1)
    path = tmp_path / "list.txt"
    path.write_text("# path label\nmy images/a b.png 1\nc.png,0\n")
    listing = read_listing(path)
    assert listing.files == [tmp_path / "my images" / "a b.png", tmp_path / "c.png"]
    assert [lab["class"] for lab in listing.labels] == [1, 0]


def test_video_lists_are_recognized_and_refused_for_an_image_encoder(tmp_path):
    path = tmp_path / "videos.txt"
    path.write_text("a.mp4 0\nb.mp4 1\n")
    assert read_listing(path).kind == "video"
    with pytest.raises(DataError, match="lists videos but the encoder takes images"):
        open_labelled_pair(path, path, "image")
    mixed = tmp_path / "mixed.txt"
    mixed.write_text("a.mp4 0\nb.png 1\n")
    with pytest.raises(DataError, match="both images and videos"):
        read_listing(mixed)


def test_a_val_class_unseen_in_train_is_an_error_naming_it(tmp_path):
    train = class_folder(tmp_path / "train", 2)
    val = class_folder(tmp_path / "val", 1)
    square(val / "green" / "000.png", (30, 220, 30), 7)
    with pytest.raises(DataError, match=r"class\(es\) green of label 'class' never occur in the train data"):
        open_labelled_pair(train, val, "image")


def test_unlabelled_data_is_fine_for_features_but_not_for_probes(tmp_path):
    for i in range(3):
        square(tmp_path / "flat" / f"{i}.png", COLORS["red"], i)
    ds = open_user_data(tmp_path / "flat", "image")
    assert len(ds) == 3 and ds.tasks == {} and ds[0]["labels"] == {}
    with pytest.raises(DataError, match="carries no labels"):
        open_labelled_pair(tmp_path / "flat", tmp_path / "flat", "image")
    with pytest.raises(FileNotFoundError, match="data not found"):
        read_listing(tmp_path / "missing")


def test_mixed_integer_and_name_labels_are_refused(tmp_path):
    square(tmp_path / "a.png", COLORS["red"], 0)
    path = tmp_path / "l.txt"
    path.write_text("a.png 1\na.png red\n")
    with pytest.raises(DataError, match="mixes integers and class names"):
        class_index(read_listing(path))


def test_items_labels_and_fingerprint(tmp_path):
    train, val = open_labelled_pair(class_folder(tmp_path / "t", 2), class_folder(tmp_path / "v", 1, seed=1), "image")
    assert train.tasks == val.tasks == {"class": 2}
    item = train[0]
    assert item["image"].size == (32, 32) and item["labels"] == {"class": 0} and item["path"].endswith("000.png")
    assert [val[i]["labels"]["class"] for i in range(len(val))] == [0, 1]  # blue, red: the train mapping
    before = dataset_fingerprint(train)
    assert before == dataset_fingerprint(train)
    square(Path(train.files[0]), COLORS["red"], 123)  # rewritten: new content, new mtime
    os.utime(train.files[0], ns=(1, 1))
    assert dataset_fingerprint(train) != before


def test_unreadable_files_are_dropped_counted_and_named(tmp_path):
    root = class_folder(tmp_path / "train", 3)
    (root / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    gone = square(root / "blue" / "gone.png", COLORS["blue"], 5)
    ds = open_user_data(root, "image")
    gone.unlink()  # listed, then deleted before reading
    torch.manual_seed(0)
    enc = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)
    feats = extract_features(enc, ds, batch_size=4, device="cpu", progress=False)
    assert feats["pooled"].shape[0] == len(ds) - 2 == 6
    assert len(feats["skipped"]) == 2
    assert any("broken.png" in s for s in feats["skipped"]) and any("gone.png" in s for s in feats["skipped"])
    # Rows keep their dataset index and path, so nothing is silently shifted.
    kept = [ds.files[i] for i in feats["index"].tolist()]
    assert [str(p) for p in kept] == feats["paths"]
    assert all("broken" not in p and "gone" not in p for p in feats["paths"])
