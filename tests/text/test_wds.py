"""WebDataset tar shards: the indexed reader, brace expansion and the streaming reader."""

from __future__ import annotations

import gzip
import io
import json
import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import DataLoader

from openjepa.data.export import export_scenes
from openjepa.data.images import CorruptImageError, SkipCorrupt
from openjepa.data.scenes import ScenesDataset
from openjepa.data.wds import (
    TarShardDataset,
    expand_braces,
    expand_shards,
    iter_shards,
    shards_for,
    split_member_name,
)


def _png(seed: int, size: int = 12) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _write_tar(path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("wds")
    shards = export_scenes(out, split="val", count=10, image_size=32, fmt="wds", shard_size=4, progress=False)
    return out, shards


def test_reads_back_the_scenes_export(exported):
    out, shards = exported
    ds = TarShardDataset(out)
    assert ds.shards == shards and len(ds) == 10 and ds.skipped == [] and ds.errors == []
    source = ScenesDataset("val", size=10, image_size=32)
    for i in range(10):
        item, want = ds[i], source[i]
        assert np.array_equal(np.asarray(item["image"]), np.asarray(want["image"]))  # PNG is lossless
        assert item["captions"] == want["captions"] and item["labels"] == want["labels"]
        assert item["key"] == f"{i:06d}" and item["index"] == i
        assert item["path"] == f"{shards[i // 4]}:{i:06d}"
    assert ds.all_captions()[: len(source[0]["captions"])] == source[0]["captions"]
    assert len(ds.all_captions(split=True)) >= len(ds.all_captions())


def test_shard_lists_folder_glob_braces_and_lists(exported):
    out, shards = exported
    assert expand_braces("s/{000..002}.tar") == ["s/000.tar", "s/001.tar", "s/002.tar"]
    assert expand_braces("{a,b{1..2}}-{9..10}") == ["a-9", "a-10", "b1-9", "b1-10", "b2-9", "b2-10"]
    assert expand_braces("plain{x}") == ["plain{x}"]
    with pytest.raises(ValueError, match="unbalanced"):
        expand_braces("s/{0..2.tar")
    assert expand_shards(f"{out}/shard-{{000000..000002}}.tar") == shards
    assert expand_shards(f"{out}/shard-*.tar") == shards
    assert expand_shards([shards[2], shards[0]]) == [shards[2], shards[0]]
    assert len(TarShardDataset(f"{out}/shard-{{000001..000002}}.tar")) == 6
    with pytest.raises(FileNotFoundError, match=r"1 shard\(s\) not found.*shard-000003\.tar"):
        expand_shards(f"{out}/shard-{{000000..000003}}.tar")
    with pytest.raises(ValueError, match="only local files"):
        expand_shards("https://example.com/shard-0.tar")
    assert split_member_name("a/b/0001.seg.PNG") == ("a/b/0001", "seg.png")


def test_corrupt_image_member_raises_and_skipcorrupt_skips(tmp_path):
    shard = tmp_path / "s.tar"
    _write_tar(
        shard,
        [
            ("000.png", _png(0)),
            ("000.txt", b"a red circle"),
            ("001.jpg", b"\xff\xd8 this is not a jpeg"),
            ("001.json", json.dumps({"caption": "broken"}).encode()),
            ("002.png", _png(2)),
            ("002.json", json.dumps({"captions": ["one", "two"], "caption": "ignored"}).encode()),
        ],
    )
    ds = TarShardDataset(shard)
    assert len(ds) == 3 and ds[0]["captions"] == ["a red circle"] and ds[2]["captions"] == ["one", "two"]
    with pytest.raises(CorruptImageError) as info:
        ds[1]
    assert info.value.path == f"{shard}:001"
    item = SkipCorrupt(ds)[1]
    assert item["key"] == "002" and item["skipped"][0].startswith(f"{shard}:001: ")


def test_samples_without_image_or_caption_are_skipped_and_counted(tmp_path):
    shard = tmp_path / "s.tar"
    _write_tar(
        shard,
        [
            ("a.png", _png(0)),
            ("a.txt", b"kept"),
            ("b.png", _png(1)),  # no caption
            ("c.txt", b"no image"),
            ("d.jpg", _png(3)),
            ("d.json", b"{broken"),
            ("e.webp", _png(4)),
            ("e.json", json.dumps({"url": "x", "caption": "  "}).encode()),  # img2dataset style, empty
        ],
    )
    with pytest.warns(UserWarning, match="skipped 4 sample"):
        ds = TarShardDataset(shard)
    assert len(ds) == 1 and ds[0]["key"] == "a"
    assert [s.split(": ", 1)[0] for s in ds.skipped] == [f"{shard}:{k}" for k in "bcde"]
    assert "no caption" in ds.skipped[0] and "no image" in ds.skipped[1] and "json" in ds.skipped[2]


def test_truncated_shard_keeps_its_readable_part(exported, tmp_path):
    _, shards = exported
    data = shards[0].read_bytes()
    with tarfile.open(shards[0]) as tar:
        third = tar.getmember("000002.png")
    # Cut inside the image data of the third sample, and exactly at the header of its image.
    for end, reason in [(third.offset_data + 100, "truncated inside member 000002.png"), (third.offset, "marker")]:
        cut = tmp_path / f"cut-{end}.tar"
        cut.write_bytes(data[:end])
        with pytest.warns(UserWarning, match="1 damaged shard"):
            ds = TarShardDataset([cut, shards[1]])
        assert len(ds) == 2 + 4 and len(ds.errors) == 1 and ds.errors[0].startswith(f"{cut}: ")
        assert reason in ds.errors[0]
        assert [ds[i]["key"] for i in range(len(ds))] == [f"{i:06d}" for i in (0, 1, 4, 5, 6, 7)]


def test_handles_are_per_process_and_not_pickled(exported):
    out, _ = exported
    ds = TarShardDataset(out)
    first = ds[0]["captions"]
    clone = pickle.loads(pickle.dumps(ds))
    assert len(clone._files) == 0 and clone[0]["captions"] == first
    loader = DataLoader(SkipCorrupt(ds), batch_size=None, num_workers=2, collate_fn=lambda x: x)
    keys = [item["key"] for item in loader]
    assert keys == [f"{i:06d}" for i in range(10)]


def test_compressed_shard_is_rejected_by_the_index_but_streams(exported, tmp_path):
    _, shards = exported
    gz = tmp_path / "s.tar.gz"
    gz.write_bytes(gzip.compress(shards[0].read_bytes()))
    with pytest.raises(ValueError, match="gzip-compressed"):
        TarShardDataset(gz)
    assert [it["key"] for it in iter_shards([gz])] == ["000000", "000001", "000002", "000003"]


def test_iter_shards_splits_disjointly_and_covers_everything(exported):
    out, _ = exported
    seen: dict[tuple[int, int], list[str]] = {}
    for rank in range(2):
        for worker in range(2):
            seen[rank, worker] = [
                it["key"] for it in iter_shards(out, rank=rank, world_size=2, worker_id=worker, num_workers=2, seed=5)
            ]
    keys = [k for ks in seen.values() for k in ks]
    assert sorted(keys) == [f"{i:06d}" for i in range(10)]  # every sample once
    assert sum(1 for ks in seen.values() if not ks) == 1  # 3 shards, 4 readers: one idle
    for ks in seen.values():  # whole shards per reader, in order
        assert ks == sorted(ks) and len({int(k) // 4 for k in ks}) <= 1
    # Deterministic per (seed, epoch); another epoch deals shards differently for some seed.
    again = [it["key"] for it in iter_shards(out, rank=0, world_size=2, worker_id=0, num_workers=2, seed=5)]
    assert again == seen[0, 0]
    assert any(shards_for(3, 0, 1, 0, 1, 5, e) != shards_for(3, 0, 1, 0, 1, 5, 0) for e in range(1, 6))
    source = ScenesDataset("val", size=10, image_size=32)
    item = next(iter_shards(out, worker_id=0, num_workers=1))
    want = source[int(item["key"])]
    assert item["captions"] == want["captions"] and np.array_equal(np.asarray(item["image"]), np.asarray(want["image"]))
    with pytest.raises(ValueError, match="rank"):
        shards_for(3, 2, 2, 0, 1, 0, 0)


def test_iter_shards_reports_skips(tmp_path):
    shard = tmp_path / "s.tar"
    _write_tar(shard, [("a.png", _png(0)), ("a.txt", b"ok"), ("b.png", b"garbage"), ("b.txt", b"x"), ("c.txt", b"y")])
    reasons: list[str] = []
    items = list(iter_shards(shard, worker_id=0, num_workers=1, on_skip=reasons.append))
    assert [it["key"] for it in items] == ["a"]
    assert [r.split(": ", 1)[0] for r in reasons] == [f"{shard}:b", f"{shard}:c"]
    with pytest.warns(UserWarning, match="skipped 2 sample"):
        list(iter_shards(shard, worker_id=0, num_workers=1))
