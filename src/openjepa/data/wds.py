"""WebDataset tar shards (the img2dataset layout): an indexed map-style reader and a streaming reader.

A shard is a plain tar file whose members are grouped into samples by *key*: the member name up to the
first dot of its base name (``dir/000123.jpg`` and ``dir/000123.json`` form sample ``dir/000123``). A
sample needs an image (``jpg``, ``jpeg``, ``png``, ``webp``, ``bmp``, ``gif``, ``tif``, ``tiff``) and at
least one caption, taken from, in order of preference: the ``captions`` list of its ``.json``, its
``.txt`` (img2dataset's caption file), the ``caption`` string of its ``.json``. The ``labels`` object of
the ``.json``, if any, rides along (``openjepa data scenes --format wds`` writes one).

Two readers:

- :class:`TarShardDataset` (what training uses): a map-style dataset. At construction it reads only the
  tar headers and the small caption members, recording where each image's bytes are; ``ds[i]`` then
  seeks to one image and decodes it. Training needs this because its sampler gives every image a
  ``(step, slot)`` from a seeded permutation: data order, crops, masks and captions are pure functions
  of the step, the run is the same with any number of workers, and a resumed run continues exactly.
- :func:`iter_shards` / :class:`TarShardStream`: a sequential reader with no index, for users who stream
  (shards split over ranks and workers). It cannot resume mid-epoch or give a worker-count-independent
  order, which is why the training loop does not use it.
"""

from __future__ import annotations

import glob
import io
import json
import os
import re
import tarfile
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from PIL import Image

from openjepa.data.images import IMAGE_EXTENSIONS, CorruptImageError, decode_image

__all__ = ["TarShardDataset", "TarShardStream", "decode_image_bytes", "expand_braces", "expand_shards", "iter_shards"]

IMAGE_EXTS: tuple[str, ...] = tuple(e.lstrip(".") for e in IMAGE_EXTENSIONS)
_COMPRESSED_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}
_MAX_OPEN_SHARDS = 64  # file handles kept open per process (LRU): datasets may have thousands of shards
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")


# ----------------------------------------------------------------------------- shard lists


def expand_braces(pattern: str) -> list[str]:
    """Expands shell-style braces: ``a/{000..002}.tar`` and ``{train,val}-{0..1}.tar``.

    Numeric ranges keep zero padding (the width of the wider bound when either bound has a leading
    zero); comma lists may nest. A pattern without braces is returned as is.

    Raises:
        ValueError: unbalanced braces.
    """
    depth, start = 0, -1
    for i, ch in enumerate(pattern):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced '}}' in shard pattern {pattern!r}")
            if depth == 0:
                head, body, tail = pattern[:start], pattern[start + 1 : i], pattern[i + 1 :]
                return [h + t for h in (head + b for b in _brace_alternatives(body)) for t in expand_braces(tail)]
    if depth:
        raise ValueError(f"unbalanced '{{' in shard pattern {pattern!r}")
    return [pattern]


def _brace_alternatives(body: str) -> list[str]:
    m = _RANGE.match(body)
    if m:
        a, b = m.group(1), m.group(2)
        lo, hi = int(a), int(b)
        padded = (len(a) > 1 and a.startswith("0")) or (len(b) > 1 and b.startswith("0"))
        width = max(len(a), len(b)) if padded else 0
        step = 1 if hi >= lo else -1
        return [str(v).zfill(width) for v in range(lo, hi + step, step)]
    parts, depth, cur = [], 0, ""
    for ch in body:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += (ch == "{") - (ch == "}")
        cur += ch
    parts.append(cur)
    if len(parts) == 1:
        return [f"{{{body}}}"]  # "{x}" is not an expansion in the shell either
    return [alt for part in parts for alt in expand_braces(part)]


def expand_shards(spec: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """The shard files named by a folder, a glob, brace notation, a file, or a list of those.

    A folder means its ``*.tar`` files (sorted); a glob is sorted; braces keep their order.

    Raises:
        FileNotFoundError: a named file or folder does not exist, or nothing matched.
        ValueError: a URL (download the shards first: reading is local only).
    """
    items = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    out: list[Path] = []
    missing: list[str] = []
    for item in items:
        text = os.fspath(item)
        if "://" in text or text.startswith("pipe:"):
            raise ValueError(f"shard {text!r}: only local files are read; download the shards to a local folder")
        for name in expand_braces(os.path.expanduser(text)):
            path = Path(name)
            if path.is_dir():
                out += sorted(path.glob("*.tar"))
            elif glob.has_magic(name):
                out += [Path(p) for p in sorted(glob.glob(name, recursive=True)) if Path(p).is_file()]
            elif path.is_file():
                out.append(path)
            else:
                missing.append(name)
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} shard(s) not found, e.g. {', '.join(missing[:3])}. Pass a folder of .tar files, a "
            "glob ('shards/*.tar'), brace notation ('shards/{000000..000099}.tar') or a list of files"
        )
    if not out:
        raise FileNotFoundError(f"no .tar shards found for {spec!r}")
    return out


# ----------------------------------------------------------------------------- samples


def split_member_name(name: str) -> tuple[str, str]:
    """``("dir/000123", "seg.png")`` from ``"dir/000123.seg.png"``: key up to the base name's first dot."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def decode_image_bytes(data: bytes, name: str) -> Image.Image:
    """Decodes an encoded image held in memory, like :func:`~openjepa.data.images.load_image` for files.

    Raises:
        CorruptImageError: the bytes are not a readable image (``path`` is ``name``).
    """
    return decode_image(io.BytesIO(data), name)


def _captions_from(members: dict[str, bytes]) -> tuple[list[str], dict[str, Any]]:
    """(captions, labels) of a sample from its ``txt`` / ``json`` members; ValueError when malformed."""
    meta: dict[str, Any] = {}
    if "json" in members:
        try:
            meta = json.loads(members["json"].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"unreadable .json ({err})") from err
        if not isinstance(meta, dict):
            raise ValueError(".json is not an object")
    captions: Any = None
    if "captions" in meta:
        captions = meta["captions"]
    elif "txt" in members:
        try:
            captions = [members["txt"].decode("utf-8")]
        except UnicodeDecodeError as err:
            raise ValueError(f"unreadable .txt ({err})") from err
    elif "caption" in meta:
        captions = meta["caption"]
    if isinstance(captions, str):
        captions = [captions]
    if captions is None:
        captions = []
    if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
        raise ValueError("captions must be a string or a list of strings")
    labels = meta.get("labels", {})
    return [c.strip() for c in captions if c.strip()], labels if isinstance(labels, dict) else {}


def _pick_image(exts: Sequence[str]) -> str | None:
    for ext in IMAGE_EXTS:  # exact extensions only: "seg.png" is an annotation, not the image
        if ext in exts:
            return ext
    return None


def _check_uncompressed(path: Path, head: bytes) -> None:
    for magic, kind in _COMPRESSED_MAGIC.items():
        if head.startswith(magic):
            raise ValueError(
                f"{path} is {kind}-compressed: compressed shards cannot be read by random access. Decompress "
                "them (the images inside are already compressed, so little is lost) or read them with iter_shards"
            )


@dataclass
class _Sample:
    shard: int
    key: str
    offset: int
    size: int
    ext: str
    captions: list[str]
    labels: dict[str, Any] = field(default_factory=dict)


class TarShardDataset(torch.utils.data.Dataset):
    """Map-style dataset over WebDataset tar shards, indexed by scanning tar headers.

    Construction walks every shard's headers (seeking over image bytes, reading only the small caption
    members) and keeps, per sample, the shard, offset and size of its image. ``ds[i]`` opens the shard
    (handles are cached per process and reopened after ``fork``), reads exactly that member and decodes
    it. Samples without an image or without any caption are skipped and listed in :attr:`skipped`; a
    truncated or damaged shard keeps the samples before the damage and is listed in :attr:`errors`. Both
    are reported in one warning.

    Args:
        shards: a folder of ``.tar`` files, a glob, brace notation (``shards/{000000..000099}.tar``), a
            file, or a list of those.

    Attributes:
        shards: the shard files.
        skipped: ``"shard.tar:key: reason"`` of every sample left out.
        errors: ``"shard.tar: reason"`` of every shard that could not be read to its end.

    Raises:
        FileNotFoundError: no shards.
        ValueError: a compressed shard, or no usable sample at all.
    """

    def __init__(self, shards: str | os.PathLike | Sequence[str | os.PathLike]):
        self.shards: list[Path] = expand_shards(shards)
        self.skipped: list[str] = []
        self.errors: list[str] = []
        self._samples: list[_Sample] = []
        for idx, shard in enumerate(self.shards):
            self._index_shard(idx, shard)
        self._files: OrderedDict[int, IO[bytes]] = OrderedDict()
        self._pid = os.getpid()
        if self.skipped or self.errors:
            first = (self.errors or self.skipped)[0]
            warnings.warn(
                f"{len(self.shards)} shard(s): skipped {len(self.skipped)} sample(s) without an image or caption "
                f"and {len(self.errors)} damaged shard(s) (kept their readable part); first: {first}",
                stacklevel=2,
            )
        if not self._samples:
            raise ValueError(
                f"no usable samples in {len(self.shards)} shard(s) (e.g. {self.shards[0]}): each sample needs an "
                f"image member ({', '.join(IMAGE_EXTS)}) and a caption (.txt, or .json with caption/captions)"
            )

    def _index_shard(self, idx: int, shard: Path) -> None:
        size = shard.stat().st_size
        groups: OrderedDict[str, dict[str, tarfile.TarInfo]] = OrderedDict()
        texts: dict[tuple[str, str], bytes] = {}
        with shard.open("rb") as f:
            _check_uncompressed(shard, f.read(6))
            f.seek(0)
            try:
                with tarfile.open(fileobj=f, mode="r:") as tar:
                    for info in tar:  # tarfile seeks over member data: image bytes are never read here
                        if not info.isfile():
                            continue
                        if info.offset_data + info.size > size:
                            self.errors.append(f"{shard}: truncated inside member {info.name}")
                            break
                        key, ext = split_member_name(info.name)
                        if not ext:
                            continue
                        groups.setdefault(key, {}).setdefault(ext, info)
                        if ext in ("txt", "json"):
                            member = tar.extractfile(info)
                            texts[(key, ext)] = member.read() if member is not None else b""
                    else:
                        if tar.offset >= size:
                            # Writers end a tar with zero blocks; a file that stops right after a member was
                            # cut at a member boundary, and its last sample may lack members.
                            self.errors.append(f"{shard}: ends without the end-of-archive marker (truncated?)")
            except (tarfile.TarError, EOFError, OSError) as err:
                self.errors.append(f"{shard}: {err or type(err).__name__} (indexed the samples before it)")
        for key, members in groups.items():
            where = f"{shard}:{key}"
            ext = _pick_image(list(members))
            if ext is None:
                self.skipped.append(f"{where}: no image member (has {', '.join(sorted(members))})")
                continue
            try:
                captions, labels = _captions_from({e: texts[(key, e)] for e in ("txt", "json") if (key, e) in texts})
            except ValueError as err:
                self.skipped.append(f"{where}: {err}")
                continue
            if not captions:
                self.skipped.append(f"{where}: no caption (.txt, or .json caption/captions)")
                continue
            info = members[ext]
            self._samples.append(_Sample(idx, key, info.offset_data, info.size, ext, captions, labels))

    def __len__(self) -> int:
        return len(self._samples)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_files"] = OrderedDict()  # file handles never travel to another process
        return state

    def _handle(self, shard: int) -> IO[bytes]:
        if self._pid != os.getpid():
            # After fork the handles share their file offset with the parent's: drop them, open our own.
            self._files = OrderedDict()
            self._pid = os.getpid()
        f = self._files.get(shard)
        if f is None:
            f = self.shards[shard].open("rb")
            self._files[shard] = f
            if len(self._files) > _MAX_OPEN_SHARDS:
                self._files.popitem(last=False)[1].close()
        else:
            self._files.move_to_end(shard)
        return f

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = self._samples[i]
        where = f"{self.shards[s.shard]}:{s.key}"
        f = self._handle(s.shard)
        f.seek(s.offset)
        data = f.read(s.size)
        if len(data) != s.size:
            raise CorruptImageError(where, f"member {s.key}.{s.ext} ends early ({len(data)} of {s.size} bytes)")
        return {
            "image": decode_image_bytes(data, where),
            "captions": list(s.captions),
            "labels": dict(s.labels),
            "index": int(i),
            "key": s.key,
            "path": where,
        }

    def all_captions(self, split: bool = False) -> list[str]:
        """Every caption of every sample (sentences when ``split``), e.g. to warm an embedding cache."""
        from openjepa.data.captions import caption_list

        return [c for s in self._samples for c in caption_list(s.captions, split)]

    def close(self) -> None:
        """Closes this process's open shard files."""
        if self._pid == os.getpid():
            for f in self._files.values():
                f.close()
        self._files = OrderedDict()

    def __repr__(self) -> str:
        return f"TarShardDataset({len(self.shards)} shards, {len(self)} samples, {len(self.skipped)} skipped)"


# ----------------------------------------------------------------------------- streaming


def shards_for(
    n_shards: int, rank: int, world_size: int, worker_id: int, num_workers: int, seed: int, epoch: int
) -> list[int]:
    """Indices of the shards read by one (rank, worker) in one epoch.

    Shards are shuffled by (seed, epoch), the same order on every process, then dealt round-robin over
    the ``world_size * num_workers`` readers: disjoint, and together they cover every shard.
    """
    if not (0 <= rank < world_size and 0 <= worker_id < num_workers):
        raise ValueError(
            f"need 0 <= rank < world_size and 0 <= worker_id < num_workers, got "
            f"rank={rank}, world_size={world_size}, worker_id={worker_id}, num_workers={num_workers}"
        )
    order = np.random.default_rng(np.random.SeedSequence([seed, 0x7A5, epoch])).permutation(n_shards)
    readers = world_size * num_workers
    return [int(k) for k in order[rank * num_workers + worker_id :: readers]]


def _stream_samples(shard: Path, on_skip: Callable[[str], None]) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {ext: bytes}) of the consecutive member groups of one shard, read sequentially."""
    key, members = None, {}
    try:
        with tarfile.open(shard, mode="r|*") as tar:  # stream mode: one pass, compressed shards fine
            for info in tar:
                if not info.isfile():
                    continue
                k, ext = split_member_name(info.name)
                if not ext:
                    continue
                if k != key:
                    if key is not None:
                        yield key, members
                    key, members = k, {}
                member = tar.extractfile(info)
                members.setdefault(ext, member.read() if member is not None else b"")
    except (tarfile.TarError, EOFError, OSError) as err:
        on_skip(f"{shard}: {err or type(err).__name__} (read the samples before it)")
        return  # the group being read may be incomplete: leave it out
    if key is not None:
        yield key, members


def iter_shards(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    rank: int = 0,
    world_size: int = 1,
    worker_id: int | None = None,
    num_workers: int | None = None,
    seed: int = 0,
    epoch: int = 0,
    on_skip: Callable[[str], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Streams samples from tar shards, sequentially and without an index.

    Each (rank, worker) reads its own shards (see :func:`shards_for`), whole and in order, so together
    the readers see every sample once per epoch. Unreadable samples (no image, no caption, corrupt image)
    and damaged shards are skipped and reported through ``on_skip`` (default: one warning per shard).
    Compressed shards (``.tar.gz`` ...) are fine here.

    Args:
        paths: shards as for :class:`TarShardDataset`.
        rank, world_size: this process among the distributed processes.
        worker_id, num_workers: this loader worker; None: from ``torch.utils.data.get_worker_info()``
            (a single reader outside a DataLoader).
        seed, epoch: the shard order of this epoch.
        on_skip: called with ``"shard.tar:key: reason"`` for every skipped sample or damaged shard.

    Yields:
        ``{"image", "captions", "labels", "index", "key", "path"}``; ``index`` counts this reader's items.
    """
    if worker_id is None or num_workers is None:
        info = torch.utils.data.get_worker_info()
        worker_id, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
    shards = expand_shards(paths)
    count = 0
    for k in shards_for(len(shards), rank, world_size, worker_id, num_workers, seed, epoch):
        shard = shards[k]
        skipped: list[str] = []
        report = on_skip if on_skip is not None else skipped.append
        for key, members in _stream_samples(shard, report):
            where = f"{shard}:{key}"
            ext = _pick_image(list(members))
            if ext is None:
                report(f"{where}: no image member")
                continue
            try:
                captions, labels = _captions_from(members)
            except ValueError as err:
                report(f"{where}: {err}")
                continue
            if not captions:
                report(f"{where}: no caption")
                continue
            try:
                image = decode_image_bytes(members[ext], where)
            except CorruptImageError as err:
                report(f"{where}: {err.reason}")
                continue
            yield {"image": image, "captions": captions, "labels": labels, "index": count, "key": key, "path": where}
            count += 1
        if skipped:
            warnings.warn(f"{shard}: skipped {len(skipped)} sample(s), first: {skipped[0]}", stacklevel=2)


class TarShardStream(torch.utils.data.IterableDataset):
    """:func:`iter_shards` as an ``IterableDataset``: rank and world size from the environment.

    Call :meth:`set_epoch` before each epoch for a new shard order. Every reader needs at least one
    shard: with fewer shards than ``world_size * num_workers`` some readers yield nothing.

    Args:
        paths: shards as for :class:`TarShardDataset`.
        seed: shard-order seed.
    """

    def __init__(self, paths: str | os.PathLike | Sequence[str | os.PathLike], seed: int = 0):
        self.paths = [str(p) for p in expand_shards(paths)]
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Selects the shard order of ``epoch``."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        else:
            rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        return iter_shards(self.paths, rank=rank, world_size=world, seed=self.seed, epoch=self.epoch)
