"""Probes on frozen, precomputed features: linear, k-NN and a dense (per-patch) linear probe.

Every probe here fits on the ``train`` features and reports on the ``val`` features. Nothing is tuned on
a test split. The one choice made on ``val`` is the learning rate of the linear probes: the I-JEPA
protocol trains one head per learning rate of a small sweep and reports the best validation accuracy.
That number is optimistic by the sweep (a few lrs, so slightly); the per-lr accuracies are returned
too, so a reader can see how much the choice matters.

The probes are deterministic given ``seed``: heads start at zero (a linear softmax classifier is a
convex problem, so no random init is needed) and the seed drives only the mini-batch order.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

# The same sweep as ``eval.probe_lrs``: four learning rates, half a decade apart.
DEFAULT_LRS: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2)

# Rows per matrix product when predicting or computing statistics, so that the dense probe's
# [N * h * w, D] patch features (often float16 on the CPU) are never copied to float32 all at once.
_CHUNK = 65536


@contextmanager
def single_cpu_thread(device: torch.device) -> Iterator[None]:
    """Runs the block with one intra-op thread when on the CPU, then restores the thread count.

    A probe is thousands of tiny operations. With several OpenMP threads each one pays a fork/join, and
    when another process shares the cores the spinning threads wait on each other: a linear probe that
    takes 0.6 s on one thread took 9 s on two on a busy 2-core machine.
    """
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def check_labels(y: torch.Tensor, num_classes: int, name: str) -> None:
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(
            f"{name} holds labels in [{int(y.min())}, {int(y.max())}] but num_classes={num_classes}: "
            "pass the number of classes of the task (dataset.tasks[task])"
        )


def _check_pair(x: torch.Tensor, y: torch.Tensor, name: str) -> None:
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{name}: expected features [N, D] and labels [N], got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name}: no samples")


def standardization_stats(x: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and standard deviation of ``x: [N, D]`` (float32, on ``x``'s device).

    Accumulated in float64 over chunks, so float16 inputs and millions of rows are fine. Features with
    (near) zero variance get a standard deviation of 1 instead of blowing up.
    """
    total = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    total_sq = torch.zeros_like(total)
    for start in range(0, x.shape[0], _CHUNK):
        part = x[start : start + _CHUNK].to(torch.float64)
        total += part.sum(0)
        total_sq += (part * part).sum(0)
    n = x.shape[0]
    mean = total / n
    var = (total_sq / n - mean * mean).clamp_min(0.0)
    std = var.sqrt()
    std = torch.where(std < eps, torch.ones_like(std), std)
    return mean.float(), std.float()


def _train_heads(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    num_classes: int,
    lrs: Sequence[float],
    epochs: int,
    batch_size: int,
    weight_decay: float,
    seed: int,
    mean: torch.Tensor,
    std: torch.Tensor,
    device: torch.device,
) -> list[nn.Linear]:
    """Trains one zero-initialized linear head per learning rate, all on the same mini-batches.

    The heads share the batches (and so the data order) but not their parameters: the summed loss has
    independent gradients per head and AdamW keeps per-parameter state, so this is exactly a sweep of
    separate runs, at the cost of one pass over the data.
    """
    dim = train_x.shape[1]
    heads = []
    groups = []
    for lr in lrs:
        head = nn.Linear(dim, num_classes).to(device)
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        heads.append(head)
        # No weight decay on the bias: it only shifts the class priors.
        groups.append({"params": [head.weight], "lr": lr, "base_lr": lr, "weight_decay": weight_decay})
        groups.append({"params": [head.bias], "lr": lr, "base_lr": lr, "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups)

    n = train_x.shape[0]
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = max(1, epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(seed)
    step = 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size].to(train_x.device)
            xb = (train_x[idx].to(device).float() - mean) / std
            yb = train_y[idx].to(device)
            # Cosine decay to zero over the whole run, no warmup (the problem is convex).
            scale = 0.5 * (1.0 + math.cos(math.pi * step / total_steps))
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * scale
            loss = sum(F.cross_entropy(head(xb), yb) for head in heads)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[union-attr]
            opt.step()
            step += 1
    return heads


@torch.no_grad()
def _predict(
    head: nn.Linear, x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, device: torch.device
) -> torch.Tensor:
    preds = []
    for start in range(0, x.shape[0], _CHUNK):
        xb = (x[start : start + _CHUNK].to(device).float() - mean) / std
        preds.append(head(xb).argmax(1))
    return torch.cat(preds)


def _resolve_device(x: torch.Tensor, device: torch.device | str | None) -> torch.device:
    return torch.device(device) if device is not None else x.device


def linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    num_classes: int,
    lrs: Sequence[float] = DEFAULT_LRS,
    epochs: int = 30,
    batch_size: int = 256,
    weight_decay: float = 1e-4,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> dict:
    """Linear classification probe on frozen features, swept over learning rates.

    A BatchNorm-free linear head on features standardized with the *train* mean and standard deviation
    (applied unchanged to val), trained with AdamW, a cosine learning-rate decay and mini-batches, one
    head per learning rate. Accuracy is measured once, after the last epoch (no early stopping on val).

    Args:
        train_x, train_y: ``[N, D]`` features and ``[N]`` integer labels used for fitting.
        val_x, val_y: ``[M, D]`` features and ``[M]`` labels used for reporting.
        num_classes: number of classes of the task.
        lrs: the learning rates of the sweep.
        epochs: passes over the training features.
        batch_size: mini-batch size.
        weight_decay: AdamW (decoupled) weight decay on the head's weights.
        seed: drives the mini-batch order; the result is a function of the inputs and the seed.
        device: where to train; defaults to the device of ``train_x``.

    Returns:
        ``{"best_acc": float, "best_lr": float, "accs_per_lr": {lr: acc}}``, accuracies as fractions in
        [0, 1]. ``best_acc`` is the maximum over the sweep of the validation accuracy (I-JEPA protocol).
    """
    _check_pair(train_x, train_y, "linear_probe train")
    _check_pair(val_x, val_y, "linear_probe val")
    check_labels(train_y, num_classes, "train_y")
    check_labels(val_y, num_classes, "val_y")
    if not lrs:
        raise ValueError("linear_probe needs at least one learning rate in lrs")
    dev = _resolve_device(train_x, device)
    # The pooled features are small: move them once instead of once per batch.
    train_x, train_y = train_x.to(dev).float(), train_y.to(dev).long()
    mean, std = standardization_stats(train_x)
    with torch.enable_grad(), single_cpu_thread(dev):
        heads = _train_heads(
            train_x, train_y, num_classes, lrs, epochs, batch_size, weight_decay, seed, mean, std, dev
        )
    val_y = val_y.to(dev).long()
    accs = {
        float(lr): float((_predict(head, val_x, mean, std, dev) == val_y).float().mean())
        for lr, head in zip(lrs, heads, strict=True)
    }
    best_lr = max(accs, key=lambda lr: accs[lr])
    return {"best_acc": accs[best_lr], "best_lr": best_lr, "accs_per_lr": accs}


@torch.no_grad()
def knn_classify(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 1024,
) -> float:
    """Weighted k-nearest-neighbour classification with cosine similarity.

    Each val point takes its ``k`` most similar train points (cosine similarity of the raw features);
    neighbour ``j`` votes for its label with weight ``exp(sim_j / temperature)`` and the class with the
    largest total wins (ties go to the lowest class index). No training, no hyper-parameter chosen on val.

    Args:
        train_x, train_y: ``[N, D]`` reference features and their labels.
        val_x, val_y: ``[M, D]`` query features and their labels.
        k: neighbours per query (clipped to ``N``).
        temperature: softmax-like temperature of the vote weights.
        num_classes: number of classes; inferred from the labels when omitted.
        chunk_size: queries per similarity matrix (bounds memory to ``chunk_size x N``).

    Returns:
        Top-1 accuracy on val, a fraction in [0, 1].
    """
    _check_pair(train_x, train_y, "knn_classify train")
    _check_pair(val_x, val_y, "knn_classify val")
    if num_classes is None:
        num_classes = int(max(int(train_y.max()), int(val_y.max()))) + 1
    check_labels(train_y, num_classes, "train_y")
    dev = train_x.device
    ref = F.normalize(train_x.float(), dim=1)
    ref_y = train_y.long()
    k = min(k, ref.shape[0])
    correct = 0
    for start in range(0, val_x.shape[0], chunk_size):
        q = F.normalize(val_x[start : start + chunk_size].to(dev).float(), dim=1)
        sim, idx = (q @ ref.T).topk(k, dim=1)
        votes = torch.zeros(q.shape[0], num_classes, device=dev)
        votes.scatter_add_(1, ref_y[idx], (sim / temperature).exp())
        correct += int((votes.argmax(1) == val_y[start : start + chunk_size].to(dev)).sum())
    return correct / val_x.shape[0]


def confusion_matrix(target: torch.Tensor, pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[C, C]`` counts, rows = true class, columns = predicted class."""
    flat = target.long() * num_classes + pred.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_per_class(conf: torch.Tensor) -> torch.Tensor:
    """Intersection over union per class from a confusion matrix; ``nan`` for a class absent from both
    the targets and the predictions (it has no IoU and is left out of the mean)."""
    conf = conf.double()
    tp = conf.diag()
    denom = conf.sum(0) + conf.sum(1) - tp
    return torch.where(denom > 0, tp / denom.clamp_min(1), torch.full_like(tp, math.nan))


def dense_probe(
    train_patches: torch.Tensor,
    train_patch_labels: torch.Tensor,
    val_patches: torch.Tensor,
    val_patch_labels: torch.Tensor,
    num_classes: int = 7,
    lrs: Sequence[float] = DEFAULT_LRS,
    epochs: int = 30,
    batch_size: int = 1024,
    weight_decay: float = 1e-4,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> dict:
    """Per-patch linear classifier (shared over positions) on frozen patch tokens.

    Every patch token of every image is one sample; the head is a single linear map applied at every
    position, so it reads what each token encodes about its own patch (a linear segmentation probe).
    Features are standardized with train statistics; one head per learning rate is trained as in
    :func:`linear_probe` and the one with the best validation mIoU is reported.

    Background dominates the patches, so per-patch accuracy flatters a probe that predicts background
    everywhere (its accuracy is ``background_frac``). The mean IoU over the classes is the honest number:
    every class, background included, weighs the same. Classes absent from both the val targets and the
    predictions have no IoU and are left out of the mean.

    Args:
        train_patches: ``[N, P, D]`` patch tokens (float16 is fine; batches are converted to float32).
        train_patch_labels: ``[N, P]`` class per patch (0 background, 1..C-1 objects).
        val_patches, val_patch_labels: the same for the reporting split.
        num_classes: number of patch classes (7 for scenes: background + 6 shapes).
        lrs, epochs, batch_size, weight_decay, seed, device: as in :func:`linear_probe`; a batch is
            ``batch_size`` patches.

    Returns:
        ``{"acc", "miou", "per_class_iou": list, "best_lr", "accs_per_lr", "mious_per_lr",
        "background_frac"}``, fractions in [0, 1] (``nan`` in ``per_class_iou`` for absent classes).
    """
    for name, x, y in (("train", train_patches, train_patch_labels), ("val", val_patches, val_patch_labels)):
        if x.ndim != 3 or y.shape != x.shape[:2]:
            raise ValueError(
                f"dense_probe {name}: expected patches [N, P, D] and labels [N, P], "
                f"got {tuple(x.shape)} and {tuple(y.shape)}"
            )
    if not lrs:
        raise ValueError("dense_probe needs at least one learning rate in lrs")
    # Views, not copies: the patch tensor can be the largest object of the evaluation.
    tx = train_patches.reshape(-1, train_patches.shape[-1])
    ty = train_patch_labels.reshape(-1).long()
    vx = val_patches.reshape(-1, val_patches.shape[-1])
    vy = val_patch_labels.reshape(-1).long()
    check_labels(ty, num_classes, "train_patch_labels")
    check_labels(vy, num_classes, "val_patch_labels")
    dev = _resolve_device(tx, device)
    mean, std = standardization_stats(tx)
    mean, std = mean.to(dev), std.to(dev)
    with torch.enable_grad(), single_cpu_thread(dev):
        heads = _train_heads(tx, ty, num_classes, lrs, epochs, batch_size, weight_decay, seed, mean, std, dev)
    vy_dev = vy.to(dev)
    results = []
    for lr, head in zip(lrs, heads, strict=True):
        pred = _predict(head, vx, mean, std, dev)
        ious = iou_per_class(confusion_matrix(vy_dev, pred, num_classes).cpu())
        acc = float((pred == vy_dev).float().mean())
        results.append((float(lr), acc, float(ious.nanmean()), ious))
    best = max(results, key=lambda r: r[2])
    return {
        "acc": best[1],
        "miou": best[2],
        "per_class_iou": best[3].tolist(),
        "best_lr": best[0],
        "accs_per_lr": {r[0]: r[1] for r in results},
        "mious_per_lr": {r[0]: r[2] for r in results},
        "background_frac": float((vy == 0).float().mean()),
    }
