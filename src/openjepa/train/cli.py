"""Transitional: ``openjepa eval``, ``export``, ``compare`` handlers (moving to eval/ and checkpoints/)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_eval(sub: argparse._SubParsersAction) -> None:
    """Registers ``openjepa eval``."""
    p = sub.add_parser(
        "eval", help="frozen-feature probes of a checkpoint's encoder vs a random-init encoder",
        description=(
            "Linear probes (small learning-rate sweep, best validation accuracy per task), k-NN, a dense "
            "per-patch probe and RankMe on the scenes probe tasks, for the checkpoint's target encoder and a "
            "random-init encoder of the same architecture. Overrides (eval.train_size=4000 ...) apply to the "
            "checkpoint's stored config."
        ),
    )
    p.add_argument("checkpoint", help="checkpoint file or run folder")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="eval.* overrides")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.add_argument("--no-baseline", action="store_true", help="skip the random-init baseline row")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.set_defaults(handler=run_eval)


def evaluate_checkpoint(
    checkpoint: str | Path,
    json_path: str | Path | None = None,
    overrides: list[str] | None = None,
    baseline: bool | None = None,
    device_pref: str = "auto",
) -> str:
    """Evaluates a checkpoint, prints and returns the text table; writes JSON when asked."""
    from openjepa.checkpoints import read_encoder
    from openjepa.config import apply_overrides
    from openjepa.eval.report import evaluate, format_report, save_report_json
    from openjepa.runtime import pick_device

    loaded = read_encoder(checkpoint)
    encoder, cfg = loaded.encoder, loaded.config
    if cfg is None:
        raise ValueError(f"{checkpoint}: the scenes report needs a training run's config")
    apply_overrides(cfg, overrides or [])
    device = pick_device(device_pref, key="--device")
    report: dict[str, Any] = evaluate(encoder.to(device), cfg, device, random_baseline=baseline)
    report["checkpoint"] = {"path": str(checkpoint), "step": loaded.step}
    text = format_report(report)
    print(text)
    if json_path is not None:
        save_report_json(report, Path(json_path))
        print(f"[openjepa] report written to {json_path}", file=sys.stderr)
    return text


def run_eval(args: argparse.Namespace) -> int:
    """Handler of ``openjepa eval``."""
    evaluate_checkpoint(
        args.checkpoint, args.json, args.overrides, baseline=False if args.no_baseline else None,
        device_pref=args.device,
    )
    return 0


def add_compare(sub: argparse._SubParsersAction) -> None:
    """Registers ``openjepa compare``."""
    p = sub.add_parser(
        "compare", help="side-by-side probe table of several runs (their eval.json reports)",
        description="Reads RUN/eval.json (or the given JSON files) and prints one row per run plus the "
        "random-init baseline. Runs must have been evaluated with the same probe setup.",
    )
    p.add_argument("runs", nargs="+", help="run folders (holding eval.json) or report JSON files")
    p.add_argument("--names", nargs="+", help="row labels (default: the run folder names)")
    p.add_argument("--out", help="also write the table to this text file")
    p.set_defaults(handler=run_compare)


def run_compare(args: argparse.Namespace) -> int:
    """Handler of ``openjepa compare``."""
    from openjepa.eval.report import format_comparison

    names = args.names or [Path(r).stem if r.endswith(".json") else Path(r).name for r in args.runs]
    if len(names) != len(args.runs):
        raise ValueError(f"--names has {len(names)} labels for {len(args.runs)} runs")
    reports = {}
    for name, run in zip(names, args.runs):
        path = Path(run) / "eval.json" if Path(run).is_dir() else Path(run)
        if not path.is_file():
            raise FileNotFoundError(f"no evaluation report at {path}: run `openjepa eval {run} --json {path}` first")
        reports[name] = json.loads(path.read_text())
    text = format_comparison(reports)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0
