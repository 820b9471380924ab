"""The pretraining input pipeline, built from what a method declares it needs.

A method declares :class:`~openjepa.methods.base.DataNeeds`-like needs (the input key ``image`` or
``video``, whether it needs masks, whether it needs captions). From those and the config this module builds
the dataset, the batch plan, the per-sample transform, the mask generators and the caption batcher, and
hands the loop a loader whose batches carry exactly that. The loop never names a modality or a mask kind.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.utils.data import DataLoader, Dataset

from openjepa.config import Config, ConfigError
from openjepa.data.loader import BatchPlan, PretrainCollate, PretrainDataset, Transform, build_pretrain_loader
from openjepa.data.sources import build_dataset, check_source
from openjepa.masks.build import build_mask_generators
from openjepa.models.build import token_grid

__all__ = ["Needs", "PretrainPipeline", "default_text_cache", "eval_inputs"]


class Needs(Protocol):
    """What a method needs in a batch (``openjepa.methods.base.DataNeeds`` has these fields)."""

    input_key: str
    masks: bool
    text: bool


def train_transform(cfg: Config, input_key: str) -> Transform:
    """The random crop (+ flip) and normalization of one training image or clip."""
    d = cfg.data
    if input_key == "video":
        from openjepa.data.video_transforms import VideoRandomResizedCrop

        return VideoRandomResizedCrop(d.image_size, scale=d.crop_scale, ratio=d.crop_aspect, hflip=d.hflip)
    from openjepa.data.transforms import TrainTransform

    return TrainTransform(d.image_size, scale=d.crop_scale, ratio=d.crop_aspect, hflip=d.hflip)


def eval_transform_for(cfg: Config, input_key: str) -> Callable[[Any], torch.Tensor]:
    """The deterministic resize + centre crop + normalization of one image or clip."""
    if input_key == "video":
        from openjepa.data.video_transforms import VideoEvalTransform

        return VideoEvalTransform(cfg.data.image_size)
    from openjepa.data.transforms import eval_transform

    return eval_transform(cfg.data.image_size)


def eval_inputs(cfg: Config, input_key: str, n: int = 512) -> torch.Tensor:
    """A fixed set of evaluation-transformed inputs (e.g. to track RankMe during training).

    Built-in sources use their ``val`` split; file sources their first items.
    """
    split = "val" if cfg.data.source in ("scenes", "sprites") else "train"
    ds = build_dataset(cfg.data, split=split, seed=cfg.train.seed, size=n)
    tf = eval_transform_for(cfg, input_key)
    n = min(n, len(ds))  # type: ignore[arg-type]
    return torch.stack([tf(ds[i][input_key]) for i in range(n)])


def default_text_cache() -> Path:
    """Where caption embeddings are cached unless ``text.cache`` says otherwise (shared by runs: entries are
    keyed by encoder and caption)."""
    root = os.environ.get("OPENJEPA_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "openjepa")
    return Path(root) / "text_embeddings.sqlite"


def build_text_batcher(cfg: Config) -> Any:
    """The caption pipeline (frozen encoder + on-disk cache + N-caption sampling).

    Also resolves ``cfg.text.dim`` from the encoder, so the method can be built and the saved config is
    complete.
    """
    from openjepa.data.captions import TextBatcher
    from openjepa.models.text import CachedTextEncoder, EmbeddingCache, build_text_encoder

    encoder = build_text_encoder(cfg.text, device=cfg.text.device)
    if cfg.text.dim == 0:
        cfg.text.dim = encoder.dim
    elif cfg.text.dim != encoder.dim:
        raise ConfigError(
            f"text.dim={cfg.text.dim} but the text encoder {cfg.text.encoder!r} gives {encoder.dim}-d words; "
            "remove text.dim (it is filled automatically) or use the matching encoder"
        )
    cache = EmbeddingCache(Path(cfg.text.cache) if cfg.text.cache else default_text_cache())
    text = cfg.text
    return TextBatcher(CachedTextEncoder(encoder, cache), text.num_captions, text.split_sentences, cfg.train.seed)


class PretrainPipeline:
    """Dataset, batch plan, transforms, masks and captions of a pretraining run.

    Args:
        cfg: the run config (``data``, ``mask``, ``text``, ``model`` for the token grid, ``train.seed``,
            ``optim.accum_steps``). ``cfg.text.dim`` is filled in when the method needs captions.
        needs: what the method's batches must carry.
        rank, world_size: this process's place in the job (each process loads its own slots).
        split: the split of built-in sources to read (``val`` for held-out diagnostics).

    Raises:
        ConfigError: a source that cannot feed the method, masks that do not fit the grid, ...
    """

    def __init__(self, cfg: Config, needs: Needs, rank: int = 0, world_size: int = 1, split: str = "train"):
        check_source(cfg.data, needs.input_key)
        self.cfg = cfg
        self.needs = needs
        seed = cfg.train.seed
        self.dataset: Dataset = build_dataset(cfg.data, split=split, seed=seed)
        self.plan = BatchPlan(
            dataset_len=len(self.dataset),  # type: ignore[arg-type]
            batch_size=cfg.data.batch_size,
            world_size=world_size,
            rank=rank,
            accum_steps=cfg.optim.accum_steps,
            seed=seed,
        )
        self.masks = build_mask_generators(cfg.mask, token_grid(cfg), seed) if needs.masks else []
        self.text = build_text_batcher(cfg) if needs.text else None

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per pass over the training data."""
        return self.plan.steps_per_epoch

    def prewarm_text(self, progress: bool, log: Callable[[str], None]) -> None:
        """Encodes every training caption into the cache before training (call it on one process).

        Loader workers encode with one thread each while the model trains; encoding the whole set once up
        front, sorted by length so batches carry little padding, is several times faster and keeps the
        first epoch from being text-bound. Does nothing for methods without captions.
        """
        if self.text is None:
            return
        from tqdm import tqdm

        from openjepa.data.captions import dataset_captions

        captions = dataset_captions(self.dataset, self.cfg.text.split_sentences)
        if not captions:
            return
        captions.sort(key=len)
        new, chunk = 0, 256
        with tqdm(total=len(captions), desc="text cache", unit="caption", disable=not progress) as bar:
            for i in range(0, len(captions), chunk):
                new += self.text.encoder.warm(captions[i : i + chunk], batch_size=chunk)
                bar.update(len(captions[i : i + chunk]))
        log(f"text cache: {len(captions)} unique training captions, {new} newly encoded")

    def loader(self, start_step: int, end_step: int, pin_memory: bool = False) -> DataLoader:
        """The loader of optimizer steps ``start_step..end_step-1`` (``accum_steps`` micro-batches each)."""
        key = self.needs.input_key
        dataset = PretrainDataset(self.dataset, train_transform(self.cfg, key), key, self.cfg.train.seed)
        collate = PretrainCollate(key, self.masks, self.plan.global_batch, self.text)
        return build_pretrain_loader(
            dataset, self.plan, collate, start_step, end_step, self.cfg.data.num_workers, pin_memory
        )

    def eval_inputs(self, n: int = 512) -> torch.Tensor:
        """Evaluation-transformed inputs of this run's data (see :func:`eval_inputs`)."""
        return eval_inputs(self.cfg, self.needs.input_key, n)
