"""Video files: PyAV decoding, clip sampling, and a dataset over the layouts users bring.

- :func:`read_frames` decodes the frames a clip needs (sequentially, stopping at the last one needed) as
  ``uint8 [T, H, W, 3]`` RGB; :func:`count_frames` reads a video's length from its header;
  :func:`write_video` encodes H.264 (used by ``openjepa data sprites`` and by the tests).
- :func:`train_clip_indices` / :func:`eval_clip_indices`: which frames make a clip, as pure functions.
- :class:`VideoFileDataset`: a V-JEPA-style list file, a CSV or JSONL table, or a folder of videos.

Both video datasets (this one and :class:`~openjepa.data.sprites.SpritesDataset`) follow one protocol,
which the training pipeline relies on:

- ``len(ds)``;
- ``ds.clip(index, rng)``: a training clip with a random start, ``{"video": uint8 [num_frames, H, W, 3],
  "labels": dict[str, int], "index": int, "path": str | None}`` plus ``"captions": list[str]`` when the
  source has captions;
- ``ds.eval_clips(index, num_clips)``: the same keys with ``"video": uint8 [num_clips, num_frames, H, W, 3]``,
  clips evenly spaced over the video;
- ``ds[index]``: ``eval_clips(index, 1)`` with ``"video"`` of shape ``[num_frames, H, W, 3]`` (the
  central clip, for feature extraction);
- ``ds.tasks`` (probe task name -> number of classes) and ``ds.classes`` (task -> class names).

Unreadable, truncated, zero-frame and non-video files raise :class:`CorruptVideoError` (missing files
:class:`FileNotFoundError`); :class:`~openjepa.data.images.SkipCorrupt` skips, counts and reports both.
"""

from __future__ import annotations

import csv
import json
import numbers
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from openjepa.config import ConfigError
from openjepa.data.images import _index_labels, list_files
from openjepa.errors import CorruptFileError, OpenJepaError

__all__ = [
    "SHORT_POLICIES",
    "VIDEO_EXTENSIONS",
    "ClipDoesNotFitError",
    "CorruptVideoError",
    "VideoBackendMissingError",
    "VideoFileDataset",
    "VideoInfo",
    "VideoTooShortError",
    "clip_span",
    "count_frames",
    "eval_clip_indices",
    "is_video_file",
    "probe_video",
    "read_frames",
    "train_clip_indices",
    "write_video",
]

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ogv")

#: What to do with a video shorter than one clip (see :func:`train_clip_indices`).
SHORT_POLICIES: tuple[str, ...] = ("pad", "loop", "error")

# A header (mp4 ``stts``) may count a frame or two that the decoder never outputs (edit lists, a dropped
# final frame). Requests that fall in this many frames past the last decoded frame reuse that frame; a
# larger shortfall is a truncated file.
_TAIL_SLACK = 2


class CorruptVideoError(CorruptFileError):
    """A video file exists but cannot be used: unreadable, truncated, no video stream, no frames.

    Attributes:
        path: the file.
        reason: what went wrong (the decoder's message where there is one).
    """

    kind = "video"


class VideoTooShortError(CorruptVideoError):
    """A video is shorter than one clip and the short-video policy is ``"error"``.

    A :class:`CorruptVideoError` so that :class:`~openjepa.data.images.SkipCorrupt` skips and counts it; its
    reason names the clip size and the config keys to change.
    """


class ClipDoesNotFitError(ValueError):
    """Raised by the clip samplers when a clip is longer than the video and the policy is ``"error"``."""


class VideoBackendMissingError(OpenJepaError, ModuleNotFoundError):
    """PyAV (the ``av`` package) is not installed."""


def _av() -> Any:
    """The ``av`` module, or an error that says how to install it."""
    try:
        import av
    except ImportError as err:
        raise VideoBackendMissingError(
            "reading or writing videos needs PyAV: pip install 'openjepa[video]' (or pip install av)"
        ) from err
    return av


def is_video_file(name: str | os.PathLike) -> bool:
    """Whether the file name has one of :data:`VIDEO_EXTENSIONS` (case-insensitive)."""
    return os.path.splitext(str(name))[1].lower() in VIDEO_EXTENSIONS


# ----------------------------------------------------------------------------- clip sampling


def _check_clip_shape(num_frames: int, frame_step: int) -> None:
    if not isinstance(num_frames, numbers.Integral) or num_frames < 1:
        raise ConfigError(f"data.num_frames={num_frames!r} must be an integer >= 1 (frames per clip)")
    if not isinstance(frame_step, numbers.Integral) or frame_step < 1:
        raise ConfigError(f"data.frame_step={frame_step!r} must be an integer >= 1 (take every k-th frame)")


def _check_short(short: str) -> None:
    if short not in SHORT_POLICIES:
        raise ValueError(f"unknown short-video policy short={short!r}; expected one of {', '.join(SHORT_POLICIES)}")


def clip_span(num_frames: int, frame_step: int) -> int:
    """Frames of the video one clip covers: ``(num_frames - 1) * frame_step + 1``.

    A video of at least this many frames holds a clip without padding or looping.
    """
    _check_clip_shape(num_frames, frame_step)
    return (int(num_frames) - 1) * int(frame_step) + 1


def _does_not_fit(num_video_frames: int, num_frames: int, frame_step: int) -> ClipDoesNotFitError:
    span = clip_span(num_frames, frame_step)
    return ClipDoesNotFitError(
        f"{num_video_frames} frames, shorter than one clip of data.num_frames={num_frames} x "
        f"data.frame_step={frame_step} ({span} frames); lower data.num_frames or data.frame_step, or pad / "
        "loop short videos (short='pad' or 'loop')"
    )


def _check_length(num_video_frames: int) -> int:
    if not isinstance(num_video_frames, numbers.Integral) or num_video_frames < 1:
        raise ValueError(f"num_video_frames={num_video_frames!r}: a video needs at least one frame")
    return int(num_video_frames)


def _short_clip(n: int, offsets: np.ndarray, start: int, short: str) -> np.ndarray:
    """Indices of a clip that does not fit in ``n`` frames, under the ``pad`` or ``loop`` policy."""
    if short == "pad":
        return np.minimum(offsets, n - 1)
    return (start + offsets) % n


def train_clip_indices(
    num_video_frames: int,
    num_frames: int,
    frame_step: int,
    rng: np.random.Generator,
    short: str = "pad",
) -> np.ndarray:
    """Frame indices of a training clip with a random start.

    The clip takes every ``frame_step``-th frame, ``num_frames`` times, from a start drawn uniformly
    among the positions where it fits (one integer draw from ``rng``).

    Videos shorter than :func:`clip_span` frames follow ``short``:

    - ``"pad"`` (default, as the V-JEPA reference code does): the clip starts at frame 0 and every index
      past the end repeats the last frame, so the motion stops rather than jumps. Nothing is drawn.
    - ``"loop"``: the video repeats from the start; the clip starts at a random frame (one draw) and
      wraps around, so there is a cut where the video restarts.
    - ``"error"``: raise :class:`ClipDoesNotFitError`.

    Args:
        num_video_frames: frames in the video (at least 1).
        num_frames: frames per clip (``data.num_frames``).
        frame_step: spacing of the frames (``data.frame_step``).
        rng: the generator the start is drawn from.
        short: the short-video policy.

    Returns:
        int64 ``[num_frames]`` indices in ``[0, num_video_frames)``; increasing unless the video was looped.

    Raises:
        ClipDoesNotFitError: the clip does not fit and ``short="error"``.
    """
    n = _check_length(num_video_frames)
    span = clip_span(num_frames, frame_step)
    _check_short(short)
    offsets = np.arange(num_frames, dtype=np.int64) * frame_step
    if n >= span:
        return int(rng.integers(0, n - span + 1)) + offsets
    if short == "error":
        raise _does_not_fit(n, num_frames, frame_step)
    start = int(rng.integers(0, n)) if short == "loop" else 0
    return _short_clip(n, offsets, start, short)


def eval_clip_indices(
    num_video_frames: int, num_frames: int, frame_step: int, num_clips: int = 1, short: str = "pad"
) -> np.ndarray:
    """Frame indices of ``num_clips`` evaluation clips spread evenly over the video.

    The possible starts ``0 .. n - span`` are cut into ``num_clips`` equal segments and each clip starts
    at the middle of its segment (rounded down): one clip is the central clip, two clips sit at the first
    and third quarters, and so on. Deterministic: no generator.

    Short videos follow ``short`` as in :func:`train_clip_indices`: ``"pad"`` gives ``num_clips`` copies of
    the padded clip from frame 0; ``"loop"`` starts clip ``k`` at frame ``k * n // num_clips`` and wraps;
    ``"error"`` raises.

    Args:
        num_video_frames: frames in the video.
        num_frames: frames per clip.
        frame_step: spacing of the frames.
        num_clips: number of clips (at least 1).
        short: the short-video policy.

    Returns:
        int64 ``[num_clips, num_frames]``.

    Raises:
        ClipDoesNotFitError: the clip does not fit and ``short="error"``.
    """
    n = _check_length(num_video_frames)
    span = clip_span(num_frames, frame_step)
    _check_short(short)
    if not isinstance(num_clips, numbers.Integral) or num_clips < 1:
        raise ValueError(f"num_clips={num_clips!r} must be an integer >= 1")
    offsets = np.arange(num_frames, dtype=np.int64) * frame_step
    k = np.arange(num_clips, dtype=np.int64)
    if n >= span:
        # (2k + 1) * room // (2 num_clips): the segment middles in exact integer arithmetic.
        starts = (2 * k + 1) * (n - span) // (2 * num_clips)
        return starts[:, None] + offsets[None, :]
    if short == "error":
        raise _does_not_fit(n, num_frames, frame_step)
    if short == "pad":
        return np.broadcast_to(_short_clip(n, offsets, 0, short), (num_clips, num_frames)).copy()
    return np.stack([_short_clip(n, offsets, int(s), short) for s in k * n // num_clips])


# ----------------------------------------------------------------------------- decoding


@dataclass(frozen=True)
class VideoInfo:
    """What a video's header says.

    Attributes:
        num_frames: frames in the first video stream (counted from the packets when the header has no
            count).
        width: frame width in pixels.
        height: frame height in pixels.
        fps: average frame rate, or None when unknown.
    """

    num_frames: int
    width: int
    height: int
    fps: float | None


def _check_exists(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")


class _Opened:
    """``av.open`` + the first video stream, with errors turned into :class:`CorruptVideoError`."""

    def __init__(self, path: Path, threads: int):
        self.av = _av()
        self.path = path
        try:
            self.container = self.av.open(str(path), metadata_errors="ignore")
        except self.av.error.FFmpegError as err:
            raise CorruptVideoError(path, f"cannot open: {err}") from err
        if not self.container.streams.video:
            self.container.close()
            raise CorruptVideoError(path, "the file has no video stream")
        self.stream = self.container.streams.video[0]
        # Loader workers already run one video each on every core: more decoder threads per worker only
        # oversubscribe the machine (0 = let FFmpeg decide, for single-process use).
        self.stream.codec_context.thread_count = int(threads)

    def __enter__(self) -> _Opened:
        return self

    def __exit__(self, *exc: object) -> None:
        self.container.close()


def _header_frames(opened: _Opened) -> int:
    """Frame count from the header, else from counting the packets (no decoding); 0 when empty."""
    n = int(opened.stream.frames or 0)
    if n > 0:
        return n
    try:
        # Containers such as WebM/MKV carry no frame count; one packet holds one frame for the codecs
        # used in video datasets (H.264, HEVC, VP8/9, AV1, MPEG-4).
        return sum(1 for packet in opened.container.demux(opened.stream) if packet.size)
    except opened.av.error.FFmpegError as err:
        raise CorruptVideoError(opened.path, f"cannot read packets: {err}") from err


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Reads a video's header: frame count, size and frame rate (no frame is decoded when the header
    has a frame count).

    Raises:
        FileNotFoundError: the file does not exist.
        CorruptVideoError: not a video, no video stream, or no frames.
    """
    path = Path(path)
    _check_exists(path)
    with _Opened(path, threads=1) as opened:
        stream = opened.stream
        n = _header_frames(opened)
        rate = stream.average_rate
        width, height = int(stream.codec_context.width), int(stream.codec_context.height)
    if n < 1:
        raise CorruptVideoError(path, "the video stream has no frames")
    return VideoInfo(n, width, height, float(rate) if rate else None)


def count_frames(path: str | os.PathLike) -> int:
    """Number of frames of a video (see :func:`probe_video`)."""
    return probe_video(path).num_frames


def read_frames(
    path: str | os.PathLike, indices: Sequence[int] | np.ndarray | None = None, threads: int = 1
) -> np.ndarray:
    """Decodes the given frames of a video as RGB.

    Frames are decoded in order from the start and decoding stops after the largest requested index. No
    seeking: indices are exact whatever the container's timestamps (variable frame rate, edit lists), and
    with x264's default keyframe interval (250 frames) a seek would rarely skip anything in dataset-length
    videos. Only requested frames are converted to RGB.

    Args:
        path: the video file.
        indices: frame indices, in any order, repeats allowed (looped or padded clips); None for all frames.
        threads: decoder threads (1 inside loader workers; 0 lets FFmpeg choose).

    Returns:
        uint8 ``[len(indices), H, W, 3]`` (every frame has the size of the first decoded one).

    Raises:
        FileNotFoundError: the file does not exist.
        CorruptVideoError: the file cannot be opened or decoded, has no frames, or ends more than
            ``_TAIL_SLACK`` frames before a requested index (a truncated file).
        ValueError: a negative index.
    """
    path = Path(path)
    _check_exists(path)
    wanted = None if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
    if wanted is not None and wanted.size and int(wanted.min()) < 0:
        raise ValueError(f"{path}: frame indices must be >= 0, got {int(wanted.min())}")
    if wanted is not None and wanted.size == 0:
        raise ValueError(f"{path}: no frame index requested")
    with _Opened(path, threads) as opened:
        frames, decoded = _decode(opened, None if wanted is None else set(wanted.tolist()))
    if decoded == 0:
        raise CorruptVideoError(path, "no frame could be decoded")
    if wanted is None:
        return np.stack([frames[i] for i in range(decoded)])
    last = int(wanted.max())
    if last >= decoded + _TAIL_SLACK:
        raise CorruptVideoError(
            path, f"truncated: frame {last} was requested but decoding ended after {decoded} frames"
        )
    # Indices in the slack past the end reuse the last decoded frame (kept by _decode for this purpose).
    return np.stack([frames[min(i, decoded - 1)] for i in wanted.tolist()])


def _decode(opened: _Opened, wanted: set[int] | None) -> tuple[dict[int, np.ndarray], int]:
    """Decodes up to the largest wanted index; returns the wanted frames (and the last one) and how many
    frames were decoded."""
    last = max(wanted) if wanted is not None else None
    frames: dict[int, np.ndarray] = {}
    size: tuple[int, int] | None = None
    decoded = 0
    previous = None
    try:
        for i, frame in enumerate(opened.container.decode(opened.stream)):
            decoded = i + 1
            if size is None:
                size = (int(frame.width), int(frame.height))
            if wanted is None or i in wanted:
                frames[i] = _rgb(frame, size)
            previous = frame
            if last is not None and i >= last:
                break
    except opened.av.error.FFmpegError as err:
        raise CorruptVideoError(opened.path, f"decoding failed after {decoded} frames: {err}") from err
    if previous is not None and decoded - 1 not in frames:
        frames[decoded - 1] = _rgb(previous, size)  # type: ignore[arg-type]
    return frames, decoded


def _rgb(frame: Any, size: tuple[int, int]) -> np.ndarray:
    # Rescaling to the first frame's size keeps a stream whose resolution changes mid-way stackable.
    if (frame.width, frame.height) == size:
        return frame.to_ndarray(format="rgb24")
    return frame.to_ndarray(format="rgb24", width=size[0], height=size[1])


def write_video(
    path: str | os.PathLike, frames: np.ndarray, fps: int = 8, crf: int = 12, preset: str = "medium"
) -> Path:
    """Encodes frames as an H.264 (libx264, yuv420p) MP4 file.

    Args:
        path: the output file (its folder must exist).
        frames: uint8 ``[T, H, W, 3]`` RGB, ``H`` and ``W`` even (yuv420p halves the chroma planes).
        fps: frame rate written in the file (readers here index frames, not timestamps).
        crf: x264 constant rate factor: 0 is lossless, 18 visually lossless, 23 the x264 default.
        preset: x264 speed / compression trade-off.

    Returns:
        The path written.

    Raises:
        ValueError: wrong array shape or dtype, or odd frame sides.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or frames.shape[0] < 1:
        raise ValueError(
            f"write_video expects uint8 [T, H, W, 3] frames with T >= 1, got {frames.dtype} {frames.shape}"
        )
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"write_video: H.264 yuv420p needs even frame sides, got {width}x{height}")
    av = _av()
    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=int(fps), options={"crf": str(int(crf)), "preset": preset})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for pixels in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():  # flush the encoder's delayed frames
            container.mux(packet)
    return path


# ----------------------------------------------------------------------------- list parsing


_LIST_FORMAT = (
    "a list file with one `path label` per line (space or comma separated, label optional), a CSV whose "
    "header has a `path` or `video` column (optional `label`, `caption`/`captions`), a JSONL file with "
    '{"video": path, "label" | "labels": ..., "captions": [...]} per line, or a folder of videos (one '
    f"subfolder per class, or videos directly in it; extensions {', '.join(VIDEO_EXTENSIONS)})"
)


def _label_value(text: str) -> int | str:
    """An integer label, or a class name."""
    text = text.strip()
    try:
        value = int(text)
    except ValueError:
        return text
    if value < 0:
        raise ValueError(f"label {value} is negative; labels are class indices >= 0 or class names")
    return value


def _parse_list_line(line: str) -> tuple[str, int | str | None]:
    """(path, label or None) from a ``path label`` line; ValueError with the reason otherwise.

    The label is what follows the last comma or, without a comma, the last run of spaces. When that last
    field is itself a video file name, the whole line is one path (which may contain spaces) without a label.
    """
    text = line.strip()
    sep = "," if "," in text else None
    parts = text.rsplit(sep, 1)
    if len(parts) == 1 or is_video_file(parts[1].strip()):
        path, label = text, None
    else:
        path, label = parts[0].strip(), parts[1].strip()
    if not path:
        raise ValueError("empty path")
    if label == "":
        raise ValueError("empty label after the separator")
    return path, None if label is None else _label_value(label)


def _captions_cell(text: str) -> list[str]:
    """A CSV captions cell: a JSON list of strings, or one plain caption."""
    stripped = text.strip()
    if not stripped:
        return []
    if stripped.startswith("["):
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError as err:
            raise ValueError(f"the captions cell starts with '[' but is not a JSON list ({err.msg})") from err
        if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
            raise ValueError("the captions cell must be a JSON list of strings")
        return value
    return [stripped]


def _parse_jsonl_record(line: str) -> tuple[str, dict[str, int | str], list[str]]:
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"invalid JSON ({err.msg} at column {err.colno})") from err
    if not isinstance(rec, dict):
        raise ValueError(f"expected a JSON object, got {type(rec).__name__}")
    video = rec.get("video", rec.get("path"))
    if not isinstance(video, str) or not video.strip():
        raise ValueError('missing "video" (a path string)')
    if "label" in rec and "labels" in rec:
        raise ValueError('give either "label" or "labels", not both')
    labels: dict[str, Any] = {"class": rec["label"]} if "label" in rec else rec.get("labels", {})
    if not isinstance(labels, dict):
        raise ValueError('"labels" must be an object of task name -> class')
    for task, value in labels.items():
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError(f"label {task!r} must be an integer or a class name, got {value!r}")
        if isinstance(value, int) and value < 0:
            raise ValueError(f"label {task!r} is negative ({value}); labels are class indices >= 0")
    captions = rec.get("captions", rec.get("caption", []))
    if isinstance(captions, str):
        captions = [captions]
    if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
        raise ValueError('"captions" must be a list of strings')
    return video.strip(), labels, captions


def _first_content_line(path: Path) -> str:
    with path.open(encoding="utf-8-sig") as f:
        for line in f:
            if line.strip() and not line.lstrip().startswith("#"):
                return line.strip()
    return ""


def _header_columns(line: str) -> list[str]:
    return [c.strip().strip('"').lower() for c in line.replace("\t", ",").split(",")]


def _detect_layout(path: Path) -> str:
    """``folder``, ``export`` (a folder written by ``openjepa data sprites``), ``jsonl``, ``csv`` or ``list``."""
    if path.is_dir():
        return "export" if (path / "labels.jsonl").is_file() and _is_video_export(path) else "folder"
    if path.suffix.lower() in (".jsonl", ".json"):
        return "jsonl"
    first = _first_content_line(path)
    if first.startswith("{"):
        return "jsonl"
    columns = _header_columns(first)
    return "csv" if "path" in columns or "video" in columns else "list"


def _is_video_export(folder: Path) -> bool:
    from openjepa.data.manifest import read_manifest

    manifest = read_manifest(folder)
    return manifest is not None and manifest.get("layout") == "videos"


# ----------------------------------------------------------------------------- dataset


class VideoFileDataset(torch.utils.data.Dataset):
    """Videos listed in a file or found in a folder, with optional labels and captions.

    The layout is detected from ``path``:

    - **list file** (V-JEPA style, any extension): one video per line, ``path label`` separated by spaces
      or a comma; the label (an integer or a class name) is optional for the whole file. Lines starting
      with ``#`` are comments.
    - **CSV** (a file whose first line has a ``path`` or ``video`` column): optional ``label`` column,
      optional ``captions`` (a JSON list or one caption) or ``caption`` column; other columns are ignored.
      Tab-separated when the header has tabs and no commas.
    - **JSONL** (``.jsonl`` / ``.json``, or lines starting with ``{``): ``{"video": path, "label": ... |
      "labels": {task: ...}, "captions": [...]}``: several tasks per video (what ``openjepa data sprites``
      writes to ``labels.jsonl``).
    - **folder**: one subfolder per class (searched recursively; label task ``class``), or videos directly
      in the folder (unlabelled). A folder written by ``openjepa data sprites`` reads its ``labels.jsonl``.

    Relative paths are resolved against the list file's folder. Class names are mapped to indices per
    task in sorted order. Exports of ``openjepa data`` are checked against their ``manifest.json`` (see
    :func:`openjepa.data.manifest.check_export`) so stale files of an earlier export are never read.

    Args:
        path: list file, CSV, JSONL or folder.
        num_frames: frames per clip (``data.num_frames``).
        frame_step: take every ``frame_step``-th frame (``data.frame_step``).
        short: policy for videos shorter than one clip: ``"pad"`` (repeat the last frame; default),
            ``"loop"`` or ``"error"`` (raise :class:`VideoTooShortError`, which ``SkipCorrupt`` skips and
            counts); see :func:`train_clip_indices`.
        strict: raise on a malformed line; if False skip it, record it in :attr:`skipped_lines` and warn.
        check_files: check at construction that every listed video exists (False defers to reading, where
            ``SkipCorrupt`` can skip missing files).
        decode_threads: decoder threads per video (1 in loader workers; 0 lets FFmpeg choose).

    Attributes:
        files: video paths in item order.
        tasks: probe task name -> number of classes (``{"class": n}`` for list, CSV and folder labels,
            empty when unlabelled).
        classes: task -> class names in index order (empty list for integer labels).
        captions: per-video captions (empty lists when the source has none).
        has_captions: whether items carry ``"captions"``.
        skipped_lines: ``"file:line: reason"`` of the malformed lines skipped with ``strict=False``.

    Raises:
        FileNotFoundError: ``path`` is missing, a folder holds no videos, or (``check_files``) listed
            videos are missing (the first few are named with their line numbers).
        ValueError: a malformed line (file and line number in the message) or an empty list.
        ConfigError: bad ``num_frames`` / ``frame_step``.
        DataError: an export folder whose files do not match its manifest.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        num_frames: int = 16,
        frame_step: int = 4,
        short: str = "pad",
        strict: bool = True,
        check_files: bool = True,
        decode_threads: int = 1,
    ):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"video source not found: {self.path}. Expected {_LIST_FORMAT}")
        self.span = clip_span(num_frames, frame_step)
        _check_short(short)
        self.num_frames, self.frame_step, self.short = int(num_frames), int(frame_step), short
        self.strict = strict
        self.decode_threads = int(decode_threads)
        self.files: list[Path] = []
        self.captions: list[list[str]] = []
        self.line_numbers: list[int] = []
        self.skipped_lines: list[str] = []
        self._raw_labels: list[dict[str, Any]] = []
        self.layout = _detect_layout(self.path)
        self._read_layout()
        if self.skipped_lines:
            warnings.warn(
                f"{self.path}: skipped {len(self.skipped_lines)} malformed line(s), first: {self.skipped_lines[0]}",
                stacklevel=2,
            )
        if not self.files:
            raise ValueError(f"{self.path} lists no videos. Expected {_LIST_FORMAT}")
        try:
            self.classes, self._labels = _index_labels(self._raw_labels)
        except ValueError as err:
            raise ValueError(f"{self.path}: {err}") from err
        self.tasks: dict[str, int] = {
            task: len(names) if names else max(lab[task] for lab in self._labels if task in lab) + 1
            for task, names in self.classes.items()
        }
        self._use_export_tasks()
        self.has_captions = self.layout in ("csv", "jsonl", "export") and any(self.captions)
        if check_files:
            self._check_files()
        self._lengths: dict[int, int] = {}

    # -- reading the layouts

    def _read_layout(self) -> None:
        from openjepa.data.manifest import check_export

        if self.layout == "export":
            self.path = self.path / "labels.jsonl"
        self.export = check_export(self.path)
        readers = {"folder": self._read_folder, "export": self._read_jsonl, "jsonl": self._read_jsonl}
        readers.update(csv=self._read_csv, list=self._read_list)
        readers[self.layout]()

    def _use_export_tasks(self) -> None:
        """Takes the class counts and names of an ``openjepa data`` export from its generator file.

        Counting classes from the labels seen (``max + 1``) under-counts when a small export misses the
        last classes; the generator file (``sprites.json`` / ``scenes.json``) knows them all.
        """
        if self.export is None or not self.tasks:
            return
        meta_path = Path(self.export["root"]) / f"{self.export.get('generator')}.json"
        if not meta_path.is_file():
            return
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        tasks, names = meta.get("tasks") or {}, meta.get("classes") or {}
        # A list file carries one task (the export's label_task) under the name "class".
        source = {"class": meta.get("label_task")} if self.layout == "list" else {t: t for t in self.tasks}
        for task, generated in source.items():
            if generated in tasks and int(tasks[generated]) >= self.tasks.get(task, 0):
                self.tasks[task] = int(tasks[generated])
                if not self.classes.get(task) and generated in names:
                    self.classes[task] = list(names[generated])

    def _bad(self, lineno: int, reason: str) -> None:
        if self.strict:
            raise ValueError(
                f"{self.path}, line {lineno}: {reason}. Fix the line or pass strict=False to skip malformed lines"
            )
        self.skipped_lines.append(f"{self.path}:{lineno}: {reason}")

    def _add(self, video: str | Path, labels: dict[str, Any], captions: list[str], lineno: int) -> None:
        """Records one video; a relative ``str`` path is resolved against the list file's folder."""
        if isinstance(video, str):
            video = Path(video) if os.path.isabs(video) else self.path.parent / video
        self.files.append(video)
        self._raw_labels.append(labels)
        self.captions.append([c.strip() for c in captions if c.strip()])
        self.line_numbers.append(lineno)

    def _read_list(self) -> None:
        labelled_line: int | None = None  # first line with a label, or the negation of the first without
        with self.path.open(encoding="utf-8-sig") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                try:
                    video, label = _parse_list_line(line)
                except ValueError as err:
                    self._bad(lineno, str(err))
                    continue
                has_label = label is not None
                if labelled_line is None:
                    labelled_line = lineno if has_label else -lineno
                elif has_label != (labelled_line > 0):
                    first = abs(labelled_line)
                    self._bad(
                        lineno,
                        f"{'a' if has_label else 'no'} label, but line {first} has {'no' if has_label else 'a'} "
                        "label: give every line a label or none",
                    )
                    continue
                self._add(video, {} if label is None else {"class": label}, [], lineno)

    def _read_csv(self) -> None:
        with self.path.open(encoding="utf-8-sig", newline="") as f:
            header_line = f.readline()
            delimiter = "\t" if "\t" in header_line and "," not in header_line else ","
            f.seek(0)
            reader = csv.reader(f, delimiter=delimiter)
            header = next(reader)
            columns = [h.strip().lower() for h in header]
            if "path" in columns and "video" in columns:
                raise ValueError(f"{self.path}: the CSV header {header} has both `path` and `video`; keep one")
            col_path = columns.index("path" if "path" in columns else "video")
            col_label = columns.index("label") if "label" in columns else None
            if "captions" in columns and "caption" in columns:
                raise ValueError(f"{self.path}: the CSV header {header} has both `caption` and `captions`; keep one")
            col_text = next((columns.index(c) for c in ("captions", "caption") if c in columns), None)
            for row in reader:
                lineno = reader.line_num
                if not row or not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    self._bad(lineno, f"{len(row)} fields, the header has {len(header)}")
                    continue
                self._csv_row(row, col_path, col_label, col_text, lineno)

    def _csv_row(self, row: list[str], col_path: int, col_label: int | None, col_text: int | None, lineno: int) -> None:
        video = row[col_path].strip()
        if not video:
            self._bad(lineno, "empty path cell")
            return
        labels: dict[str, Any] = {}
        if col_label is not None:
            if not row[col_label].strip():
                self._bad(lineno, "empty label cell (the header has a `label` column)")
                return
            try:
                labels = {"class": _label_value(row[col_label])}
            except ValueError as err:
                self._bad(lineno, str(err))
                return
        captions: list[str] = []
        if col_text is not None:
            try:
                captions = _captions_cell(row[col_text])
            except ValueError as err:
                self._bad(lineno, str(err))
                return
        self._add(video, labels, captions, lineno)

    def _read_jsonl(self) -> None:
        with self.path.open(encoding="utf-8-sig") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    video, labels, captions = _parse_jsonl_record(line)
                except ValueError as err:
                    self._bad(lineno, str(err))
                    continue
                self._add(video, labels, captions, lineno)

    def _read_folder(self) -> None:
        subdirs = sorted(p for p in self.path.iterdir() if p.is_dir() and not p.name.startswith("."))
        per_class = [(d.name, _list_videos(d, recursive=True)) for d in subdirs]
        per_class = [(name, files) for name, files in per_class if files]
        top_level = _list_videos(self.path, recursive=False)
        if per_class and top_level:
            warnings.warn(
                f"{self.path}: using the {len(per_class)} class subfolders and ignoring {len(top_level)} "
                f"video(s) directly in the folder (e.g. {top_level[0].name})",
                stacklevel=3,
            )
        if per_class:
            for name, files in per_class:
                for file in files:
                    self._add(file, {"class": name}, [], 0)
        else:
            for file in top_level:
                self._add(file, {}, [], 0)
        if not self.files:
            raise FileNotFoundError(f"no videos found in {self.path}. Expected {_LIST_FORMAT}")

    def _check_files(self) -> None:
        missing = [(p, n) for p, n in zip(self.files, self.line_numbers) if not p.is_file()]
        if missing:
            shown = ", ".join(f"{p} (line {n})" if n else str(p) for p, n in missing[:5])
            raise FileNotFoundError(
                f"{self.path}: {len(missing)} of {len(self.files)} listed videos are missing, e.g. {shown}. "
                "Video paths are relative to the list file's folder; pass check_files=False to skip missing "
                "files while reading instead"
            )

    # -- the video dataset protocol

    def __len__(self) -> int:
        return len(self.files)

    def _index(self, i: int) -> int:
        n = len(self.files)
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} videos")
        return i % n

    def num_video_frames(self, i: int) -> int:
        """Frames of video ``i`` according to its header (cached per process).

        Raises:
            FileNotFoundError / CorruptVideoError: the video cannot be opened.
        """
        i = self._index(i)
        if i not in self._lengths:
            self._lengths[i] = count_frames(self.files[i])
        return self._lengths[i]

    def read(self, i: int, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Frames ``indices`` of video ``i`` as uint8 ``[len(indices), H, W, 3]`` (see :func:`read_frames`)."""
        return read_frames(self.files[self._index(i)], indices, threads=self.decode_threads)

    def _clip_or_skip(self, i: int, sampler: Any) -> np.ndarray:
        """Runs ``sampler(num_video_frames)``; a clip that cannot fit becomes a skippable error."""
        n = self.num_video_frames(i)
        try:
            return sampler(n)
        except ClipDoesNotFitError as err:
            raise VideoTooShortError(self.files[i], str(err)) from err

    def clip(self, i: int, rng: np.random.Generator) -> dict[str, Any]:
        """A training clip of video ``i`` with a random start (:func:`train_clip_indices`).

        Returns:
            ``{"video": uint8 [num_frames, H, W, 3], "labels", "index", "path"}`` (+ ``"captions"``).
        """
        i = self._index(i)
        indices = self._clip_or_skip(
            i, lambda n: train_clip_indices(n, self.num_frames, self.frame_step, rng, self.short)
        )
        return self._item(i, self.read(i, indices))

    def eval_clips(self, i: int, num_clips: int) -> dict[str, Any]:
        """``num_clips`` evenly spaced clips of video ``i`` (:func:`eval_clip_indices`), decoded in one pass.

        Returns:
            The :meth:`clip` keys with ``"video"`` uint8 ``[num_clips, num_frames, H, W, 3]``.
        """
        i = self._index(i)
        indices = self._clip_or_skip(
            i, lambda n: eval_clip_indices(n, self.num_frames, self.frame_step, num_clips, self.short)
        )
        frames = self.read(i, indices.reshape(-1))
        return self._item(i, frames.reshape(*indices.shape, *frames.shape[1:]))

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.eval_clips(i, 1)
        item["video"] = item["video"][0]
        return item

    def _item(self, i: int, video: np.ndarray) -> dict[str, Any]:
        item: dict[str, Any] = {
            "video": video,
            "labels": dict(self._labels[i]),
            "index": i,
            "path": str(self.files[i]),
        }
        if self.has_captions:
            item["captions"] = list(self.captions[i])
        return item

    def check_clips_fit(self, max_videos: int = 32) -> None:
        """With ``short="error"``, fails early when no sampled video can hold one clip.

        Reads the headers of up to ``max_videos`` videos spread over the list. Training would otherwise
        skip every video one by one and stop only when too many were skipped.

        Raises:
            ConfigError: none of the sampled videos is long enough (names the sizes and the keys).
        """
        if self.short != "error":
            return
        picks = np.unique(np.linspace(0, len(self) - 1, min(max_videos, len(self))).round().astype(int))
        lengths = []
        for i in picks.tolist():
            try:
                lengths.append(self.num_video_frames(i))
            except (CorruptFileError, FileNotFoundError):
                continue  # unreadable files are SkipCorrupt's business, not a clip-size problem
        if lengths and max(lengths) < self.span:
            raise ConfigError(
                f"{self.path}: a clip of data.num_frames={self.num_frames} x data.frame_step={self.frame_step} "
                f"spans {self.span} frames, but the longest of {len(lengths)} sampled videos has {max(lengths)}; "
                "lower data.num_frames or data.frame_step, or pad / loop short videos"
            )

    def __repr__(self) -> str:
        return (
            f"VideoFileDataset({str(self.path)!r}, {len(self)} videos, num_frames={self.num_frames}, "
            f"frame_step={self.frame_step}, short={self.short!r})"
        )


def _list_videos(folder: Path, recursive: bool) -> list[Path]:
    """Video files under ``folder`` (see :func:`openjepa.data.images.list_files`)."""
    return list_files(folder, recursive, is_video_file)
