"""Captions: sentence splitting, per-image caption sampling, batch embedding, and caption tables.

- :func:`split_sentences` / :func:`caption_list`: one caption per sentence (TC-JEPA treats every sentence
  of a long description as a caption of its own).
- :func:`sample_captions`: the N captions an image contributes to a step.
- :class:`TextBatcher`: runs in the collate function of the loader workers and turns the captions of a
  batch into padded ``text_emb`` / ``text_mask`` / ``caption_mask`` tensors. Which captions an image gets
  is a pure function of ``(seed, step, slot)``, like its crop and masks.
- :class:`CaptionTableDataset`: images with captions listed in a JSONL or CSV file.
"""

from __future__ import annotations

import csv
import json
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from openjepa.data.images import load_image
from openjepa.models.text import CachedTextEncoder, TextEncoder

__all__ = ["CaptionTableDataset", "TextBatcher", "caption_list", "sample_captions", "split_sentences"]

TEXT_STREAM = 2  # numpy stream id of caption sampling: (seed, 2, step, slot); crops use 1

# Words that end with a period but never end a sentence (titles, "e.g.", ...), lowercase, without the
# final period.
_NEVER_FINAL = frozenset(
    {
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "mt",
        "vs",
        "cf",
        "e.g",
        "i.e",
        "approx",
        "ca",
        "viz",
        "resp",
        "sgt",
        "capt",
        "lt",
        "col",
        "gen",
        "gov",
        "rev",
        "hon",
    }
)
# Abbreviations that precede a number ("No. 5", "Fig. 2"): a boundary unless a digit follows.
_BEFORE_NUMBER = frozenset(["no", "nos", "vol", "fig", "figs", "p", "pp"])
# Words that may end a sentence: a boundary only when the next word starts with a capital or a digit.
_MAYBE_FINAL = frozenset(["etc", "inc", "ltd", "co", "corp", "bros", "a.m", "p.m", "u.s", "u.k"])
_TERMINATOR = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s|$)")
_LAST_WORD = re.compile(r"(\S+)$")


def _is_boundary(text: str, match: re.Match[str]) -> bool:
    """Whether the terminator ``match`` ends a sentence."""
    if "!" in match.group() or "?" in match.group() or match.group().startswith(".."):
        return True  # "!" / "?" / ellipses always end a sentence
    word_match = _LAST_WORD.search(text, 0, match.start())
    word = word_match.group(1).lower().lstrip("\"'“‘([") if word_match else ""
    rest = text[match.end() :].lstrip()
    next_starts_sentence = not rest or rest[0].isupper() or rest[0].isdigit() or rest[0] in "\"'“‘("
    if word in _NEVER_FINAL:
        return False
    if word in _BEFORE_NUMBER:
        return not rest[:1].isdigit()
    if len(word) == 1 and word.isalpha():
        return not rest or not rest[0].isupper()  # "J. Smith": an initial before a name
    if word in _MAYBE_FINAL or "." in word:  # "U.S." and other dotted abbreviations
        return next_starts_sentence
    return True


def split_sentences(text: str) -> list[str]:
    """Splits text into sentences on ``.``, ``!`` and ``?`` followed by whitespace or the end.

    Abbreviations ("e.g.", "Mr.", "Dr.", initials such as "J. Smith") and decimals ("3.5") do not end a
    sentence; "etc." and dotted acronyms ("U.S.") do only when a capitalised word follows. Sentences are
    stripped and empty ones dropped. A heuristic (no language model): good for captions, not for prose
    with unusual abbreviations.

    Args:
        text: one caption, possibly several sentences long.

    Returns:
        The sentences in order (terminators kept).
    """
    out: list[str] = []
    start = 0
    for match in _TERMINATOR.finditer(text):
        if _is_boundary(text, match):
            sentence = text[start : match.end()].strip()
            if sentence:
                out.append(sentence)
            start = match.end()
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return out


def caption_list(raw: str | Sequence[str] | None, split: bool) -> list[str]:
    """Normalises an item's captions: a list of stripped, non-empty strings.

    Args:
        raw: one caption, a list of captions, or None.
        split: make every sentence of every caption a caption of its own.

    Returns:
        The captions (duplicates kept: a sentence repeated across captions is a stronger signal).
    """
    if raw is None:
        return []
    items = [raw] if isinstance(raw, str) else list(raw)
    out: list[str] = []
    for caption in items:
        if split:
            out += split_sentences(str(caption))
        elif str(caption).strip():
            out.append(str(caption).strip())
    return out


def sample_captions(captions: Sequence[str], n: int, rng: np.random.Generator) -> list[str]:
    """Draws the captions an image contributes to one step.

    Args:
        captions: the image's captions.
        n: how many to draw (N).
        rng: the generator (the result is a pure function of its state).

    Returns:
        ``n`` captions drawn without replacement when there are at least ``n``; otherwise all of them in
        random order.
    """
    if n < 1:
        raise ValueError(f"sample_captions: n={n} must be >= 1")
    if len(captions) <= n:
        return [captions[i] for i in rng.permutation(len(captions))]
    return [captions[i] for i in rng.choice(len(captions), size=n, replace=False)]


class TextBatcher:
    """Caption sampling + embedding of a batch, for the collate function of the loader workers.

    The object is pickled into every worker before use; encoders load their model lazily, so nothing
    heavy travels. With a :class:`~openjepa.models.text.CachedTextEncoder` whose cache is warm, workers
    never load the model at all. Workers run torch with one thread: without a cache, MiniLM costs about
    as much per caption as a small image decode; T5 is much slower, so warm the cache first.

    Args:
        encoder: the frozen text encoder (ideally cached).
        num_captions: N, captions per image (the caption axis is padded to N).
        split_sentences: one caption per sentence.
        seed: the run seed.
    """

    def __init__(self, encoder: TextEncoder, num_captions: int, split_sentences: bool, seed: int):
        if num_captions < 1:
            raise ValueError(f"text.num_captions={num_captions} must be >= 1")
        self.encoder = encoder
        self.num_captions = int(num_captions)
        self.split_sentences = bool(split_sentences)
        self.seed = int(seed)

    def choose(self, captions: str | Sequence[str] | None, step: int, slot: int) -> list[str]:
        """The captions of the image at ``slot`` of ``step`` (at most N)."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, TEXT_STREAM, int(step), int(slot)]))
        return sample_captions(caption_list(captions, self.split_sentences), self.num_captions, rng)

    def _embed(self, captions: list[str]) -> dict[str, np.ndarray]:
        """Float16 ``[length, dim]`` real-token embeddings of each distinct caption."""
        if not captions:
            return {}
        if isinstance(self.encoder, CachedTextEncoder):
            arrays = self.encoder.encode_arrays(captions)
        else:
            emb, mask = self.encoder.encode(captions)
            lengths = mask.sum(1).tolist()
            emb16 = emb.to("cpu", torch.float16).numpy()
            arrays = [emb16[i, :n] for i, n in enumerate(lengths)]
        return dict(zip(captions, arrays))

    def __call__(
        self, captions_per_image: Sequence[str | Sequence[str] | None], step: int, slots: Sequence[int]
    ) -> dict[str, torch.Tensor]:
        """Embeds the captions of one batch.

        Args:
            captions_per_image: each image's captions (a list, a single string, or empty / None).
            step: the optimizer step.
            slots: each image's slot in the global batch.

        Returns:
            ``text_emb`` float16 ``[B, N, S, dt]``, ``text_mask`` bool ``[B, N, S]`` (False on padding words
            and on every word of a padded caption), ``caption_mask`` bool ``[B, N]`` (False on padded
            captions); S is the longest chosen caption of the batch (at least 1).
        """
        if len(captions_per_image) != len(slots):
            raise ValueError(f"TextBatcher: {len(captions_per_image)} images but {len(slots)} slots")
        chosen = [self.choose(c, step, s) for c, s in zip(captions_per_image, slots)]
        table = self._embed(list(dict.fromkeys(c for caps in chosen for c in caps)))
        batch, n, dim = len(chosen), self.num_captions, self.encoder.dim
        # S >= 1 keeps shapes valid when no image has a caption; such rows are fully masked.
        seq = max((table[c].shape[0] for caps in chosen for c in caps), default=1) or 1
        emb = np.zeros((batch, n, seq, dim), dtype=np.float16)
        text_mask = np.zeros((batch, n, seq), dtype=bool)
        caption_mask = np.zeros((batch, n), dtype=bool)
        for b, caps in enumerate(chosen):
            for k, caption in enumerate(caps):
                arr = table[caption]
                emb[b, k, : arr.shape[0]] = arr
                text_mask[b, k, : arr.shape[0]] = True
                caption_mask[b, k] = arr.shape[0] > 0  # a caption with no token cannot be attended to
        return {
            "text_emb": torch.from_numpy(emb),
            "text_mask": torch.from_numpy(text_mask),
            "caption_mask": torch.from_numpy(caption_mask),
        }

    def __repr__(self) -> str:
        return (
            f"TextBatcher({self.encoder.name!r}, num_captions={self.num_captions}, "
            f"split_sentences={self.split_sentences}, seed={self.seed})"
        )


# ----------------------------------------------------------------------------- caption tables


def _captions_value(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(c, str) for c in value):
        return list(value)
    raise ValueError(f"{what} must be a string or a list of strings, got {type(value).__name__}")


def _parse_jsonl_record(line: str) -> tuple[str, list[str]]:
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"invalid JSON ({err.msg} at column {err.colno})") from err
    if not isinstance(rec, dict):
        raise ValueError(f"expected a JSON object, got {type(rec).__name__}")
    image = rec.get("image")
    if not isinstance(image, str) or not image.strip():
        raise ValueError('missing "image" (a path string)')
    if "captions" in rec and "caption" in rec:
        raise ValueError('give either "caption" or "captions", not both')
    if "captions" in rec:
        return image, _captions_value(rec["captions"], '"captions"')
    if "caption" in rec:
        return image, _captions_value(rec["caption"], '"caption"')
    raise ValueError('missing "caption" (a string) or "captions" (a list of strings)')


_TABLE_FORMAT = (
    'JSONL lines {"image": "a.jpg", "captions": ["...", ...]} or {"image": "a.jpg", "caption": "..."}; or a CSV '
    "file whose header has an `image` column and a `caption` column (one caption per row) or a `captions` "
    "column (a JSON list per cell)"
)


class CaptionTableDataset(torch.utils.data.Dataset):
    """Images and their captions listed in a JSONL or CSV file.

    - JSONL (``.jsonl`` / ``.json``): one object per line, ``{"image": path, "captions": [...]}`` or
      ``{"image": path, "caption": "..."}``.
    - CSV (``.csv``, or ``.tsv`` tab-separated): a header with ``image`` and either ``caption`` (one caption
      per row) or ``captions`` (a JSON list of strings in the cell). Other columns are ignored.

    Entries naming the same image are merged (captions in file order), so COCO-style files with one row
    per caption work as they are. Relative image paths are resolved against the list file's folder.

    Args:
        path: the list file.
        strict: raise on a malformed line/row; if False, skip it, record it in :attr:`skipped_lines`
            (``"file:line: reason"``) and warn once with the count.
        check_files: check at construction that every image exists (False defers to reading, where
            :class:`~openjepa.data.images.SkipCorrupt` skips missing files).

    Raises:
        FileNotFoundError: the list file, or (with ``check_files``) listed images, are missing.
        ValueError: a malformed line (file and line number in the message), a CSV header without the
            needed columns, or no entries.
    """

    def __init__(self, path: str | os.PathLike, strict: bool = True, check_files: bool = True):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"caption list not found: {self.path}. Expected {_TABLE_FORMAT}")
        self.strict = strict
        self.skipped_lines: list[str] = []
        self._index: dict[Path, int] = {}
        self.files: list[Path] = []
        self.captions: list[list[str]] = []
        self.line_numbers: list[int] = []  # first line naming each image
        if self.path.suffix.lower() in (".csv", ".tsv"):
            self._read_csv()
        else:
            self._read_jsonl()
        if self.skipped_lines:
            warnings.warn(
                f"{self.path}: skipped {len(self.skipped_lines)} malformed line(s), first: {self.skipped_lines[0]}",
                stacklevel=2,
            )
        if not self.files:
            raise ValueError(f"{self.path} lists no images. Expected {_TABLE_FORMAT}")
        if check_files:
            missing = [(p, n) for p, n in zip(self.files, self.line_numbers) if not p.is_file()]
            if missing:
                shown = ", ".join(f"{p} (line {n})" for p, n in missing[:5])
                raise FileNotFoundError(
                    f"{self.path}: {len(missing)} of {len(self.files)} listed images are missing, e.g. {shown}. "
                    "Image paths are relative to the list file's folder; pass check_files=False to skip missing "
                    "files while reading instead"
                )

    def _bad(self, lineno: int, reason: str) -> None:
        if self.strict:
            raise ValueError(
                f"{self.path}:{lineno}: {reason}. Fix the line or pass strict=False to skip malformed lines"
            )
        self.skipped_lines.append(f"{self.path}:{lineno}: {reason}")

    def _add(self, image: str, captions: list[str], lineno: int) -> None:
        image = image.strip()
        path = Path(image) if os.path.isabs(image) else self.path.parent / image
        i = self._index.get(path)
        if i is None:
            self._index[path] = len(self.files)
            self.files.append(path)
            self.captions.append([])
            self.line_numbers.append(lineno)
            i = len(self.files) - 1
        self.captions[i] += [c for c in captions if c.strip()]

    def _read_jsonl(self) -> None:
        with self.path.open(encoding="utf-8-sig") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    image, captions = _parse_jsonl_record(line)
                except ValueError as err:
                    self._bad(lineno, str(err))
                    continue
                self._add(image, captions, lineno)

    def _read_csv(self) -> None:
        delimiter = "\t" if self.path.suffix.lower() == ".tsv" else ","
        # newline="" lets the csv module handle line breaks inside quoted cells (multi-line captions).
        with self.path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                raise ValueError(f"{self.path} is empty. Expected {_TABLE_FORMAT}")
            columns = [h.strip().lower() for h in header]
            if "image" not in columns or ("caption" in columns) == ("captions" in columns):
                raise ValueError(
                    f"{self.path}: the CSV header {header} needs an `image` column and exactly one of `caption` / "
                    "`captions`"
                )
            col_image = columns.index("image")
            col_text = columns.index("caption") if "caption" in columns else columns.index("captions")
            is_list = columns[col_text] == "captions"
            for row in reader:
                lineno = reader.line_num  # physical line where the record ends (quoted cells may span lines)
                if not row or not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    self._bad(lineno, f"{len(row)} fields, the header has {len(header)}")
                    continue
                image, text = row[col_image], row[col_text]
                if not image.strip():
                    self._bad(lineno, "empty `image` cell")
                    continue
                if is_list:
                    try:
                        captions = _captions_value(json.loads(text), "the `captions` cell") if text.strip() else []
                    except json.JSONDecodeError as err:
                        self._bad(lineno, f"the `captions` cell is not a JSON list ({err.msg})")
                        continue
                    except ValueError as err:
                        self._bad(lineno, str(err))
                        continue
                else:
                    captions = [text]
                self._add(image, captions, lineno)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, Any]:
        path = self.files[i]
        return {"image": load_image(path), "captions": list(self.captions[i]), "index": int(i), "path": str(path)}

    def all_captions(self, split: bool = False) -> list[str]:
        """Every caption of the table (sentences when ``split``), e.g. to warm an embedding cache."""
        return [c for caps in self.captions for c in caption_list(caps, split)]

    def __repr__(self) -> str:
        return f"CaptionTableDataset({str(self.path)!r}, {len(self)} images)"


def dataset_captions(dataset: Any, split: bool) -> list[str] | None:
    """Every caption of a dataset (one per sentence when ``split``), unique, or None if it cannot say cheaply.

    Works for the built-in scenes (captions are generated without drawing the images), caption tables and
    tar shards (captions are in their index); other datasets return None rather than decoding every image.
    """
    inner = getattr(dataset, "dataset", dataset)  # through SkipCorrupt
    if hasattr(inner, "all_captions"):
        raw: Any = inner.all_captions(split)
        return list(dict.fromkeys(raw))
    captions = getattr(inner, "captions", None)
    if isinstance(captions, list):
        return list(dict.fromkeys(c for item in captions for c in caption_list(item, split)))
    if callable(captions):
        return list(dict.fromkeys(c for i in range(len(inner)) for c in caption_list(captions(i), split)))
    return None
