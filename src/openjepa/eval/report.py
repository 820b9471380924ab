"""The frozen-evaluation report: probes on the scenes tasks, for an encoder and a random-init baseline.

:func:`evaluate` is what ``openjepa eval`` and the end of ``openjepa pretrain`` call. It extracts
features of the scenes ``train`` split (fitting) and ``val`` split (reporting) once per encoder, then runs
a linear probe and a k-NN classifier per task, a dense per-patch probe and RankMe. A randomly
initialized encoder of the same architecture, evaluated on the very same images, is the baseline that
says how much of a score pretraining earned: probes on random features are far above chance on easy
synthetic tasks, so a number alone means little.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from openjepa.config import Config
from openjepa.data.scenes import SEG_CLASSES, ScenesDataset
from openjepa.eval.features import extract_features
from openjepa.eval.probes import dense_probe, knn_classify, linear_probe
from openjepa.methods.ijepa import build_encoder
from openjepa.metrics import rankme

# Offset of the random-init baseline's seed from the probe seed, so that the baseline's weights never
# coincide with an initialization the training run itself may have drawn from the same seed.
RANDOM_INIT_SEED_OFFSET = 12345


def _scenes_split(cfg: Config, split: str, size: int) -> ScenesDataset:
    # The dataset seed is the run's seed, not the probe seed: the pretrained and random encoders (and
    # every evaluation of one run) see exactly the same images.
    return ScenesDataset(
        split=split,
        size=size,
        image_size=cfg.data.image_size,
        max_objects=cfg.data.scenes.max_objects,
        caption_noise=cfg.data.scenes.caption_noise,
        seed=cfg.train.seed,
    )


def _majority_accuracy(train_y: torch.Tensor, val_y: torch.Tensor) -> float:
    """Val accuracy of always predicting the most frequent train class: the floor any probe must beat."""
    majority = int(torch.bincount(train_y).argmax())
    return float((val_y == majority).float().mean())


def evaluate_encoder(
    encoder: nn.Module,
    cfg: Config,
    device: torch.device | str,
    seed: int = 0,
    tasks: Sequence[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Frozen evaluation of one encoder on the scenes probe tasks.

    Fits on ``cfg.eval.train_size`` images of the scenes ``train`` split and reports on
    ``cfg.eval.val_size`` images of the ``val`` split, generated at ``cfg.data.image_size`` with
    ``cfg.data.scenes.max_objects`` objects and dataset seed ``cfg.train.seed``.

    Args:
        encoder: ``forward(x) -> tokens [B, N, D]`` with a ``patch_size`` attribute; put in eval mode for
            the pass and left in its previous mode.
        cfg: the run's config (``eval``, ``data`` and ``train.seed`` are read).
        device: where the encoder and the probes run.
        seed: probe seed (mini-batch order of the linear and dense probes).
        tasks: a subset of the scenes tasks; all of them when omitted.
        progress: show progress bars on stderr.

    Returns:
        ``{"linear": {task: acc}, "linear_lr": {task: lr}, "linear_sweep": {task: {lr: acc}},
        "knn": {task: acc}, "majority": {task: acc}, "dense": {"acc", "miou", "per_class_iou", "best_lr",
        "background_frac"}, "linear_mean", "knn_mean", "rankme", "feature_dim", "num_patches",
        "n_train", "n_val", "seconds": {"features", "probes"}}``. Accuracies and IoUs are fractions in
        [0, 1]; ``rankme`` is measured on the val pooled features.
    """
    ev = cfg.eval
    train_ds = _scenes_split(cfg, "train", ev.train_size)
    val_ds = _scenes_split(cfg, "val", ev.val_size)
    all_tasks = train_ds.tasks
    tasks = list(all_tasks) if tasks is None else list(tasks)
    unknown = [t for t in tasks if t not in all_tasks]
    if unknown:
        raise ValueError(f"unknown scenes task(s) {', '.join(unknown)}; choose from {', '.join(all_tasks)}")

    start = time.perf_counter()
    feats = {}
    for split, ds in (("train", train_ds), ("val", val_ds)):
        feats[split] = extract_features(
            encoder,
            ds,
            batch_size=ev.batch_size,
            device=device,
            patch_tokens=True,
            num_workers=cfg.eval.num_workers,
            progress=progress,
            desc=f"eval features ({split})",
        )
    tr, va = feats["train"], feats["val"]
    feature_seconds = time.perf_counter() - start

    start = time.perf_counter()
    linear, linear_lr, linear_sweep, knn, majority = {}, {}, {}, {}, {}
    for task in tasks:
        ytr, yva = tr["labels"][task], va["labels"][task]
        res = linear_probe(
            tr["pooled"],
            ytr,
            va["pooled"],
            yva,
            num_classes=all_tasks[task],
            lrs=ev.probe_lrs,
            epochs=ev.probe_epochs,
            seed=seed,
            device=device,
        )
        linear[task] = res["best_acc"]
        linear_lr[task] = res["best_lr"]
        linear_sweep[task] = res["accs_per_lr"]
        knn[task] = knn_classify(
            tr["pooled"].to(device),
            ytr.to(device),
            va["pooled"],
            yva,
            k=ev.knn_k,
            num_classes=all_tasks[task],
        )
        majority[task] = _majority_accuracy(ytr, yva)
    dense = dense_probe(
        tr["patches"],
        tr["patch_labels"],
        va["patches"],
        va["patch_labels"],
        num_classes=SEG_CLASSES,
        lrs=ev.probe_lrs,
        epochs=ev.probe_epochs,
        seed=seed,
        device=device,
    )
    probe_seconds = time.perf_counter() - start

    return {
        "linear": linear,
        "linear_lr": linear_lr,
        "linear_sweep": linear_sweep,
        "knn": knn,
        "majority": majority,
        "dense": {k: dense[k] for k in ("acc", "miou", "per_class_iou", "best_lr", "background_frac")},
        "linear_mean": sum(linear.values()) / len(linear) if linear else math.nan,
        "knn_mean": sum(knn.values()) / len(knn) if knn else math.nan,
        "rankme": rankme(va["pooled"]),
        "feature_dim": int(va["pooled"].shape[1]),
        "num_patches": int(va["patches"].shape[1]),
        "n_train": len(train_ds),
        "n_val": len(val_ds),
        "seconds": {"features": feature_seconds, "probes": probe_seconds},
    }


def build_random_encoder(cfg: Config, seed: int = 0) -> nn.Module:
    """A randomly initialized encoder of ``cfg``'s architecture, seeded with ``seed + 12345``.

    The global RNG state is forked, so building the baseline does not shift the caller's random stream
    (the training loop may call :func:`evaluate` mid-run).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + RANDOM_INIT_SEED_OFFSET)
        return build_encoder(cfg)


def margin(pretrained: dict[str, Any], random_init: dict[str, Any]) -> dict[str, Any]:
    """Per-task difference ``pretrained - random_init`` of two :func:`evaluate_encoder` reports."""
    return {
        "linear": {t: pretrained["linear"][t] - random_init["linear"][t] for t in pretrained["linear"]},
        "knn": {t: pretrained["knn"][t] - random_init["knn"][t] for t in pretrained["knn"]},
        "dense": {k: pretrained["dense"][k] - random_init["dense"][k] for k in ("acc", "miou")},
        "linear_mean": pretrained["linear_mean"] - random_init["linear_mean"],
        "knn_mean": pretrained["knn_mean"] - random_init["knn_mean"],
        "rankme": pretrained["rankme"] - random_init["rankme"],
    }


def evaluate(
    encoder: nn.Module,
    cfg: Config,
    device: torch.device | str,
    random_baseline: bool | None = None,
    seed: int = 0,
    tasks: Sequence[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """The full evaluation report of ``encoder``, with a random-init baseline when asked.

    Args:
        encoder: the frozen encoder to evaluate (for I-JEPA, the EMA target encoder).
        cfg: the run's config; ``cfg.model`` must describe ``encoder`` (it builds the baseline).
        device: where encoders and probes run.
        random_baseline: also evaluate a random-init encoder of the same architecture; defaults to
            ``cfg.eval.random_baseline``.
        seed: probe seed; the baseline's weights are drawn with ``seed + 12345``.
        tasks, progress: as in :func:`evaluate_encoder`.

    Returns:
        ``{"config": {...}, "pretrained": report}`` plus, with the baseline, ``"random_init": report``
        and ``"margin"`` (pretrained minus random init, per task; see :func:`margin`).
    """
    use_baseline = cfg.eval.random_baseline if random_baseline is None else random_baseline
    out: dict[str, Any] = {
        "config": {
            "arch": cfg.model.arch,
            "image_size": cfg.data.image_size,
            "patch_size": int(getattr(encoder, "patch_size", cfg.model.patch_size)),
            "max_objects": cfg.data.scenes.max_objects,
            "dataset_seed": cfg.train.seed,
            "probe_seed": seed,
            "train_size": cfg.eval.train_size,
            "val_size": cfg.eval.val_size,
            "probe_lrs": list(cfg.eval.probe_lrs),
            "probe_epochs": cfg.eval.probe_epochs,
            "knn_k": cfg.eval.knn_k,
        },
    }
    baseline = None
    if use_baseline:
        baseline = build_random_encoder(cfg, seed)
        dim = getattr(encoder, "embed_dim", None)
        if dim is not None and dim != baseline.embed_dim:
            raise ValueError(
                f"the encoder has width {dim} but cfg.model.arch={cfg.model.arch!r} builds width "
                f"{baseline.embed_dim}: pass the config the encoder was trained with"
            )
    kwargs: dict[str, Any] = {"seed": seed, "tasks": tasks, "progress": progress}
    out["pretrained"] = evaluate_encoder(encoder, cfg, device, **kwargs)
    if baseline is not None:
        out["random_init"] = evaluate_encoder(baseline, cfg, device, **kwargs)
        out["margin"] = margin(out["pretrained"], out["random_init"])
    return out


# ----------------------------------------------------------------------------- formatting


def _cell(value: float | None, kind: str, width: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-".rjust(width)
    text = {
        "pct": f"{100 * value:.1f}",
        "dpct": f"{100 * value:+.1f}",
        "num": f"{value:.1f}",
        "dnum": f"{value:+.1f}",
    }[kind]
    return text.rjust(width)


LABEL_WIDTH = 15


def _table(rows: list[tuple[str, dict[str, Any], bool]], tasks: list[str], majority: dict | None) -> list[str]:
    """Header + one line per ``(label, report, is_delta)``, then the majority-class floor."""
    columns = [*tasks, "dense_mIoU", "knn_mean", "rankme"]
    widths = [max(len(c), 8) for c in columns]

    def line(label: str, values: list[float | None], kinds: list[str]) -> str:
        cells = [_cell(v, k, w) for v, k, w in zip(values, kinds, widths, strict=True)]
        return label[: LABEL_WIDTH - 1].ljust(LABEL_WIDTH) + "  ".join(cells)

    header = "encoder".ljust(LABEL_WIDTH) + "  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))
    out = [header, "-" * len(header)]
    for label, rep, delta in rows:
        values = [rep["linear"][t] for t in tasks] + [rep["dense"]["miou"], rep["knn_mean"], rep["rankme"]]
        pct, num = ("dpct", "dnum") if delta else ("pct", "num")
        out.append(line(label, values, [pct] * (len(tasks) + 2) + [num]))
    if majority:
        out.append(line("majority class", [majority.get(t) for t in tasks] + [None] * 3, ["pct"] * len(columns)))
    return out


def format_report(report: dict[str, Any]) -> str:
    """A fixed-width table of an :func:`evaluate` (or single :func:`evaluate_encoder`) report.

    One row per encoder (pretrained, random init, their margin, and the majority-class floor), one column
    per linear-probe task, then dense mIoU, mean k-NN accuracy and RankMe. Accuracies in percent.
    """
    if "linear" in report:  # a bare evaluate_encoder report
        report = {"pretrained": report}
    first = report["pretrained"]
    rows = [("pretrained", first, False)]
    if "random_init" in report:
        rows.append(("random init", report["random_init"], False))
    if "margin" in report:
        rows.append(("margin", report["margin"], True))
    return "\n".join(_header_lines(report, first) + _table(rows, list(first["linear"]), first.get("majority")))


def format_comparison(reports: dict[str, dict[str, Any]]) -> str:
    """Side-by-side table of several runs' :func:`evaluate` reports (one row per run's encoder).

    The random-init row comes from the first report that has one. Runs must share the probe setup (image
    size, eval sizes, probe settings, dataset seed), otherwise their numbers are not comparable: raises.
    """
    if not reports:
        raise ValueError("no reports to compare")
    names = list(reports)
    keys = ("image_size", "train_size", "val_size", "probe_lrs", "probe_epochs", "dataset_seed")
    ref = reports[names[0]].get("config", {})
    for name in names[1:]:
        other = reports[name].get("config", {})
        diff = [k for k in keys if other.get(k) != ref.get(k)]
        if diff:
            raise ValueError(f"{name} was evaluated with different {', '.join(diff)} than {names[0]}: not comparable")
    first = reports[names[0]]["pretrained"]
    rows = [(name, reports[name]["pretrained"], False) for name in names]
    baseline = next((r["random_init"] for r in reports.values() if "random_init" in r), None)
    if baseline is not None:
        rows.append(("random init", baseline, False))
    lines = _header_lines({"config": ref}, first)
    return "\n".join(lines + _table(rows, list(first["linear"]), first.get("majority")))


def _header_lines(report: dict[str, Any], first: dict[str, Any]) -> list[str]:
    lines = []
    cfg = report.get("config")
    if cfg:
        lines.append(
            f"frozen evaluation: {cfg['arch']}/{cfg['patch_size']} at {cfg['image_size']} px, "
            f"scenes {first['n_train']} train / {first['n_val']} val images, "
            f"feature dim {first['feature_dim']}"
        )
        lines.append(
            f"linear probes: best val top-1 over lrs {', '.join(f'{lr:g}' for lr in cfg['probe_lrs'])} "
            f"({cfg['probe_epochs']} epochs); k-NN: k={cfg['knn_k']}, cosine; accuracies and mIoU in %"
        )
    ckpt = report.get("checkpoint")
    if ckpt:  # added by `openjepa eval`
        lines.append(f"checkpoint: {ckpt.get('path')} (step {ckpt.get('step')})")
    return lines


def _json_safe(value: Any) -> Any:
    """NaN and infinities become ``null`` (strict JSON); dict keys become strings."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, torch.Tensor):
        return _json_safe(value.tolist())
    return value


def save_report_json(report: dict[str, Any], path: str | Path) -> Path:
    """Writes ``report`` as indented, strict JSON to ``path`` (atomically: temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_json_safe(report), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path
