"""Datasets by name: the one place that maps ``data.source`` to a reader (images or video clips).

Image sources give items ``{"image": PIL RGB, "labels", "captions"?, ...}`` from ``dataset[i]``; video
sources give ``{"video": uint8 [T, H, W, 3], ...}`` from ``dataset[i]`` (a fixed clip), ``dataset.clip(i, rng)``
(a random training clip) and ``dataset.eval_clips(i, n)``. File sources are wrapped in
:class:`~openjepa.data.images.SkipCorrupt`, so unreadable files are skipped, counted and reported.
"""

from __future__ import annotations

from torch.utils.data import Dataset

from openjepa.config import ConfigError, DataConfig

IMAGE_SOURCES = ("scenes", "folder", "jsonl", "captions", "wds")
VIDEO_SOURCES = ("sprites", "videos")
# With data.num_frames=1, sprites gives each video's labelled frame as an image (the single-frame reference).
BOTH = ("sprites",)

_EXAMPLE_PATHS = {
    "folder": "images",
    "jsonl": "list.jsonl",
    "captions": "captions.csv",
    "wds": "shards/{000000..000099}.tar",
    "videos": "videos.txt",
}


def source_kind(source: str) -> str:
    """``"image"`` or ``"video"``: what a source yields."""
    if source in IMAGE_SOURCES:
        return "image"
    if source in VIDEO_SOURCES:
        return "video"
    raise ConfigError(f"unknown data.source={source!r}; expected one of {', '.join(IMAGE_SOURCES + VIDEO_SOURCES)}")


def check_source(cfg: DataConfig, input_key: str) -> None:
    """Raises when the source cannot feed a method that reads ``input_key`` (``image`` or ``video``)."""
    kind = source_kind(cfg.source)
    if cfg.source in BOTH and cfg.num_frames == 1:
        kind = "image"
    if kind != input_key:
        if input_key == "video":
            fix = "use a video source (data.source=sprites or data.source=videos data.path=LIST)"
        else:
            fix = "use an image source (scenes, folder, jsonl, captions, wds) with data.num_frames=1"
        raise ConfigError(f"data.source={cfg.source!r} gives {kind}s but this run needs {input_key}s: {fix}")
    if kind == "video" and cfg.num_frames < 2 and cfg.source not in BOTH:
        raise ConfigError(
            f"data.source={cfg.source!r} gives video clips: set data.num_frames > 1 (e.g. 16) and model.tubelet_size"
        )


def build_dataset(cfg: DataConfig, split: str = "train", seed: int = 0, size: int | None = None) -> Dataset:
    """The dataset named by ``cfg.source``.

    - ``scenes`` / ``sprites``: the built-in generators, ``size`` items of ``split`` (default
      ``cfg.train_size``; evaluation passes its own ``size``). ``sprites`` with ``data.num_frames=1`` gives
      each video's labelled frame as an image.
    - ``folder``, ``jsonl``, ``captions``, ``wds``: image files; ``videos``: a video list file, CSV or
      folder. They read ``cfg.path`` whatever ``split`` is: point ``data.path`` at the split you want.

    Raises:
        ConfigError: unknown source, or a file source without ``data.path``.
    """
    n = cfg.train_size if size is None else size
    if cfg.source == "scenes":
        from openjepa.data.scenes import ScenesDataset

        sc = cfg.scenes
        return ScenesDataset(
            split=split, size=n, image_size=cfg.image_size, max_objects=sc.max_objects,
            caption_noise=sc.caption_noise, seed=seed,
        )
    if cfg.source == "sprites":
        from openjepa.data.sprites import SpritesDataset

        sp = cfg.sprites
        videos = SpritesDataset(
            split=split, size=n, image_size=cfg.image_size, length=sp.length, max_sprites=sp.max_sprites,
            num_frames=cfg.num_frames, frame_step=cfg.frame_step, seed=seed, rotation=sp.rotation, motion=sp.motion,
        )
        if cfg.num_frames == 1:  # an image view: each video's labelled frame
            from openjepa.data.sprites import SpriteFrames

            return SpriteFrames(videos)
        return videos
    source_kind(cfg.source)  # unknown names fail here with the list
    if not cfg.path:
        example = _EXAMPLE_PATHS[cfg.source]
        raise ConfigError(f"data.path is required when data.source={cfg.source!r}: pass data.path=/path/to/{example}")
    from openjepa.data.images import SkipCorrupt
    from openjepa.data.manifest import check_export

    # A folder written by `openjepa data` must hold exactly what its manifest lists (no stale files).
    check_export(cfg.path)  # type: ignore[arg-type]
    return SkipCorrupt(_file_reader(cfg))


def _file_reader(cfg: DataConfig) -> Dataset:
    path = cfg.path
    if cfg.source == "folder":
        from openjepa.data.images import ImageFolderDataset

        return ImageFolderDataset(path)  # type: ignore[arg-type]
    if cfg.source == "jsonl":
        from openjepa.data.images import JsonlImageDataset

        return JsonlImageDataset(path)  # type: ignore[arg-type]
    if cfg.source == "captions":
        from openjepa.data.captions import CaptionTableDataset

        return CaptionTableDataset(path)  # type: ignore[arg-type]
    if cfg.source == "wds":
        from openjepa.data.wds import TarShardDataset

        return TarShardDataset(path)  # type: ignore[arg-type]
    from openjepa.data.video import VideoFileDataset

    dataset = VideoFileDataset(path, num_frames=cfg.num_frames, frame_step=cfg.frame_step, short=cfg.short_videos)  # type: ignore[arg-type]
    if cfg.short_videos == "error":
        dataset.check_clips_fit()
    return dataset
