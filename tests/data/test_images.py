"""Readers for user images: load_image, folders, JSONL lists, SkipCorrupt, build_dataset."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from PIL import Image

from openjepa.config import ConfigError, DataConfig
from openjepa.data.images import (
    CorruptImageError,
    ImageFolderDataset,
    JsonlImageDataset,
    SkipCorrupt,
    load_image,
)
from openjepa.data.scenes import ScenesDataset
from openjepa.data.sources import build_dataset
from openjepa.errors import DataError

# ----------------------------------------------------------------------------- load_image


def test_load_image_reads_pixels_and_converts_to_rgb(tmp_path, image_writer):
    pixels = image_writer(tmp_path / "a.png", 0)
    img = load_image(tmp_path / "a.png")
    assert img.mode == "RGB" and np.array_equal(np.asarray(img), pixels)
    Image.fromarray(pixels[..., 0]).save(tmp_path / "gray.png")
    Image.fromarray(np.dstack([pixels, pixels[..., :1]])).save(tmp_path / "rgba.png")
    Image.fromarray(pixels).convert("P").save(tmp_path / "palette.gif")
    for name in ("gray.png", "rgba.png", "palette.gif"):
        img = load_image(tmp_path / name)
        assert img.mode == "RGB" and img.size == (20, 16)


def test_load_image_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.png"):
        load_image(tmp_path / "nope.png")


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty", "text"])
def test_load_image_corrupt_files(tmp_path, truncated_writer, kind):
    path = tmp_path / f"{kind}.png"
    if kind == "truncated":
        truncated_writer(path)
    elif kind == "garbage":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        path.write_text("not an image at all")
    with pytest.raises(CorruptImageError) as info:
        load_image(path)
    assert info.value.path == str(path) and info.value.reason
    assert str(path) in str(info.value)
    # It survives the trip from a loader worker process.
    again = pickle.loads(pickle.dumps(info.value))
    assert (again.path, again.reason) == (info.value.path, info.value.reason)


# ----------------------------------------------------------------------------- folders


def test_class_folders(tmp_path, image_writer):
    a = image_writer(tmp_path / "cat" / "1.png", 1)
    b = image_writer(tmp_path / "dog" / "deep" / "2.JPEG", 2, fmt="PNG")  # extension case ignored
    image_writer(tmp_path / "dog" / "3.bmp", 3)
    (tmp_path / "dog" / "notes.txt").write_text("ignored")
    image_writer(tmp_path / ".hidden" / "4.png", 4)
    (tmp_path / "empty_class").mkdir()
    ds = ImageFolderDataset(tmp_path)
    assert ds.classes == ["cat", "dog"] and ds.tasks == {"class": 2} and len(ds) == 3
    items = [ds[i] for i in range(3)]
    assert [it["labels"] for it in items] == [{"class": 0}, {"class": 1}, {"class": 1}]
    assert [it["index"] for it in items] == [0, 1, 2]
    # Sorted by path relative to the class folder: "3.bmp" < "deep/2.JPEG".
    expected = ("cat/1.png", "dog/3.bmp", "dog/deep/2.JPEG")
    assert [it["path"] for it in items] == [str(tmp_path / p) for p in expected]
    assert np.array_equal(np.asarray(items[0]["image"]), a)
    assert np.array_equal(np.asarray(items[2]["image"]), b)


def test_flat_folder_has_no_labels(tmp_path, image_writer):
    for k in range(3):
        image_writer(tmp_path / f"{k}.png", k)
    ds = ImageFolderDataset(tmp_path)
    assert ds.classes == [] and ds.tasks == {} and len(ds) == 3
    assert ds[2]["labels"] == {} and ds[2]["path"].endswith("2.png")


def test_class_folders_warn_about_loose_files(tmp_path, image_writer):
    image_writer(tmp_path / "cat" / "1.png", 1)
    image_writer(tmp_path / "loose.png", 2)
    with pytest.warns(UserWarning, match="loose.png"):
        ds = ImageFolderDataset(tmp_path)
    assert len(ds) == 1


def test_missing_or_empty_folder_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no_such_dir.*subfolder per class"):
        ImageFolderDataset(tmp_path / "no_such_dir")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"no images found in .*empty"):
        ImageFolderDataset(tmp_path / "empty")


# ----------------------------------------------------------------------------- JSONL


def _write_jsonl(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))


def test_jsonl_list_with_captions_and_labels(tmp_path, image_writer):
    a = image_writer(tmp_path / "imgs" / "a.png", 1)
    b = image_writer(tmp_path / "elsewhere" / "b.png", 2)
    _write_jsonl(
        tmp_path / "list.jsonl",
        [
            {"image": "imgs/a.png", "captions": ["one", "two"], "label": "zebra"},
            "",
            {"image": str(tmp_path / "elsewhere" / "b.png"), "caption": "single", "label": "ant"},
        ],
    )
    ds = JsonlImageDataset(tmp_path / "list.jsonl")
    assert len(ds) == 2 and ds.classes == {"class": ["ant", "zebra"]} and ds.tasks == {"class": 2}
    first, second = ds[0], ds[1]
    assert first["captions"] == ["one", "two"] and first["labels"] == {"class": 1}
    assert second["captions"] == ["single"] and second["labels"] == {"class": 0}
    assert np.array_equal(np.asarray(first["image"]), a) and np.array_equal(np.asarray(second["image"]), b)
    assert ds.line_numbers == [1, 3]


def test_jsonl_integer_labels_dict(tmp_path, image_writer):
    image_writer(tmp_path / "a.png", 1)
    _write_jsonl(tmp_path / "l.jsonl", [{"image": "a.png", "labels": {"count": 2, "shape": 5}}])
    ds = JsonlImageDataset(tmp_path / "l.jsonl")
    assert ds[0]["labels"] == {"count": 2, "shape": 5} and ds[0]["captions"] == []
    assert ds.tasks == {"count": 3, "shape": 6}


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"image": "a.png", "captions": ["x"]', "invalid JSON"),
        ('["a.png"]', "JSON object"),
        ('{"captions": ["x"]}', "image"),
        ('{"image": "a.png", "captions": [1, 2]}', "captions"),
        ('{"image": "a.png", "label": 1, "labels": {"a": 1}}', "not both"),
    ],
)
def test_jsonl_malformed_line_names_file_and_line(tmp_path, image_writer, line, reason):
    image_writer(tmp_path / "a.png", 1)
    _write_jsonl(tmp_path / "bad.jsonl", [{"image": "a.png"}, {"image": "a.png"}, line])
    with pytest.raises(ValueError, match=rf"bad\.jsonl, line 3: .*{reason}"):
        JsonlImageDataset(tmp_path / "bad.jsonl")


def test_jsonl_non_strict_skips_and_counts(tmp_path, image_writer):
    image_writer(tmp_path / "a.png", 1)
    _write_jsonl(tmp_path / "bad.jsonl", [{"image": "a.png"}, "{oops", {"image": "a.png"}, "42"])
    with pytest.warns(UserWarning, match="skipped 2 malformed"):
        ds = JsonlImageDataset(tmp_path / "bad.jsonl", strict=False)
    assert len(ds) == 2 and [n for n, _ in ds.skipped_lines] == [2, 4]


def test_jsonl_missing_images(tmp_path, image_writer):
    image_writer(tmp_path / "a.png", 1)
    _write_jsonl(tmp_path / "l.jsonl", [{"image": "a.png"}] + [{"image": f"gone{k}.png"} for k in range(7)])
    expected = r"7 of 8 listed images are missing, e\.g\. .*gone0\.png \(line 2\)"
    with pytest.raises(FileNotFoundError, match=expected):
        JsonlImageDataset(tmp_path / "l.jsonl")
    ds = JsonlImageDataset(tmp_path / "l.jsonl", check_files=False)
    assert len(ds) == 8
    with pytest.raises(FileNotFoundError):
        ds[1]
    with pytest.raises(FileNotFoundError, match=r"JSONL image list not found: .*nothing\.jsonl"):
        JsonlImageDataset(tmp_path / "nothing.jsonl")


# ----------------------------------------------------------------------------- SkipCorrupt


def test_skip_corrupt_skips_and_reports(tmp_path, image_writer, truncated_writer):
    good = [image_writer(tmp_path / f"{k}.png", k) for k in (0, 2, 3)]
    truncated_writer(tmp_path / "1.png")
    ds = SkipCorrupt(ImageFolderDataset(tmp_path))
    assert len(ds) == 4 and ds.classes == [] and ds.tasks == {}  # attributes pass through
    items = [ds[i] for i in range(4)]
    assert [it["skipped"] for it in items[:1] + items[2:]] == [[], [], []]
    assert len(items[1]["skipped"]) == 1 and items[1]["skipped"][0].startswith(str(tmp_path / "1.png") + ": ")
    assert items[1]["path"].endswith("2.png") and items[1]["index"] == 2  # the next readable image
    assert np.array_equal(np.asarray(items[1]["image"]), good[1])
    assert np.array_equal(np.asarray(items[0]["image"]), good[0])
    assert len(list(ds)) == 4  # iteration stops at the end instead of wrapping around
    with pytest.raises(IndexError):
        ds[4]


def test_skip_corrupt_wraps_around_and_gives_up(tmp_path, image_writer, truncated_writer):
    image_writer(tmp_path / "0.png", 0)
    for k in (1, 2, 3):
        truncated_writer(tmp_path / f"{k}.png")
    ds = SkipCorrupt(ImageFolderDataset(tmp_path), max_tries=4)
    item = ds[2]
    assert item["path"].endswith("0.png") and len(item["skipped"]) == 2
    with pytest.raises(DataError, match=r"3 consecutive files .*1\.png.*2\.png.*3\.png"):
        SkipCorrupt(ImageFolderDataset(tmp_path), max_tries=3)[1]


def test_skip_corrupt_skips_missing_files_and_pickles(tmp_path, image_writer):
    image_writer(tmp_path / "a.png", 1)
    _write_jsonl(tmp_path / "l.jsonl", [{"image": "gone.png"}, {"image": "a.png", "captions": ["c"]}])
    ds = SkipCorrupt(JsonlImageDataset(tmp_path / "l.jsonl", check_files=False))
    item = ds[0]
    assert item["captions"] == ["c"] and "gone.png" in item["skipped"][0]
    clone = pickle.loads(pickle.dumps(ds))  # loader workers may receive the dataset by pickle
    assert clone[1]["captions"] == ["c"] and clone.tasks == {}


# ----------------------------------------------------------------------------- build_dataset


def test_build_dataset_sources(tmp_path, image_writer):
    cfg = DataConfig(image_size=64, train_size=123)
    ds = build_dataset(cfg, "val", seed=5)
    assert isinstance(ds, ScenesDataset) and len(ds) == 123 and ds.split == "val" and ds.seed == 5
    assert ds[0]["image"].size == (64, 64)
    assert len(build_dataset(cfg, "val", size=7)) == 7

    image_writer(tmp_path / "cls" / "a.png", 1)
    folder = build_dataset(DataConfig(source="folder", path=str(tmp_path)))
    assert isinstance(folder, SkipCorrupt) and folder.classes == ["cls"] and folder[0]["skipped"] == []

    _write_jsonl(tmp_path / "l.jsonl", [{"image": "cls/a.png", "captions": ["x"]}])
    listed = build_dataset(DataConfig(source="jsonl", path=str(tmp_path / "l.jsonl")))
    assert isinstance(listed, SkipCorrupt) and listed[0]["captions"] == ["x"]

    with pytest.raises(ConfigError, match=r"data\.path"):
        build_dataset(DataConfig(source="folder"))
    with pytest.raises(ConfigError, match="image_size=300"):
        build_dataset(DataConfig(image_size=300))
