"""The calibrated frozen-evaluation report: probes on an encoder and on the references that give them meaning.

:func:`evaluate` is what ``openjepa eval`` and the end of ``openjepa pretrain`` call (built-in probe data:
``scenes`` for image encoders, ``sprites`` for video encoders); :func:`evaluate_user_data` does the same on
the user's labelled train / val data. Both build one row per encoder:

- **pretrained**: the encoder under evaluation;
- **random init**: the same architecture, freshly initialized (one draw per probe seed);
- **raw pixels**: the input downsampled to a few pixels per token (:class:`~openjepa.eval.baselines.PixelEncoder`);
- **supervised ceiling**: the same architecture trained on the probe labels with the same number of steps
  (:func:`~openjepa.eval.baselines.supervised_ceiling`), probed like the others, plus its own heads.

and per row and task: a linear probe on the average-pooled tokens, an attentive probe on all tokens, k-NN
on the pooled features; on scenes also a dense per-patch probe; RankMe of the val features. Features are
extracted once per (encoder, data) and cached on disk (:mod:`openjepa.eval.cache`). With several probe
seeds every number is a mean, reported with its standard deviation over the seeds. A task on which even the
ceiling stays within two standard errors of the majority-class accuracy is marked: it measures nothing at
this scale.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from openjepa.config import Config, EvalConfig
from openjepa.data.scenes import SEG_CLASSES, ScenesDataset
from openjepa.errors import ConfigError
from openjepa.eval.attentive import attentive_probes, default_heads, score_epochs
from openjepa.eval.baselines import (
    DEFAULT_CEILING_STEPS,
    RANDOM_INIT_SEED_OFFSET,
    Ceiling,
    CeilingSpec,
    ceiling_head_accuracy,
    pixel_encoder_like,
    random_encoder_like,
    supervised_ceiling,
)
from openjepa.eval.cache import FeatureCache, dataset_fingerprint, encoder_fingerprint, extract_cached, hash_json
from openjepa.eval.features import encoder_image_size, input_key_of
from openjepa.eval.probes import dense_probe, knn_classify, linear_probe
from openjepa.metrics import rankme
from openjepa.models.build import build_encoder
from openjepa.models.vit import VIT_PRESETS

__all__ = [
    "ROW_LABELS",
    "ProbeData",
    "ProbeSettings",
    "build_random_encoder",
    "builtin_probe_data",
    "calibrate",
    "evaluate",
    "evaluate_encoder",
    "evaluate_probe_data",
    "evaluate_user_data",
    "format_comparison",
    "format_report",
    "margin",
    "save_report_json",
    "user_probe_data",
]

REPORT_FORMAT = "openjepa-eval-v2"

# Report keys of the rows, in table order, with their labels.
ROW_LABELS: dict[str, str] = {
    "pretrained": "pretrained",
    "random_init": "random init",
    "pixels": "raw pixels",
    "ceiling": "sup. ceiling",
}

# "At chance": within this many standard errors of the majority-class accuracy.
CHANCE_STANDARD_ERRORS = 2.0


@dataclass
class ProbeSettings:
    """Everything that decides a probe number (recorded in the report's ``config``).

    Attributes:
        lrs: learning-rate sweep of the linear, attentive and dense probes (``eval.probe_lrs``).
        epochs: epochs of the linear and dense probes (``eval.probe_epochs``).
        knn_k: neighbours of the k-NN classifier.
        batch_size: inputs per forward pass during feature extraction.
        num_workers: loader workers during feature extraction.
        attentive: run the attentive probe.
        attentive_depth: blocks of the attentive probe.
        attentive_heads: its heads (``None``: :func:`~openjepa.eval.attentive.default_heads`).
        attentive_epochs: its epochs.
        attentive_eval_every: also score it every this many epochs and keep the best (0: the last epoch).
        num_clips: clips per video at evaluation.
        pixel_size: pixels per token side of the raw-pixel reference.
        seeds: probe seeds.
    """

    lrs: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2)
    epochs: int = 30
    knn_k: int = 20
    batch_size: int = 128
    num_workers: int = 0
    attentive: bool = True
    attentive_depth: int = 1
    attentive_heads: int | None = None
    attentive_epochs: int = 20
    attentive_eval_every: int = 0
    num_clips: int = 2
    pixel_size: int = 4
    seeds: tuple[int, ...] = (0,)

    @classmethod
    def from_config(cls, cfg: Config, seeds: Sequence[int] | None = None) -> ProbeSettings:
        """The settings of ``cfg.eval`` (``seeds`` replaces ``eval.seeds``)."""
        ev = cfg.eval
        chosen = tuple(int(s) for s in (seeds if seeds is not None else cfg.eval.seeds))
        if not chosen:
            raise ValueError("give at least one probe seed (--seeds 0 1 2)")
        heads = int(cfg.eval.attentive_heads)
        try:  # the probe's own rule, reported with the config keys
            score_epochs(int(ev.attentive_epochs), int(ev.attentive_eval_every))
        except ValueError:
            raise ConfigError(
                f"eval.attentive_epochs={ev.attentive_epochs} must be >= 1 and eval.attentive_eval_every="
                f"{ev.attentive_eval_every} >= 0 (0: score the attentive probe after its last epoch only)"
            ) from None
        return cls(
            lrs=tuple(float(lr) for lr in ev.probe_lrs),
            epochs=int(ev.probe_epochs),
            knn_k=int(ev.knn_k),
            batch_size=int(ev.batch_size),
            num_workers=int(ev.num_workers),
            attentive=bool(cfg.eval.attentive),
            attentive_depth=int(cfg.eval.attentive_depth),
            attentive_heads=heads if heads > 0 else None,
            attentive_epochs=int(cfg.eval.attentive_epochs),
            attentive_eval_every=int(cfg.eval.attentive_eval_every),
            num_clips=int(cfg.eval.num_clips),
            pixel_size=int(cfg.eval.pixel_size),
            seeds=chosen,
        )


@dataclass
class ProbeData:
    """The labelled data an evaluation probes on.

    Attributes:
        name: ``scenes``, ``sprites`` or ``user``.
        train: fitting split (probes, k-NN references).
        val: reporting split.
        tasks: ``{task: classes}``.
        input_key: ``image`` or ``video``.
        ceiling_train: what the supervised ceiling trains on.
        description: what the report records about the data (sources, sizes, classes).
        dense: the items carry ``seg`` maps (the dense probe runs).
    """

    name: str
    train: Dataset
    val: Dataset
    tasks: dict[str, int]
    input_key: str
    ceiling_train: Dataset
    description: dict[str, Any]
    dense: bool = False


def builtin_probe_data(cfg: Config, encoder: nn.Module, tasks: Sequence[str] | None = None) -> ProbeData:
    """The built-in probe data for ``encoder``: scenes for image encoders, sprites for video encoders.

    Both are generated at the encoder's input size (and frames) with dataset seed ``cfg.train.seed``, so
    every evaluation of a run sees the same items: ``eval.train_size`` items of the ``train`` split to fit,
    ``eval.val_size`` of the ``val`` split to report. The ceiling trains on the pretraining's items (the
    ``train`` split, ``data.train_size`` of them) when the run pretrained on this generator, otherwise on
    the probes' train items.
    """
    ev = cfg.eval
    key = input_key_of(encoder)
    size = encoder_image_size(encoder)
    seed = cfg.train.seed
    if key == "image" and cfg.data.source == "sprites":
        # An image encoder of the sprites frames: probed on each video's labelled frame (the single-frame
        # reference of the video methods).
        name = "sprites"
        from openjepa.data.sources import build_dataset

        frame_cfg = dataclasses.replace(cfg.data, image_size=size, num_frames=1)

        def make(split: str, n: int) -> Dataset:
            return build_dataset(frame_cfg, split=split, seed=seed, size=n)
    elif key == "image":
        name = "scenes"
        sc = cfg.data.scenes

        def make(split: str, n: int) -> Dataset:
            return ScenesDataset(split, n, size, sc.max_objects, sc.caption_noise, seed)
    else:
        name = "sprites"
        from openjepa.data.sources import build_dataset

        frames = int(getattr(encoder, "num_frames", cfg.data.num_frames))
        data_cfg = dataclasses.replace(cfg.data, source="sprites", image_size=size, num_frames=frames)

        def make(split: str, n: int) -> Dataset:
            return build_dataset(data_cfg, split=split, seed=seed, size=n)

    train, val = make("train", ev.train_size), make("val", ev.val_size)
    ceiling_n = cfg.data.train_size if cfg.data.source == name else ev.train_size
    ceiling_train = train if ceiling_n == ev.train_size else make("train", ceiling_n)
    all_tasks: dict[str, int] = dict(train.tasks)  # type: ignore[attr-defined]
    chosen = _choose_tasks(all_tasks, tasks, name)
    return ProbeData(
        name=name,
        train=train,
        val=val,
        tasks=chosen,
        input_key=key,
        ceiling_train=ceiling_train,
        description={
            "name": name,
            "train": repr(train),
            "val": repr(val),
            "ceiling_train": repr(ceiling_train),
            "version": getattr(train, "version", None),
        },
        dense=name == "scenes",
    )


def user_probe_data(
    train: str | os.PathLike,
    val: str | os.PathLike,
    encoder: nn.Module,
    cfg: Config,
    tasks: Sequence[str] | None = None,
) -> ProbeData:
    """The user's labelled ``train`` / ``val`` data (see :mod:`openjepa.eval.userdata`) for ``encoder``."""
    from openjepa.eval.userdata import open_labelled_pair

    key = input_key_of(encoder)
    num_frames = int(getattr(encoder, "num_frames", 1))
    train_ds, val_ds = open_labelled_pair(train, val, key, num_frames=num_frames, frame_step=cfg.data.frame_step)
    chosen = _choose_tasks(train_ds.tasks, tasks, str(train))
    return ProbeData(
        name="user",
        train=train_ds,
        val=val_ds,
        tasks=chosen,
        input_key=key,
        ceiling_train=train_ds,
        description={
            "name": "user",
            "train": str(train),
            "val": str(val),
            "classes": {t: [str(c) for c in v] for t, v in train_ds.classes.items()},
        },
    )


def _choose_tasks(all_tasks: dict[str, int], tasks: Sequence[str] | None, where: str) -> dict[str, int]:
    if tasks is None:
        return dict(all_tasks)
    unknown = [t for t in tasks if t not in all_tasks]
    if unknown:
        raise ValueError(f"unknown {where} task(s) {', '.join(unknown)}; choose from {', '.join(all_tasks)}")
    return {t: all_tasks[t] for t in tasks}


def _majority_accuracy(train_y: torch.Tensor, val_y: torch.Tensor) -> float:
    """Val accuracy of always predicting the most frequent train class: the floor any probe must beat."""
    majority = int(torch.bincount(train_y).argmax())
    return float((val_y == majority).float().mean())


def _arch_name(encoder: nn.Module, cfg: Config | None) -> str:
    if cfg is not None:
        return cfg.model.arch
    dim, depth, heads = (getattr(encoder, a, None) for a in ("embed_dim", "depth", "num_heads"))
    for name, spec in VIT_PRESETS.items():
        if (spec.embed_dim, spec.depth, spec.num_heads) == (dim, depth, heads):
            return name
    return f"vit-{dim}x{depth}"


# ----------------------------------------------------------------------------- one row


def _mean_std(values: list[float]) -> tuple[float, float]:
    if len(values) == 1:
        return values[0], 0.0
    return statistics.fmean(values), statistics.stdev(values)


def _probe_one_seed(
    tr: dict[str, Any], va: dict[str, Any], data: ProbeData, settings: ProbeSettings, seed: int, device: torch.device
) -> dict[str, Any]:
    """Every probe of one seed on one encoder's features."""
    out: dict[str, Any] = {"seed": seed, "linear": {}, "linear_lr": {}, "linear_sweep": {}, "knn": {}}
    ref = tr["pooled"].to(device)
    for task, classes in data.tasks.items():
        ytr, yva = tr["labels"][task], va["labels"][task]
        res = linear_probe(
            tr["pooled"], ytr, va["pooled"], yva, num_classes=classes, lrs=settings.lrs, epochs=settings.epochs,
            seed=seed, device=device,
        )
        out["linear"][task] = res["best_acc"]
        out["linear_lr"][task] = res["best_lr"]
        out["linear_sweep"][task] = res["accs_per_lr"]
        out["knn"][task] = knn_classify(ref, ytr.to(device), va["pooled"], yva, k=settings.knn_k, num_classes=classes)
    if settings.attentive:
        att = attentive_probes(
            tr["patches"], {t: tr["labels"][t] for t in data.tasks},
            va["patches"], {t: va["labels"][t] for t in data.tasks},
            data.tasks, lrs=settings.lrs, epochs=settings.attentive_epochs, seed=seed, depth=settings.attentive_depth,
            num_heads=settings.attentive_heads, device=device, eval_every=settings.attentive_eval_every,
        )
        out["attentive"] = {t: r["best_acc"] for t, r in att.items()}
        out["attentive_lr"] = {t: r["best_lr"] for t, r in att.items()}
        out["attentive_epoch"] = {t: r["best_epoch"] for t, r in att.items()}
        out["attentive_sweep"] = {t: r["accs_per_lr"] for t, r in att.items()}
    if data.dense and "patch_labels" in tr and "patch_labels" in va:
        dense = dense_probe(
            tr["patches"], tr["patch_labels"], va["patches"], va["patch_labels"], num_classes=SEG_CLASSES,
            lrs=settings.lrs, epochs=settings.epochs, seed=seed, device=device,
        )
        out["dense"] = {k: dense[k] for k in ("acc", "miou", "per_class_iou", "best_lr", "background_frac")}
    return out


def _aggregate(per_seed: list[dict[str, Any]], tasks: list[str]) -> dict[str, Any]:
    """Mean (and, over several seeds, standard deviation) of each probe number; details of the first seed."""
    first = per_seed[0]
    row: dict[str, Any] = {}
    for probe in ("linear", "attentive", "knn"):
        if probe not in first:
            continue
        stats = {t: _mean_std([s[probe][t] for s in per_seed]) for t in tasks}
        row[probe] = {t: m for t, (m, _) in stats.items()}
        if len(per_seed) > 1:
            row[f"{probe}_std"] = {t: sd for t, (_, sd) in stats.items()}
        if f"{probe}_lr" in first:
            row[f"{probe}_lr"] = first[f"{probe}_lr"]
            row[f"{probe}_sweep"] = first[f"{probe}_sweep"]
        if f"{probe}_epoch" in first:
            row[f"{probe}_epoch"] = first[f"{probe}_epoch"]
        row[f"{probe}_mean"] = statistics.fmean(row[probe].values()) if tasks else math.nan
    if "dense" in first:
        row["dense"] = dict(first["dense"])
        mious = [s["dense"]["miou"] for s in per_seed]
        row["dense"]["miou"], std = _mean_std(mious)
        if len(per_seed) > 1:
            row["dense"]["miou_std"] = std
    row["per_seed"] = [
        {"seed": s["seed"], **{p: s[p] for p in ("linear", "attentive", "knn") if p in s},
         **({"dense_miou": s["dense"]["miou"]} if "dense" in s else {})}
        for s in per_seed
    ]
    row["seeds"] = [s["seed"] for s in per_seed]
    return row


def _features(
    encoder: nn.Module, data: ProbeData, settings: ProbeSettings, device: torch.device, cache: FeatureCache | None,
    progress: bool, label: str, pool: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    key = encoder_fingerprint(encoder) if cache is not None else None
    out = []
    for split, ds in (("train", data.train), ("val", data.val)):
        out.append(extract_cached(
            encoder, ds, cache, batch_size=settings.batch_size, device=device, patch_tokens=True,
            num_workers=settings.num_workers, progress=progress, desc=f"{label} features ({split})",
            input_key=data.input_key, num_clips=settings.num_clips if data.input_key == "video" else 1, pool=pool,
            encoder_key=key,
        ))
    return out[0], out[1]


def evaluate_row(
    encoders: nn.Module | Callable[[int], nn.Module],
    data: ProbeData,
    settings: ProbeSettings,
    device: torch.device | str,
    cache: FeatureCache | None = None,
    progress: bool = True,
    label: str = "encoder",
    pool: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Every probe on one encoder (or one encoder per seed: pass ``seed -> encoder``), over the probe seeds.

    Returns:
        The row: ``linear``, ``attentive``, ``knn``, ``majority`` (``{task: acc}``, means over seeds),
        ``*_std`` (over several seeds), ``*_lr`` / ``*_sweep`` (first seed), ``*_mean`` (over tasks),
        ``dense`` (scenes), ``rankme``, ``feature_dim``, ``num_patches`` (tokens per view), ``n_train``,
        ``n_val``, ``skipped`` (``{"train": [...], "val": [...]}``), ``cache`` (hits), ``seconds``,
        ``per_seed``, ``seeds``.
    """
    device = torch.device(device)
    per_seed: list[dict[str, Any]] = []
    feature_seconds = probe_seconds = 0.0
    feats: tuple[dict[str, Any], dict[str, Any]] | None = None
    hits: list[bool] = []
    for seed in settings.seeds:
        if feats is None or not isinstance(encoders, nn.Module):
            start = time.perf_counter()
            encoder = encoders if isinstance(encoders, nn.Module) else encoders(seed)
            feats = _features(encoder, data, settings, device, cache, progress, label, pool)
            hits += [feats[0]["cache"]["hit"], feats[1]["cache"]["hit"]]
            feature_seconds += time.perf_counter() - start
        start = time.perf_counter()
        per_seed.append(_probe_one_seed(feats[0], feats[1], data, settings, seed, device))
        probe_seconds += time.perf_counter() - start
    assert feats is not None
    tr, va = feats
    row = _aggregate(per_seed, list(data.tasks))
    row["majority"] = {t: _majority_accuracy(tr["labels"][t], va["labels"][t]) for t in data.tasks}
    tokens = va["patches"].shape[-2]
    row.update({
        "rankme": rankme(va["pooled"]),
        "feature_dim": int(va["pooled"].shape[1]),
        "token_dim": int(va["patches"].shape[-1]),
        "num_patches": int(tokens),
        "n_train": int(tr["pooled"].shape[0]),
        "n_val": int(va["pooled"].shape[0]),
        "skipped": {"train": list(tr["skipped"]), "val": list(va["skipped"])},
        "cache": {"hits": sum(hits), "extractions": len(hits)},
        "seconds": {"features": feature_seconds, "probes": probe_seconds},
    })
    # Kept for the ceiling's own heads (val features and labels); dropped before the report is saved.
    row["_val"] = va
    return row


# ----------------------------------------------------------------------------- the report


def build_random_encoder(cfg: Config, seed: int = 0) -> nn.Module:
    """A randomly initialized encoder of ``cfg``'s architecture, seeded with ``seed + 12345``.

    The global RNG state is forked, so building the baseline does not shift the caller's random stream
    (the training loop may call :func:`evaluate` mid-run).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + RANDOM_INIT_SEED_OFFSET)
        return build_encoder(cfg)


def margin(pretrained: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """Per-task difference ``pretrained - reference`` of two rows (probe by probe)."""
    out: dict[str, Any] = {}
    for probe in ("linear", "attentive", "knn"):
        if probe in pretrained and probe in reference:
            out[probe] = {t: pretrained[probe][t] - reference[probe][t] for t in pretrained[probe]}
            out[f"{probe}_mean"] = pretrained[f"{probe}_mean"] - reference[f"{probe}_mean"]
    if "dense" in pretrained and "dense" in reference:
        out["dense"] = {k: pretrained["dense"][k] - reference["dense"][k] for k in ("acc", "miou")}
    out["rankme"] = pretrained["rankme"] - reference["rankme"]
    return out


def calibrate(report: dict[str, Any]) -> dict[str, Any]:
    """Per task: chance (majority class), the ceiling's best number, and whether the task measures nothing.

    A task measures nothing when the best of the ceiling's own heads and its linear and attentive probes
    is within :data:`CHANCE_STANDARD_ERRORS` standard errors (binomial, on the val size) of chance. Without a
    ceiling row nothing can be said (``measures_nothing`` is ``None``).
    """
    first = report["pretrained"]
    ceiling = report.get("ceiling")
    n = max(1, int(first["n_val"]))
    out = {}
    for task, chance in first["majority"].items():
        se = math.sqrt(max(chance * (1 - chance), 1.0 / n) / n)
        entry: dict[str, Any] = {"chance": chance, "threshold": chance + CHANCE_STANDARD_ERRORS * se}
        if ceiling is not None:
            best = max(
                [ceiling[p][task] for p in ("linear", "attentive") if p in ceiling]
                + [ceiling.get("heads", {}).get(task, -1.0)]
            )
            entry["ceiling_best"] = best
            entry["measures_nothing"] = best <= entry["threshold"]
        else:
            entry["measures_nothing"] = None
        out[task] = entry
    return out


def evaluate_probe_data(
    encoder: nn.Module,
    data: ProbeData,
    settings: ProbeSettings,
    device: torch.device | str,
    *,
    run_cfg: Config | None = None,
    random_baseline: bool = True,
    pixels: bool = True,
    ceiling: CeilingSpec | None = None,
    cache_root: str | os.PathLike | None = None,
    use_cache: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """The calibrated report of ``encoder`` on ``data`` (see the module docstring).

    Args:
        encoder: the frozen encoder (``VisionTransformer``).
        data: the probe data.
        settings: probe settings.
        device: where encoders and probes run.
        run_cfg: the training run's config, when known (arch name, ``model.rescale_init`` of the baseline).
        random_baseline: add the random-init row (one draw per seed) and ``margin``.
        pixels: add the raw-pixel row.
        ceiling: train (or read from the cache) the supervised ceiling with this spec; ``None``: no ceiling.
        cache_root: cache root for features and ceilings; default ``$OPENJEPA_CACHE`` or ``~/.cache/openjepa``.
        use_cache: cache features and the ceiling on disk.
        progress: progress bars on stderr.

    Returns:
        ``{"format", "config", "data", "pretrained", "random_init"?, "pixels"?, "ceiling"?, "margin"?,
        "margin_pixels"?, "calibration", "measures_nothing"}``; see ``docs/evaluation.md``.
    """
    device = torch.device(device)
    cache = FeatureCache(cache_root) if use_cache else None
    rescale_init = bool(run_cfg.model.rescale_init) if run_cfg is not None else False
    report: dict[str, Any] = {"format": REPORT_FORMAT}
    report["pretrained"] = evaluate_row(encoder, data, settings, device, cache, progress, "pretrained")
    if random_baseline:
        dim = getattr(encoder, "embed_dim", None)

        def random_init(seed: int) -> nn.Module:
            if run_cfg is not None:
                baseline = build_random_encoder(run_cfg, seed)
                if dim is not None and baseline.embed_dim != dim:
                    raise ValueError(
                        f"the encoder has width {dim} but cfg.model.arch={run_cfg.model.arch!r} builds width "
                        f"{baseline.embed_dim}: pass the config the encoder was trained with"
                    )
                if baseline.config() == encoder.config():  # type: ignore[operator]
                    return baseline
            return random_encoder_like(encoder, seed, rescale_init)  # type: ignore[arg-type]

        report["random_init"] = evaluate_row(random_init, data, settings, device, cache, progress, "random init")
    if pixels:
        pix = pixel_encoder_like(encoder, settings.pixel_size)
        report["pixels"] = evaluate_row(pix, data, settings, device, cache, progress, "raw pixels", pool=pix.pool)
    ceiling_model: Ceiling | None = None
    if ceiling is not None:
        ceiling_model = supervised_ceiling(
            encoder, data.ceiling_train, data.tasks, ceiling, device, cache_root=cache_root, use_cache=use_cache,
            num_workers=settings.num_workers, progress=progress, rescale_init=rescale_init,  # type: ignore[arg-type]
        )
        row = evaluate_row(ceiling_model.encoder, data, settings, device, cache, progress, "sup. ceiling")
        row["heads"] = ceiling_head_accuracy(ceiling_model, row["_val"])
        row["heads_mean"] = statistics.fmean(row["heads"].values()) if row["heads"] else math.nan
        row["training"] = {**ceiling_model.info, "cached": ceiling_model.cached}
        report["ceiling"] = row
    for name in ROW_LABELS:
        if name in report:
            report[name].pop("_val", None)
    if "random_init" in report:
        report["margin"] = margin(report["pretrained"], report["random_init"])
    if "pixels" in report:
        report["margin_pixels"] = margin(report["pretrained"], report["pixels"])
    report["calibration"] = calibrate(report)
    report["measures_nothing"] = [t for t, c in report["calibration"].items() if c["measures_nothing"]]
    first = report["pretrained"]
    report["data"] = {
        **data.description,
        "tasks": dict(data.tasks),
        "input": data.input_key,
        "n_train": first["n_train"],
        "n_val": first["n_val"],
        "skipped": first["skipped"],
        "key": _data_key(data),
    }
    report["config"] = {
        "arch": _arch_name(encoder, run_cfg),
        "image_size": encoder_image_size(encoder),
        "patch_size": int(getattr(encoder, "patch_size", 0)),
        "num_frames": int(getattr(encoder, "num_frames", 1)),
        "num_clips": settings.num_clips if data.input_key == "video" else 1,
        "data": data.name,
        "dataset_seed": run_cfg.train.seed if run_cfg is not None and data.name != "user" else None,
        "probe_seeds": list(settings.seeds),
        "probe_seed": settings.seeds[0],
        "train_size": first["n_train"],
        "val_size": first["n_val"],
        "probe_lrs": list(settings.lrs),
        "probe_epochs": settings.epochs,
        "knn_k": settings.knn_k,
        "attentive": (
            {"depth": settings.attentive_depth, "epochs": settings.attentive_epochs,
             "eval_every": settings.attentive_eval_every,
             "heads": settings.attentive_heads or default_heads(first["token_dim"])}
            if settings.attentive else None
        ),
        "pixel_size": settings.pixel_size if pixels else None,
        "ceiling": dataclasses.asdict(ceiling) if ceiling is not None else None,
    }
    if data.name == "scenes":
        report["config"]["max_objects"] = getattr(data.train, "max_objects", None)
    return report


def _data_key(data: ProbeData) -> str | None:
    """A hash of the probe data's content (equal keys: comparable reports)."""
    fps = [dataset_fingerprint(data.train), dataset_fingerprint(data.val)]
    return None if any(fp is None for fp in fps) else hash_json(fps)


def resolve_ceiling(
    cfg: Config,
    enabled: bool | None,
    steps: int | None,
    checkpoint_step: int | None,
    seed: int,
) -> CeilingSpec | None:
    """The ceiling's spec: on unless disabled, ``steps`` > ``eval.ceiling_steps`` > the checkpoint's step >
    :data:`DEFAULT_CEILING_STEPS`; batch ``data.batch_size x optim.accum_steps`` (the pretraining's per
    process), learning rate ``eval.ceiling_lr`` on ``eval.ceiling_schedule``, heads ``eval.ceiling_pool``, seed
    ``seed``."""
    on = cfg.eval.supervised_ceiling if enabled is None else enabled
    if not on:
        return None
    chosen = steps or int(cfg.eval.ceiling_steps) or checkpoint_step or DEFAULT_CEILING_STEPS
    return CeilingSpec(
        steps=int(chosen),
        batch_size=int(cfg.data.batch_size * cfg.optim.accum_steps),
        lr=float(cfg.eval.ceiling_lr),
        seed=seed,
        pool=str(cfg.eval.ceiling_pool),
        schedule=str(cfg.eval.ceiling_schedule),
    )


def _cache_args(cfg: Config, cache: str | os.PathLike | bool | None) -> tuple[str | os.PathLike | None, bool]:
    if cache is False:
        return None, False
    if cache is None or cache is True:
        return cfg.eval.cache, True
    return cache, True


def evaluate(
    encoder: nn.Module,
    cfg: Config,
    device: torch.device | str,
    random_baseline: bool | None = None,
    seed: int = 0,
    tasks: Sequence[str] | None = None,
    progress: bool = True,
    *,
    seeds: Sequence[int] | None = None,
    pixels: bool | None = None,
    ceiling: bool | None = None,
    ceiling_steps: int | None = None,
    checkpoint_step: int | None = None,
    cache: str | os.PathLike | bool | None = None,
    run_config: bool = True,
) -> dict[str, Any]:
    """The calibrated report of ``encoder`` on the built-in probe data (scenes or sprites).

    Args:
        encoder: the frozen encoder to evaluate (for JEPA methods, the EMA target encoder).
        cfg: the run's config (``eval.*``, ``data.scenes``, ``train.seed``; ``model`` builds the baseline).
        device: where encoders and probes run.
        random_baseline: add the random-init row; default ``eval.random_baseline``.
        seed: the probe seed when ``seeds`` is not given (and ``eval.seeds`` is the default).
        tasks: a subset of the tasks; all of them when omitted.
        progress: progress bars on stderr.
        seeds: probe seeds (mean ± std over them); default ``eval.seeds``.
        pixels: add the raw-pixel row; default ``eval.pixels``.
        ceiling: add the supervised ceiling; default ``eval.supervised_ceiling``.
        ceiling_steps: the ceiling's optimizer steps (see :func:`resolve_ceiling`).
        checkpoint_step: the pretraining's step count, when known.
        cache: cache root, ``False`` for no cache; default ``eval.cache`` or ``$OPENJEPA_CACHE``.
        run_config: ``cfg`` is the encoder's training config (``False`` for exported / official weights:
            the baseline is then built from the encoder's own description).

    Returns:
        See :func:`evaluate_probe_data`.
    """
    if seeds is None and tuple(cfg.eval.seeds) == EvalConfig().seeds:
        seeds = (seed,)
    settings = ProbeSettings.from_config(cfg, seeds)
    data = builtin_probe_data(cfg, encoder, tasks)
    return _evaluate_with_rows(
        encoder, data, settings, cfg, device, random_baseline, pixels, ceiling, ceiling_steps, checkpoint_step,
        cache, run_config, progress,
    )


def evaluate_user_data(
    encoder: nn.Module,
    train: str | os.PathLike,
    val: str | os.PathLike,
    cfg: Config,
    device: torch.device | str,
    random_baseline: bool | None = None,
    tasks: Sequence[str] | None = None,
    progress: bool = True,
    *,
    seeds: Sequence[int] | None = None,
    pixels: bool | None = None,
    ceiling: bool | None = None,
    ceiling_steps: int | None = None,
    checkpoint_step: int | None = None,
    cache: str | os.PathLike | bool | None = None,
    run_config: bool = True,
) -> dict[str, Any]:
    """The calibrated report of ``encoder`` on the user's labelled ``train`` / ``val`` data.

    ``train`` and ``val`` are any layout :mod:`openjepa.eval.userdata` reads; the other arguments are those
    of :func:`evaluate`. The ceiling trains on ``train``.
    """
    settings = ProbeSettings.from_config(cfg, seeds)
    data = user_probe_data(train, val, encoder, cfg, tasks)
    return _evaluate_with_rows(
        encoder, data, settings, cfg, device, random_baseline, pixels, ceiling, ceiling_steps, checkpoint_step,
        cache, run_config, progress,
    )


def _evaluate_with_rows(
    encoder: nn.Module,
    data: ProbeData,
    settings: ProbeSettings,
    cfg: Config,
    device: torch.device | str,
    random_baseline: bool | None,
    pixels: bool | None,
    ceiling: bool | None,
    ceiling_steps: int | None,
    checkpoint_step: int | None,
    cache: str | os.PathLike | bool | None,
    run_config: bool,
    progress: bool,
) -> dict[str, Any]:
    """:func:`evaluate_probe_data` with the reference rows chosen by the arguments, else by ``cfg.eval``."""
    root, use = _cache_args(cfg, cache)
    return evaluate_probe_data(
        encoder, data, settings, device,
        run_cfg=cfg if run_config else None,
        random_baseline=cfg.eval.random_baseline if random_baseline is None else random_baseline,
        pixels=bool(cfg.eval.pixels) if pixels is None else pixels,
        ceiling=resolve_ceiling(cfg, ceiling, ceiling_steps, checkpoint_step, settings.seeds[0]),
        cache_root=root, use_cache=use, progress=progress,
    )


def evaluate_encoder(
    encoder: nn.Module,
    cfg: Config,
    device: torch.device | str,
    seed: int = 0,
    tasks: Sequence[str] | None = None,
    progress: bool = True,
    cache: str | os.PathLike | bool | None = False,
) -> dict[str, Any]:
    """The probes of one encoder on the built-in probe data (one row, no references), probe seed ``seed``."""
    settings = ProbeSettings.from_config(cfg, (seed,))
    data = builtin_probe_data(cfg, encoder, tasks)
    root, use = _cache_args(cfg, cache)
    row = evaluate_row(encoder, data, settings, device, FeatureCache(root) if use else None, progress, "encoder")
    row.pop("_val", None)
    return row


# ----------------------------------------------------------------------------- formatting


def _pct(value: float | None, std: float | None, width: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-".rjust(width)
    text = f"{100 * value:.1f}"
    if std is not None:
        text += f"±{100 * std:.1f}"
    return text.rjust(width)


def _num(value: float | None, width: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-".rjust(width)
    return f"{value:.1f}".rjust(width)


@dataclass
class _Column:
    label: str  # group label
    row: dict[str, Any]
    probes: list[str]  # sub-columns: linear / attentive / knn / heads


_PROBE_HEAD = {"linear": "lin", "attentive": "att", "knn": "knn", "heads": "heads"}


def _columns(rows: list[tuple[str, dict[str, Any]]]) -> list[_Column]:
    cols = []
    for label, row in rows:
        probes = [p for p in ("linear", "attentive", "knn") if p in row]
        if "heads" in row:
            probes.append("heads")
        cols.append(_Column(label, row, probes))
    return cols


def _table(cols: list[_Column], tasks: list[str], majority: dict[str, float], notes: dict[str, str]) -> list[str]:
    """One line per task, one column group per encoder (fixed width)."""
    with_std = any(f"{p}_std" in c.row for c in cols for p in ("linear", "attentive", "knn"))
    width = 10 if with_std else 6
    task_w = max([len("task"), len("dense mIoU")] + [len(t) for t in tasks]) + 2
    lead = "".ljust(task_w) + "chance".rjust(7)

    def group_width(c: _Column) -> int:
        return max(len(c.label), len(c.probes) * (width + 1) - 1)

    top = lead + "".join(" | " + c.label.center(group_width(c)) for c in cols)
    sub = "task".ljust(task_w) + "".rjust(7) + "".join(
        " | " + " ".join(_PROBE_HEAD[p].rjust(width) for p in c.probes).rjust(group_width(c)) for c in cols
    )
    lines = [top, sub, "-" * len(sub)]

    def cells(c: _Column, values: dict[str, str]) -> str:
        return " | " + " ".join(values.get(p, "".rjust(width)) for p in c.probes).rjust(group_width(c))

    for task in tasks:
        text = task.ljust(task_w) + _pct(majority.get(task), None, 7)
        for c in cols:
            vals = {}
            for p in c.probes:
                value = c.row[p].get(task)
                std = c.row.get(f"{p}_std", {}).get(task) if p != "heads" else None
                vals[p] = _pct(value, std, width)
            text += cells(c, vals)
        if notes.get(task):
            text += "  " + notes[task]
        lines.append(text)
    lines.append("-" * len(sub))
    text = "mean".ljust(task_w) + _pct(statistics.fmean(majority.values()) if majority else None, None, 7)
    for c in cols:
        text += cells(c, {p: _pct(c.row.get(f"{p}_mean"), None, width) for p in c.probes})
    lines.append(text)
    if any("dense" in c.row for c in cols):
        text = "dense mIoU".ljust(task_w) + "".rjust(7)
        for c in cols:
            dense = c.row.get("dense")
            value = _pct(dense["miou"], dense.get("miou_std"), width) if dense else "-".rjust(width)
            text += cells(c, {"linear": value})
        lines.append(text)
    text = "RankMe".ljust(task_w) + "".rjust(7)
    for c in cols:
        text += cells(c, {"linear": _num(c.row.get("rankme"), width)})
    lines.append(text)
    return [line.rstrip() for line in lines]


def _skipped_line(report: dict[str, Any]) -> str | None:
    skipped = report.get("data", {}).get("skipped") or report.get("pretrained", {}).get("skipped")
    if not skipped:
        return None
    files = list(skipped.get("train", [])) + list(skipped.get("val", []))
    if not files:
        return None
    return (
        f"unreadable files skipped: {len(skipped.get('train', []))} train, {len(skipped.get('val', []))} val "
        f"(first: {files[0]}; all listed in the JSON report under data.skipped)"
    )


def _header_lines(report: dict[str, Any], first: dict[str, Any]) -> list[str]:
    lines = []
    cfg = report.get("config")
    data = report.get("data", {})
    if cfg:
        kind = data.get("input", "image")
        video = f", {cfg.get('num_frames')} frames x {cfg.get('num_clips')} clip(s)" if kind == "video" else ""
        name = {"scenes": "scenes", "sprites": "sprites", "user": f"{data.get('train')} -> {data.get('val')}"}.get(
            cfg.get("data", "scenes"), cfg.get("data", "scenes")
        )
        lines.append(
            f"frozen evaluation: {cfg['arch']}/{cfg['patch_size']} at {cfg['image_size']} px{video} on {name}: "
            f"{first['n_train']} train / {first['n_val']} val {kind}s, feature dim {first['feature_dim']}"
        )
        att = cfg.get("attentive")
        att_text = ""
        if att:
            every = att.get("eval_every") or 0
            best_of = f" (scored every {every}, best kept)" if every else ""
            att_text = (
                f"; attentive: depth {att['depth']}, {att['heads']} head(s), {att['epochs']} epochs{best_of}, same lrs"
            )
        lrs = ", ".join(f"{lr:g}" for lr in cfg["probe_lrs"])
        lines.append(
            f"probes: linear on mean-pooled tokens, best val top-1 over lrs {lrs} ({cfg['probe_epochs']} epochs)"
            f"{att_text}; k-NN: k={cfg['knn_k']}, cosine; in %"
        )
        seeds = cfg.get("probe_seeds", [cfg.get("probe_seed", 0)])
        refs = []
        if "random_init" in report:
            refs.append("random init: same architecture, fresh weights per seed")
        if "pixels" in report and cfg.get("pixel_size"):
            side = (cfg["image_size"] // max(1, cfg["patch_size"])) * cfg["pixel_size"]
            refs.append(f"raw pixels: input area-averaged to {side}x{side} px ({cfg['pixel_size']} px per token side)")
        if "ceiling" in report:
            tr = report["ceiling"].get("training", {})
            spec = tr.get("spec", {})
            how = "cached" if tr.get("cached") else f"trained in {tr.get('seconds', 0):.0f} s"
            refs.append(
                f"sup. ceiling: same architecture trained {spec.get('steps')} steps of {tr.get('batch_size')} on the "
                f"labels ({how}); 'heads' = its own heads"
            )
        if refs:
            lines.append("; ".join(refs))
        lines.append(
            f"probe seeds {' '.join(map(str, seeds))}" + (": mean±std over seeds" if len(seeds) > 1 else "")
        )
    ckpt = report.get("checkpoint")
    if ckpt:  # added by `openjepa eval`
        lines.append(f"checkpoint: {ckpt.get('path')} (step {ckpt.get('step')})")
    skipped = _skipped_line(report)
    if skipped:
        lines.append(skipped)
    return lines


def _notes(report: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    calib = report.get("calibration")
    if not calib:
        return {}, []
    notes = {t: "<- measures nothing" for t, c in calib.items() if c.get("measures_nothing")}
    footer = []
    if notes:
        footer.append(
            "measures nothing: even the supervised ceiling is within "
            f"{CHANCE_STANDARD_ERRORS:g} standard errors of chance there; the task says nothing about the encoder"
        )
    elif all(c.get("measures_nothing") is None for c in calib.values()):
        footer.append("no supervised ceiling: tasks are not calibrated (run without --no-ceiling to check them)")
    return notes, footer


def format_report(report: dict[str, Any]) -> str:
    """A fixed-width table of an :func:`evaluate` report (or of a single :func:`evaluate_encoder` row).

    One line per task (then the means, the dense mIoU on scenes and RankMe), one column group per encoder:
    pretrained, random init, raw pixels, supervised ceiling (with its own heads), each with the linear,
    attentive and k-NN accuracies; the majority-class accuracy as "chance"; a note on tasks that measure
    nothing. Accuracies in percent.
    """
    if "linear" in report:  # a bare evaluate_encoder row
        report = {"pretrained": report}
    first = report["pretrained"]
    rows = [(label, report[key]) for key, label in ROW_LABELS.items() if key in report]
    notes, footer = _notes(report)
    table = _table(_columns(rows), list(first["linear"]), first.get("majority", {}), notes)
    return "\n".join(_header_lines(report, first) + table + footer)


_COMPARABLE = ("image_size", "num_frames", "num_clips", "data", "train_size", "val_size", "probe_lrs",
               "probe_epochs", "knn_k", "dataset_seed", "attentive", "pixel_size")


def _merge_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± std over several runs' rows (e.g. one run per pretraining seed)."""
    if len(rows) == 1:
        return rows[0]
    tasks = list(rows[0]["linear"])
    out: dict[str, Any] = {"n_runs": len(rows)}
    for probe in ("linear", "attentive", "knn"):
        if all(probe in r for r in rows):
            stats = {t: _mean_std([r[probe][t] for r in rows]) for t in tasks}
            out[probe] = {t: m for t, (m, _) in stats.items()}
            out[f"{probe}_std"] = {t: s for t, (_, s) in stats.items()}
            out[f"{probe}_mean"] = statistics.fmean(out[probe].values())
    if all("dense" in r for r in rows):
        m, s = _mean_std([r["dense"]["miou"] for r in rows])
        out["dense"] = {"miou": m, "miou_std": s}
    out["rankme"] = statistics.fmean(r["rankme"] for r in rows)
    return out


def _setting(config: dict[str, Any], key: str) -> Any:
    """A report's probe setting ``key``, with what older reports leave out filled in by its default."""
    value = config.get(key)
    if key == "attentive" and isinstance(value, dict):
        value = {"eval_every": 0, **value}  # reports before eval.attentive_eval_every scored the last epoch
    return value


def format_comparison(reports: dict[str, dict[str, Any]], names: Sequence[str] | None = None) -> str:
    """Side-by-side table of several runs' reports: one column group per run, then the references.

    Args:
        reports: ``{key: report}`` (:func:`evaluate` / :func:`evaluate_user_data` reports, or older ones).
        names: a label per report, in order (default: the keys). Reports sharing a label are merged into one
            column group of mean ± std over them (e.g. one run per pretraining seed).

    The random-init, raw-pixel and ceiling groups come from the first report that has them. Runs must share
    the probe setup (data, sizes, probe settings), otherwise their numbers are not comparable: raises.
    """
    if not reports:
        raise ValueError("no reports to compare")
    keys = list(reports)
    labels = list(names) if names is not None else keys
    if len(labels) != len(keys):
        raise ValueError(f"{len(labels)} names for {len(keys)} reports")
    ref = reports[keys[0]].get("config", {})
    ref_data = reports[keys[0]].get("data", {}).get("key")
    for key in keys[1:]:
        other = reports[key].get("config", {})
        diff = [k for k in _COMPARABLE if _setting(other, k) != _setting(ref, k)]
        other_data = reports[key].get("data", {}).get("key")
        if ref_data and other_data and other_data != ref_data:
            diff.append("probe data (files or generator)")
        if diff:
            raise ValueError(f"{key} was evaluated with different {', '.join(diff)} than {keys[0]}: not comparable")
    groups: dict[str, list[dict[str, Any]]] = {}
    for key, label in zip(keys, labels, strict=True):
        groups.setdefault(label, []).append(reports[key]["pretrained"])
    rows = [(label, _merge_rows(rs)) for label, rs in groups.items()]
    first = reports[keys[0]]
    header = {k: first[k] for k in ("config", "data") if k in first}
    for name, label in list(ROW_LABELS.items())[1:]:
        found = next((r[name] for r in reports.values() if name in r), None)
        if found is not None:
            rows.append((label, found))
            header[name] = found
    notes, footer = _notes(next((r for r in reports.values() if "ceiling" in r), first))
    lines = _header_lines(header, first["pretrained"])
    if any(len(rs) > 1 for rs in groups.values()):
        lines.append("runs sharing a name: mean±std over the runs")
    table = _table(_columns(rows), list(first["pretrained"]["linear"]), first["pretrained"].get("majority", {}), notes)
    return "\n".join(lines + table + footer)


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
