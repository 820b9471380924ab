"""Reading and writing checkpoint files: atomic writes, safe loads, one-line errors.

A training checkpoint is a ``torch.save`` file holding only tensors and plain Python values, so it loads
with ``weights_only=True`` (nothing is unpickled but data). It is written to a temporary file, fsynced
and renamed over the target, so a crash mid-write never leaves a truncated ``checkpoint-latest.pt``.

Whatever is wrong with a file (missing, empty, truncated, garbage, a pickle that needs arbitrary code,
another program's format), the error is one line naming the file, what is wrong, and what to do. It never
suggests turning off ``weights_only``: unpickling an untrusted file can run arbitrary code.
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from openjepa.config import Config, ConfigError, from_dict
from openjepa.errors import CheckpointError

__all__ = [
    "FORMAT",
    "LATEST",
    "atomic_save",
    "checkpoint_config",
    "load_checkpoint",
    "read_torch_file",
    "resolve_checkpoint_path",
    "rng_state",
    "set_rng_state",
]

FORMAT = "openjepa-checkpoint-v2"
OLD_FORMATS = ("openjepa-checkpoint-v1",)
LATEST = "checkpoint-latest.pt"

_EARLIER = "Use an earlier periodic checkpoint (checkpoint-<step>.pt) of the same run, or retrain."


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some filesystems do not allow opening a directory; the rename is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to ``path`` through a temporary file + fsync + rename.

    A failure at any point (full disk, a kill) leaves the previous file at ``path`` untouched; the
    temporary file is removed when the failure is an exception.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def resolve_checkpoint_path(path: str | Path) -> Path:
    """A checkpoint file, or a run folder's ``checkpoint-latest.pt``.

    Raises:
        FileNotFoundError: neither exists (the message says what was looked for).
    """
    path = Path(path)
    if path.is_dir():
        latest = path / LATEST
        if not latest.is_file():
            raise FileNotFoundError(
                f"{path} is a folder without {LATEST}: pass a checkpoint file or a run folder of `openjepa pretrain`"
            )
        return latest
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint not found: {path}. Pass a checkpoint file or a run folder holding {LATEST}."
        )
    return path


def read_torch_file(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU with the failure turned into a one-line error."""
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): the write was interrupted. {_EARLIER}")
    try:
        with warnings.catch_warnings():
            # Random bytes read as an old-style pickle make torch warn about an unknown "pickle protocol";
            # the error below already says the file is corrupt.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported global" in str(err) or "was not an allowed global" in str(err):
            raise CheckpointError(
                f"{path} holds Python objects beyond tensors and plain values, which openjepa refuses to "
                "unpickle (that could run arbitrary code). If you trust the file, re-save its tensors with "
                "the program that wrote it (e.g. torch.save(model.state_dict(), ...))."
            ) from None
        # torch's own message recommends weights_only=False: never pass that on, name what is wrong instead.
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a PyTorch checkpoint ({size} bytes, not a readable torch.save "
            f"file). {_EARLIER}"
        ) from None
    except Exception as err:
        # A damaged file can fail anywhere inside torch's zip reader or its weights-only unpickler (EOFError,
        # BadZipFile, IndexError on a garbled opcode stream, ...); every such failure means the same thing to
        # the user, so it becomes one error naming the file, the exception and what to do.
        raise CheckpointError(
            f"checkpoint {path} is corrupt or incomplete ({size} bytes; {type(err).__name__}: {_first_line(err)}). "
            f"{_EARLIER}"
        ) from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Loads an openjepa training checkpoint safely (``weights_only=True``), on the CPU.

    Args:
        path: a checkpoint file or a run folder (its ``checkpoint-latest.pt``).

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is empty, truncated, corrupt, unsafe to unpickle, or not an openjepa
            training checkpoint (the message names the file and what to do).
    """
    path = resolve_checkpoint_path(path)
    state = read_torch_file(path)
    if not isinstance(state, dict) or state.get("format") not in (FORMAT, *OLD_FORMATS):
        raise CheckpointError(
            f"{path} is not an openjepa training checkpoint. To use the encoder of another program's checkpoint "
            "(official I-JEPA / V-JEPA formats), call openjepa.load_encoder(path) or `openjepa convert`."
        )
    return state


def checkpoint_config(state: dict[str, Any], path: str | Path = "checkpoint") -> Config:
    """The resolved config stored in a checkpoint."""
    try:
        return from_dict(state["config"], origin=str(path))
    except (ConfigError, KeyError) as err:
        raise CheckpointError(f"{path}: stored config does not match this version of openjepa: {err}") from None


def rng_state() -> dict[str, Any]:
    """Global torch RNG states (CPU and every CUDA device), for exact resumption."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
