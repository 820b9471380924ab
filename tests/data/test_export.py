"""Exports (scenes to PNG + JSONL and WebDataset shards, sprites to MP4 + lists), read back by the file
readers; manifests that make --overwrite safe and stale files visible."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from openjepa.data.export import export_scenes
from openjepa.data.images import ImageFolderDataset, JsonlImageDataset
from openjepa.data.manifest import check_export
from openjepa.data.scenes import ScenesDataset
from openjepa.errors import DataError


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


# ----------------------------------------------------------------------------- manifests and overwrite


def _pngs(folder) -> list[str]:
    return sorted(p.name for p in (folder / "images").iterdir())


def test_overwrite_with_fewer_items_leaves_no_stale_files(tmp_path):
    out = tmp_path / "scenes"
    export_scenes(out, count=5, image_size=32, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["count"] == 5 and manifest["generator"] == "scenes"
    assert sorted(manifest["files"]) == sorted(
        [f"images/{i:06d}.png" for i in range(5)] + ["captions.jsonl", "labels.jsonl", "scenes.json"]
    )
    assert all(manifest["files"][rel] == (out / rel).stat().st_size for rel in manifest["files"])
    export_scenes(out, count=3, image_size=32, overwrite=True, progress=False)
    assert _pngs(out) == ["000000.png", "000001.png", "000002.png"]  # 000003/000004 are gone
    assert len(ImageFolderDataset(out / "images")) == len(JsonlImageDataset(out / "captions.jsonl")) == 3
    assert check_export(out / "captions.jsonl")["count"] == 3
    # Switching layout removes the other layout's files too.
    export_scenes(out, count=2, image_size=32, fmt="wds", shard_size=1, overwrite=True, progress=False)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["manifest.json", "scenes.json", "shard-000000.tar", "shard-000001.tar"]


def test_overwrite_never_deletes_what_an_export_did_not_write(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "photo.png").write_bytes(b"not from an export")
    with pytest.raises(FileExistsError, match="holds no export manifest"):
        export_scenes(mine, count=1, overwrite=True, progress=False)
    assert (mine / "photo.png").read_bytes() == b"not from an export"
    out = tmp_path / "scenes"
    export_scenes(out, count=2, image_size=32, progress=False)
    (out / "images" / "extra.png").write_bytes(b"added by hand")
    with pytest.raises(FileExistsError, match=r"1 file\(s\) the earlier export did not write \(e.g. images/extra"):
        export_scenes(out, count=1, image_size=32, overwrite=True, progress=False)
    assert _pngs(out) == ["000000.png", "000001.png", "extra.png"]  # nothing was deleted
    with pytest.raises(FileExistsError, match="is a file"):
        export_scenes(out / "scenes.json", count=1, progress=False)


def test_readers_refuse_stale_missing_and_changed_files(tmp_path):
    out = tmp_path / "scenes"
    export_scenes(out, count=3, image_size=32, progress=False)
    assert check_export(out)["root"] == str(out)
    assert check_export(out / "images") is not None  # a data folder finds the manifest one level up
    (out / "images" / "000007.png").write_bytes((out / "images" / "000000.png").read_bytes())  # an old export's
    with pytest.raises(DataError, match=r"1 file\(s\) the export did not write, e.g. images/000007.png.*--overwrite"):
        check_export(out / "images")
    (out / "images" / "000007.png").unlink()
    (out / "images" / "000001.png").unlink()
    with pytest.raises(DataError, match=r"1 listed file\(s\) missing, e.g. images/000001.png"):
        check_export(out / "captions.jsonl")
    export_scenes(out, count=3, image_size=32, overwrite=True, progress=False)
    with (out / "captions.jsonl").open("a") as f:
        f.write('{"image": "images/000009.png", "captions": []}\n')
    with pytest.raises(DataError, match=r"changed since the export, e.g. captions.jsonl"):
        check_export(out / "captions.jsonl")
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    with pytest.raises(DataError, match="interrupted export"):
        check_export(out)
    (out / "manifest.json").write_text('{"name": "some other tool"}')
    assert check_export(out) is None  # not ours: the folder is the user's data
    assert check_export(tmp_path) is None


def test_sprites_export_reads_back(tmp_path):
    pytest.importorskip("av")
    pytest.importorskip("sklearn")
    from openjepa.data.export import export_sprites
    from openjepa.data.sprites import SpritesDataset
    from openjepa.data.video import VideoFileDataset

    out = tmp_path / "sprites"
    written = export_sprites(out, split="val", count=4, image_size=32, length=20, seed=3, progress=False)
    assert written == [out / "list.txt", out / "labels.jsonl"]
    source = SpritesDataset("val", 4, image_size=32, length=20, seed=3, num_frames=8, frame_step=2)
    exported = VideoFileDataset(out, num_frames=8, frame_step=2)  # the folder reads its labels.jsonl
    listed = VideoFileDataset(out / "list.txt", num_frames=8, frame_step=2)
    assert exported.tasks == source.tasks and exported.classes == source.classes
    assert listed.tasks == {"class": 8} and listed.classes == {"class": source.classes["direction"]}
    for i in range(4):
        want = source.clip(i, np.random.default_rng(i))
        got = exported.clip(i, np.random.default_rng(i))  # the same frames are picked
        error = got["video"].astype(np.float64) - want["video"]
        psnr = 10 * np.log10(255**2 / np.mean(error**2))
        assert psnr > 28, psnr  # H.264 at crf 12; yuv420p halves the colour resolution
        assert got["labels"] == want["labels"] and got["captions"] == want["captions"]
        assert listed[i]["labels"] == {"class": want["labels"]["direction"]}
    assert (out / "list.txt").read_text().splitlines()[1] == f"videos/000001.mp4 {source.labels(1)['direction']}"
    meta = json.loads((out / "sprites.json").read_text())
    assert (meta["split"], meta["length"], meta["label_frame"], meta["label_task"]) == ("val", 20, 10, "direction")
    # A stale video from an earlier, larger export is refused, not read.
    (out / "videos" / "000009.mp4").write_bytes((out / "videos" / "000000.mp4").read_bytes())
    with pytest.raises(DataError, match="videos/000009.mp4"):
        VideoFileDataset(out / "list.txt", num_frames=8, frame_step=2)
    with pytest.raises(DataError, match="videos/000009.mp4"):
        VideoFileDataset(out / "videos", num_frames=8, frame_step=2)
    (out / "videos" / "000009.mp4").unlink()
    export_sprites(out, split="val", count=2, image_size=32, length=20, overwrite=True, progress=False)
    assert len(VideoFileDataset(out, num_frames=8, frame_step=2)) == 2
    assert sorted(p.name for p in (out / "videos").iterdir()) == ["000000.mp4", "000001.mp4"]
    with pytest.raises(ValueError, match="even"):
        export_sprites(tmp_path / "odd", count=1, image_size=33, progress=False)
    with pytest.raises(ValueError, match="label_task='colour'"):
        export_sprites(tmp_path / "odd", count=1, label_task="colour", progress=False)
