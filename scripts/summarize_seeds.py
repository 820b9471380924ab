"""Mean ± std over seeds of the probe reports of several runs, with the reference rows, as markdown.

    python scripts/summarize_seeds.py runs/exp --groups vjepa frames salt --probe attentive
    python scripts/summarize_seeds.py runs/exp --groups vjepa salt --probe linear --against vjepa
    python scripts/summarize_seeds.py runs/exp2 --groups vjepa frames --report eval-long.json --per-seed

A group ``NAME`` is every run folder ``NAME-s<seed>`` holding the report (``eval.json``, or ``--report``);
a run folder ``NAME`` that holds the report itself is a group of that one run (a one-seed ablation).
For each group the table shows its pretrained row and the reference rows of the same reports (random
init, raw pixels, supervised ceiling: each run's own, since they are drawn with the run's dataset seed),
then the margin of the pretrained row over random init, over raw pixels and (``--against``) over another
group, in units of the larger of the two rows' seed standard deviations (a margin above 3 is what the
issues ask for).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

ROWS = {"random_init": "random init", "pixels": "raw pixels", "ceiling": "sup. ceiling"}


def load_group(root: Path, name: str, report: str = "eval.json") -> list[dict]:
    """The reports (file ``report``) of runs ``root/name-s<seed>``, sorted by seed, or of ``root/name`` alone."""
    single = root / name / report
    if single.is_file():
        return [json.loads(single.read_text())]
    runs = [p for p in root.glob(f"{name}-s*") if re.fullmatch(rf"{re.escape(name)}-s\d+", p.name)]
    runs.sort(key=lambda p: int(p.name.rsplit("-s", 1)[1]))
    return [json.loads((p / report).read_text()) for p in runs if (p / report).is_file()]


def values(reports: list[dict], row: str, probe: str, task: str) -> list[float]:
    return [100 * r[row][probe][task] for r in reports if row in r and task in r[row][probe]]


def mean_std(xs: list[float]) -> tuple[float, float]:
    if not xs:
        return float("nan"), float("nan")
    return statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def cell(xs: list[float]) -> str:
    m, s = mean_std(xs)
    return "-" if m != m else (f"{m:.1f} ± {s:.1f}" if len(xs) > 1 else f"{m:.1f}")


def margin(a: list[float], b: list[float]) -> str:
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    if ma != ma or mb != mb:
        return "-"
    spread = max(sa, sb)
    sigmas = f" ({(ma - mb) / spread:+.1f}σ)" if spread > 0 else ""
    return f"{ma - mb:+.1f}{sigmas}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path)
    p.add_argument("--groups", nargs="+", required=True)
    p.add_argument("--probe", default="attentive", choices=["attentive", "linear", "knn"])
    p.add_argument("--against", help="a group whose pretrained row the margins are also taken against")
    p.add_argument("--report", default="eval.json", help="the report file in each run folder (default eval.json)")
    p.add_argument("--per-seed", action="store_true", help="also list each run's numbers, seed by seed")
    args = p.parse_args(argv)
    groups = {g: load_group(args.root, g, args.report) for g in args.groups}
    if not any(groups.values()):
        p.error(f"no {args.report} in any {args.root}/<group>-s<seed> or {args.root}/<group> folder of groups "
                f"{args.groups}")
    tasks = list(next(iter(r for rs in groups.values() for r in rs))["pretrained"][args.probe])
    print(f"{args.probe} probe, % (mean ± std over seeds; n = runs)\n")
    print("| row | n | " + " | ".join(tasks) + " |")
    print("|---|---|" + "---|" * len(tasks))
    for g, reports in groups.items():
        own = [cell(values(reports, "pretrained", args.probe, t)) for t in tasks]
        print(f"| {g} | {len(reports)} | " + " | ".join(own) + " |")
        for row, label in ROWS.items():
            print(f"| {g}: {label} | {len(reports)} | "
                  + " | ".join(cell(values(reports, row, args.probe, t)) for t in tasks) + " |")
    if args.per_seed:
        print("\nper seed (dataset seed of each report), pretrained / random init\n")
        print("| group | seed | " + " | ".join(tasks) + " |")
        print("|---|---|" + "---|" * len(tasks))
        for g, reports in groups.items():
            for r in reports:
                cells = [
                    f"{100 * r['pretrained'][args.probe][t]:.1f} / "
                    + (f"{100 * r['random_init'][args.probe][t]:.1f}" if "random_init" in r else "-")
                    for t in tasks
                ]
                print(f"| {g} | {r['config'].get('dataset_seed')} | " + " | ".join(cells) + " |")
    print("\nmargins of the pretrained rows (difference, and in units of the larger seed std)\n")
    print("| group | vs | " + " | ".join(tasks) + " |")
    print("|---|---|" + "---|" * len(tasks))
    for g, reports in groups.items():
        refs = {"random init": (reports, "random_init"), "raw pixels": (reports, "pixels")}
        if args.against and args.against != g and args.against in groups:
            refs[args.against] = (groups[args.against], "pretrained")
        for label, (other, row) in refs.items():
            print(f"| {g} | {label} | " + " | ".join(
                margin(values(reports, "pretrained", args.probe, t), values(other, row, args.probe, t)) for t in tasks
            ) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
