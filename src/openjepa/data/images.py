"""Readers for user images: class folders, flat folders and JSONL image-caption lists.

Every reader returns items shaped like the built-in scenes: a dict with ``image`` (PIL RGB), ``labels``
(``dict[str, int]``, possibly empty), ``index`` and ``path``; the JSONL reader adds ``captions``.
Unreadable files raise :class:`CorruptImageError`; wrap a reader in :class:`SkipCorrupt` so that a long
run skips such files and reports them instead of crashing.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
from PIL import Image, UnidentifiedImageError

from openjepa.errors import CorruptFileError, DataError

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


class CorruptImageError(CorruptFileError):
    """An image file exists but cannot be decoded (truncated, not an image, broken header...).

    Attributes:
        path: the file.
        reason: what the decoder said.
    """

    kind = "image"


def is_image_file(name: str | os.PathLike) -> bool:
    """Whether the file name has one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return os.path.splitext(str(name))[1].lower() in IMAGE_EXTENSIONS


def load_image(path: str | os.PathLike) -> Image.Image:
    """Reads an image file fully and returns it as RGB.

    Args:
        path: the file.

    Returns:
        The decoded RGB image (first frame of animations and multi-page files).

    Raises:
        FileNotFoundError: the file does not exist.
        CorruptImageError: the file cannot be decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    return decode_image(path, path)


def decode_image(source: str | os.PathLike | IO[bytes], name: str | os.PathLike) -> Image.Image:
    """Decodes an image file or binary stream fully to RGB; ``name`` is what errors call it.

    Raises:
        CorruptImageError: the data cannot be decoded.
    """
    try:
        with Image.open(source) as img:
            img.load()  # decode everything now: a truncated file must fail here, not later in a transform
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                # Through RGBA so that palette transparency is applied the way Pillow expects.
                img = img.convert("RGBA")
            return img.convert("RGB")
    except FileNotFoundError:
        raise
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        # Pillow reports damaged files through these: OSError (truncated data, decoder errors),
        # UnidentifiedImageError (not an image), SyntaxError (broken PNG chunks), ValueError (bad headers).
        reason = str(err) or type(err).__name__
        raise CorruptImageError(name, reason) from err


def _check_folder(root: Path, expected: str) -> None:
    if not root.exists():
        raise FileNotFoundError(f"image folder not found: {root}. Expected {expected}")
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder. Expected {expected}")


def list_files(folder: Path, recursive: bool, keep: Callable[[str | os.PathLike], bool]) -> list[Path]:
    """Files under ``folder`` that ``keep`` accepts, sorted by relative path; hidden files and folders skipped."""
    out: list[Path] = []
    if recursive:
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            out += [Path(dirpath) / f for f in filenames if not f.startswith(".") and keep(f)]
    else:
        out = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and keep(p)]
    return sorted(out, key=lambda p: p.relative_to(folder).as_posix())


def _list_images(folder: Path, recursive: bool) -> list[Path]:
    """Image files under ``folder`` (see :func:`list_files`)."""
    return list_files(folder, recursive, is_image_file)


_FOLDER_LAYOUT = (
    "either one subfolder per class (root/<class>/<image>, searched recursively) or image files directly "
    f"in the folder; extensions: {', '.join(IMAGE_EXTENSIONS)}"
)


class ImageFolderDataset(torch.utils.data.Dataset):
    """Images from a folder, labelled by class subfolder or unlabelled.

    Layout is detected: if subfolders of ``root`` contain images (at any depth), each such subfolder is a
    class (sorted names, label ``{"class": idx}``) and files directly in ``root`` are ignored with a
    warning; otherwise the images directly in ``root`` are used without labels.

    Args:
        root: the folder.

    Attributes:
        classes: class names (empty for a flat folder).
        tasks: ``{"class": len(classes)}`` for class folders, else empty.
        files: image paths in item order.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        _check_folder(self.root, _FOLDER_LAYOUT)
        subdirs = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        per_class = [(d.name, _list_images(d, recursive=True)) for d in subdirs]
        per_class = [(name, files) for name, files in per_class if files]
        top_level = _list_images(self.root, recursive=False)
        self.classes: list[str] = [name for name, _ in per_class]
        self.files: list[Path] = []
        self._labels: list[int] = []
        if per_class:
            if top_level:
                warnings.warn(
                    f"{self.root}: using the {len(per_class)} class subfolders and ignoring "
                    f"{len(top_level)} image(s) directly in the folder (e.g. {top_level[0].name})",
                    stacklevel=2,
                )
            for idx, (_, files) in enumerate(per_class):
                self.files += files
                self._labels += [idx] * len(files)
        else:
            self.files = top_level
        if not self.files:
            raise FileNotFoundError(f"no images found in {self.root}. Expected {_FOLDER_LAYOUT}")
        self.tasks: dict[str, int] = {"class": len(self.classes)} if self.classes else {}

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, Any]:
        path = self.files[i]
        labels = {"class": self._labels[i]} if self.classes else {}
        return {"image": load_image(path), "labels": labels, "index": int(i), "path": str(path)}

    def __repr__(self) -> str:
        return f"ImageFolderDataset({str(self.root)!r}, {len(self)} images, {len(self.classes)} classes)"


def _parse_jsonl_line(line: str) -> tuple[str, list[str], dict[str, Any]]:
    """(image, captions, raw labels) from one JSONL line; ValueError with the reason otherwise."""
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"invalid JSON ({err.msg} at column {err.colno})") from err
    if not isinstance(rec, dict):
        raise ValueError(f"expected a JSON object, got {type(rec).__name__}")
    image = rec.get("image")
    if not isinstance(image, str) or not image:
        raise ValueError('missing "image" (a path string)')
    captions = rec.get("captions", rec.get("caption", []))
    if isinstance(captions, str):
        captions = [captions]
    if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
        raise ValueError('"captions" must be a list of strings')
    if "label" in rec and "labels" in rec:
        raise ValueError('give either "label" or "labels", not both')
    labels: dict[str, Any] = {}
    if "label" in rec:
        labels = {"class": rec["label"]}
    elif "labels" in rec:
        labels = rec["labels"]
        if not isinstance(labels, dict):
            raise ValueError('"labels" must be an object of task name -> class')
    for key, value in labels.items():
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError(f"label {key!r} must be an integer or a class name, got {value!r}")
    return image, captions, labels


class JsonlImageDataset(torch.utils.data.Dataset):
    """Images listed in a JSONL file, with captions and optional labels.

    Each non-empty line is an object: ``{"image": "rel/or/abs.png", "captions": ["...", ...]}`` with an
    optional ``"label"`` (int or class name; stored under the task ``"class"``) or ``"labels"`` (object
    of task name -> int or class name). Relative image paths are resolved against the JSONL file's
    folder. Class names are mapped to indices per task in sorted order (see :attr:`classes`).

    Args:
        path: the JSONL file.
        strict: raise on a malformed line (default); if False, skip it with a warning and record it in
            :attr:`skipped_lines`.
        check_files: check at construction that every listed image exists (False defers the check to
            reading, where :class:`SkipCorrupt` can skip missing files).

    Raises:
        FileNotFoundError: the JSONL file is missing, or (with ``check_files``) listed images are.
        ValueError: a malformed line (file and line number in the message), or no entries.
    """

    def __init__(self, path: str | os.PathLike, strict: bool = True, check_files: bool = True):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(
                f"JSONL image list not found: {self.path}. Expected a file with one JSON object per line, "
                'e.g. {"image": "images/000000.png", "captions": ["a red circle"]}'
            )
        base = self.path.parent
        self.files: list[Path] = []
        self.captions: list[list[str]] = []
        raw_labels: list[dict[str, Any]] = []
        self.line_numbers: list[int] = []
        self.skipped_lines: list[tuple[int, str]] = []
        with self.path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    image, captions, labels = _parse_jsonl_line(line)
                except ValueError as err:
                    if strict:
                        raise ValueError(
                            f"{self.path}, line {lineno}: {err}. Fix the line or pass strict=False to skip "
                            "malformed lines"
                        ) from err
                    self.skipped_lines.append((lineno, str(err)))
                    continue
                self.files.append(Path(image) if os.path.isabs(image) else base / image)
                self.captions.append(captions)
                raw_labels.append(labels)
                self.line_numbers.append(lineno)
        if self.skipped_lines:
            first = self.skipped_lines[0]
            warnings.warn(
                f"{self.path}: skipped {len(self.skipped_lines)} malformed line(s), first: line {first[0]} "
                f"({first[1]})",
                stacklevel=2,
            )
        if not self.files:
            raise ValueError(f"{self.path} lists no images. Expected one JSON object per line")
        self.classes, self._labels = _index_labels(raw_labels)
        self.tasks: dict[str, int] = {
            task: len(names) if names else max(lab[task] for lab in self._labels if task in lab) + 1
            for task, names in self.classes.items()
        }
        if check_files:
            missing = [(p, n) for p, n in zip(self.files, self.line_numbers, strict=True) if not p.is_file()]
            if missing:
                shown = ", ".join(f"{p} (line {n})" for p, n in missing[:5])
                raise FileNotFoundError(
                    f"{self.path}: {len(missing)} of {len(self.files)} listed images are missing, "
                    f"e.g. {shown}. "
                    "Image paths are relative to the JSONL file's folder; pass check_files=False to skip "
                    "missing files while reading instead"
                )

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, Any]:
        path = self.files[i]
        return {
            "image": load_image(path),
            "captions": list(self.captions[i]),
            "labels": dict(self._labels[i]),
            "index": int(i),
            "path": str(path),
        }

    def __repr__(self) -> str:
        return f"JsonlImageDataset({str(self.path)!r}, {len(self)} images)"


def _index_labels(raw: list[dict[str, Any]]) -> tuple[dict[str, list[str]], list[dict[str, int]]]:
    """Maps class-name labels to sorted indices per task; integer labels pass through.

    Returns ``(classes, labels)``: ``classes[task]`` lists the names of a named task (empty for integer
    tasks).
    """
    tasks: dict[str, set] = {}
    for lab in raw:
        for task, value in lab.items():
            tasks.setdefault(task, set()).add(value)
    classes: dict[str, list[str]] = {}
    for task, values in tasks.items():
        kinds = {type(v) for v in values}
        if len(kinds) > 1:
            raise ValueError(f"label {task!r} mixes integers and class names; use one or the other")
        classes[task] = sorted(values) if str in kinds else []
    lookup = {task: {name: k for k, name in enumerate(names)} for task, names in classes.items() if names}
    labels = [
        {task: lookup[task][v] if task in lookup else int(v) for task, v in lab.items()} for lab in raw
    ]
    return classes, labels


class SkipCorrupt(torch.utils.data.Dataset):
    """Wraps a file dataset so that unreadable images are skipped instead of ending the run.

    When item ``i`` cannot be read (:class:`CorruptImageError`, or a file that vanished), items
    ``i+1, i+2, ...`` (wrapping around) are tried, up to ``max_tries`` in total. The returned item carries
    ``"skipped"``: a list of ``"path: reason"`` strings (empty when nothing was skipped). Items are the
    channel because this runs inside loader worker processes: the training loop counts the skips from
    the batches and enforces ``data.max_skip_fraction``.

    Args:
        dataset: a dataset whose ``__getitem__`` may raise :class:`CorruptImageError`.
        max_tries: how many consecutive items to try before giving up.

    Raises:
        RuntimeError: (from ``__getitem__``) ``max_tries`` consecutive items were unreadable.
    """

    def __init__(self, dataset: torch.utils.data.Dataset, max_tries: int = 10):
        if max_tries < 1:
            raise ValueError(f"SkipCorrupt max_tries={max_tries} must be >= 1")
        self.dataset = dataset
        self.max_tries = max_tries

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.read(i, lambda j: self.dataset[j])

    def clip(self, i: int, rng: Any) -> dict[str, Any]:
        """A training clip of video item ``i`` (see the video datasets' ``clip``), skipping unreadable videos."""
        return self.read(i, lambda j: self.dataset.clip(j, rng))

    def eval_clips(self, i: int, num_clips: int) -> dict[str, Any]:
        """``num_clips`` evenly spaced clips of video item ``i``, skipping unreadable videos."""
        return self.read(i, lambda j: self.dataset.eval_clips(j, num_clips))

    def read(self, i: int, reader: Callable[[int], dict[str, Any]]) -> dict[str, Any]:
        """``reader(j)`` for ``j = i, i+1, ...`` until one succeeds; the item lists what was skipped."""
        n = len(self)
        i = int(i)
        if not -n <= i < n:  # plain iteration over the dataset relies on IndexError to stop
            raise IndexError(f"index {i} out of range for a dataset of size {n}")
        i %= n
        skipped: list[str] = []
        for k in range(min(self.max_tries, n)):
            j = (i + k) % n
            try:
                item = reader(j)
            except CorruptFileError as err:
                skipped.append(f"{err.path}: {err.reason}")
                continue
            except FileNotFoundError as err:
                skipped.append(f"{err}")
                continue
            item["skipped"] = skipped
            return item
        raise DataError(
            f"{len(skipped)} consecutive files from index {i} could not be read: " + "; ".join(skipped)
        )

    def __getattr__(self, name: str) -> Any:
        # Forward attributes such as ``classes`` and ``tasks`` to the wrapped dataset. ``dataset`` itself
        # is excluded so that unpickling (which looks attributes up before __init__ ran) cannot recurse.
        if name == "dataset" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __repr__(self) -> str:
        return f"SkipCorrupt({self.dataset!r}, max_tries={self.max_tries})"
