"""Frozen-feature extraction: run an encoder once over a dataset and keep what the probes need.

The I-JEPA protocol evaluates the average-pooled patch tokens of the frozen encoder (there is no class
token). The patch tokens themselves are kept too, for the dense probe; they are stored as float16 on the
CPU, which halves their memory and loses nothing a linear probe can see (the probes standardize and
compute in float32).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from openjepa.data.scenes import patch_labels
from openjepa.data.transforms import eval_transform


class EvalCollate:
    """Turns dataset items into a batch: images as normalized tensors, labels, per-patch labels.

    A top-level class (not a closure) so that it pickles into loader worker processes.

    Args:
        transform: PIL image -> float tensor ``[3, H, W]``; items whose image is already a tensor are
            used as they are.
        patch_size: the encoder's patch side, to turn ``seg`` maps into per-patch labels.
    """

    def __init__(self, transform: Callable[[Any], torch.Tensor], patch_size: int):
        self.transform = transform
        self.patch_size = patch_size

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        images = torch.stack([self._image(it["image"]) for it in items])
        batch: dict[str, Any] = {
            "image": images,
            "index": torch.tensor([int(it.get("index", -1)) for it in items], dtype=torch.long),
            "labels": {
                task: torch.tensor([it["labels"][task] for it in items], dtype=torch.long)
                for task in items[0].get("labels", {})
            },
        }
        if "seg" in items[0]:
            segs = np.stack([it["seg"] for it in items])
            batch["patch_labels"] = self._patch_labels(segs, images.shape[-2:])
        return batch

    def _image(self, image: Any) -> torch.Tensor:
        return image if isinstance(image, torch.Tensor) else self.transform(image)

    def _patch_labels(self, seg: np.ndarray, image_hw: torch.Size) -> torch.Tensor:
        # The token grid is set by the image the encoder sees; when the transform resized the image, the
        # seg map (at the dataset's resolution) is pooled over correspondingly larger or smaller cells.
        grid_h, grid_w = image_hw[0] // self.patch_size, image_hw[1] // self.patch_size
        seg_h, seg_w = seg.shape[-2:]
        if seg_h % grid_h or seg_w % grid_w or seg_h // grid_h != seg_w // grid_w:
            raise ValueError(
                f"segmentation map {seg_h}x{seg_w} cannot be pooled onto the {grid_h}x{grid_w} token grid "
                f"(images {image_hw[0]}x{image_hw[1]}, patch {self.patch_size}): generate the dataset at "
                "the encoder's image size"
            )
        labels = patch_labels(seg, seg_h // grid_h)
        return torch.from_numpy(np.ascontiguousarray(labels)).reshape(len(seg), -1).long()


def _image_size(encoder: nn.Module, dataset: Dataset) -> int:
    size = getattr(dataset, "image_size", None)
    if size is None:
        img_size = getattr(encoder, "img_size", None)
        if img_size is None:
            raise ValueError(
                "cannot tell the image size: the dataset has no `image_size` and the encoder no `img_size`; "
                "pass transform=eval_transform(size)"
            )
        size = img_size[0] if isinstance(img_size, (tuple, list)) else img_size
    return int(size)


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    dataset: Dataset,
    batch_size: int,
    device: torch.device | str,
    patch_tokens: bool = True,
    num_workers: int = 0,
    progress: bool = True,
    transform: Callable[[Any], torch.Tensor] | None = None,
    desc: str = "features",
) -> dict[str, Any]:
    """Runs the frozen ``encoder`` over ``dataset`` in order and collects features and labels.

    The encoder is put in eval mode for the pass (its previous mode is restored afterwards, so this can
    run in the middle of training) and moved to ``device`` (in place; a no-op when it is there already).
    On CUDA the forward pass runs under bf16 autocast; features are returned in float32 (pooled) and
    float16 (patches), on the CPU.

    Args:
        encoder: ``forward(x) -> tokens [B, N, D]`` with a ``patch_size`` attribute.
        dataset: items with ``image`` (PIL or tensor), optional ``labels`` (dict of ints), optional ``seg``
            (class map) and ``index``, like :class:`openjepa.data.scenes.ScenesDataset`.
        batch_size: images per forward pass.
        device: where the encoder runs.
        patch_tokens: also return the patch tokens (needed by the dense probe).
        num_workers: data loader worker processes (the items are rendered on the fly).
        progress: show a tqdm bar on stderr.
        transform: PIL image -> normalized tensor; default ``eval_transform(image_size)``.
        desc: label of the progress bar.

    Returns:
        A dict with ``pooled`` float32 ``[N, D]`` (mean over patch tokens), ``labels``
        ``{task: int64 [N]}``, ``index`` int64 ``[N]``, and when available ``patches`` float16
        ``[N, h*w, D]`` (raster order) and ``patch_labels`` int64 ``[N, h*w]``.
    """
    device = torch.device(device)
    if transform is None:
        transform = eval_transform(_image_size(encoder, dataset))
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=EvalCollate(transform, int(encoder.patch_size)),
        pin_memory=device.type == "cuda",
    )
    was_training = encoder.training
    encoder.eval().to(device)
    pooled, patches, index, patch_lbl = [], [], [], []
    labels: dict[str, list[torch.Tensor]] = {}
    try:
        for batch in tqdm(loader, desc=desc, disable=not progress, file=sys.stderr, leave=False):
            images = batch["image"].to(device, non_blocking=True)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                tokens = encoder(images)
            tokens = tokens.float()
            pooled.append(tokens.mean(1).cpu())
            if patch_tokens:
                patches.append(tokens.to(torch.float16).cpu())
            index.append(batch["index"])
            for task, y in batch["labels"].items():
                labels.setdefault(task, []).append(y)
            if "patch_labels" in batch:
                patch_lbl.append(batch["patch_labels"])
    finally:
        encoder.train(was_training)
    if not pooled:
        raise ValueError("extract_features: the dataset is empty")
    out: dict[str, Any] = {
        "pooled": torch.cat(pooled),
        "labels": {task: torch.cat(ys) for task, ys in labels.items()},
        "index": torch.cat(index),
    }
    if patch_tokens:
        out["patches"] = torch.cat(patches)
    if patch_lbl:
        out["patch_labels"] = torch.cat(patch_lbl)
        if patch_tokens and out["patch_labels"].shape != out["patches"].shape[:2]:
            raise ValueError(
                f"patch labels {tuple(out['patch_labels'].shape)} do not match the patch tokens "
                f"{tuple(out['patches'].shape[:2])}: the encoder returned a different token grid"
            )
    return out
