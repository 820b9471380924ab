"""The user's labelled images or videos, for probes (``openjepa eval --train --val``) and features out.

``DATA`` is one of:

- a **folder with one subfolder per class** (``DATA/<class>/<file>``, searched recursively; hidden files
  and files with other extensions are ignored; files directly in ``DATA`` are ignored, or, with no
  subfolders, read as unlabelled data for ``openjepa features``);
- a **JSONL** file (``.jsonl``): one object per line, ``{"image": "path", "label": ...}`` or
  ``{"video": "path", "label": ...}``; ``"labels": {"task": ..., ...}`` gives several tasks at once;
- a **CSV** file (``.csv``) with a header naming the file column (``image``, ``video`` or ``path``) and a
  ``label`` column; any other column named ``label_<task>`` adds the task ``<task>``;
- a **list file** (any other extension, V-JEPA style): ``path label`` per line, separated by spaces, a tab
  or a comma (the last separator splits, so paths may contain spaces); ``#`` starts a comment.

Relative paths are resolved against the list file's folder. Labels are class names or integers; the
classes of a task are the sorted distinct train labels (integers sort numerically). Whether the files are
images or videos is read from the column name (JSONL, CSV) or from the file extensions (folders, lists).
A label of the val data that the train data never shows is an error naming it; a missing or unreadable
file is skipped when read, counted and reported (never silently).
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from openjepa.data.images import IMAGE_EXTENSIONS, load_image
from openjepa.errors import DataError

__all__ = [
    "VIDEO_EXTENSIONS",
    "LabelledFiles",
    "Listing",
    "class_index",
    "open_labelled_pair",
    "open_user_data",
    "read_listing",
]

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")

LAYOUTS = (
    "a folder with one subfolder per class, a JSONL file ({\"image\": path, \"label\": ...}), a CSV file "
    "(header with image/video/path and label) or a list file (`path label` per line)"
)


@dataclass
class Listing:
    """Files and their raw labels as a DATA argument lists them.

    Attributes:
        source: the folder or list file.
        kind: ``"image"`` or ``"video"``.
        files: the files, in order.
        labels: per file, ``{task: raw label}`` (class name or integer); empty dicts when unlabelled.
        where: per file, where it is listed (``file:line`` or the path), for error messages.
    """

    source: Path
    kind: str
    files: list[Path] = field(default_factory=list)
    labels: list[dict[str, Any]] = field(default_factory=list)
    where: list[str] = field(default_factory=list)

    @property
    def tasks(self) -> list[str]:
        """Tasks labelled on every file, in first-seen order."""
        if not self.labels:
            return []
        names = list(self.labels[0])
        return [t for t in names if all(t in lab for lab in self.labels)]


def _kind_of(path: str | os.PathLike) -> str | None:
    ext = os.path.splitext(str(path))[1].lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    return None


def _int_if_digits(value: str) -> int | str:
    text = value.strip()
    return int(text) if text.lstrip("-").isdigit() else text


def _resolve(base: Path, name: str) -> Path:
    return Path(name) if os.path.isabs(name) else base / name


def _kind_from_files(source: Path, files: list[Path], where: list[str]) -> str:
    kinds = {_kind_of(f) for f in files}
    if kinds == {"image"} or kinds == {"video"}:
        return kinds.pop()  # type: ignore[return-value]
    if None in kinds:
        i = next(i for i, f in enumerate(files) if _kind_of(f) is None)
        raise DataError(
            f"{where[i]}: {files[i].name} is neither an image ({', '.join(IMAGE_EXTENSIONS)}) nor a video "
            f"({', '.join(VIDEO_EXTENSIONS)}) by its extension; list only images or only videos"
        )
    raise DataError(f"{source} lists both images and videos: evaluate one kind at a time")


def _read_folder(root: Path) -> Listing:
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    listing = Listing(root, "image")
    for d in subdirs:
        found = []
        for dirpath, dirnames, filenames in os.walk(d):
            dirnames[:] = [n for n in dirnames if not n.startswith(".")]
            found += [Path(dirpath) / n for n in filenames if not n.startswith(".") and _kind_of(n) is not None]
        for path in sorted(found, key=lambda f: f.relative_to(d).as_posix()):
            listing.files.append(path)
            listing.labels.append({"class": d.name})
            listing.where.append(str(path))
    if not listing.files:  # no class subfolders: a flat folder of unlabelled files (features only)
        for p in sorted(root.iterdir()):
            if p.is_file() and not p.name.startswith(".") and _kind_of(p) is not None:
                listing.files.append(p)
                listing.labels.append({})
                listing.where.append(str(p))
    if not listing.files:
        raise DataError(f"no image or video files found in {root}. Expected {LAYOUTS}")
    listing.kind = _kind_from_files(root, listing.files, listing.where)
    return listing


def _check_label(value: Any, where: str, task: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or value == "":
        raise DataError(f"{where}: label {task!r} must be an integer or a class name, got {value!r}")
    return value


def _read_jsonl(path: Path) -> Listing:
    listing = Listing(path, "image")
    kinds = set()
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{where}: invalid JSON ({err.msg} at column {err.colno}); fix the line") from None
            if not isinstance(rec, dict):
                raise DataError(f"{where}: expected a JSON object like {{\"image\": \"a.png\", \"label\": \"cat\"}}")
            keys = [k for k in ("image", "video") if k in rec]
            if len(keys) != 1 or not isinstance(rec[keys[0]], str) or not rec[keys[0]]:
                raise DataError(f'{where}: give exactly one of "image" or "video" as a path string')
            kinds.add(keys[0])
            if "label" in rec and "labels" in rec:
                raise DataError(f'{where}: give either "label" or "labels", not both')
            labels: dict[str, Any] = {}
            if "label" in rec:
                labels = {"class": _check_label(rec["label"], where, "class")}
            elif "labels" in rec:
                if not isinstance(rec["labels"], dict):
                    raise DataError(f'{where}: "labels" must be an object of task name -> class')
                labels = {str(t): _check_label(v, where, str(t)) for t, v in rec["labels"].items()}
            listing.files.append(_resolve(path.parent, rec[keys[0]]))
            listing.labels.append(labels)
            listing.where.append(where)
    if len(kinds) > 1:
        raise DataError(f"{path} lists both images and videos: evaluate one kind at a time")
    listing.kind = kinds.pop() if kinds else "image"
    return listing


def _read_csv(path: Path) -> Listing:
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        raise DataError(f"{path} is empty. Expected a header (image,label or video,label or path,label) and rows")
    header = [h.strip().lower() for h in rows[0]]
    file_cols = [h for h in ("image", "video", "path") if h in header]
    if len(file_cols) != 1:
        raise DataError(
            f"{path}:1: the header {rows[0]} needs exactly one file column named image, video or path "
            "(and a label column)"
        )
    col = header.index(file_cols[0])
    task_cols = {("class" if h == "label" else h[len("label_") :]): i for i, h in enumerate(header)
                 if h == "label" or h.startswith("label_")}
    listing = Listing(path, "image")
    for lineno, row in enumerate(rows[1:], start=2):
        where = f"{path}:{lineno}"
        if len(row) != len(header):
            raise DataError(f"{where}: {len(row)} columns but the header has {len(header)}; fix the row")
        name = row[col].strip()
        if not name:
            raise DataError(f"{where}: empty {file_cols[0]} column")
        listing.files.append(_resolve(path.parent, name))
        listing.labels.append({t: _check_label(_int_if_digits(row[i]), where, t) for t, i in task_cols.items()})
        listing.where.append(where)
    if not listing.files:
        raise DataError(f"{path} has a header but no rows")
    listing.kind = file_cols[0] if file_cols[0] != "path" else _kind_from_files(path, listing.files, listing.where)
    return listing


def _read_list(path: Path) -> Listing:
    listing = Listing(path, "image")
    with path.open(encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            where = f"{path}:{lineno}"
            parts = line.rsplit(None, 1)
            if len(parts) == 1 and "," in line:
                parts = [p.strip() for p in line.rsplit(",", 1)]
            if len(parts) == 2 and _kind_of(parts[0]) is None and _kind_of(line) is not None:
                parts = [line]  # a path with a space and no label
            name = parts[0]
            labels = {"class": _check_label(_int_if_digits(parts[1]), where, "class")} if len(parts) == 2 else {}
            listing.files.append(_resolve(path.parent, name))
            listing.labels.append(labels)
            listing.where.append(where)
    if not listing.files:
        raise DataError(f"{path} lists no files. Expected `path label` per line")
    listing.kind = _kind_from_files(path, listing.files, listing.where)
    return listing


def read_listing(path: str | os.PathLike) -> Listing:
    """Reads a DATA argument (folder, ``.jsonl``, ``.csv`` or list file) into a :class:`Listing`.

    Raises:
        FileNotFoundError: nothing at ``path``.
        DataError: a malformed line (file and line number in the message), no files, images and videos mixed.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"data not found: {p}. Expected {LAYOUTS}")
    if p.is_dir():
        return _read_folder(p)
    suffix = p.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(p)
    if suffix == ".csv":
        return _read_csv(p)
    return _read_list(p)


def class_index(train: Listing, val: Listing | None = None) -> dict[str, list[Any]]:
    """Classes per task (sorted distinct train labels), checked against the val labels.

    Raises:
        DataError: no labels, tasks that differ between train and val, a val class the train data never
            shows (named with where it is listed), or a task mixing integers and names.
    """
    tasks = train.tasks
    if not tasks:
        raise DataError(
            f"{train.source} carries no labels: probes need {LAYOUTS}, with a label for every file"
        )
    classes: dict[str, list[Any]] = {}
    for task in tasks:
        values = {lab[task] for lab in train.labels}
        if len({type(v) for v in values}) > 1:
            raise DataError(f"{train.source}: label {task!r} mixes integers and class names; use one or the other")
        classes[task] = sorted(values)
    if val is not None:
        missing = [t for t in tasks if t not in val.tasks]
        if missing:
            names = ", ".join(map(repr, missing))
            raise DataError(f"{val.source} does not give label(s) {names} for every file, unlike {train.source}")
        for task in tasks:
            known = set(classes[task])
            unseen = [(lab[task], w) for lab, w in zip(val.labels, val.where, strict=True) if lab[task] not in known]
            if unseen:
                names = sorted({str(v) for v, _ in unseen})
                raise DataError(
                    f"{val.source}: class(es) {', '.join(names)} of label {task!r} never occur in the train data "
                    f"{train.source} (first at {unseen[0][1]}); a probe cannot predict a class it was never shown. "
                    f"Add train examples or drop those files. Train classes: {', '.join(map(str, classes[task]))}"
                )
    return classes


def _open_video_reader(files: list[Path], num_frames: int, frame_step: int) -> Any:
    """A video decoder over ``files`` in this order (``reader[i]["video"]``, ``reader.eval_clips(i, n)``).

    The decoding lives in :mod:`openjepa.data.video`; its reader takes a list file, so the files are handed
    over as a ``path 0`` list in a temporary folder, removed once read (the reader keeps the paths; the
    labels here are ours, the reader's are not used).
    """
    from openjepa.data.video import VideoFileDataset

    with tempfile.TemporaryDirectory(prefix="openjepa-eval-") as folder:
        listing = Path(folder) / "videos.txt"
        listing.write_text("".join(f"{f} 0\n" for f in files))
        # check_files=False: a missing file is skipped and reported when read, like an unreadable one.
        return VideoFileDataset(str(listing), num_frames=num_frames, frame_step=frame_step, check_files=False)


class LabelledFiles(Dataset):
    """Images or videos of a :class:`Listing`, with labels mapped to class indices.

    Items: ``{"image": PIL RGB}`` or ``{"video": uint8 [T, H, W, 3]}``, plus ``labels`` (``{task: index}``),
    ``index`` and ``path``. Unreadable files raise (the evaluator skips and reports them).

    Args:
        listing: the files.
        classes: ``{task: class values}`` (:func:`class_index`); ``None`` for unlabelled data.
        num_frames, frame_step: clip sampling (video only).
    """

    def __init__(
        self, listing: Listing, classes: dict[str, list[Any]] | None = None, num_frames: int = 16, frame_step: int = 4
    ):
        self.listing = listing
        self.files = list(listing.files)
        self.kind = listing.kind
        self.classes = classes or {}
        self.tasks: dict[str, int] = {task: len(values) for task, values in self.classes.items()}
        lookup = {task: {v: k for k, v in enumerate(values)} for task, values in self.classes.items()}
        self._labels = [{task: lookup[task][lab[task]] for task in lookup} for lab in listing.labels]
        self.num_frames = num_frames
        self.frame_step = frame_step
        self._video: Any = None  # opened on first use, in whichever process reads

    def __len__(self) -> int:
        return len(self.files)

    def _reader(self) -> Any:
        if self._video is None:
            self._video = _open_video_reader(self.files, self.num_frames, self.frame_step)
        return self._video

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_video": None}  # each loader worker opens its own decoder

    def _meta(self, i: int) -> dict[str, Any]:
        return {"labels": dict(self._labels[i]), "index": int(i), "path": str(self.files[i])}

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self.kind == "image":
            return {"image": load_image(self.files[i]), **self._meta(i)}
        return {"video": np.asarray(self._reader()[i]["video"]), **self._meta(i)}

    def eval_clips(self, i: int, num_clips: int) -> dict[str, Any]:
        """Item ``i`` with ``num_clips`` evenly spaced clips (``video`` uint8 ``[C, T, H, W, 3]``), one decode."""
        if self.kind == "image":
            raise DataError(f"{self.listing.source} lists images: there are no clips to take")
        return {"video": np.asarray(self._reader().eval_clips(i, num_clips)["video"]), **self._meta(i)}

    def fingerprint(self) -> dict[str, Any]:
        """Files (with size and mtime), classes and clip settings: the feature cache's dataset key."""

        def stat(p: Path) -> list[Any]:
            try:
                st = p.stat()
                return [str(p), st.st_size, st.st_mtime_ns]
            except OSError:  # missing now: part of the key, and the reader will skip it
                return [str(p), None, None]

        return {
            "files": [stat(p) for p in self.files],
            "labels": self._labels,
            "classes": {t: [str(v) for v in vs] for t, vs in self.classes.items()},
            "kind": self.kind,
            "clip": [self.num_frames, self.frame_step] if self.kind == "video" else None,
        }

    def __repr__(self) -> str:
        return f"LabelledFiles({str(self.listing.source)!r}, {len(self)} {self.kind}s, tasks {self.tasks})"


def _check_kind(listing: Listing, input_key: str) -> None:
    if listing.kind != input_key:
        need = "images (an image encoder, num_frames=1)" if input_key == "image" else "video clips (a video encoder)"
        raise DataError(f"{listing.source} lists {listing.kind}s but the encoder takes {need}: give data of its kind")


def open_labelled_pair(
    train: str | os.PathLike, val: str | os.PathLike, input_key: str, num_frames: int = 16, frame_step: int = 4
) -> tuple[LabelledFiles, LabelledFiles]:
    """The train and val datasets of ``openjepa eval --train --val``, with one class mapping.

    Raises:
        FileNotFoundError, DataError: see :func:`read_listing` and :func:`class_index`; data of the other
            kind than the encoder's (``input_key``).
    """
    tr, va = read_listing(train), read_listing(val)
    for listing in (tr, va):
        _check_kind(listing, input_key)
    classes = class_index(tr, va)
    return LabelledFiles(tr, classes, num_frames, frame_step), LabelledFiles(va, classes, num_frames, frame_step)


def open_user_data(path: str | os.PathLike, input_key: str, num_frames: int = 16, frame_step: int = 4) -> LabelledFiles:
    """One DATA argument, labelled or not (``openjepa features``); labels are kept when every file has them."""
    listing = read_listing(path)
    _check_kind(listing, input_key)
    classes = class_index(listing) if listing.tasks else None
    return LabelledFiles(listing, classes, num_frames, frame_step)
