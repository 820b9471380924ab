"""The pretraining input pipeline: which sample goes where, per-sample transforms, collate + masks.

Determinism is by construction. Optimizer step ``s`` of a job with ``G`` images per step (global batch =
per-process batch x processes x accumulation steps) reads positions ``[p*G, (p+1)*G)`` of the epoch's
permutation (``p = s % steps_per_epoch``; the permutation is seeded by (seed, epoch)). Every image has a
*slot* in that global batch, and its crop and its masks are drawn from generators seeded by
(seed, step, slot). So the data a step sees does not depend on the number of loader workers or
processes, and a resumed run only needs the step number.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
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
                f"the dataset has {self.dataset_len} images, fewer than one global batch of "
                f"{self.global_batch} (data.batch_size={self.batch_size} x {self.world_size} processes x "
                f"optim.accum_steps={self.accum_steps}); lower data.batch_size or add data"
            )
        return steps

    def permutation(self, epoch: int) -> np.ndarray:
        """The dataset order of ``epoch``."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0x5EED, epoch]))
        return rng.permutation(self.dataset_len)

    def slots(self, micro: int) -> range:
        """Slots of this process's images in accumulation step ``micro``."""
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


CROP_STREAM = 1


class PretrainDataset(Dataset):
    """Wraps a dataset of ``{"image": PIL, ...}`` items: random resized crop + normalize per sample ref."""

    def __init__(self, base: Dataset, crop: Callable[[Any, np.random.Generator], Any], seed: int):
        from openjepa.data.transforms import to_tensor

        self.base = base
        self.crop = crop
        self.seed = seed
        self.to_tensor = to_tensor

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, ref: SampleRef) -> dict[str, Any]:
        index, step, slot = ref
        item = self.base[index]
        image = self.to_tensor(self.crop(item["image"], sample_rng(self.seed, CROP_STREAM, step, slot)))
        out = {"image": image, "step": step, "slot": slot, "skipped": item.get("skipped", [])}
        if "captions" in item:
            out["captions"] = list(item["captions"])
        return out


class PretrainCollate:
    """Stacks images, samples the batch's masks and embeds its captions (runs inside loader workers).

    Args:
        mask_sampler: ``(step, slots, global_batch) -> {"ctx_idx", "tgt_idx"}``, or None (no masks).
        global_batch: images per optimizer step over all processes and accumulation steps.
        text_batcher: ``(captions_per_image, step, slots) -> {"text_emb", "text_mask", "caption_mask"}``,
            or None (no captions needed).
    """

    def __init__(
        self,
        mask_sampler: Callable[..., dict[str, torch.Tensor]] | None,
        global_batch: int,
        text_batcher: Callable[..., dict[str, torch.Tensor]] | None = None,
    ):
        self.mask_sampler = mask_sampler
        self.global_batch = global_batch
        self.text_batcher = text_batcher

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        steps = {it["step"] for it in items}
        if len(steps) != 1:
            raise RuntimeError(f"a batch mixes optimizer steps {sorted(steps)}; the batch sampler is broken")
        step = steps.pop()
        batch: dict[str, Any] = {
            "image": torch.stack([it["image"] for it in items]),
            "step": step,
            "skipped": [s for it in items for s in it["skipped"]],
        }
        slots = [it["slot"] for it in items]
        if self.mask_sampler is not None:
            batch.update(self.mask_sampler(step, slots, self.global_batch))
        if self.text_batcher is not None:
            captions = [it.get("captions") or [] for it in items]
            batch.update(self.text_batcher(captions, step, slots))
        return batch


def build_pretrain_loader(
    base: Dataset,
    plan: BatchPlan,
    crop: Callable[[Any, np.random.Generator], Any],
    mask_sampler: Callable[..., dict[str, torch.Tensor]] | None,
    start_step: int,
    end_step: int,
    num_workers: int = 0,
    pin_memory: bool = False,
    text_batcher: Callable[..., dict[str, torch.Tensor]] | None = None,
) -> DataLoader:
    """The loader of steps ``start_step..end_step-1`` (each yields ``accum_steps`` micro-batches)."""
    return DataLoader(
        PretrainDataset(base, crop, plan.seed),
        batch_sampler=StepBatchSampler(plan, start_step, end_step),
        collate_fn=PretrainCollate(mask_sampler, plan.global_batch, text_batcher),
        num_workers=num_workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if num_workers > 0 else None,
        persistent_workers=False,
    )
