"""Training-curve figure (loss, RankMe, learning rate) saved beside every run."""

from __future__ import annotations

from pathlib import Path

from openjepa.train.logger import read_metrics


def plot_training_curves(metrics_path: Path, out_png: Path) -> Path | None:
    """Draws loss, RankMe and learning rate against the step; returns the PNG path (None without data)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    if not records:
        return None
    panels = [("loss", "training loss"), ("rankme", "RankMe (target encoder)"), ("lr", "learning rate")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2))
    for ax, (key, title) in zip(axes, panels):
        pts = [(r["step"], r[key]) for r in records if key in r]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="." if len(xs) < 30 else None)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
