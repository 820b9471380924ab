"""Frozen-feature extraction: run an encoder once over a dataset and keep what the probes need.

The I-JEPA protocol evaluates the average-pooled patch tokens of the frozen encoder (there is no class
token). The patch tokens themselves are kept too, for the attentive and dense probes; they are stored as
float16 on the CPU, which halves their memory and loses nothing a probe can see (the probes standardize
and compute in float32).

The evaluator reads datasets through a small interface:

- an item's input is under ``"image"`` (PIL image or tensor) or ``"video"`` (uint8 ``[T, H, W, 3]``);
  one transform per key turns it into a tensor (``[3, S, S]``, resp. ``[3, T, S, S]``);
- for multi-clip video evaluation a dataset provides ``eval_clips(i, num_clips)``, returning the item with
  ``video`` uint8 ``[C, T, H, W, 3]`` (as :mod:`openjepa.data.video` does) or only that array;
- an unreadable file raises :class:`~openjepa.errors.CorruptFileError` (or ``FileNotFoundError``). The
  evaluator *drops* that item and records it: unlike :class:`~openjepa.data.images.SkipCorrupt`, which
  serves the next item instead (right for training), evaluation must not count a neighbour twice.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from openjepa.data.scenes import patch_labels
from openjepa.data.transforms import eval_transform
from openjepa.errors import CorruptFileError, DataError

INPUT_KEYS: tuple[str, ...] = ("image", "video")

Transform = Callable[[Any], torch.Tensor]
Pool = Callable[[torch.Tensor], torch.Tensor]


def input_key_of(encoder: nn.Module) -> str:
    """``"video"`` for an encoder built for clips (``is_video``), else ``"image"``."""
    return "video" if bool(getattr(encoder, "is_video", False)) else "image"


def encoder_image_size(encoder: nn.Module) -> int:
    """The square input side the encoder was built for (``img_size``)."""
    img_size = getattr(encoder, "img_size", None)
    if img_size is None:
        raise ValueError("the encoder has no `img_size`: pass transform=eval_transform(size)")
    if isinstance(img_size, (tuple, list)):
        if img_size[0] != img_size[1]:
            raise ValueError(f"the evaluator feeds square inputs; the encoder expects {tuple(img_size)}")
        return int(img_size[0])
    return int(img_size)


def default_transform(input_key: str, size: int) -> Transform:
    """The evaluation transform for ``input_key`` at ``size`` pixels (resize, centre crop, normalize)."""
    if input_key == "image":
        return eval_transform(size)
    if input_key == "video":
        from openjepa.data.video_transforms import VideoEvalTransform

        return VideoEvalTransform(size)
    raise ValueError(f"input key {input_key!r}: expected one of {', '.join(INPUT_KEYS)}")


def mean_pool(tokens: torch.Tensor) -> torch.Tensor:
    """``[B, K, D] -> [B, D]``: the mean over tokens (the I-JEPA / V-JEPA pooled embedding)."""
    return tokens.mean(1)


def unwrap_skipping(dataset: Dataset) -> Dataset:
    """The reader under a :class:`~openjepa.data.images.SkipCorrupt` wrapper (see the module docstring)."""
    from openjepa.data.images import SkipCorrupt

    while isinstance(dataset, SkipCorrupt):
        dataset = dataset.dataset
    return dataset


def read_eval_item(dataset: Dataset, i: int, input_key: str, num_clips: int) -> dict[str, Any]:
    """Item ``i`` as the evaluator needs it: for video with ``num_clips > 1``, ``video`` is ``[C, T, H, W, 3]``.

    Multi-clip reads go through the dataset's ``eval_clips(i, num_clips)``, which returns the whole item
    (the readers of :mod:`openjepa.data.video` and :mod:`openjepa.data.sprites`) or just the clips array
    (then the rest of the item comes from ``dataset[i]``).
    """
    if input_key != "video" or num_clips == 1:
        return dataset[i]
    clips = getattr(dataset, "eval_clips", None)
    if clips is None:
        raise DataError(
            f"{type(dataset).__name__} has no eval_clips(i, num_clips): multi-clip evaluation needs it "
            "(or evaluate with eval.num_clips=1)"
        )
    out = clips(i, num_clips)
    if isinstance(out, dict):
        return out
    return {**dataset[i], "video": out}


class EvalItems(Dataset):
    """A dataset as the evaluator reads it: unreadable items become ``{"skipped": reason}`` markers.

    Args:
        dataset: the reader (a :class:`SkipCorrupt` wrapper is removed, see the module docstring).
        input_key: ``"image"`` or ``"video"``.
        num_clips: clips per video (video only).
    """

    def __init__(self, dataset: Dataset, input_key: str = "image", num_clips: int = 1):
        if input_key not in INPUT_KEYS:
            raise ValueError(f"input key {input_key!r}: expected one of {', '.join(INPUT_KEYS)}")
        if num_clips < 1:
            raise ValueError(f"num_clips={num_clips} must be >= 1")
        self.dataset = unwrap_skipping(dataset)
        self.input_key = input_key
        self.num_clips = num_clips

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict[str, Any]:
        try:
            return read_eval_item(self.dataset, i, self.input_key, self.num_clips)
        except CorruptFileError as err:
            return {"skipped": f"{err.path}: {err.reason}", "index": int(i)}
        except FileNotFoundError as err:
            return {"skipped": str(err), "index": int(i)}


class EvalCollate:
    """Turns evaluator items into a batch: inputs as normalized tensors, labels, per-patch labels.

    A top-level class (not a closure) so that it pickles into loader worker processes. Skipped items
    (``{"skipped": reason}``, see :class:`EvalItems`) are left out of the tensors and listed under
    ``"skipped"``.

    Args:
        transform: input -> float tensor (``[3, H, W]`` for images, ``[3, T, H, W]`` for a clip); inputs
            that are already tensors are used as they are.
        patch_size: the encoder's patch side, to turn ``seg`` maps into per-patch labels.
        input_key: which item key holds the input (``"image"`` or ``"video"``).

    The batch holds ``input`` (images ``[B, 3, H, W]``; video ``[B, C, 3, T, H, W]``, C clips), ``labels``
    ``{task: int64 [B]}``, ``index`` ``[B]``, ``paths`` (list, ``None`` where items carry no ``path``),
    ``skipped`` (list of ``"path: reason"``) and, for items with a ``seg`` map, ``patch_labels``.
    """

    def __init__(self, transform: Transform, patch_size: int, input_key: str = "image"):
        if input_key not in INPUT_KEYS:
            raise ValueError(f"input key {input_key!r}: expected one of {', '.join(INPUT_KEYS)}")
        self.transform = transform
        self.patch_size = patch_size
        self.input_key = input_key

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        skipped = [it["skipped"] for it in items if isinstance(it.get("skipped"), str)]
        items = [it for it in items if not isinstance(it.get("skipped"), str)]
        batch: dict[str, Any] = {"skipped": skipped, "paths": [it.get("path") for it in items]}
        if not items:
            return batch
        batch["input"] = torch.stack([self._input(it[self.input_key]) for it in items])
        batch["index"] = torch.tensor([int(it.get("index", -1)) for it in items], dtype=torch.long)
        tasks = items[0].get("labels", {})
        for it in items[1:]:
            if it.get("labels", {}).keys() != tasks.keys():
                raise DataError(
                    f"items {items[0].get('path', items[0].get('index'))} and {it.get('path', it.get('index'))} "
                    f"carry different label tasks ({sorted(tasks)} vs {sorted(it.get('labels', {}))}): "
                    "every item needs the same tasks"
                )
        batch["labels"] = {task: torch.tensor([it["labels"][task] for it in items], dtype=torch.long) for task in tasks}
        if "seg" in items[0] and self.input_key == "image":
            segs = np.stack([it["seg"] for it in items])
            batch["patch_labels"] = self._patch_labels(segs, batch["input"].shape[-2:])
        return batch

    def _input(self, value: Any) -> torch.Tensor:
        if self.input_key == "image":
            return value if isinstance(value, torch.Tensor) else self.transform(value)
        # Video: one clip [T, H, W, 3] or several [C, T, H, W, 3]; always returned as [C, 3, T, H, W].
        if isinstance(value, torch.Tensor) and value.ndim in (4, 5) and value.shape[-4] == 3:
            return value if value.ndim == 5 else value.unsqueeze(0)  # already transformed
        clips = np.asarray(value)
        if clips.ndim == 4:
            clips = clips[None]
        if clips.ndim != 5 or clips.shape[-1] != 3:
            raise DataError(f"a video item must be uint8 [T, H, W, 3] or [C, T, H, W, 3], got shape {clips.shape}")
        return torch.stack([self.transform(clip) for clip in clips])

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
    size = getattr(unwrap_skipping(dataset), "image_size", None)
    if size is None:
        return encoder_image_size(encoder)
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
    transform: Transform | None = None,
    desc: str = "features",
    input_key: str | None = None,
    num_clips: int = 1,
    pool: Pool | None = None,
) -> dict[str, Any]:
    """Runs the frozen ``encoder`` over ``dataset`` in order and collects features and labels.

    The encoder is put in eval mode for the pass (its previous mode is restored afterwards, so this can
    run in the middle of training) and moved to ``device`` (in place; a no-op when it is there already).
    On CUDA the forward pass runs under bf16 autocast; features are returned in float32 (pooled) and
    float16 (tokens), on the CPU. Unreadable files are dropped and listed under ``skipped``.

    Args:
        encoder: ``forward(x) -> tokens [B, N, D]`` with a ``patch_size`` attribute.
        dataset: items with ``image`` (PIL or tensor) or ``video`` (uint8 ``[T, H, W, 3]``), optional
            ``labels`` (dict of ints), ``seg`` (class map), ``index`` and ``path``, like
            :class:`openjepa.data.scenes.ScenesDataset`.
        batch_size: images (or videos) per forward pass.
        device: where the encoder runs.
        patch_tokens: also return the tokens (needed by the attentive and dense probes).
        num_workers: data loader worker processes (the items are decoded or rendered on the fly).
        progress: show a tqdm bar on stderr.
        transform: input -> normalized tensor; default the evaluation transform at the dataset's
            ``image_size`` (else the encoder's ``img_size``) for ``input_key``.
        desc: label of the progress bar.
        input_key: ``"image"`` or ``"video"``; default from the encoder (``is_video``).
        num_clips: clips per video, evaluated separately (video only).
        pool: tokens ``[B, K, D] -> [B, D']``; default the mean over tokens.

    Returns:
        A dict with ``pooled`` float32 ``[N, D']`` (for video: the mean over clips of each clip's pooled
        features), ``labels`` ``{task: int64 [N]}``, ``index`` int64 ``[N]`` (dataset index of each
        row), ``paths`` (list, ``None`` entries for items without a path), ``skipped`` (list of
        ``"path: reason"``), and when asked ``patches`` float16 (images ``[N, h*w, D]`` in raster order;
        video ``[N, C, K, D]``) plus, for items with a ``seg`` map, ``patch_labels`` int64 ``[N, h*w]``.

    Raises:
        DataError: every item was unreadable.
        ValueError: the dataset is empty.
    """
    device = torch.device(device)
    input_key = input_key_of(encoder) if input_key is None else input_key
    if input_key == "image" and num_clips != 1:
        raise ValueError(f"num_clips={num_clips} is for video; images have one view")
    if transform is None:
        transform = default_transform(input_key, _image_size(encoder, dataset))
    pool = mean_pool if pool is None else pool
    items = EvalItems(dataset, input_key, num_clips)
    if len(items) == 0:
        raise ValueError("extract_features: the dataset is empty")
    loader = DataLoader(
        items,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=EvalCollate(transform, int(encoder.patch_size), input_key),
        pin_memory=device.type == "cuda",
    )
    was_training = encoder.training
    encoder.eval().to(device)
    pooled, patches, index, patch_lbl, paths, skipped = [], [], [], [], [], []
    labels: dict[str, list[torch.Tensor]] = {}
    try:
        for batch in tqdm(loader, desc=desc, disable=not progress, file=sys.stderr, leave=False):
            skipped += batch["skipped"]
            if "input" not in batch:
                continue
            x = batch["input"].to(device, non_blocking=True)
            clips = x.shape[1] if input_key == "video" else 1
            if input_key == "video":
                x = x.flatten(0, 1)  # [B * C, 3, T, H, W]: every clip is encoded on its own
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                tokens = encoder(x)
            tokens = tokens.float()
            feats = pool(tokens)
            if input_key == "video":
                feats = feats.unflatten(0, (-1, clips)).mean(1)
                tokens = tokens.unflatten(0, (-1, clips))
            pooled.append(feats.cpu())
            if patch_tokens:
                patches.append(tokens.to(torch.float16).cpu())
            index.append(batch["index"])
            paths += batch["paths"]
            for task, y in batch["labels"].items():
                labels.setdefault(task, []).append(y)
            if "patch_labels" in batch:
                patch_lbl.append(batch["patch_labels"])
    finally:
        encoder.train(was_training)
    if not pooled:
        raise DataError(f"none of the {len(items)} items could be read; first: {skipped[0] if skipped else '?'}")
    out: dict[str, Any] = {
        "pooled": torch.cat(pooled),
        "labels": {task: torch.cat(ys) for task, ys in labels.items()},
        "index": torch.cat(index),
        "paths": paths,
        "skipped": skipped,
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


# ----------------------------------------------------------------------------- features out

FEATURES_FORMAT = "openjepa-features-v1"


def write_features_file(feats: dict[str, Any], out: str | os.PathLike, meta: dict[str, Any]) -> tuple[Path, Path]:
    """Writes :func:`extract_features` output to ``out`` (safetensors) and a JSON sidecar beside it.

    Tensors: ``features`` float32 ``[N, D]`` (pooled), ``tokens`` float16 (when extracted), ``index`` int64
    ``[N]`` (each row's position in the dataset) and ``labels.<task>`` int64 ``[N]``. The sidecar
    (``out`` with ``.json``) holds ``files`` (one path per row, in row order), ``skipped`` (unreadable files,
    ``"path: reason"``), the shapes and ``meta`` (checkpoint, classes...). Both are written atomically.

    Returns:
        The paths of the tensors and of the sidecar.
    """
    from safetensors.torch import save_file

    out = Path(out)
    if out.suffix != ".safetensors":
        raise ValueError(f"{out}: the features file name must end in .safetensors")
    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"features": feats["pooled"].float(), "index": feats["index"].long()}
    if "patches" in feats:
        tensors["tokens"] = feats["patches"]
    tensors.update({f"labels.{task}": y.long() for task, y in feats["labels"].items()})
    sidecar = out.with_suffix(".json")
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    save_file(
        {k: v.contiguous() for k, v in tensors.items()}, str(tmp),
        metadata={"format": FEATURES_FORMAT, "sidecar": sidecar.name, "rows": str(int(feats["pooled"].shape[0]))},
    )
    os.replace(tmp, out)
    description = {
        "format": FEATURES_FORMAT,
        **meta,
        "pooling": "mean over patch tokens (video: and over clips)",
        "shapes": {k: list(v.shape) for k, v in tensors.items()},
        "files": feats["paths"],
        "skipped": feats["skipped"],
    }
    tmp = sidecar.with_name(sidecar.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(description, indent=1) + "\n")
    os.replace(tmp, sidecar)
    return out, sidecar


def read_features_file(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a file of :func:`write_features_file` back.

    Returns:
        ``{"features", "tokens"?, "index", "labels": {task: tensor}, "files", "skipped", "meta"}``.
    """
    from safetensors.torch import load_file

    path = Path(path)
    tensors = load_file(str(path))
    sidecar = json.loads(path.with_suffix(".json").read_text())
    out: dict[str, Any] = {
        "features": tensors["features"],
        "index": tensors["index"],
        "labels": {k[len("labels.") :]: v for k, v in tensors.items() if k.startswith("labels.")},
        "files": sidecar["files"],
        "skipped": sidecar["skipped"],
        "meta": sidecar,
    }
    if "tokens" in tensors:
        out["tokens"] = tensors["tokens"]
    return out
