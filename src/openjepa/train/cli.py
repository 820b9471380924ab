"""``openjepa pretrain``, ``openjepa eval`` and ``openjepa export``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

PRETRAIN_HELP = """\
Pretrain an encoder with the method of CONFIG (YAML). Settings can be overridden as key=value
(dotted keys, YAML values), e.g. optim.lr=5e-4 data.batch_size=32 mask.mode=faithful.

Runs as one process, or under torchrun as one rank of a DDP job:
  torchrun --nproc_per_node=8 -m openjepa pretrain configs/ijepa/vith14-in1k.yaml data.path=/data/in1k/train

The run folder (--out) receives config.yaml, metrics.jsonl, tensorboard/ (when installed),
checkpoint-latest.pt (+ periodic ones), training_curves.png and, after evaluation, eval.json / eval.txt.
"""


def add_pretrain(sub: argparse._SubParsersAction) -> None:
    """Registers ``openjepa pretrain``."""
    p = sub.add_parser(
        "pretrain", help="pretrain an encoder (I-JEPA, ...) from a YAML config",
        description=PRETRAIN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="YAML config, e.g. configs/ijepa/demo.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument("--out", help="run folder (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from checkpoint-latest.pt")
    p.add_argument("--overwrite", action="store_true", help="start again in an --out folder that holds a run")
    p.add_argument("--no-eval", action="store_true", help="skip the probe evaluation after training")
    p.set_defaults(handler=run_pretrain)


def run_pretrain(args: argparse.Namespace) -> int:
    """Handler of ``openjepa pretrain``."""
    import os

    from openjepa.config import load_config
    from openjepa.train.loop import train

    cfg = load_config(args.config, args.overrides)
    out = Path(args.out or Path("runs") / Path(args.config).stem)
    result = train(cfg, out, resume=args.resume, overwrite=args.overwrite)
    is_main = int(os.environ.get("RANK", "0")) == 0
    if is_main and cfg.eval.after_pretrain and not args.no_eval and result.checkpoint is not None:
        report = evaluate_checkpoint(result.checkpoint, json_path=out / "eval.json")
        (out / "eval.txt").write_text(report + "\n")
    return 0


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
    from openjepa.config import _apply, _nest, parse_override
    from openjepa.eval.report import evaluate, format_report, save_report_json
    from openjepa.train.checkpoint import load_eval_encoder
    from openjepa.train.dist import pick_device

    encoder, cfg, state = load_eval_encoder(checkpoint)
    for text in overrides or []:
        key, value = parse_override(text)
        _apply(cfg, _nest(key, value), "", "command line")
    device = pick_device(device_pref)
    report: dict[str, Any] = evaluate(encoder.to(device), cfg, device, random_baseline=baseline)
    report["checkpoint"] = {"path": str(checkpoint), "step": int(state["step"])}
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


def add_export(sub: argparse._SubParsersAction) -> None:
    """Registers ``openjepa export``."""
    p = sub.add_parser(
        "export", help="write a checkpoint's target encoder to safetensors (+ JSON model config)",
        description="Writes the evaluation (EMA target) encoder to FILE.safetensors and FILE.json beside it.",
    )
    p.add_argument("checkpoint", help="checkpoint file or run folder")
    p.add_argument("--out", required=True, help="output file, must end in .safetensors")
    p.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    """Handler of ``openjepa export``."""
    from openjepa.train.checkpoint import export_encoder

    weights, config = export_encoder(args.checkpoint, args.out)
    print(json.dumps({"weights": str(weights), "config": str(config)}))
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
