"""Figures: the paper's Figure 2 (ODE solutions of both objectives) and gradient-descent runs.

matplotlib is imported inside the plotting functions with the Agg backend, so importing this module (and
``openjepa --help``) stays fast and works without a display.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from openjepa.theory.closed_form import critical_time_closed
from openjepa.theory.model import check_feature, fixed_point
from openjepa.theory.odes import solve_trajectory
from openjepa.theory.simulate import SimulationResult


@dataclass(frozen=True)
class Panel:
    """One panel of Figure 2: an objective and a list of features (λ, ρ).

    Attributes:
        key: panel letter.
        objective: ``"jepa"`` or ``"mae"``.
        title: what the panel varies.
        features: (λ, ρ) per curve.
    """

    key: str
    objective: str
    title: str
    features: tuple[tuple[float, float], ...]


# (c)/(f): λ increases while ρ decreases. At L = 5, ε = 1e-3, τ*_JEPA(λ=1, ρ) grows by ×1.11, ×1.37,
# ×2.30 from ρ = 1 to 0.8, 0.6, 0.4; λ grows more slowly than that, so JEPA learns in order of ρ while
# MAE, which scales as 1/λ, learns in order of λ.
VARY_LAM = ((1.0, 1.0), (2.0, 1.0), (3.0, 1.0), (4.0, 1.0))
VARY_RHO = ((1.0, 1.0), (1.0, 0.8), (1.0, 0.6), (1.0, 0.4))
ANTI = ((1.0, 1.0), (1.05, 0.8), (1.15, 0.6), (1.5, 0.4))


def figure2_panels() -> list[Panel]:
    """The six panels: top row JEPA (a, b, c), bottom row MAE (d, e, f)."""
    panels = []
    for row, objective in enumerate(("jepa", "mae")):
        for col, (title, feats) in enumerate(
            (("vary λ at ρ = 1", VARY_LAM), ("vary ρ at λ = 1", VARY_RHO), ("higher λ, lower ρ", ANTI))
        ):
            panels.append(Panel("abcdef"[3 * row + col], objective, title, feats))
    return panels


def figure2_curves(
    depth: int = 5,
    eps: float = 1e-3,
    p: float = 0.5,
    points: int = 400,
    names: Mapping[str, str] | None = None,
) -> list[dict[str, object]]:
    """Numerical ODE solutions for every curve of Figure 2.

    The time grid of a panel is log-spaced from 1/30 of its earliest critical time to 4 times its latest,
    which covers each curve's plateau, transition and saturation.

    Returns:
        One dict per curve: panel, objective, lam, rho, fixed_point, critical_tau (closed form), and the
        arrays ``tau`` and ``wbar``.
    """
    curves: list[dict[str, object]] = []
    for panel in figure2_panels():
        for lam, rho in panel.features:
            check_feature(panel.objective, depth, eps, lam, rho, p, names=names)
        crit = [critical_time_closed(panel.objective, depth, eps, lam, rho, p) for lam, rho in panel.features]
        lo, hi = max(min(crit) / 30, 1e-6), max(max(crit) * 4, 1e-5)
        taus = np.concatenate([[0.0], np.geomspace(lo, hi, points - 1)])
        for (lam, rho), tau_star in zip(panel.features, crit, strict=True):
            wbar = solve_trajectory(panel.objective, depth, eps, lam, rho, taus)
            curves.append(
                {
                    "panel": panel.key,
                    "objective": panel.objective,
                    "title": panel.title,
                    "lam": lam,
                    "rho": rho,
                    "fixed_point": fixed_point(panel.objective, depth, rho),
                    "critical_tau": tau_star,
                    "tau": taus,
                    "wbar": wbar,
                }
            )
    return curves


def write_curves_csv(curves: list[dict[str, object]], path: Path, depth: int, eps: float) -> None:
    """One row per (curve, time): panel, objective, depth, eps, lam, rho, tau, wbar, wbar/w̄*."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["panel", "objective", "depth", "eps", "lam", "rho", "tau", "wbar", "wbar_over_fixed_point"])
        for c in curves:
            w_star = float(c["fixed_point"])  # type: ignore[arg-type]
            for tau, wbar in zip(c["tau"], c["wbar"], strict=True):  # type: ignore[call-overload]
                writer.writerow(
                    [
                        c["panel"],
                        c["objective"],
                        depth,
                        f"{eps:.6g}",
                        c["lam"],
                        c["rho"],
                        f"{tau:.8g}",
                        f"{wbar:.8g}",
                        f"{wbar / w_star:.8g}",
                    ]
                )


def plot_figure2(
    out_dir: Path, depth: int = 5, eps: float = 1e-3, p: float = 0.5, names: Mapping[str, str] | None = None
) -> tuple[Path, Path]:
    """Draw Figure 2 (six panels, w̄(τ)/w̄* on a log time axis) and write its curves as CSV.

    Args:
        out_dir: folder for ``figure2.png`` and ``figure2.csv`` (created if needed).
        depth: encoder depth L of every curve.
        eps: initial w̄ of every curve.
        p: fraction of the fixed point marked as the critical time.
        names: display names of the parameters in error messages (the command line passes its flags).

    Returns:
        (png path, csv path).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    curves = figure2_curves(depth, eps, p, names=names)
    fig, axes = plt.subplots(2, 3, figsize=(13, 7), sharey=True)
    for ax, panel in zip(axes.flat, figure2_panels(), strict=True):
        mine = [c for c in curves if c["panel"] == panel.key]
        colors = plt.cm.viridis(np.linspace(0.0, 0.85, len(mine)))
        for color, c in zip(colors, mine, strict=True):
            tau, wbar = np.asarray(c["tau"]), np.asarray(c["wbar"])
            ax.plot(
                tau[1:],
                wbar[1:] / float(c["fixed_point"]),
                color=color,  # type: ignore[arg-type]
                label=f"λ={c['lam']:g}, ρ={c['rho']:g}",
            )
            ax.axvline(float(c["critical_tau"]), color=color, lw=0.8, ls=":")  # type: ignore[arg-type]
        ax.set_xscale("log")
        ax.axhline(p, color="0.7", lw=0.6)
        ax.set_title(f"({panel.key}) {panel.objective.upper()}: {panel.title}")
        ax.set_xlabel("τ = L·t")
        ax.legend(fontsize=8, loc="upper left")
    for ax in axes[:, 0]:
        ax.set_ylabel("w̄(τ) / w̄*")
    fig.suptitle(
        f"Deep linear JEPA vs MAE, per-feature ODEs (L = {depth}, ε = {eps:g}); dotted: critical time at p = {p:g}"
    )
    fig.tight_layout()
    png = out_dir / "figure2.png"
    csv_path = out_dir / "figure2.csv"
    fig.savefig(png, dpi=120)
    plt.close(fig)
    write_curves_csv(curves, csv_path, depth, eps)
    return png, csv_path


def plot_simulation(result: SimulationResult, lam: np.ndarray, rho: np.ndarray, path: Path) -> Path:
    """Gradient-descent w̄_i(τ)/w̄*_i (solid) against the aligned-init ODE solutions (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = result.config
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.cm.viridis(np.linspace(0.0, 0.85, result.wbar.shape[1]))
    positive = result.tau > 0
    for i, color in enumerate(colors):
        ax.plot(
            result.tau[positive],
            result.wbar[positive, i] / result.fixed_points[i],
            color=color,
            label=f"λ={lam[i]:g}, ρ={rho[i]:g}",
        )
        try:
            ode = solve_trajectory(
                cfg.objective, cfg.depth, cfg.eps, float(lam[i]), float(rho[i]), result.tau[positive]
            )
            ax.plot(result.tau[positive], ode / result.fixed_points[i], color=color, ls="--", lw=0.9)
        except ValueError:
            pass  # outside the theory's domain (ε^{1/L} >= ρ): no ODE curve to compare with
    ax.set_xscale("log")
    ax.set_xlabel("τ = L·lr·steps")
    ax.set_ylabel("w̄ / w̄*")
    extra = f", EMA m={cfg.ema_momentum:g}" if cfg.target == "ema" else ""
    ax.set_title(f"{cfg.objective.upper()} L={cfg.depth}, ε={cfg.eps:g}, init={cfg.init}{extra}; dashed: ODE")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
