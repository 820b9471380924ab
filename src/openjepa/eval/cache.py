"""On-disk cache of frozen features (and, in :mod:`openjepa.eval.baselines`, of trained ceilings).

Running the encoder dominates an evaluation; the probes are cheap. Features are therefore stored once per
(encoder, dataset, extraction settings), so re-running a probe sweep, adding seeds or comparing runs
never runs an encoder twice over the same data.

The key is a hash of:

- the **encoder's weights** (every tensor of its ``state_dict``, bit for bit) and its constructor
  arguments (``config()``): a different checkpoint, even of the same run, is a different encoder; an
  encoder rebuilt from the same file is the same one wherever the file lives;
- the **dataset**: whatever a dataset's own ``fingerprint()`` returns; for the built-in generators (scenes,
  sprites) their parameters and generator version; for file datasets the list of files with their sizes
  and modification times (and the list file's, and the classes). A dataset without any of these is not
  cached (said once, as a warning);
- the **extraction**: transform, input key, clips per video, pooling, whether tokens are kept, and the
  device type (CUDA runs in bf16, so its features differ from the CPU's in the last bits).

Layout: ``ROOT/features/<key>.safetensors`` (tensors) + ``<key>.json`` (file list, skipped files, what
the key was made of). ``ROOT`` is ``--cache DIR``, else ``$OPENJEPA_CACHE``, else ``~/.cache/openjepa``.
Entries are written atomically (temporary file, then rename), so an interrupted run never leaves a
half-written entry; delete the folder to reclaim the space.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from openjepa.eval.features import extract_features, unwrap_skipping

__all__ = [
    "FeatureCache",
    "dataset_fingerprint",
    "default_cache_root",
    "describe_transform",
    "encoder_fingerprint",
    "extract_cached",
    "hash_json",
]

CACHE_FORMAT = "openjepa-feature-cache-v1"


def default_cache_root() -> Path:
    """``$OPENJEPA_CACHE`` when set, else ``~/.cache/openjepa`` (shared with the text-embedding cache)."""
    env = os.environ.get("OPENJEPA_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "openjepa"


def hash_json(value: Any) -> str:
    """A short, stable hash of a JSON-able value (keys sorted)."""
    text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def encoder_fingerprint(encoder: nn.Module) -> str:
    """Hash of the encoder's class, constructor arguments and every weight (bit for bit)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(type(encoder).__qualname__.encode())
    config = getattr(encoder, "config", None)
    if callable(config):
        h.update(json.dumps(config(), sort_keys=True, default=str).encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{tuple(tensor.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _stat(path: Path) -> list[Any]:
    try:
        st = path.stat()
    except OSError:
        return [str(path), None, None]  # missing now: part of the key, and the reader will skip it
    return [str(path), st.st_size, st.st_mtime_ns]


def dataset_fingerprint(dataset: Dataset) -> dict[str, Any] | None:
    """What identifies a dataset's content, or ``None`` when it cannot be told (then nothing is cached).

    In order: the dataset's own ``fingerprint()``; the built-in scenes (parameters + generator version);
    file datasets (``files``: every path with its size and mtime, plus the list / root file and classes).
    """
    ds = unwrap_skipping(dataset)
    own = getattr(ds, "fingerprint", None)
    if callable(own):
        return {"class": type(ds).__qualname__, **own()}
    from openjepa.data.scenes import ScenesDataset
    from openjepa.data.sprites import SPRITES_VERSION, SpritesDataset

    # The built-in generators are pure functions of their arguments (all in their repr) and version.
    if isinstance(ds, ScenesDataset):
        return {"class": "ScenesDataset", "repr": repr(ds), "version": ds.version}
    if isinstance(ds, SpritesDataset):
        return {"class": "SpritesDataset", "repr": repr(ds), "version": SPRITES_VERSION}
    files = getattr(ds, "files", None)
    if isinstance(files, list) and all(isinstance(f, (str, os.PathLike)) for f in files):
        fp: dict[str, Any] = {"class": type(ds).__qualname__, "files": [_stat(Path(f)) for f in files]}
        for attr in ("path", "root"):
            value = getattr(ds, attr, None)
            if isinstance(value, (str, os.PathLike)):
                fp[attr] = _stat(Path(value))
        classes = getattr(ds, "classes", None)
        if classes is not None:
            fp["classes"] = classes
        return fp
    return None


def describe_transform(transform: Any) -> str:
    """A text that changes when the transform's settings do (its repr, or its attributes)."""
    text = repr(transform)
    if " at 0x" in text:  # the default object repr: use the settings instead of the address
        settings = {k: v for k, v in sorted(vars(transform).items()) if not k.startswith("_")}
        text = f"{type(transform).__qualname__}({settings})"
    return text


class FeatureCache:
    """Feature store under ``root/features`` (see the module docstring).

    Args:
        root: the cache root; default :func:`default_cache_root`.
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).expanduser() if root is not None else default_cache_root()
        self.folder = self.root / "features"

    def paths(self, key: str) -> tuple[Path, Path]:
        """The tensor file and the JSON side file of entry ``key``."""
        return self.folder / f"{key}.safetensors", self.folder / f"{key}.json"

    def load(self, key: str) -> dict[str, Any] | None:
        """The cached features of ``key``, or ``None`` (missing or unreadable entries are a miss)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        tensors_path, meta_path = self.paths(key)
        if not (tensors_path.is_file() and meta_path.is_file()):
            return None
        try:
            tensors = load_file(str(tensors_path))
            meta = json.loads(meta_path.read_text())
        except (SafetensorError, OSError, json.JSONDecodeError) as err:
            print(f"[openjepa] ignoring unreadable feature cache entry {tensors_path} ({err})", file=sys.stderr)
            return None
        if meta.get("format") != CACHE_FORMAT:
            return None
        out: dict[str, Any] = {
            "pooled": tensors["pooled"],
            "index": tensors["index"],
            "labels": {k[len("label.") :]: v for k, v in tensors.items() if k.startswith("label.")},
            "paths": meta["paths"],
            "skipped": meta["skipped"],
        }
        for name in ("patches", "patch_labels"):
            if name in tensors:
                out[name] = tensors[name]
        return out

    def save(self, key: str, feats: dict[str, Any], described: dict[str, Any]) -> None:
        """Stores ``feats`` (an :func:`extract_features` result) under ``key``, atomically."""
        from safetensors.torch import save_file

        self.folder.mkdir(parents=True, exist_ok=True)
        tensors = {"pooled": feats["pooled"], "index": feats["index"]}
        tensors.update({f"label.{task}": y for task, y in feats["labels"].items()})
        for name in ("patches", "patch_labels"):
            if name in feats:
                tensors[name] = feats[name]
        tensors_path, meta_path = self.paths(key)
        meta = {"format": CACHE_FORMAT, "key": described, "paths": feats["paths"], "skipped": feats["skipped"]}
        tmp = tensors_path.with_name(tensors_path.name + f".tmp{os.getpid()}")
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
        os.replace(tmp, tensors_path)
        tmp = meta_path.with_name(meta_path.name + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(meta) + "\n")
        os.replace(tmp, meta_path)


_UNCACHEABLE_WARNED: set[str] = set()


def extract_cached(
    encoder: nn.Module,
    dataset: Dataset,
    cache: FeatureCache | None,
    *,
    batch_size: int,
    device: torch.device | str,
    patch_tokens: bool = True,
    num_workers: int = 0,
    progress: bool = True,
    transform: Any = None,
    desc: str = "features",
    input_key: str | None = None,
    num_clips: int = 1,
    pool: Any = None,
    encoder_key: str | None = None,
) -> dict[str, Any]:
    """:func:`~openjepa.eval.features.extract_features` through ``cache`` (no cache: plain extraction).

    Args:
        encoder, dataset, batch_size, device, patch_tokens, num_workers, progress, transform, desc,
            input_key, num_clips, pool: as in :func:`~openjepa.eval.features.extract_features`.
        cache: the store, or ``None`` to always extract.
        encoder_key: a precomputed :func:`encoder_fingerprint` (hashing large encoders takes a moment).

    Returns:
        The features, plus ``cache``: ``{"hit": bool, "key": str | None}``.
    """
    from openjepa.eval.features import default_transform, encoder_image_size, input_key_of

    key_in = input_key_of(encoder) if input_key is None else input_key
    if transform is None:
        size = getattr(unwrap_skipping(dataset), "image_size", None) or encoder_image_size(encoder)
        transform = default_transform(key_in, int(size))
    kwargs: dict[str, Any] = {
        "batch_size": batch_size, "device": device, "patch_tokens": patch_tokens, "num_workers": num_workers,
        "progress": progress, "transform": transform, "desc": desc, "input_key": key_in, "num_clips": num_clips,
        "pool": pool,
    }
    data_fp = dataset_fingerprint(dataset) if cache is not None else None
    if cache is None or data_fp is None:
        if cache is not None and type(dataset).__qualname__ not in _UNCACHEABLE_WARNED:
            _UNCACHEABLE_WARNED.add(type(dataset).__qualname__)
            warnings.warn(
                f"{type(dataset).__qualname__} cannot be fingerprinted (no files, no fingerprint()): its features "
                "are not cached",
                stacklevel=2,
            )
        return {**extract_features(encoder, dataset, **kwargs), "cache": {"hit": False, "key": None}}
    described = {
        "format": CACHE_FORMAT,
        "encoder": encoder_key or encoder_fingerprint(encoder),
        "dataset": hash_json(data_fp),
        "transform": describe_transform(transform),
        "input_key": key_in,
        "num_clips": num_clips,
        "pool": getattr(pool, "__qualname__", "mean") if pool is not None else "mean",
        "patch_tokens": patch_tokens,
        "device": torch.device(device).type,
    }
    key = hash_json(described)
    hit = cache.load(key)
    if hit is not None:
        return {**hit, "cache": {"hit": True, "key": key}}
    feats = extract_features(encoder, dataset, **kwargs)
    cache.save(key, feats, described)
    return {**feats, "cache": {"hit": False, "key": key}}
