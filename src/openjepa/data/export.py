"""Write a generated split to disk in the formats users bring, with a manifest that keeps it honest.

Layouts:

- ``images`` (``scenes``): ``DIR/images/000000.png`` ..., ``DIR/captions.jsonl`` (``{"image":
  "images/000000.png", "captions": [...]}`` per line, readable by
  :class:`~openjepa.data.images.JsonlImageDataset`) and ``DIR/labels.jsonl`` (``{"image": ..., "labels":
  {...}}``).
- ``wds`` (``scenes``): WebDataset tar shards ``DIR/shard-000000.tar`` ... whose members are ``000000.png``
  and ``000000.json`` (``{"captions": [...], "labels": {...}, "split": ..., "index": ...}``).
- ``videos`` (``sprites``): ``DIR/videos/000000.mp4`` ... (H.264, yuv420p), a V-JEPA-style list file
  ``DIR/list.txt`` (``videos/000000.mp4 <label>`` per line) and ``DIR/labels.jsonl`` (``{"video": ...,
  "labels": {...}, "captions": [...]}``), all readable by :class:`~openjepa.data.video.VideoFileDataset`.

Each export also writes ``DIR/scenes.json`` or ``DIR/sprites.json`` (the generator parameters, so the files
can be regenerated) and ``DIR/manifest.json``: the generator, the layout, the item count and every file
written with its size. The manifest is what makes exports safe to redo and to read:

- ``--overwrite`` deletes exactly the files the previous export's manifest lists, and refuses a folder
  that holds anything else (it never deletes files it did not write); a non-empty folder without a
  manifest is refused whatever the options.
- The manifest is first written marked incomplete (with the planned file list) and completed last, so an
  interrupted export is recognised as such.
- Readers call :func:`check_export`: files in the export's data folders that the manifest does not list
  (stale files of an earlier, larger export copied or written by hand), missing files and files whose
  size changed are errors, instead of silently training on a mix of two exports.

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

from openjepa.data import scenes as scenes_module
from openjepa.data.manifest import _begin, _finish, _manifest_base
from openjepa.data.scenes import ScenesDataset

FORMATS = ("images", "wds")
def _png_bytes(img: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _progress(count: int, progress: bool, desc: str, unit: str) -> Any:
    return tqdm(range(count), desc=desc, unit=unit, file=sys.stderr, disable=not progress, dynamic_ncols=True)


def _items(ds: ScenesDataset, count: int, progress: bool, desc: str) -> Iterator[dict[str, Any]]:
    for i in _progress(count, progress, desc, "img"):
        yield ds[i]


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # fixed metadata: the same split gives byte-identical shards
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _shard_names(count: int, shard_size: int) -> list[str]:
    return [f"shard-{k:06d}.tar" for k in range((count + shard_size - 1) // shard_size)]


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
        out: output folder (created if needed; must be empty or hold an earlier export).
        split: ``train``, ``val`` or ``test``.
        count: number of images (items ``0 .. count-1`` of the split).
        image_size: canvas side in pixels.
        max_objects: at most this many objects per scene.
        caption_noise: probability of a wrong attribute per caption.
        seed: dataset seed.
        fmt: ``"images"`` (PNG files + JSONL lists) or ``"wds"`` (WebDataset tar shards).
        shard_size: images per tar shard (``wds`` only).
        overwrite: replace an earlier export in ``out`` (its files are deleted first) instead of refusing.
        progress: show a progress bar on stderr.

    Returns:
        The main files written: the two JSONL lists, or the shards.

    Raises:
        ValueError: bad ``fmt``, ``count`` or ``shard_size`` (ConfigError for generator parameters).
        FileExistsError: see :func:`prepare_output`.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if count < 1:
        raise ValueError(f"count={count} must be >= 1")
    if shard_size < 1:
        raise ValueError(f"shard_size={shard_size} must be >= 1")
    ds = ScenesDataset(split, count, image_size, max_objects, caption_noise, seed)
    out = Path(out)
    if fmt == "images":
        planned = [f"images/{i:06d}.png" for i in range(count)] + ["captions.jsonl", "labels.jsonl"]
    else:
        planned = _shard_names(count, shard_size)
    planned.append("scenes.json")
    base = _manifest_base("scenes", scenes_module.SCENES_VERSION, fmt, count, split)
    _begin(out, overwrite, base, planned)
    meta = {
        "generator": "openjepa scenes",
        "version": scenes_module.SCENES_VERSION,
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
        written = _write_images(ds, out, count, progress, desc)
    else:
        written = _write_shards(ds, out, count, shard_size, split, progress, desc)
    _finish(out, base, planned)
    return written


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


# ----------------------------------------------------------------------------- sprites


def export_sprites(
    out: str | Path,
    split: str = "train",
    count: int = 1000,
    image_size: int = 64,
    length: int = 32,
    max_sprites: int = 2,
    seed: int = 0,
    rotation: float = 0.0,
    motion: str = "bounce",
    label_task: str = "direction",
    fps: int = 8,
    crf: int = 12,
    overwrite: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Generates ``count`` sprites videos of ``split`` and writes them as H.264 MP4 files + lists.

    Every video has all ``length`` frames of the generated item, so a reader cuts clips from it exactly as
    :class:`~openjepa.data.sprites.SpritesDataset` does. Labels are the items' labels (motion at the label
    frame ``length // 2``).

    Args:
        out: output folder (created if needed; must be empty or hold an earlier export).
        split: ``train``, ``val`` or ``test``.
        count: number of videos (items ``0 .. count-1`` of the split).
        image_size: frame side in pixels (even: H.264 in yuv420p halves the chroma planes).
        length: frames per video.
        max_sprites: at most this many digits per video.
        seed: dataset seed.
        rotation: maximum spin in degrees per frame.
        motion: ``"bounce"`` or ``"wrap"``.
        label_task: the task whose label ``list.txt`` carries (``labels.jsonl`` has all of them).
        fps: frame rate written in the files.
        crf: x264 quality (lower is better; 12 keeps the frames within a few levels of the generated ones).
        overwrite: replace an earlier export in ``out`` (its files are deleted first) instead of refusing.
        progress: show a progress bar on stderr.

    Returns:
        ``[DIR/list.txt, DIR/labels.jsonl]``.

    Raises:
        ValueError: bad ``count``, odd ``image_size``, unknown ``label_task``, ``crf`` outside 0..51, ``fps``
            below 1 (ConfigError for generator parameters).
        FileExistsError: see :func:`prepare_output`.
        VideoBackendMissingError: PyAV is not installed.
    """
    from openjepa.data import sprites as sprites_module
    from openjepa.data.video import _av, write_video

    if count < 1:
        raise ValueError(f"count={count} must be >= 1")
    if image_size % 2:
        raise ValueError(f"image_size={image_size}: H.264 (yuv420p) needs an even frame side, e.g. 64")
    if not 0 <= crf <= 51:
        raise ValueError(f"crf={crf}: x264 quality must be from 0 (lossless) to 51")
    if fps < 1:
        raise ValueError(f"fps={fps} must be >= 1")
    # One-frame clips: the export holds whole videos, whatever clip shape later training uses.
    ds = sprites_module.SpritesDataset(
        split, count, image_size, length, max_sprites, seed, 1, 1, rotation=rotation, motion=motion
    )
    if label_task not in ds.tasks:
        raise ValueError(f"label_task={label_task!r}: choose one of {', '.join(ds.tasks)}")
    _av()  # fail before touching the folder when PyAV is missing
    out = Path(out)
    planned = [f"videos/{i:06d}.mp4" for i in range(count)] + ["list.txt", "labels.jsonl", "sprites.json"]
    base = _manifest_base("sprites", sprites_module.SPRITES_VERSION, "videos", count, split)
    _begin(out, overwrite, base, planned)
    meta = {
        "generator": "openjepa sprites",
        "version": sprites_module.SPRITES_VERSION,
        "split": split,
        "count": count,
        "image_size": image_size,
        "length": length,
        "max_sprites": max_sprites,
        "seed": seed,
        "rotation": rotation,
        "motion": motion,
        "label_frame": ds.label_frame,
        "label_task": label_task,
        "fps": fps,
        "crf": crf,
        "tasks": ds.tasks,
        "classes": ds.classes,
    }
    (out / "sprites.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out / "videos").mkdir(exist_ok=True)
    list_path, labels_path = out / "list.txt", out / "labels.jsonl"
    with list_path.open("w", encoding="utf-8") as lst, labels_path.open("w", encoding="utf-8") as lab:
        for i in _progress(count, progress, f"sprites {split} -> {out}", "video"):
            rel = f"videos/{i:06d}.mp4"
            write_video(out / rel, ds.video(i), fps=fps, crf=crf)
            labels = ds.labels(i)
            lst.write(f"{rel} {labels[label_task]}\n")
            lab.write(json.dumps({"video": rel, "labels": labels, "captions": ds.captions(i)}) + "\n")
    _finish(out, base, planned)
    return [list_path, labels_path]
