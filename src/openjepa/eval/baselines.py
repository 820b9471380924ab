"""Reference encoders that calibrate a probe table: random init, raw pixels, a supervised ceiling.

A probe accuracy alone says little: on small synthetic images a random ViT, or the pixels themselves,
already score far above chance, and a task can be out of reach of the architecture and budget whatever
the pretraining. So every report shows, beside the pretrained encoder:

- **random init**: the same architecture with fresh weights (:func:`random_encoder_like`);
- **raw pixels**: the input itself, downsampled to a few pixels per token (:class:`PixelEncoder`);
- **supervised ceiling**: the same architecture trained from scratch *on the probe labels* with the same
  number of optimizer steps as the pretraining run (:func:`supervised_ceiling`). Its frozen features go
  through the same probes, and its own heads are reported too. A task where even this stays at chance
  measures nothing at this scale. Its linear heads read the per-channel maximum of the tokens by default:
  trained through the mean of its 64 tokens (or an attentive pool), a small ViT does not learn the shape of
  an object that covers a few of them, even alone in the image, while through the maximum it does
  (docs/RESULTS.md, section 16); the ceiling would then call a task unlearnable that only its pooling could
  not read. ``pool="mean"`` keeps linear heads on the mean.

The ceiling costs a training run, so it is cached by (architecture, training data, tasks, steps, batch,
optimizer settings, seed) under ``ROOT/ceilings`` (``ROOT`` as for the feature cache).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler
from tqdm import tqdm

from openjepa.eval.cache import dataset_fingerprint, default_cache_root, describe_transform, hash_json
from openjepa.eval.features import EvalCollate, EvalItems, default_transform, encoder_image_size, input_key_of
from openjepa.models.pos_embed import position_table
from openjepa.models.vit import VisionTransformer

__all__ = [
    "CEILING_POOLS",
    "DEFAULT_CEILING_STEPS",
    "RANDOM_INIT_SEED_OFFSET",
    "Ceiling",
    "CeilingHeads",
    "CeilingSpec",
    "PixelEncoder",
    "ceiling_head_accuracy",
    "pixel_encoder_like",
    "random_encoder_like",
    "supervised_ceiling",
    "train_supervised",
]

# Offset of the random-init baseline's seed from the probe seed, so that the baseline's weights never
# coincide with an initialization the training run itself may have drawn from the same seed.
RANDOM_INIT_SEED_OFFSET = 12345

# Optimizer steps of the ceiling when the pretraining run's step count is unknown (exported or official
# weights) and none is given (--ceiling-steps / eval.ceiling_steps).
DEFAULT_CEILING_STEPS = 1000

# v2: CeilingSpec.pool (max by default); v1 entries (mean-pooled heads) are not read.
CEILING_FORMAT = "openjepa-ceiling-v2"

#: How the ceiling's linear heads pool the tokens: their per-channel maximum or their mean.
CEILING_POOLS = ("max", "mean")
#: Learning-rate schedules of the ceiling after its warmup: decay to zero along a cosine, or hold the peak.
CEILING_SCHEDULES = ("cosine", "constant")


def random_encoder_like(encoder: VisionTransformer, seed: int = 0, rescale_init: bool = False) -> VisionTransformer:
    """A freshly initialized encoder of ``encoder``'s architecture, drawn with seed ``seed + 12345``.

    The global RNG state is forked, so building the baseline does not shift the caller's random stream.

    Args:
        encoder: the encoder whose ``config()`` (constructor arguments) is copied.
        seed: probe seed; the weights use ``seed + RANDOM_INIT_SEED_OFFSET``.
        rescale_init: the run's ``model.rescale_init`` (an init choice ``config()`` does not record).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + RANDOM_INIT_SEED_OFFSET)
        return VisionTransformer(**encoder.config(), rescale_init=rescale_init).eval()


# ----------------------------------------------------------------------------- raw pixels


class PixelEncoder(nn.Module):
    """Raw pixels as "tokens": the input downsampled to ``cell x cell`` pixels per token of the encoder's grid.

    The input (normalized, as the encoder sees it) is area-averaged to ``grid * cell`` pixels per side
    (and, for video, to one frame per tubelet); each grid cell becomes a token holding its ``3 * cell^2``
    pixel values, followed by a fixed sin-cos code of the cell's position (``pos_dim`` channels), because
    encoder tokens know where they are and an attentive probe on position-blind pixels would be an unfair
    reference. :meth:`pool` (used for the linear and k-NN probes) flattens the pixel values only: the
    downsampled image itself, as in a linear probe on raw pixels.

    Args:
        img_size: input side in pixels.
        patch_size: the encoder's patch side (its token grid is ``img_size // patch_size``).
        cell: pixels per token side after downsampling.
        num_frames: frames per clip (> 1: video).
        tubelet_size: frames per token (video).
        pos_dim: channels of the position code (a multiple of 12, so it fits 2-D and 3-D tables).
    """

    def __init__(
        self,
        img_size: int,
        patch_size: int,
        cell: int = 4,
        num_frames: int = 1,
        tubelet_size: int = 2,
        pos_dim: int = 12,
    ):
        super().__init__()
        if cell < 1:
            raise ValueError(f"pixel baseline: eval.pixel_size={cell} must be >= 1")
        if img_size % patch_size:
            raise ValueError(f"pixel baseline: image size {img_size} is not a multiple of the patch size {patch_size}")
        self.img_size = (img_size, img_size)
        self.patch_size = patch_size
        self.cell = cell
        self.num_frames = num_frames
        self.is_video = num_frames > 1
        self.tubelet_size = tubelet_size if self.is_video else 1
        side = img_size // patch_size
        self.grid_size: tuple[int, ...] = (side, side)
        if self.is_video:
            self.grid_size = (num_frames // self.tubelet_size, side, side)
        self.pixel_dim = 3 * cell * cell
        self.pos_dim = pos_dim
        self.embed_dim = self.pixel_dim + pos_dim
        self.register_buffer("pos_code", position_table(pos_dim, self.grid_size), persistent=False)

    def config(self) -> dict[str, Any]:
        """Constructor arguments (they identify the features in the cache)."""
        return {
            "img_size": self.img_size[0], "patch_size": self.patch_size, "cell": self.cell,
            "num_frames": self.num_frames, "tubelet_size": self.tubelet_size, "pos_dim": self.pos_dim,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` or clips ``[B, 3, T, H, W]`` -> tokens ``[B, K, 3 * cell^2 + pos_dim]``."""
        c = self.cell
        if self.is_video:
            t, h, w = self.grid_size
            small = F.adaptive_avg_pool3d(x.float(), (t, h * c, w * c))  # [B, 3, t, h*c, w*c]
            cells = small.reshape(x.shape[0], 3, t, h, c, w, c).permute(0, 2, 3, 5, 1, 4, 6)
        else:
            h, w = self.grid_size
            small = F.adaptive_avg_pool2d(x.float(), (h * c, w * c))
            cells = small.reshape(x.shape[0], 3, h, c, w, c).permute(0, 2, 4, 1, 3, 5)
        tokens = cells.reshape(x.shape[0], -1, self.pixel_dim)
        pos = self.pos_code.to(tokens).expand(x.shape[0], -1, -1)
        return torch.cat([tokens, pos], dim=-1)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, K, D] -> [B, K * 3 * cell^2]``: the downsampled input, position code left out."""
        return tokens[..., : self.pixel_dim].flatten(1)


def pixel_encoder_like(encoder: nn.Module, cell: int = 4) -> PixelEncoder:
    """The :class:`PixelEncoder` on ``encoder``'s input (size, frames) and token grid."""
    return PixelEncoder(
        encoder_image_size(encoder),
        int(encoder.patch_size),
        cell,
        num_frames=int(getattr(encoder, "num_frames", 1)),
        tubelet_size=int(getattr(encoder, "tubelet_size", 2)),
    )


# ----------------------------------------------------------------------------- supervised ceiling


@dataclass
class CeilingSpec:
    """How the supervised ceiling is trained.

    AdamW (betas 0.9 / 0.999), a linear warmup over ``warmup`` of the steps then ``schedule`` (a cosine decay
    to zero, or the peak held), gradient clipping at ``clip_grad``, no augmentation (the evaluation transform:
    labels such as "leftmost" or "count" are not invariant to crops). One linear head per task on the tokens
    pooled by ``pool`` (:class:`CeilingHeads`), trained jointly: the loss is the mean of the tasks'
    cross-entropies.

    Attributes:
        steps: optimizer steps (the pretraining run's, when known).
        batch_size: images (clips) per step.
        lr: peak learning rate.
        weight_decay: AdamW weight decay on the weight matrices.
        warmup: fraction of the steps with a linear warmup.
        clip_grad: gradient-norm clipping (0: none).
        seed: initialization and data order.
        pool: how the heads read the tokens, one of :data:`CEILING_POOLS` (see :class:`CeilingHeads`).
        schedule: the learning rate after the warmup, one of :data:`CEILING_SCHEDULES`.
    """

    steps: int = DEFAULT_CEILING_STEPS
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: float = 0.1
    clip_grad: float = 1.0
    seed: int = 0
    pool: str = "max"
    schedule: str = "constant"

    def __post_init__(self) -> None:
        if self.pool not in CEILING_POOLS:
            raise ValueError(f"supervised ceiling: pool={self.pool!r} (eval.ceiling_pool); choose one of "
                             f"{', '.join(CEILING_POOLS)}")
        if self.schedule not in CEILING_SCHEDULES:
            raise ValueError(f"supervised ceiling: schedule={self.schedule!r} (eval.ceiling_schedule); choose one "
                             f"of {', '.join(CEILING_SCHEDULES)}")

    def lr_at(self, step: int) -> float:
        """Learning rate of step ``step`` (0-based)."""
        warm = max(1, round(self.warmup * self.steps))
        if step < warm:
            return self.lr * (step + 1) / warm
        if self.schedule == "constant":
            return self.lr
        progress = (step - warm) / max(1, self.steps - warm)
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


class CeilingHeads(nn.Module):
    """The ceiling's task heads over the encoder's tokens ``[B, K, D]``: ``forward`` -> ``{task: logits}``.

    One linear head per task (zero-initialized) on the tokens pooled by ``pool``: their per-channel maximum
    (``"max"``) or their mean (``"mean"``, the features the linear probe reads).

    Args:
        dim: token width.
        tasks: ``{task: classes}``.
        pool: one of :data:`CEILING_POOLS`.
    """

    def __init__(self, dim: int, tasks: dict[str, int], pool: str = "max"):
        super().__init__()
        if pool not in CEILING_POOLS:
            raise ValueError(f"supervised ceiling: pool={pool!r}; choose one of {', '.join(CEILING_POOLS)}")
        self.pool = pool
        self.heads = _heads(dim, tasks)

    def pooled(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[..., K, D]`` tokens -> ``[..., D]`` float32 features."""
        tokens = tokens.float()
        return tokens.amax(-2) if self.pool == "max" else tokens.mean(-2)

    def forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_pooled(self.pooled(tokens))

    def forward_pooled(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits from already pooled features ``[B, D]``."""
        return {task: head(pooled.float()) for task, head in self.heads.items()}


@dataclass
class Ceiling:
    """A trained supervised ceiling.

    Attributes:
        encoder: the trained encoder (eval mode, CPU).
        heads: its task heads (:class:`CeilingHeads`).
        info: spec, tasks, seconds, final training loss and accuracy, cache key.
        cached: whether it came from the cache.
    """

    encoder: VisionTransformer
    heads: CeilingHeads
    info: dict[str, Any] = field(default_factory=dict)
    cached: bool = False


def _heads(dim: int, tasks: dict[str, int]) -> nn.ModuleDict:
    heads = nn.ModuleDict({task: nn.Linear(dim, classes) for task, classes in tasks.items()})
    for head in heads.values():
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
    return heads


def train_supervised(
    like: VisionTransformer,
    dataset: Dataset,
    tasks: dict[str, int],
    spec: CeilingSpec,
    device: torch.device | str,
    transform: Any = None,
    num_workers: int = 0,
    progress: bool = True,
    rescale_init: bool = False,
) -> Ceiling:
    """Trains ``like``'s architecture from scratch on ``dataset``'s labels for ``spec.steps`` steps.

    Args:
        like: the encoder whose architecture (``config()``) is trained (its weights are not used).
        dataset: labelled items (``image`` or ``video`` as ``like`` expects, ``labels`` with every task).
        tasks: ``{task: classes}``, one head each.
        spec: optimizer, steps, batch size and seed.
        device: where to train (bf16 autocast on CUDA).
        transform: input -> tensor; default the evaluation transform at ``like``'s input size.
        num_workers: loader workers.
        progress: show a tqdm bar on stderr.
        rescale_init: the run's ``model.rescale_init``.

    Returns:
        The :class:`Ceiling` (encoder and heads on the CPU, eval mode); ``info`` has the final training loss
        and accuracy per task (mean over the last 10% of the steps).
    """
    if spec.steps < 1:
        raise ValueError(f"supervised ceiling: steps={spec.steps} must be >= 1 (eval.ceiling_steps / --ceiling-steps)")
    if not tasks:
        raise ValueError("supervised ceiling: the data has no label tasks to train on")
    dev = torch.device(device)
    input_key = input_key_of(like)
    if transform is None:
        transform = default_transform(input_key, encoder_image_size(like))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        encoder = VisionTransformer(**like.config(), rescale_init=rescale_init)
    heads = CeilingHeads(encoder.embed_dim, tasks, spec.pool)
    encoder.to(dev).train()
    heads.to(dev).train()
    params = list(encoder.named_parameters()) + [(f"heads.{n}", p) for n, p in heads.named_parameters()]
    decay = [p for n, p in params if p.ndim >= 2 and "pos_embed" not in n]
    rest = [p for n, p in params if not (p.ndim >= 2 and "pos_embed" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": spec.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=spec.lr,
        foreach=True,  # one kernel per parameter group instead of one per tensor: the CPU step is optimizer-bound
    )
    items = EvalItems(dataset, input_key)
    batch_size = min(spec.batch_size, len(items))
    sampler = RandomSampler(items, generator=torch.Generator().manual_seed(spec.seed))
    collate = EvalCollate(transform, int(like.patch_size), input_key)
    in_memory = spec.steps * batch_size > len(items)  # more than one epoch: worth preparing the inputs once
    batches = _training_batches(items, sampler, collate, batch_size, num_workers, dev.type == "cuda", in_memory)
    tail = max(1, spec.steps // 10)
    losses: list[float] = []
    correct = {task: 0 for task in tasks}
    seen = 0
    skipped: list[str] = []
    start = time.perf_counter()
    step = 0
    bar = tqdm(total=spec.steps, desc="supervised ceiling", disable=not progress, file=sys.stderr, leave=False)
    while step < spec.steps:
        for batch in batches():  # one epoch
            skipped += batch["skipped"]
            if "input" not in batch:
                continue
            x = batch["input"].to(dev, non_blocking=True)
            if input_key == "video":
                x = x[:, 0]  # one clip per video for training
            for g in opt.param_groups:
                g["lr"] = spec.lr_at(step)
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                tokens = encoder(x)
            logits = heads(tokens)
            targets = {task: batch["labels"][task].to(dev) for task in tasks}
            loss = sum(F.cross_entropy(logits[t], targets[t]) for t in tasks) / len(tasks)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[union-attr]
            if spec.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_([p for _, p in params], spec.clip_grad)
            opt.step()
            if step >= spec.steps - tail:  # training fit at the end, for the report (logged, not tuned on)
                losses.append(float(loss.detach()))
                seen += x.shape[0]
                for t in tasks:
                    correct[t] += int((logits[t].argmax(1) == targets[t]).sum())
            step += 1
            bar.update(1)
            if step >= spec.steps:
                break
        if step == 0:  # a whole epoch without a readable batch
            raise ValueError("supervised ceiling: the training data yielded no readable batch")
    bar.close()
    info = {
        "spec": asdict(spec),
        "batch_size": batch_size,
        "tasks": dict(tasks),
        "seconds": time.perf_counter() - start,
        "final_loss": sum(losses) / len(losses),
        "train_acc": {t: correct[t] / max(1, seen) for t in tasks},
        "skipped": len(skipped),
    }
    return Ceiling(encoder.cpu().eval(), heads.cpu().eval(), info)


# Inputs up to this size are prepared once and kept in memory (see _training_batches).
MATERIALIZE_MAX_BYTES = 1 << 30


def _training_batches(
    items: EvalItems,
    sampler: RandomSampler,
    collate: EvalCollate,
    batch_size: int,
    num_workers: int,
    pin: bool,
    in_memory: bool,
) -> Callable[[], Iterator[dict[str, Any]]]:
    """The ceiling's epochs: each call returns one epoch of batches in ``sampler``'s order (last partial dropped).

    The ceiling passes over the same inputs once per epoch, and the evaluation transform is deterministic (no
    augmentation), so rendering or decoding them every epoch repeats the same work: on the V-JEPA sprites demo
    preparing them once takes the ceiling from 267 s to 236 s (docs/RESULTS.md, section 12). With ``in_memory``,
    when every item is readable and the prepared inputs take at most :data:`MATERIALIZE_MAX_BYTES`, they are
    prepared once (one pass in index order) and each epoch indexes them in memory; the batches, and so the trained
    ceiling, are the same as streaming them (the sampler draws the same permutations; tests/eval/test_baselines.py).
    Otherwise each epoch streams through a DataLoader.
    """
    memory = _prepare_in_memory(items, collate, batch_size, num_workers) if in_memory else None
    if memory is None:
        loader = DataLoader(
            items, batch_size=batch_size, sampler=sampler, num_workers=num_workers, collate_fn=collate,
            drop_last=True, pin_memory=pin,
        )
        return lambda: iter(loader)
    inputs, labels = memory

    def epoch() -> Iterator[dict[str, Any]]:
        order = torch.tensor(list(sampler), dtype=torch.long)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            idx = order[start : start + batch_size]
            yield {"input": inputs[idx], "labels": {t: y[idx] for t, y in labels.items()}, "skipped": []}

    return epoch


def _prepare_in_memory(
    items: EvalItems, collate: EvalCollate, batch_size: int, num_workers: int
) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | None:
    """Every item's prepared input and labels, in index order; None when an item is unreadable or they are too big."""
    if MATERIALIZE_MAX_BYTES <= 0:
        return None
    ordered = DataLoader(items, batch_size=batch_size, num_workers=num_workers, collate_fn=collate)
    inputs: list[torch.Tensor] = []
    labels: dict[str, list[torch.Tensor]] = {}
    for batch in ordered:
        if batch["skipped"] or "input" not in batch:
            return None  # stream instead: the loader's batches then skip and count what is unreadable
        x = batch["input"]
        if x.numel() * x.element_size() / x.shape[0] * len(items) > MATERIALIZE_MAX_BYTES:
            return None  # all items would take more than the budget
        inputs.append(x)
        for task, y in batch["labels"].items():
            labels.setdefault(task, []).append(y)
    return torch.cat(inputs), {task: torch.cat(ys) for task, ys in labels.items()}


@torch.no_grad()
def ceiling_head_accuracy(ceiling: Ceiling, val: dict[str, Any]) -> dict[str, float]:
    """Val accuracy of the ceiling's own heads on its val features.

    Args:
        ceiling: the trained ceiling.
        val: :func:`~openjepa.eval.features.extract_features` output of ``ceiling.encoder`` on the val data:
            ``labels``, and ``patches`` (max-pooled heads; video ``[N, C, K, D]``: each clip is pooled, and the
            clips' logits averaged) or ``pooled`` (mean-pooled heads; for video the mean over clips, which for
            linear heads is the same average of the clips' logits).
    """
    heads = ceiling.heads.eval()
    if heads.pool == "mean":
        pooled = val["pooled"]
    elif "patches" in val:
        tokens = val["patches"]
        clips = tokens if tokens.ndim == 4 else tokens.unsqueeze(1)  # [N, C, K, D]
        pooled = heads.pooled(clips).mean(1)  # linear heads: the mean of the clips' features = of their logits
    else:
        raise ValueError("the ceiling's max-pooled heads need the val tokens: extract them with patch_tokens=True")
    labels = val["labels"]
    return {
        t: float((y.argmax(1) == labels[t]).float().mean()) for t, y in heads.forward_pooled(pooled).items()
        if t in labels
    }


def _ceiling_key(like: VisionTransformer, dataset: Dataset, tasks: dict[str, int], spec: CeilingSpec, transform: Any,
                 rescale_init: bool) -> str | None:
    data_fp = dataset_fingerprint(dataset)
    if data_fp is None:
        return None
    return hash_json({
        "format": CEILING_FORMAT, "arch": like.config(), "rescale_init": rescale_init, "data": hash_json(data_fp),
        "tasks": tasks, "spec": asdict(spec), "transform": describe_transform(transform),
    })


def _load_ceiling(folder: Path, key: str, like: VisionTransformer, tasks: dict[str, int], pool: str) -> Ceiling | None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights, meta = folder / f"{key}.safetensors", folder / f"{key}.json"
    if not (weights.is_file() and meta.is_file()):
        return None
    try:
        state = load_file(str(weights))
        info = json.loads(meta.read_text())
    except (SafetensorError, OSError, json.JSONDecodeError) as err:
        print(f"[openjepa] ignoring unreadable ceiling cache entry {weights} ({err})", file=sys.stderr)
        return None
    encoder = VisionTransformer(**like.config())
    heads = CeilingHeads(encoder.embed_dim, tasks, pool)
    encoder.load_state_dict({k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")})
    heads.load_state_dict({k[len("heads.") :]: v for k, v in state.items() if k.startswith("heads.")})
    return Ceiling(encoder.eval(), heads.eval(), info, cached=True)


def _save_ceiling(folder: Path, key: str, ceiling: Ceiling) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {f"encoder.{k}": v.contiguous() for k, v in ceiling.encoder.state_dict().items()}
    state.update({f"heads.{k}": v.contiguous() for k, v in ceiling.heads.state_dict().items()})
    tmp = folder / f"{key}.safetensors.tmp{os.getpid()}"
    save_file(state, str(tmp))
    os.replace(tmp, folder / f"{key}.safetensors")
    tmp = folder / f"{key}.json.tmp{os.getpid()}"
    tmp.write_text(json.dumps({**ceiling.info, "format": CEILING_FORMAT}, indent=2) + "\n")
    os.replace(tmp, folder / f"{key}.json")


def supervised_ceiling(
    like: VisionTransformer,
    dataset: Dataset,
    tasks: dict[str, int],
    spec: CeilingSpec,
    device: torch.device | str,
    cache_root: str | os.PathLike | None = None,
    use_cache: bool = True,
    transform: Any = None,
    num_workers: int = 0,
    progress: bool = True,
    rescale_init: bool = False,
) -> Ceiling:
    """The supervised ceiling of ``like``'s architecture on ``dataset``, from the cache or trained.

    Args:
        like, dataset, tasks, spec, device, transform, num_workers, progress, rescale_init: as in
            :func:`train_supervised`.
        cache_root: cache root (ceilings live in ``ROOT/ceilings``); default :func:`default_cache_root`.
        use_cache: read and write the cache (datasets that cannot be fingerprinted are never cached).

    Returns:
        The :class:`Ceiling`; ``cached`` says whether it was read from the cache, ``info["cache_key"]``
        names the entry.
    """
    input_key = input_key_of(like)
    if transform is None:
        transform = default_transform(input_key, encoder_image_size(like))
    key = _ceiling_key(like, dataset, tasks, spec, transform, rescale_init) if use_cache else None
    folder = (Path(cache_root).expanduser() if cache_root is not None else default_cache_root()) / "ceilings"
    if key is not None:
        hit = _load_ceiling(folder, key, like, tasks, spec.pool)
        if hit is not None:
            return hit
    ceiling = train_supervised(like, dataset, tasks, spec, device, transform, num_workers, progress, rescale_init)
    ceiling.info["cache_key"] = key
    if key is not None:
        _save_ceiling(folder, key, ceiling)
    return ceiling
