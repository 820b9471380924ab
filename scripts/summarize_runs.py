"""Tables (markdown) and plots (PNG) of the scenes experiments run by scripts/experiments.sh.

    python scripts/summarize_runs.py runs/exp --png-dir docs

Reads every ``RUN/eval.json`` and ``RUN/metrics.jsonl``; groups runs named ``<name>-s<seed>`` over seeds
(mean ± sample standard deviation); prints markdown tables of the probes, the ablations, the mask-scale
stability study and the final feature-prediction error; writes bar plots.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

TASKS = ["count", "largest_shape", "largest_color", "smallest_color", "leftmost_shape"]
COLUMNS = [*TASKS, "dense_mIoU", "knn_mean", "linear_mean", "rankme"]


def row_values(rep: dict) -> dict[str, float]:
    """The table's numbers (percent) from one encoder report."""
    out = {t: 100 * rep["linear"][t] for t in TASKS}
    out["dense_mIoU"] = 100 * rep["dense"]["miou"]
    out["knn_mean"] = 100 * rep["knn_mean"]
    out["linear_mean"] = 100 * rep["linear_mean"]
    out["rankme"] = rep["rankme"]  # effective rank of the features (collapse signal), not a percentage
    return out


def fmt(values: list[float], digits: int = 1) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def loss_curve(run: Path, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one logged metric (empty when the run has no log)."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        return [], []
    rows = [r for r in map(json.loads, path.read_text().splitlines()) if key in r]
    return [r["step"] for r in rows], [r[key] for r in rows]


def final_loss(curve: tuple[list[int], list[float]]) -> float | None:
    """Mean of the last three logged values (the feature-prediction error at the end)."""
    return statistics.mean(curve[1][-3:]) if curve[1] else None


def loss_plot(curves: dict[str, list[tuple[list[int], list[float]]]], out: Path) -> None:
    """Feature-prediction error over training, mean (line) and min-max (band) over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for name, runs in curves.items():
        n = min(len(steps) for steps, _ in runs)
        steps = np.array(runs[0][0][:n])
        vals = np.array([v[:n] for _, v in runs])
        ax.plot(steps, vals.mean(0), label=f"{name} ({len(runs)} seeds)")
        ax.fill_between(steps, vals.min(0), vals.max(0), alpha=0.25)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("prediction loss (smooth-L1)")
    ax.set_title("feature-prediction error on scenes (each method against its own EMA teacher)", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def table(rows: dict[str, list[dict[str, float]]], columns: list[str] = COLUMNS) -> str:
    lines = ["| encoder | n | " + " | ".join(columns) + " |", "|---" * (len(columns) + 2) + "|"]
    for name, reps in rows.items():
        cells = [fmt([r[c] for r in reps]) for c in columns]
        lines.append(f"| {name} | {len(reps)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bar_plot(rows: dict[str, list[dict[str, float]]], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cols = [*TASKS, "dense_mIoU"]
    x = np.arange(len(cols))
    width = 0.8 / max(len(rows), 1)
    fig, ax = plt.subplots(figsize=(11, 3.8))
    for i, (name, reps) in enumerate(rows.items()):
        means = [statistics.mean(r[c] for r in reps) for c in cols]
        errs = [statistics.stdev(r[c] for r in reps) if len(reps) > 1 else 0 for c in cols]
        ax.bar(x + i * width, means, width, yerr=errs, capsize=2, label=name)
    ax.set_xticks(x + width * (len(rows) - 1) / 2, cols, fontsize=8)
    ax.set_ylabel("val accuracy / mIoU (%)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="folder of run folders (runs/exp)")
    parser.add_argument("--png-dir", type=Path, help="where to write the plots")
    args = parser.parse_args(argv)
    runs = {p.parent.name: p.parent for p in sorted(args.root.glob("*/eval.json"))}
    if not runs:
        print(f"no */eval.json under {args.root}", file=sys.stderr)
        return 1
    reports = {name: json.loads((run / "eval.json").read_text()) for name, run in runs.items()}

    # Seeds: <method>-s<seed>
    seeds: dict[str, list[dict[str, float]]] = {}
    random_init: list[dict[str, float]] = []
    losses: dict[str, list[float]] = {}
    curves: dict[str, list[tuple[list[int], list[float]]]] = {}
    for name, rep in reports.items():
        m = re.fullmatch(r"(ijepa|tcjepa|clip)-s(\d+)", name)
        if not m:
            continue
        seeds.setdefault(m.group(1), []).append(row_values(rep["pretrained"]))
        if m.group(1) == "ijepa" and "random_init" in rep:
            random_init.append(row_values(rep["random_init"]))
        key = "loss_pred" if m.group(1) == "tcjepa" else "loss"
        curve = loss_curve(runs[name], key)
        if m.group(1) != "clip" and (v := final_loss(curve)) is not None:
            losses.setdefault(m.group(1), []).append(v)
            curves.setdefault(m.group(1), []).append(curve)
    labels = {"ijepa": "I-JEPA", "tcjepa": "TC-JEPA", "clip": "CLIP"}
    rows = {labels[k]: v for k, v in sorted(seeds.items(), key=lambda kv: list(labels).index(kv[0]))}
    if random_init:
        rows["random init"] = random_init
    if rows:
        print("## Probes over seeds (val %, mean ± std)\n")
        print(table(rows))
        if args.png_dir:
            bar_plot(rows, args.png_dir / "scenes_probes.png", "scenes probes, frozen encoders (mean ± std over seeds)")
    if losses:
        print("\n## Final feature-prediction error (smooth-L1 on layer-normed teacher features, last 3 logs)\n")
        for k, v in losses.items():
            print(f"- {labels[k]}: {fmt(v, 4)} (runs: {len(v)})")
        if args.png_dir:
            loss_plot({labels[k]: v for k, v in curves.items()}, args.png_dir / "scenes_prediction_error.png")

    ablations = {n: [row_values(r["pretrained"])] for n, r in reports.items() if n.startswith("tc-")}
    if ablations:
        if "tcjepa-s0" in reports:
            ablations = {"tcjepa-s0 (default)": [row_values(reports["tcjepa-s0"]["pretrained"])], **ablations}
        print("\n## TC-JEPA ablations (seed 0)\n")
        print(table(ablations))

    stability = {n: [row_values(r["pretrained"])] for n, r in reports.items() if re.search(r"-(small|large)-", n)}
    if stability:
        for base in ("ijepa-s0", "tcjepa-s0"):
            if base in reports:
                stability[f"{base} (default scales)"] = [row_values(reports[base]["pretrained"])]
        print("\n## Mask-scale stability (seed 0)\n")
        print(table(dict(sorted(stability.items()))))
        for n in sorted(stability):
            run = runs.get(n.split(" ")[0])
            if run is not None:
                key = "loss_pred" if n.startswith("tcjepa") else "loss"
                v = final_loss(loss_curve(run, key))
                print(f"- {n}: final prediction loss {v:.4f}" if v is not None else f"- {n}: no loss logged")
        if args.png_dir:
            bar_plot(stability, args.png_dir / "scenes_stability.png", "block-scale stability (seed 0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
