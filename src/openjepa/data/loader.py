"""The pretraining loader's parts: which sample goes where, per-sample transforms, collate + masks.

Determinism is by construction. Optimizer step ``s`` of a job with ``G`` samples per step (global batch =
per-process batch x processes x accumulation steps) reads positions ``[p*G, (p+1)*G)`` of the epoch's
permutation (``p = s % steps_per_epoch``; the permutation is seeded by (seed, epoch)). Every sample has a
*slot* in that global batch, and its clip, crop, captions and masks are drawn from generators seeded by
(seed, step, slot). So the data a step sees does not depend on the number of loader workers or
processes, and a resumed run only needs the step number.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from openjepa.config import ConfigError

SampleRef = tuple[int, int, int]  # (dataset index, optimizer step, slot in the global batch)


@dataclass(frozen=True)
class BatchPlan:
    """How a job's global batch is split over processes and accumulation steps."""

    dataset_len: int
    batch_size: int  # per process, per accumulation step
    world_size: int = 1
    rank: int = 0
    accum_steps: int = 1
    seed: int = 0

    @property
    def global_batch(self) -> int:
        """Images per optimizer step, over all processes and accumulation steps."""
        return self.batch_size * self.world_size * self.accum_steps

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per pass over the data (the last incomplete global batch is dropped)."""
        steps = self.dataset_len // self.global_batch
        if steps == 0:
            raise ConfigError(
                f"the dataset has {self.dataset_len} samples, fewer than one global batch of "
                f"{self.global_batch} (data.batch_size={self.batch_size} x {self.world_size} processes x "
                f"optim.accum_steps={self.accum_steps}); lower data.batch_size or add data"
            )
        return steps

    def permutation(self, epoch: int) -> np.ndarray:
        """The dataset order of ``epoch``."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0x5EED, epoch]))
        return rng.permutation(self.dataset_len)

    def slots(self, micro: int) -> range:
        """Slots of this process's samples in accumulation step ``micro``."""
        start = micro * self.batch_size * self.world_size + self.rank * self.batch_size
        return range(start, start + self.batch_size)


class StepBatchSampler(Sampler[list[SampleRef]]):
    """Yields, for steps ``start..end-1`` and each accumulation step, this process's sample refs."""

    def __init__(self, plan: BatchPlan, start_step: int, end_step: int):
        self.plan = plan
        self.start_step = start_step
        self.end_step = end_step

    def __len__(self) -> int:
        return (self.end_step - self.start_step) * self.plan.accum_steps

    def __iter__(self) -> Iterator[list[SampleRef]]:
        plan = self.plan
        spe = plan.steps_per_epoch
        epoch, perm = -1, np.empty(0, dtype=np.int64)
        for step in range(self.start_step, self.end_step):
            if step // spe != epoch:
                epoch = step // spe
                perm = plan.permutation(epoch)
            base = (step % spe) * plan.global_batch
            for micro in range(plan.accum_steps):
                yield [(int(perm[base + slot]), step, slot) for slot in plan.slots(micro)]


def sample_rng(seed: int, stream: int, step: int, slot: int) -> np.random.Generator:
    """A generator that is a pure function of (seed, stream, step, slot)."""
    return np.random.default_rng(np.random.SeedSequence([seed, stream, step, slot]))


CROP_STREAM = 1  # crop and flip of a sample; captions use 2 (data/captions.py)
CLIP_STREAM = 3  # which frames of a video a training clip takes

Transform = Callable[[Any, np.random.Generator], torch.Tensor]


class PretrainDataset(Dataset):
    """Reads one sample ref ``(index, step, slot)``: the item, its random transform, its captions.

    Args:
        base: image dataset (``base[i]["image"]``) or video dataset (``base.clip(i, rng)["video"]``).
        transform: ``(image or frames, rng) -> float tensor`` (crop, flip, normalize).
        input_key: ``"image"`` or ``"video"``: which item key is read and which batch key is written.
        seed: the run seed.
    """

    def __init__(self, base: Dataset, transform: Transform, input_key: str, seed: int):
        if input_key not in ("image", "video"):
            raise ValueError(f"input_key must be 'image' or 'video', got {input_key!r}")
        self.base = base
        self.transform = transform
        self.input_key = input_key
        self.seed = seed

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, ref: SampleRef) -> dict[str, Any]:
        index, step, slot = ref
        if self.input_key == "video":  # a video item is a random clip of the video: its frames are drawn too
            item = self.base.clip(index, sample_rng(self.seed, CLIP_STREAM, step, slot))  # type: ignore[attr-defined]
        else:
            item = self.base[index]
        x = self.transform(item[self.input_key], sample_rng(self.seed, CROP_STREAM, step, slot))
        out = {self.input_key: x, "step": step, "slot": slot, "skipped": item.get("skipped", [])}
        if "captions" in item:
            out["captions"] = list(item["captions"])
        return out


class PretrainCollate:
    """Stacks inputs, samples the batch's masks and embeds its captions (runs inside loader workers).

    Args:
        input_key: the batch key of the inputs (``image`` or ``video``).
        mask_generators: ``(step, slots, global_batch) -> {"ctx_idx", "tgt_idx"}`` each; the batch gets their
            results as the list ``masks``, in order (empty: the batch carries no masks).
        global_batch: samples per optimizer step over all processes and accumulation steps.
        text_batcher: ``(captions_per_image, step, slots) -> {"text_emb", "text_mask", "caption_mask"}``,
            or None (no captions needed).
    """

    def __init__(
        self,
        input_key: str,
        mask_generators: Sequence[Callable[..., dict[str, torch.Tensor]]],
        global_batch: int,
        text_batcher: Callable[..., dict[str, torch.Tensor]] | None = None,
    ):
        self.input_key = input_key
        self.mask_generators = list(mask_generators)
        self.global_batch = global_batch
        self.text_batcher = text_batcher

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        steps = {it["step"] for it in items}
        if len(steps) != 1:
            raise RuntimeError(f"a batch mixes optimizer steps {sorted(steps)}; the batch sampler is broken")
        step = steps.pop()
        batch: dict[str, Any] = {
            self.input_key: torch.stack([it[self.input_key] for it in items]),
            "step": step,
            "skipped": [s for it in items for s in it["skipped"]],
        }
        slots = [it["slot"] for it in items]
        batch["slots"] = torch.tensor(slots, dtype=torch.long)  # keys the model's per-sample random draws
        if self.mask_generators:
            batch["masks"] = [gen(step, slots, self.global_batch) for gen in self.mask_generators]
        if self.text_batcher is not None:
            captions = [it.get("captions") or [] for it in items]
            batch.update(self.text_batcher(captions, step, slots))
        return batch


def build_pretrain_loader(
    dataset: PretrainDataset,
    plan: BatchPlan,
    collate: PretrainCollate,
    start_step: int,
    end_step: int,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """The loader of steps ``start_step..end_step-1`` (each yields ``accum_steps`` micro-batches)."""
    return DataLoader(
        dataset,
        batch_sampler=StepBatchSampler(plan, start_step, end_step),
        collate_fn=collate,
        num_workers=num_workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if num_workers > 0 else None,
        persistent_workers=False,
        # Its own generator: the loader draws its workers' base seed when iterated, and drawing it from the
        # global RNG would shift every later random draw (stochastic depth) after a resume.
        generator=torch.Generator().manual_seed(plan.seed),
    )
