"""Export manifests: the list of files an ``openjepa data`` export wrote, checked by readers and by ``--overwrite``.

See :mod:`openjepa.data.export` for what the manifest guarantees. These helpers live apart from the
exporters so that readers (``data/video.py``, ``data/sources.py``) can check an export without importing
the generators.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from openjepa.errors import DataError

__all__ = ["MANIFEST", "check_export", "prepare_output", "read_manifest"]

MANIFEST = "manifest.json"
#: The ``format`` field that marks a manifest as ours (a folder may hold someone else's manifest.json).
MANIFEST_FORMAT = "openjepa-export"
MANIFEST_VERSION = 1
# Files a reader could pick up from an export's top level (shards, stray images or videos): an unlisted
# one there is stale. Other unlisted top-level files (a README, a hand-written subset list) are left alone.
_DATA_SUFFIXES = (".tar", ".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".mp4", ".m4v", ".mov",
                  ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ogv")  # fmt: skip


# ----------------------------------------------------------------------------- manifests


def read_manifest(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The export manifest of ``folder``, or None when there is none or it is not an openjepa manifest."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # not ours: someone else's file that happens to have the name
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        return None
    if not isinstance(manifest.get("files"), dict):
        raise DataError(f"{path}: the manifest has no `files` object; re-run the export with --overwrite")
    return manifest


def _find_manifest(path: Path) -> tuple[Path, dict[str, Any]] | None:
    """The export folder and manifest that ``path`` (a list file, an export folder or its data folder)
    belongs to."""
    folder = path if path.is_dir() else path.parent
    for candidate in (folder, folder.parent) if path.is_dir() else (folder,):
        manifest = read_manifest(candidate)
        if manifest is not None:
            return candidate, manifest
    return None


def _files_under(root: Path) -> list[str]:
    """Relative POSIX paths of the non-hidden files under ``root``, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        base = Path(dirpath)
        out += [(base / f).relative_to(root).as_posix() for f in filenames if not f.startswith(".")]
    return sorted(out)


def _stale_files(root: Path, listed: dict[str, Any]) -> list[str]:
    """Files under ``root`` a reader could take for part of the export but that the manifest does not list:
    anything in a folder the export writes to, and data files at the top level."""
    folders = {rel.split("/", 1)[0] for rel in listed if "/" in rel}
    stale = []
    for rel in _files_under(root):
        if rel in listed or rel == MANIFEST:
            continue
        top = rel.split("/", 1)[0]
        if top in folders or ("/" not in rel and rel.lower().endswith(_DATA_SUFFIXES)):
            stale.append(rel)
    return stale


def check_export(path: str | os.PathLike) -> dict[str, Any] | None:
    """Checks that an export written by ``openjepa data`` holds exactly the files its manifest lists.

    ``path`` may be the export folder, one of its data folders (``DIR/images``, ``DIR/videos``) or a list
    file in it. Anything without an openjepa manifest (the user's own data) passes unchecked.

    Returns:
        The manifest plus ``"root"`` (the export folder), or None when ``path`` is not part of an export.

    Raises:
        DataError: the export was interrupted, or files are stale (unlisted), missing or changed in size;
            the message names a few and the fix.
    """
    found = _find_manifest(Path(path))
    if found is None:
        return None
    root, manifest = found
    redo = f"re-run `openjepa data {manifest.get('generator', '...')} ... --out {root} --overwrite`"
    if not manifest.get("complete"):
        raise DataError(f"{root} holds an interrupted export ({MANIFEST} is marked incomplete): {redo}")
    listed: dict[str, Any] = manifest["files"]
    problems = []
    stale = _stale_files(root, listed)
    if stale:
        problems.append(f"{len(stale)} file(s) the export did not write, e.g. {', '.join(stale[:3])}")
    missing = [rel for rel in listed if not (root / rel).is_file()]
    if missing:
        problems.append(f"{len(missing)} listed file(s) missing, e.g. {', '.join(missing[:3])}")
    resized = [rel for rel in listed if rel not in missing and (root / rel).stat().st_size != listed[rel]]
    if resized:
        problems.append(f"{len(resized)} file(s) changed since the export, e.g. {', '.join(resized[:3])}")
    if problems:
        raise DataError(
            f"{root} does not match its {MANIFEST} (an export of {manifest.get('count')} items): "
            + "; ".join(problems)
            + f". Stale files would be read as data: {redo}, or delete the folder"
        )
    return {**manifest, "root": str(root)}


def _write_json(path: Path, value: Any) -> None:
    """Writes JSON atomically (temporary file + rename), so a reader never sees half a manifest."""
    tmp = path.with_name(f".{path.name}.tmp")  # hidden: never mistaken for a file of the export
    tmp.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _describe(manifest: dict[str, Any]) -> str:
    state = "" if manifest.get("complete") else ", interrupted"
    return f"{manifest.get('generator')} {manifest.get('layout')}, {manifest.get('count')} items{state}"


def prepare_output(out: Path, overwrite: bool) -> None:
    """Makes ``out`` ready for a new export: created, or emptied of a previous export's files.

    Raises:
        FileExistsError: ``out`` is a file; or a non-empty folder without an openjepa manifest; or an
            earlier export and ``overwrite`` is False; or it holds files the earlier export did not write.
    """
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file; --out must be a folder")
    if not out.exists() or not any(out.iterdir()):
        out.mkdir(parents=True, exist_ok=True)
        return
    manifest = read_manifest(out)
    if manifest is None:
        raise FileExistsError(
            f"{out} is not empty and holds no export manifest ({MANIFEST}): choose a new or empty folder. "
            "--overwrite only replaces an earlier `openjepa data` export, it never deletes other files"
        )
    if not overwrite:
        raise FileExistsError(
            f"{out} already holds an export ({_describe(manifest)}); choose another folder or pass --overwrite"
        )
    listed = manifest["files"]
    foreign = [rel for rel in _files_under(out) if rel not in listed and rel != MANIFEST]
    if foreign:
        raise FileExistsError(
            f"{out} holds {len(foreign)} file(s) the earlier export did not write (e.g. {', '.join(foreign[:3])}); "
            "--overwrite deletes only what an export wrote: move them away or choose another folder"
        )
    for rel in listed:
        (out / rel).unlink(missing_ok=True)
    (out / MANIFEST).unlink()
    for dirpath, _, _ in sorted(os.walk(out), key=lambda entry: -len(entry[0])):  # deepest first
        if Path(dirpath) != out and not any(Path(dirpath).iterdir()):
            Path(dirpath).rmdir()


def _begin(out: Path, overwrite: bool, base: dict[str, Any], planned: list[str]) -> None:
    """Prepares ``out`` and writes the incomplete manifest that claims the planned files."""
    prepare_output(out, overwrite)
    _write_json(out / MANIFEST, {**base, "complete": False, "files": {rel: None for rel in planned}})


def _finish(out: Path, base: dict[str, Any], written: list[str]) -> None:
    """Writes the complete manifest: every file written with its size."""
    files = {rel: (out / rel).stat().st_size for rel in sorted(written)}
    _write_json(out / MANIFEST, {**base, "complete": True, "files": files})


def _manifest_base(generator: str, version: str | None, layout: str, count: int, split: str) -> dict[str, Any]:
    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "generator": generator,
        "generator_version": version,
        "layout": layout,
        "split": split,
        "count": count,
    }


# ----------------------------------------------------------------------------- scenes


