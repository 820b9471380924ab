"""Write a generated ``scenes`` split to disk in the formats users bring.

Two layouts:

- ``images``: ``DIR/images/000000.png`` ..., ``DIR/captions.jsonl`` (``{"image": "images/000000.png",
  "captions": [...]}`` per line, readable by :class:`~openjepa.data.images.JsonlImageDataset`) and
  ``DIR/labels.jsonl`` (``{"image": ..., "labels": {...}}``).
- ``wds``: WebDataset tar shards ``DIR/shard-000000.tar`` ... whose members are ``000000.png`` and
  ``000000.json`` (``{"captions": [...], "labels": {...}, "split": ..., "index": ...}``).

Both also write ``DIR/scenes.json`` with the generator parameters, so the files can be regenerated.
File names are the item indices within the split, so two exports of the same split agree file by file.
"""

from __future__ import annotations

import io
import json
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from openjepa.data.scenes import ScenesDataset

FORMATS = ("images", "wds")


def _png_bytes(img: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _items(ds: ScenesDataset, count: int, progress: bool, desc: str) -> Iterator[dict[str, Any]]:
    bar = tqdm(range(count), desc=desc, unit="img", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    for i in bar:
        yield ds[i]


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # fixed metadata: the same split gives byte-identical shards
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def export_scenes(
    out: str | Path,
    split: str = "train",
    count: int = 1000,
    image_size: int = 64,
    max_objects: int = 4,
    caption_noise: float = 0.0,
    seed: int = 0,
    fmt: str = "images",
    shard_size: int = 1000,
    overwrite: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Generates ``count`` scenes of ``split`` and writes them under ``out``.

    Args:
        out: output folder (created if needed).
        split: ``train``, ``val`` or ``test``.
        count: number of images (items ``0 .. count-1`` of the split).
        image_size: canvas side in pixels.
        max_objects: at most this many objects per scene.
        caption_noise: probability of a wrong attribute per caption.
        seed: dataset seed.
        fmt: ``"images"`` (PNG files + JSONL lists) or ``"wds"`` (WebDataset tar shards).
        shard_size: images per tar shard (``wds`` only).
        overwrite: replace an earlier export in ``out`` instead of refusing.
        progress: show a progress bar on stderr.

    Returns:
        The main files written: the two JSONL lists, or the shards.

    Raises:
        ValueError: bad ``fmt``, ``count`` or ``shard_size``.
        FileExistsError: ``out`` already holds an export and ``overwrite`` is False.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if count < 1:
        raise ValueError(f"count={count} must be >= 1")
    if shard_size < 1:
        raise ValueError(f"shard_size={shard_size} must be >= 1")
    ds = ScenesDataset(split, count, image_size, max_objects, caption_noise, seed)
    out = Path(out)
    markers = (out / "captions.jsonl", out / "shard-000000.tar", out / "scenes.json")
    existing = [p for p in markers if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{out} already holds an export ({existing[0].name}); choose another folder or pass --overwrite"
        )
    out.mkdir(parents=True, exist_ok=True)
    if overwrite:
        for old in out.glob("shard-*.tar"):  # a previous export may have had more shards
            old.unlink()
    meta = {
        "generator": "openjepa scenes",
        "split": split,
        "count": count,
        "image_size": image_size,
        "max_objects": max_objects,
        "caption_noise": caption_noise,
        "seed": seed,
        "format": fmt,
        "tasks": ds.tasks,
    }
    (out / "scenes.json").write_text(json.dumps(meta, indent=2) + "\n")
    desc = f"scenes {split} -> {out}"
    if fmt == "images":
        return _write_images(ds, out, count, progress, desc)
    return _write_shards(ds, out, count, shard_size, split, progress, desc)


def _write_images(ds: ScenesDataset, out: Path, count: int, progress: bool, desc: str) -> list[Path]:
    images = out / "images"
    images.mkdir(exist_ok=True)
    captions_path, labels_path = out / "captions.jsonl", out / "labels.jsonl"
    with captions_path.open("w", encoding="utf-8") as cap, labels_path.open("w", encoding="utf-8") as lab:
        for item in _items(ds, count, progress, desc):
            rel = f"images/{item['index']:06d}.png"
            item["image"].save(out / rel, format="PNG")
            cap.write(json.dumps({"image": rel, "captions": item["captions"]}) + "\n")
            lab.write(json.dumps({"image": rel, "labels": item["labels"]}) + "\n")
    return [captions_path, labels_path]


def _write_shards(
    ds: ScenesDataset, out: Path, count: int, shard_size: int, split: str, progress: bool, desc: str
) -> list[Path]:
    shards: list[Path] = []
    items = _items(ds, count, progress, desc)
    for start in range(0, count, shard_size):
        shards.append(out / f"shard-{start // shard_size:06d}.tar")
        with tarfile.open(shards[-1], "w", format=tarfile.USTAR_FORMAT) as tar:
            for _ in range(min(shard_size, count - start)):
                item = next(items)
                i = item["index"]
                meta = {"captions": item["captions"], "labels": item["labels"], "split": split, "index": i}
                key = f"{i:06d}"
                _tar_add(tar, f"{key}.png", _png_bytes(item["image"]))
                _tar_add(tar, f"{key}.json", json.dumps(meta).encode("utf-8"))
    return shards
