"""Does a run's final training loss predict its probe accuracy? SALT's claim, checked across runs.

    python scripts/loss_vs_probe.py runs/exp/salt-s0 runs/exp/salt-s1 runs/exp/salt-from-tiny ...

For each run folder (with ``metrics.jsonl`` and an ``eval.json`` report) it reads: the final training loss
(mean of the last ``--tail`` logged losses), the encoder's RankMe (from the report), the loss of the frozen
teacher it learned from (the same tail of the teacher run's ``metrics.jsonl``, when ``teacher.checkpoint``
in the run's ``config.yaml`` names a run folder), and the mean attentive-probe accuracy over the report's
tasks. It prints one row per run, then the R² (and the slope's sign) of a least-squares line predicting
the probe accuracy from each of the three. With a handful of runs an R² is a weak statement: the row
count is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import yaml

from openjepa.train.logger import read_metrics


def tail_loss(metrics: Path, tail: int) -> float:
    """Mean of the last ``tail`` logged training losses of a run (a resumed run's repeated steps once)."""
    losses = [float(rec["loss"]) for rec in read_metrics(metrics) if "loss" in rec]
    if not losses:
        raise SystemExit(f"{metrics}: no logged loss")
    return statistics.fmean(losses[-tail:])


def teacher_loss(run: Path, tail: int) -> float | None:
    """The final loss of the run's frozen teacher, when its checkpoint is a run folder with metrics."""
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    path = (cfg.get("teacher") or {}).get("checkpoint")
    if not path:
        return None
    folder = Path(path)
    folder = folder if folder.is_dir() else folder.parent
    metrics = folder / "metrics.jsonl"
    return tail_loss(metrics, tail) if metrics.is_file() else None


def r_squared(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """R² and slope of the least-squares line y = a + b x (nan for a constant x or y)."""
    try:
        return statistics.correlation(xs, ys) ** 2, statistics.linear_regression(xs, ys).slope
    except statistics.StatisticsError:
        return float("nan"), float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--tail", type=int, default=4, help="logged losses averaged for the final loss")
    p.add_argument("--probe", default="attentive", choices=["attentive", "linear", "knn"])
    args = p.parse_args(argv)
    rows = []
    for run in args.runs:
        if not (run / "eval.json").is_file():
            print(f"skipped {run}: no eval.json", file=sys.stderr)
            continue
        report = json.loads((run / "eval.json").read_text())
        pre = report["pretrained"]
        rows.append({
            "run": run.name,
            "loss": tail_loss(run / "metrics.jsonl", args.tail),
            "teacher_loss": teacher_loss(run, args.tail),
            "rankme": pre["rankme"],
            "probe": 100 * pre[f"{args.probe}_mean"],
        })
    print(f"| run | final loss | teacher's final loss | RankMe | {args.probe} probe, mean % |")
    print("|---|---|---|---|---|")
    for r in rows:
        t = "-" if r["teacher_loss"] is None else f"{r['teacher_loss']:.4f}"
        print(f"| {r['run']} | {r['loss']:.4f} | {t} | {r['rankme']:.1f} | {r['probe']:.1f} |")
    print(f"\nR² of a line predicting the probe accuracy ({len(rows)} runs)\n")
    print("| predictor | runs | R² | slope sign |")
    print("|---|---|---|---|")
    for key, label in (("loss", "final loss"), ("teacher_loss", "teacher's final loss"), ("rankme", "RankMe")):
        pairs = [(r[key], r["probe"]) for r in rows if r[key] is not None]
        if len(pairs) < 3:
            print(f"| {label} | {len(pairs)} | - | - |")
            continue
        r2, slope = r_squared([x for x, _ in pairs], [y for _, y in pairs])
        sign = "-" if slope != slope else ("+" if slope > 0 else "-" if slope < 0 else "0")
        print(f"| {label} | {len(pairs)} | {r2:.2f} | {sign} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
