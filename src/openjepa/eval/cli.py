"""``openjepa eval``, ``openjepa features`` and ``openjepa compare``.

Each ``add_*`` function registers one subcommand; the handlers import torch lazily so that building the
parser (``openjepa --help``) stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

EVAL_HELP = """\
Frozen-feature probes of an encoder, calibrated by reference rows: a random-init encoder of the same
architecture, raw pixels, and a supervised ceiling (the same architecture trained on the probe labels
with as many steps as the pretraining; cached). Per task: a linear probe on mean-pooled tokens and an
attentive probe on all tokens (learning-rate sweep, best validation accuracy), and k-NN.

CHECKPOINT is anything openjepa.load_encoder reads: a run folder, a training checkpoint, an exported
.safetensors (+ .json), or an official I-JEPA / V-JEPA checkpoint.

Without --train/--val the probes run on the built-in data (scenes for image encoders, sprites for video
encoders). With them, on your labelled data: a folder with one subfolder per class, a JSONL
({"image": path, "label": ...}, or "video"), a CSV (header with image/video/path and label) or a list file
(`path label` per line). Features are cached (--cache), so re-running is cheap.

examples:
  openjepa eval runs/demo --json runs/demo/eval.json
  openjepa eval runs/demo --train data/train --val data/val --seeds 0 1 2
  openjepa eval encoder.safetensors --train train.csv --val val.csv --no-ceiling
  openjepa eval runs/demo eval.train_size=4000 eval.probe_epochs=50
"""

FEATURES_HELP = """\
Writes an encoder's frozen features of DATA to OUT (.safetensors): `features` [N, D] (mean over patch
tokens), with --tokens also `tokens` [N, K, D] (video: [N, clips, K, D], float16), `labels.<task>` [N]
when DATA is labelled, and `index` [N] (the row's position in DATA's listing). OUT's .json sidecar lists
the files (in row order), the skipped unreadable files, the class names and the checkpoint.
DATA: a folder (class subfolders, or flat for unlabelled files), a JSONL, a CSV or a list file.
"""


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where encoders and probes run")
    p.add_argument("--which", default="target", choices=["target", "encoder"],
                   help="for official checkpoints: the EMA target encoder (default) or the context encoder")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_eval(sub: argparse._SubParsersAction) -> None:
    """Registers ``openjepa eval``."""
    p = sub.add_parser(
        "eval", help="calibrated frozen-feature probes (built-in tasks or your labelled data)",
        description=EVAL_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="run folder, checkpoint, exported .safetensors or official checkpoint")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="eval.* / data.* overrides")
    p.add_argument("--train", metavar="DATA", help="your labelled training data (with --val)")
    p.add_argument("--val", metavar="DATA", help="your labelled validation data (with --train)")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.add_argument("--tasks", nargs="+", metavar="TASK", help="evaluate only these tasks")
    p.add_argument("--seeds", nargs="+", type=int, metavar="SEED", help="probe seeds; mean ± std over them")
    p.add_argument("--no-baseline", action="store_true", help="skip the random-init row")
    p.add_argument("--no-pixels", action="store_true", help="skip the raw-pixel row")
    p.add_argument("--no-ceiling", action="store_true", help="skip the supervised ceiling (it costs a training run)")
    p.add_argument("--ceiling-steps", type=int, metavar="N",
                   help="the ceiling's optimizer steps (default: the checkpoint's step, else 1000)")
    p.add_argument("--no-attentive", action="store_true", help="skip the attentive probe")
    p.add_argument("--cache", metavar="DIR", help="cache folder (default $OPENJEPA_CACHE or ~/.cache/openjepa)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write cached features / ceilings")
    _add_common(p)
    p.set_defaults(handler=run_eval)


def _eval_config(loaded: Any) -> tuple[Any, bool]:
    """The config evaluation reads: the run's, or defaults sized to the encoder (exported / official files)."""
    from openjepa.config import Config

    if loaded.config is not None:
        return loaded.config, True
    cfg = Config()
    enc = loaded.encoder
    cfg.data.image_size = int(enc.img_size[0])
    cfg.data.num_frames = int(enc.num_frames)
    cfg.model.patch_size = int(enc.patch_size)
    return cfg, False


def evaluate_checkpoint(
    checkpoint: str | Path,
    json_path: str | Path | None = None,
    overrides: list[str] | None = None,
    baseline: bool | None = None,
    device_pref: str = "auto",
    *,
    train: str | None = None,
    val: str | None = None,
    seeds: list[int] | None = None,
    tasks: list[str] | None = None,
    pixels: bool | None = None,
    ceiling: bool | None = None,
    ceiling_steps: int | None = None,
    attentive: bool | None = None,
    cache: str | Path | bool | None = None,
    which: str = "target",
    progress: bool = True,
) -> str:
    """Evaluates a checkpoint's encoder, prints and returns the text table; writes JSON when asked.

    Args:
        checkpoint: anything :func:`openjepa.checkpoints.read_encoder` reads.
        json_path: also write the report there.
        overrides: ``key=value`` settings (``eval.*`` and the rest of the config).
        baseline: the random-init row; default ``eval.random_baseline``.
        device_pref: ``auto``, ``cpu`` or ``cuda``.
        train, val: the user's labelled data (both or neither); default the built-in probe data.
        seeds, tasks, pixels, ceiling, ceiling_steps, cache: see :func:`openjepa.eval.report.evaluate`.
        attentive: run the attentive probe; default ``eval.attentive``.
        which: ``target`` or ``encoder`` (official checkpoints).
        progress: progress bars on stderr.
    """
    from openjepa.checkpoints import read_encoder
    from openjepa.config import apply_overrides
    from openjepa.errors import ConfigError
    from openjepa.eval.report import evaluate, evaluate_user_data, format_report, save_report_json
    from openjepa.runtime import configure_threads, pick_device

    if (train is None) != (val is None):
        raise ConfigError("give both --train DATA and --val DATA (or neither, for the built-in probe tasks)")
    loaded = read_encoder(checkpoint, which=which)
    cfg, is_run = _eval_config(loaded)
    apply_overrides(cfg, list(overrides or []))
    if attentive is not None:
        cfg.eval.attentive = attentive
    device = pick_device(device_pref, key="--device")
    if device.type == "cpu":
        configure_threads(cfg.eval.num_workers)
    kwargs: dict[str, Any] = {
        "random_baseline": baseline, "tasks": tasks, "progress": progress, "seeds": seeds, "pixels": pixels,
        "ceiling": ceiling, "ceiling_steps": ceiling_steps, "checkpoint_step": loaded.step, "cache": cache,
        "run_config": is_run,
    }
    encoder = loaded.encoder.to(device)
    if train is not None:
        report = evaluate_user_data(encoder, train, val, cfg, device, **kwargs)  # type: ignore[arg-type]
    else:
        report = evaluate(encoder, cfg, device, **kwargs)
    report["checkpoint"] = {
        "path": str(checkpoint), "file": str(loaded.path), "step": loaded.step, "source": loaded.source
    }
    text = format_report(report)
    print(text)
    if json_path is not None:
        save_report_json(report, Path(json_path))
        print(f"[openjepa] report written to {json_path}", file=sys.stderr)
    return text


def run_eval(args: argparse.Namespace) -> int:
    """Handler of ``openjepa eval``."""
    evaluate_checkpoint(
        args.checkpoint, args.json, args.overrides,
        baseline=False if args.no_baseline else None,
        device_pref=args.device,
        train=args.train, val=args.val, seeds=args.seeds, tasks=args.tasks,
        pixels=False if args.no_pixels else None,
        ceiling=False if args.no_ceiling else None,
        ceiling_steps=args.ceiling_steps,
        attentive=False if args.no_attentive else None,
        cache=False if args.no_cache else args.cache,
        which=args.which,
        progress=not args.quiet,
    )
    return 0


# ----------------------------------------------------------------------------- features


def add_features(sub: argparse._SubParsersAction) -> None:
    """Registers ``openjepa features``."""
    p = sub.add_parser(
        "features", help="write an encoder's frozen features of your data to .safetensors",
        description=FEATURES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="run folder, checkpoint, exported .safetensors or official checkpoint")
    p.add_argument("data", help="folder, JSONL, CSV or list file")
    p.add_argument("--out", required=True, help="output file, must end in .safetensors")
    p.add_argument("--tokens", action="store_true", help="also write the patch tokens (float16)")
    p.add_argument("--batch-size", type=int, default=64, help="inputs per forward pass (default 64)")
    p.add_argument("--num-clips", type=int, default=1, help="video: clips per video, features averaged (default 1)")
    p.add_argument("--frame-step", type=int, default=4, help="video: take every n-th frame (default 4)")
    p.add_argument("--workers", type=int, default=0, help="data loader workers (default 0)")
    _add_common(p)
    p.set_defaults(handler=run_features)


def run_features(args: argparse.Namespace) -> int:
    """Handler of ``openjepa features``."""
    from openjepa.checkpoints import read_encoder
    from openjepa.eval.features import extract_features, input_key_of, write_features_file
    from openjepa.eval.userdata import open_user_data
    from openjepa.runtime import configure_threads, pick_device

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise ValueError(f"--out {out}: the features file name must end in .safetensors")
    loaded = read_encoder(args.checkpoint, which=args.which)
    encoder = loaded.encoder
    key = input_key_of(encoder)
    dataset = open_user_data(args.data, key, num_frames=int(encoder.num_frames), frame_step=args.frame_step)
    device = pick_device(args.device, key="--device")
    if device.type == "cpu":
        configure_threads(args.workers)
    feats = extract_features(
        encoder, dataset, batch_size=args.batch_size, device=device, patch_tokens=args.tokens,
        num_workers=args.workers, progress=not args.quiet, desc="features", input_key=key,
        num_clips=args.num_clips if key == "video" else 1,
    )
    meta = {
        "checkpoint": {"path": str(args.checkpoint), "step": loaded.step, "source": loaded.source},
        "data": str(args.data),
        "input": key,
        "num_clips": args.num_clips if key == "video" else 1,
        "classes": {t: [str(c) for c in v] for t, v in dataset.classes.items()},
    }
    weights, sidecar = write_features_file(feats, out, meta)
    print(json.dumps({
        "features": str(weights), "files": str(sidecar), "rows": int(feats["pooled"].shape[0]),
        "skipped": len(feats["skipped"]),
    }))
    if feats["skipped"]:
        print(f"[openjepa] skipped {len(feats['skipped'])} unreadable file(s), e.g. {feats['skipped'][0]}; "
              f"listed in {sidecar}", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------- compare


def add_compare(sub: argparse._SubParsersAction) -> None:
    """Registers ``openjepa compare``."""
    p = sub.add_parser(
        "compare", help="side-by-side probe table of several runs (their eval.json reports)",
        description="Reads RUN/eval.json (or the given JSON files) and prints one column group per run plus "
        "the reference rows (random init, raw pixels, supervised ceiling) of the first report that has them. "
        "Runs given the same --names label are merged into mean ± std (e.g. one run per seed). Runs must have "
        "been evaluated with the same probe setup.",
    )
    p.add_argument("runs", nargs="+", help="run folders (holding eval.json) or report JSON files")
    p.add_argument("--names", nargs="+", help="column labels (default: the run folder names); repeat a label to "
                   "average runs")
    p.add_argument("--out", help="also write the table to this text file")
    p.set_defaults(handler=run_compare)


def run_compare(args: argparse.Namespace) -> int:
    """Handler of ``openjepa compare``."""
    from openjepa.eval.report import format_comparison

    names = args.names or [Path(r).stem if r.endswith(".json") else Path(r).name for r in args.runs]
    if len(names) != len(args.runs):
        raise ValueError(f"--names has {len(names)} labels for {len(args.runs)} runs")
    reports = {}
    for i, run in enumerate(args.runs):
        path = Path(run) / "eval.json" if Path(run).is_dir() else Path(run)
        if not path.is_file():
            raise FileNotFoundError(f"no evaluation report at {path}: run `openjepa eval {run} --json {path}` first")
        try:
            reports[f"{i}:{run}"] = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not a JSON report ({err}); re-run `openjepa eval ... --json {path}`") from None
    text = format_comparison(reports, names)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0
