"""Export of scenes to PNG + JSONL and WebDataset shards, read back by the file readers."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from openjepa.data.export import export_scenes
from openjepa.data.images import ImageFolderDataset, JsonlImageDataset
from openjepa.data.scenes import ScenesDataset


def test_images_export_reads_back_identically(tmp_path):
    out = tmp_path / "scenes"
    written = export_scenes(out, split="val", count=6, image_size=48, seed=2, progress=False)
    assert written == [out / "captions.jsonl", out / "labels.jsonl"]
    source = ScenesDataset("val", size=6, image_size=48, seed=2)
    listed = JsonlImageDataset(out / "captions.jsonl")
    folder = ImageFolderDataset(out / "images")
    labels = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    assert len(listed) == len(folder) == len(labels) == 6
    for i in range(6):
        want = source[i]
        pixels = np.asarray(want["image"])
        assert np.array_equal(np.asarray(listed[i]["image"]), pixels)  # PNG is lossless
        assert np.array_equal(np.asarray(folder[i]["image"]), pixels)
        assert listed[i]["captions"] == want["captions"]
        assert labels[i] == {"image": f"images/{i:06d}.png", "labels": want["labels"]}
    meta = json.loads((out / "scenes.json").read_text())
    assert meta["split"] == "val" and meta["seed"] == 2 and meta["tasks"] == source.tasks
    # The label list is itself a readable JSONL list with integer labels.
    assert JsonlImageDataset(out / "labels.jsonl")[3]["labels"] == source[3]["labels"]


def test_wds_export_shards(tmp_path):
    out = tmp_path / "wds"
    options = dict(split="test", count=10, image_size=32, fmt="wds", shard_size=4, progress=False)
    shards = export_scenes(out, **options)
    assert [p.name for p in shards] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    source = ScenesDataset("test", size=10, image_size=32)
    seen = []
    for shard in shards:
        with tarfile.open(shard) as tar:
            names = tar.getnames()
            keys = sorted({n.split(".")[0] for n in names})
            assert names == [f"{k}.{ext}" for k in keys for ext in ("png", "json")]
            for key in keys:
                i = int(key)
                png = Image.open(io.BytesIO(tar.extractfile(f"{key}.png").read()))
                meta = json.loads(tar.extractfile(f"{key}.json").read())
                assert np.array_equal(np.asarray(png.convert("RGB")), np.asarray(source[i]["image"]))
                assert meta == {
                    "captions": source[i]["captions"],
                    "labels": source[i]["labels"],
                    "split": "test",
                    "index": i,
                }
                seen.append(i)
    assert seen == list(range(10))
    # Same split, same bytes: shards are reproducible (fixed tar metadata).
    again = export_scenes(tmp_path / "again", **options)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in shards]


def test_export_refuses_to_overwrite(tmp_path):
    export_scenes(tmp_path, count=2, fmt="wds", shard_size=1, progress=False)
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_scenes(tmp_path, count=1, progress=False)
    export_scenes(tmp_path, count=1, fmt="wds", overwrite=True, progress=False)
    assert sorted(p.name for p in tmp_path.glob("shard-*.tar")) == ["shard-000000.tar"]


def test_export_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="format"):
        export_scenes(tmp_path, count=1, fmt="zip", progress=False)
    with pytest.raises(ValueError, match="count"):
        export_scenes(tmp_path, count=0, progress=False)
    with pytest.raises(ValueError, match="image_size=500"):
        export_scenes(tmp_path, count=1, image_size=500, progress=False)
