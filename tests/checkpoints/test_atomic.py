"""Atomic checkpoint writes (issue 14): a write that fails midway leaves the previous checkpoint loadable.

``atomic_save`` writes a temporary file, fsyncs it and renames it over the target. These tests make the
write fail in the ways a long run meets (the disk fills up while ``torch.save`` streams, ``fsync`` reports
an I/O error, Ctrl-C arrives mid-write) and check that the previous file still loads, that no temporary
file is left behind, and that the final name is never opened for writing directly. The training loop's
use of it is checked in ``tests/train/test_training_behaviour.py``.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
from pathlib import Path

import pytest
import torch

from openjepa.checkpoints import FORMAT, atomic_save, load_checkpoint

REAL_SAVE = torch.save


def _payload(step: int) -> dict:
    return {"format": FORMAT, "step": step, "model": {"w": torch.full((64, 64), float(step))}}


def _saved_bytes(obj) -> bytes:
    buf = io.BytesIO()
    REAL_SAVE(obj, buf)
    return buf.getvalue()


def _write(target, data: bytes) -> None:
    """Writes ``data`` to a path or an open binary file, as ``torch.save`` would."""
    if isinstance(target, (str, os.PathLike)):
        with open(target, "wb") as f:
            f.write(data)
    else:
        target.write(data)


def _save_that_fails_midway(exc: BaseException):
    """A ``torch.save`` that writes the first half of the file and then raises ``exc``."""

    def save(obj, f, *args, **kwargs):
        data = _saved_bytes(obj)
        _write(f, data[: len(data) // 2])
        raise exc

    return save


def _previous(tmp_path: Path) -> Path:
    path = tmp_path / "run" / "checkpoint-latest.pt"
    atomic_save(_payload(1), path)
    return path


def _assert_only(path: Path) -> None:
    """The previous checkpoint loads unchanged, and it is the only file in its folder (no temp file left)."""
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    state = load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["model"]["w"], torch.full((64, 64), 1.0))


@pytest.mark.parametrize(
    "exc", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()], ids=["disk-full", "ctrl-c"]
)
def test_a_save_that_fails_midway_leaves_the_previous_checkpoint(tmp_path, monkeypatch, exc):
    path = _previous(tmp_path)
    monkeypatch.setattr(torch, "save", _save_that_fails_midway(exc))
    with pytest.raises(type(exc)):
        atomic_save(_payload(2), path)
    monkeypatch.undo()
    _assert_only(path)


def test_an_fsync_error_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    # The bytes reached the page cache but not the disk: the write must count as failed.
    path = _previous(tmp_path)

    def fsync(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match="Input/output"):
        atomic_save(_payload(2), path)
    monkeypatch.undo()
    _assert_only(path)


def test_the_final_name_is_never_opened_for_writing(tmp_path, monkeypatch):
    path = _previous(tmp_path)
    written: list[Path] = []
    real_open = builtins.open

    def spy_save(obj, f, *args, **kwargs):
        written.append(Path(f if isinstance(f, (str, os.PathLike)) else f.name).resolve())
        return REAL_SAVE(obj, f, *args, **kwargs)

    def spy_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+"):
            written.append(Path(file).resolve())
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(torch, "save", spy_save)
    monkeypatch.setattr(builtins, "open", spy_open)
    assert atomic_save(_payload(2), path) == path
    monkeypatch.undo()
    assert written, "the spies saw no write at all"
    assert path.resolve() not in written
    # The new checkpoint replaced the old one, and nothing else is left in the folder.
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    assert load_checkpoint(path)["step"] == 2
