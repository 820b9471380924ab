"""``openjepa theory ...``: critical times, Figure 2, the depth sweep, the order flip, simulations.

Handlers return an exit code. Inputs outside the theory's domain print ``openjepa: error: ...`` (naming
the flag and the fix) and return 2, without a traceback.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from openjepa.theory.model import InvalidParameterError

FLAG_NAMES = {
    "objective": "--objective",
    "depth": "--depth",
    "eps": "--eps",
    "lam": "--lam",
    "rho": "--rho",
    "p": "--p",
}

THEORY_EPILOG = """\
time convention: τ = L·t, where t = learning rate × gradient steps and L is the encoder depth
(the paper's time; every time printed here is τ unless labelled t).

examples:
  openjepa theory critical-time --objective jepa --depth 2 --eps 1e-3 --lam 1 --rho 0.7 --json
  openjepa theory critical-time --objective mae --depth 2 --eps 1e-3 --lam 1 --rho 0.7 --method series
  openjepa theory figure2 --out runs/theory
  openjepa theory depth-sweep --json
  openjepa theory order-flip
  openjepa theory simulate --objective jepa --init random --seed 0
"""


def _fail(message: str) -> int:
    print(f"openjepa: error: {message}", file=sys.stderr)
    return 2


def _guarded(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn the theory's domain errors into exit code 2 with a one-line message."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except InvalidParameterError as err:
            return _fail(str(err))

    return run


def _check_positive(value: float, flag: str, hint: str) -> None:
    if not math.isfinite(value) or value <= 0:
        raise InvalidParameterError(f"{flag} must be a finite number > 0 (got {value:g}); {hint}")


def _check_p(p: float) -> None:
    if not math.isfinite(p) or not 0 < p < 1:
        raise InvalidParameterError(
            f"--p must be strictly between 0 and 1 (got {p:g}): it is the fraction of each feature's own "
            "fixed point that counts as learned; use e.g. --p 0.5"
        )


def _parse_depths(text: str, flag: str = "--depths") -> list[int] | None:
    """``auto`` -> None; ``1,2,5`` or ``1-8`` (or a mix) -> the list."""
    if text.strip().lower() == "auto":
        return None
    depths: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                depths.extend(range(lo, hi + 1))
            else:
                depths.append(int(part))
    except ValueError:
        raise InvalidParameterError(
            f"{flag} must be 'auto', a comma list like 1,2,4 or a range like 1-8 (got {text!r})"
        ) from None
    if not depths or min(depths) < 1:
        raise InvalidParameterError(f"{flag}: every depth must be an integer >= 1 (got {text!r})")
    return depths


def _parse_pair(text: str) -> tuple[float, float]:
    try:
        lam, rho = (float(x) for x in text.replace(":", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LAM,RHO like 2,0.3 (got {text!r})") from None
    return lam, rho


def _parse_features(text: str) -> list[tuple[float, float]]:
    try:
        return [_parse_pair(part) for part in text.split(";") if part.strip()]
    except argparse.ArgumentTypeError as err:
        raise InvalidParameterError(f"--features: {err}; write e.g. --features '1,1;2,0.3'") from None


def _parse_floats(text: str, flag: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InvalidParameterError(f"{flag} must be a comma list of numbers (got {text!r})") from None


def _fmt(x: float | None, digits: int = 6) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return "inf"
    return f"{x:.{digits}g}"


def _dump(obj: Any) -> None:
    print(json.dumps(obj, indent=2, allow_nan=False))


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------------
# critical-time


@_guarded
def cmd_critical_time(args: argparse.Namespace) -> int:
    """Critical time of one feature."""
    from openjepa.theory.analysis import critical_time
    from openjepa.theory.closed_form import critical_time_series
    from openjepa.theory.model import check_feature

    check_feature(args.objective, args.depth, args.eps, args.lam, args.rho, args.p, names=FLAG_NAMES)
    if args.lr is not None:
        _check_positive(args.lr, "--lr", "it is the gradient-descent learning rate (method gd)")
    result = critical_time(args.objective, args.depth, args.eps, args.lam, args.rho, args.p, args.method, args.lr)
    if args.json:
        out = result.to_dict()
        out["time_convention"] = "tau = L * t, t = learning_rate * steps"
        _dump(out)
        return 0
    name = args.objective.upper()
    fp_formula = "ρ^L" if args.objective == "jepa" else "ρ^(L/(L+1))"
    print(
        f"{name}, L={args.depth}, ε={args.eps:g}, λ={args.lam:g}, ρ={args.rho:g}, p={args.p:g} (method: {args.method})"
    )
    print(f"  critical time   τ* = {_fmt(result.tau, 8)}   (paper time τ = L·t; t* = {_fmt(result.t, 8)})")
    if result.log10_tau > 300:
        print(f"  log10 τ* = {result.log10_tau:.6f}")
    print(
        f"  fixed point     w̄* = {fp_formula} = {_fmt(result.fixed_point)}   (V·W̄ -> "
        f"{_fmt(result.product_fixed_point)}); learned at w̄ = p·w̄* = {_fmt(result.level)}"
    )
    if args.method == "closed":
        series = critical_time_series(args.objective, args.depth, args.eps, args.lam, args.rho)
        label = "Theorem 4.5 sum" if args.objective == "jepa" else "leading term"
        print(f"  {label}: {_fmt(series, 8)}   (asymptotic as ε -> 0; independent of p)")
    if args.method == "gd":
        print(f"  gradient descent: lr = {result.lr:g}, {result.steps} steps")
    return 0


def _add_critical_time(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "critical-time",
        help="time at which one feature reaches a fraction p of its fixed point",
        description="Critical time τ* of one feature: the first τ = L·t with w̄(τ) >= p·w̄*, where w̄* is "
        "the feature's own fixed point (ρ^L for JEPA, ρ^(L/(L+1)) for MAE) and w̄(0) = ε.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""\
methods:
  closed   the exact solution (default; numerically robust over the whole valid domain)
  ode      numerical integration of the per-feature ODE (scipy)
  series   JEPA: Theorem 4.5's sum; MAE: the leading term L/((L-1) λ ε^((L-1)/L)) (asymptotic)
  gd       run gradient descent (aligned balanced init) and count steps; --lr sets the rate
  quad     quadrature of dτ = dw̄ / (dw̄/dτ) (a check)

examples:
  openjepa theory critical-time --objective jepa --depth 2 --eps 1e-3 --lam 1 --rho 0.7
      τ* ≈ 22643 (the Theorem 4.5 sum gives 22639)
  openjepa theory critical-time --objective mae --depth 2 --eps 1e-3 --lam 1 --rho 0.7 --json
      τ* ≈ 60.73 (leading term 63.25)
""",
    )
    p.add_argument("--objective", choices=("jepa", "mae"), required=True, help="training objective")
    p.add_argument("--depth", type=int, required=True, help="encoder depth L (>= 1)")
    p.add_argument("--eps", type=float, required=True, help="initial w̄ = ε; needs ε^(1/L) < ρ")
    p.add_argument("--lam", type=float, required=True, help="covariance λ = (Σyx)_ii > 0")
    p.add_argument("--rho", type=float, required=True, help="regression coefficient ρ = Σyx/Σxx > 0")
    p.add_argument("--p", type=float, default=0.5, help="fraction of the fixed point (default 0.5)")
    p.add_argument(
        "--method",
        choices=("closed", "ode", "series", "gd", "quad"),
        default="closed",
        help="how to compute it (default closed)",
    )
    p.add_argument("--lr", type=float, default=None, help="learning rate for --method gd (default: automatic)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=cmd_critical_time)


# --------------------------------------------------------------------------------------------------
# figure2


@_guarded
def cmd_figure2(args: argparse.Namespace) -> int:
    """Six-panel Figure 2 + CSV."""
    from openjepa.theory.figures import figure2_panels, plot_figure2

    _check_positive(args.eps, "--eps", "the initial w̄, e.g. 1e-3")
    _check_p(args.p)
    if args.depth < 1:
        raise InvalidParameterError(f"--depth must be an integer >= 1 (got {args.depth})")
    rho_min = min(rho for panel in figure2_panels() for _, rho in panel.features)
    if math.log(args.eps) / args.depth >= math.log(rho_min):
        raise InvalidParameterError(
            f"--eps {args.eps:g} is too large for Figure 2 at --depth {args.depth}: its noisiest curve has "
            f"ρ = {rho_min:g} and the theory needs eps^(1/L) < ρ; use --eps below {rho_min**args.depth:.4g} "
            "or a smaller --depth"
        )
    png, csv_path = plot_figure2(Path(args.out), depth=args.depth, eps=args.eps, p=args.p, names=FLAG_NAMES)
    print(f"wrote {png}")
    print(f"wrote {csv_path}")
    return 0


def _add_figure2(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "figure2",
        help="the paper's Figure 2: ODE solutions of both objectives (PNG + CSV)",
        description="Six panels of w̄(τ)/w̄* on a log time axis, top row JEPA, bottom row MAE: "
        "(a)/(d) vary λ at ρ = 1, (b)/(e) vary ρ at λ = 1, (c)/(f) higher λ with lower ρ.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  openjepa theory figure2 --out runs/theory   # writes figure2.png, figure2.csv\n",
    )
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--depth", type=int, default=5, help="encoder depth L (default 5)")
    p.add_argument("--eps", type=float, default=1e-3, help="initial w̄ (default 1e-3)")
    p.add_argument("--p", type=float, default=0.5, help="fraction marking the critical times (default 0.5)")
    p.set_defaults(handler=cmd_figure2)


# --------------------------------------------------------------------------------------------------
# depth-sweep


@_guarded
def cmd_depth_sweep(args: argparse.Namespace) -> int:
    """Depth table of t*(ρ_low)/t*(ρ_high)."""
    from openjepa.theory.analysis import auto_depths, depth_sweep

    _check_positive(args.eps, "--eps", "the initial w̄, e.g. 1e-3")
    _check_positive(args.lam, "--lam", "the covariance λ of both features")
    _check_positive(args.rho_low, "--rho-low", "the noisy feature's regression coefficient, e.g. 0.5")
    _check_positive(args.rho_high, "--rho-high", "the clean feature's regression coefficient, e.g. 1")
    _check_p(args.p)
    depths = _parse_depths(args.depths)
    if depths is None:
        depths = auto_depths(args.eps, (args.rho_low, args.rho_high), args.p, args.max_depth)
        if not depths:
            raise InvalidParameterError(
                f"no usable depth: --eps {args.eps:g} needs eps^(1/L) < --rho-low and eps < p·rho^L; lower --eps"
            )
    rows = depth_sweep(depths, args.eps, args.lam, args.rho_low, args.rho_high, args.p, args.method)
    if args.json:
        _dump(
            _json_safe(
                {
                    "eps": args.eps,
                    "lam": args.lam,
                    "rho_low": args.rho_low,
                    "rho_high": args.rho_high,
                    "p": args.p,
                    "method": args.method,
                    "time_convention": "tau = L * t",
                    "rows": rows,
                }
            )
        )
        return 0
    print(
        f"t*(ρ={args.rho_low:g}) / t*(ρ={args.rho_high:g}) at λ={args.lam:g}, ε={args.eps:g}, p={args.p:g} "
        f"({args.method}); > 1: the high-ρ feature is learned first"
    )
    print(
        f"{'L':>3}  {'JEPA ratio':>10}  {'MAE ratio':>9}  {'JEPA τ*(low)':>13}  {'JEPA τ*(high)':>13}  "
        f"{'MAE τ*(low)':>11}  {'MAE τ*(high)':>12}"
    )
    for r in rows:
        if r["note"] is not None:
            print(f"{r['depth']:>3}  skipped: {r['note']}")
            continue
        print(
            f"{r['depth']:>3}  {r['jepa_ratio']:>10.4f}  {r['mae_ratio']:>9.4f}  "
            f"{_fmt(r['jepa_tau_low']):>13}  {_fmt(r['jepa_tau_high']):>13}  "
            f"{_fmt(r['mae_tau_low']):>11}  {_fmt(r['mae_tau_high']):>12}"
        )
    return 0


def _add_depth_sweep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "depth-sweep",
        help="t*(ρ=0.5)/t*(ρ=1) of both objectives against depth",
        description="For two features with the same λ, the ratio of their critical times at each depth. "
        "JEPA's ratio grows with depth (deep JEPA learns high-ρ features first); MAE's stays near 1.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""\
--depths auto (default) keeps the depths 1..--max-depth where both features satisfy eps^(1/L) < rho and
start below the learned level (eps < p·rho^L).

examples:
  openjepa theory depth-sweep
  openjepa theory depth-sweep --eps 1e-6 --depths 1-16 --json
""",
    )
    p.add_argument("--depths", default="auto", help="auto, a list 1,2,4 or a range 1-8 (default auto)")
    p.add_argument("--max-depth", type=int, default=12, help="largest depth for --depths auto (default 12)")
    p.add_argument("--eps", type=float, default=1e-3, help="initial w̄ (default 1e-3)")
    p.add_argument("--lam", type=float, default=1.0, help="covariance of both features (default 1)")
    p.add_argument("--rho-low", type=float, default=0.5, help="ρ of the noisy feature (default 0.5)")
    p.add_argument("--rho-high", type=float, default=1.0, help="ρ of the clean feature (default 1)")
    p.add_argument("--p", type=float, default=0.5, help="fraction of the fixed point (default 0.5)")
    p.add_argument("--method", choices=("closed", "ode", "series"), default="closed", help="default closed")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=cmd_depth_sweep)


# --------------------------------------------------------------------------------------------------
# order-flip


@_guarded
def cmd_order_flip(args: argparse.Namespace) -> int:
    """Which of a clean / noisy pair each objective learns first, per depth."""
    from openjepa.theory.analysis import auto_depths, order_flip

    _check_positive(args.eps, "--eps", "the initial w̄, e.g. 1e-3")
    for flag, (lam, rho) in (("--a", args.a), ("--b", args.b)):
        _check_positive(lam, f"{flag} λ", "write --a LAM,RHO with LAM > 0")
        _check_positive(rho, f"{flag} ρ", "write --a LAM,RHO with RHO > 0")
    _check_p(args.p)
    depths = _parse_depths(args.depths)
    if depths is None:
        depths = auto_depths(args.eps, (args.a[1], args.b[1]), args.p, args.max_depth)
        if not depths:
            raise InvalidParameterError("no usable depth for these features: lower --eps")
    rows, flip = order_flip(depths, args.a, args.b, args.eps, args.p, args.method)
    if args.json:
        _dump(
            _json_safe(
                {
                    "a": {"lam": args.a[0], "rho": args.a[1]},
                    "b": {"lam": args.b[0], "rho": args.b[1]},
                    "eps": args.eps,
                    "p": args.p,
                    "method": args.method,
                    "time_convention": "tau = L * t",
                    "flip_depth": flip,
                    "rows": rows,
                }
            )
        )
        return 0
    print(
        f"A = (λ {args.a[0]:g}, ρ {args.a[1]:g}), B = (λ {args.b[0]:g}, ρ {args.b[1]:g}), ε={args.eps:g}, "
        f"p={args.p:g} ({args.method}); first = the feature whose critical time τ* is smaller"
    )
    print(
        f"{'L':>3}  {'JEPA first':>10}  {'MAE first':>9}  {'JEPA τ*(A)':>11}  {'JEPA τ*(B)':>11}  "
        f"{'MAE τ*(A)':>10}  {'MAE τ*(B)':>10}"
    )
    for r in rows:
        if r["note"] is not None:
            print(f"{r['depth']:>3}  skipped: {r['note']}")
            continue
        print(
            f"{r['depth']:>3}  {r['jepa_first']:>10}  {r['mae_first']:>9}  {_fmt(r['jepa_tau_a']):>11}  "
            f"{_fmt(r['jepa_tau_b']):>11}  {_fmt(r['mae_tau_a']):>10}  {_fmt(r['mae_tau_b']):>10}"
        )
    if flip is None:
        print("the two objectives learn the same feature first at every depth shown")
    else:
        print(f"first depth where JEPA and MAE learn different features first: L = {flip}")
    return 0


def _add_order_flip(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "order-flip",
        help="which of a clean / noisy feature pair each objective learns first, per depth",
        description="A clean low-covariance feature A against a noisy high-covariance feature B. MAE learns "
        "B first at every depth; JEPA switches to A once the encoder is deep enough.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""\
examples:
  openjepa theory order-flip                       # the spec's pair A = (1, 1), B = (2, 0.3), ε = 1e-3
  openjepa theory order-flip --a 1,0.9 --b 3,0.4 --eps 1e-4 --json
""",
    )
    p.add_argument(
        "--a", type=_parse_pair, default=(1.0, 1.0), metavar="LAM,RHO", help="feature A (default 1,1: clean)"
    )
    p.add_argument(
        "--b",
        type=_parse_pair,
        default=(2.0, 0.3),
        metavar="LAM,RHO",
        help="feature B (default 2,0.3: noisy, higher covariance)",
    )
    p.add_argument("--eps", type=float, default=1e-3, help="initial w̄ (default 1e-3)")
    p.add_argument("--depths", default="auto", help="auto, a list 1,2,4 or a range 1-8 (default auto)")
    p.add_argument("--max-depth", type=int, default=12, help="largest depth for --depths auto (default 12)")
    p.add_argument("--p", type=float, default=0.5, help="fraction of the fixed point (default 0.5)")
    p.add_argument("--method", choices=("closed", "ode", "series"), default="closed", help="default closed")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=cmd_order_flip)


# --------------------------------------------------------------------------------------------------
# simulate


@_guarded
def cmd_simulate(args: argparse.Namespace) -> int:
    """Full-matrix gradient descent against the theory."""
    import numpy as np

    from openjepa.theory.experiments import SimulationSpec, run_spec

    spec = SimulationSpec(
        objective=args.objective,
        depth=args.depth,
        eps=args.eps,
        lr=args.lr,
        steps=args.steps,
        init=args.init,
        unbalance=args.unbalance,
        target=args.target,
        ema_momentum=args.ema_momentum,
        seed=args.seed,
        data=args.data,
        features=_parse_features(args.features) if args.features else None,
        gamma=_parse_floats(args.gamma, "--gamma") if args.gamma else None,
        noise_var=_parse_floats(args.noise_var, "--noise-var") if args.noise_var else None,
        alpha=_parse_floats(args.alpha, "--alpha") if args.alpha else None,
        samples=args.samples,
        p=args.p,
        record_every=args.record_every,
        horizon=args.horizon,
    )
    report = run_spec(spec)
    if args.png:
        from openjepa.theory.figures import plot_simulation

        plot_simulation(report.result, np.array(report.lam), np.array(report.rho), Path(args.png))
    if args.json:
        _dump(_json_safe(report.to_dict()))
        return 0
    print(report.summary())
    if args.png:
        print(f"wrote {args.png}")
    return 0


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="full-matrix gradient descent (any init, EMA target, finite samples) against the theory",
        description="Run gradient descent of the deep linear JEPA or MAE on population or finite-sample "
        "moments and compare each feature's critical time with the exact aligned-init theory.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""\
features: --features 'LAM,RHO;LAM,RHO' (population moments), or a generative model:
  --data static  --gamma 1,1 --noise-var 0,1.5         λ = γ, ρ = γ/(γ+s²)
  --data dynamic --gamma 1,1 --noise-var 0,0 --alpha 0.9,0.5   λ = αγ, ρ = αγ/(γ+s²)
  add --samples N for full-batch gradient descent on N drawn pairs instead of the population.

examples:
  openjepa theory simulate --objective jepa --depth 3 --eps 0.01
  openjepa theory simulate --objective jepa --depth 3 --eps 0.01 --init random --seed 1 --json
  openjepa theory simulate --objective jepa --depth 3 --eps 0.01 --target ema --ema-momentum 0.99
  openjepa theory simulate --data static --gamma 1,2 --noise-var 0,4 --samples 2000 --png sim.png
""",
    )
    p.add_argument("--objective", choices=("jepa", "mae"), default="jepa", help="default jepa")
    p.add_argument("--depth", type=int, default=3, help="encoder depth L (default 3)")
    p.add_argument("--eps", type=float, default=1e-2, help="initial scale: layers start at ε^(1/L) (default 0.01)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: automatic, stable and accurate)")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="gradient steps (default: --horizon x the slowest theoretical critical time)",
    )
    p.add_argument(
        "--horizon",
        type=float,
        default=1.5,
        help="run length in units of the slowest theoretical critical time (default 1.5)",
    )
    p.add_argument(
        "--init",
        choices=("aligned", "random", "unbalanced"),
        default="aligned",
        help="aligned balanced (the theory), random Gaussian, or unbalanced predictor (default aligned)",
    )
    p.add_argument("--unbalance", type=float, default=4.0, help="unbalanced init: V(0) = κ ε^(1/L) I (default 4)")
    p.add_argument("--target", choices=("stopgrad", "ema"), default="stopgrad", help="JEPA target (default stopgrad)")
    p.add_argument("--ema-momentum", type=float, default=0.99, help="EMA momentum m (default 0.99)")
    p.add_argument("--seed", type=int, default=0, help="seed for random init and samples (default 0)")
    p.add_argument(
        "--data",
        choices=("population", "static", "dynamic"),
        default="population",
        help="where λ, ρ come from (default population with --features)",
    )
    p.add_argument(
        "--features",
        default=None,
        help="population features 'LAM,RHO;LAM,RHO' (default '1,1;1.4,0.4': clean vs noisy)",
    )
    p.add_argument("--gamma", default=None, help="static/dynamic: latent variances γ, comma list")
    p.add_argument("--noise-var", default=None, help="static/dynamic: noise variances s², comma list")
    p.add_argument("--alpha", default=None, help="dynamic: autocorrelations α in (0, 1], comma list")
    p.add_argument("--samples", type=int, default=None, help="static/dynamic: finite sample size (default: population)")
    p.add_argument("--p", type=float, default=0.5, help="fraction of the fixed point (default 0.5)")
    p.add_argument("--record-every", type=int, default=10, help="record w̄ every this many steps (default 10)")
    p.add_argument("--png", default=None, help="also plot w̄/w̄* against τ with the ODE curves")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=cmd_simulate)


# --------------------------------------------------------------------------------------------------


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``openjepa theory`` and its subcommands on the top-level subparsers."""
    theory = subparsers.add_parser(
        "theory",
        help="deep linear JEPA vs MAE: critical times, Figure 2, depth sweep, order flip, simulation",
        description="The deep linear theory of JEPA vs MAE (Littwin et al., NeurIPS 2024): JEPA learns "
        "high-influence (high-ρ) features first, MAE high-covariance (high-λ) ones.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=THEORY_EPILOG,
    )
    theory_sub = theory.add_subparsers(dest="theory_command", metavar="WHAT")
    _add_critical_time(theory_sub)
    _add_figure2(theory_sub)
    _add_depth_sweep(theory_sub)
    _add_order_flip(theory_sub)
    _add_simulate(theory_sub)


def main(argv: list[str] | None = None) -> int:
    """Run ``theory`` subcommands alone, without the rest of the CLI (``python -m openjepa.theory.cli``)."""
    parser = argparse.ArgumentParser(prog="openjepa", formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_parser(sub)
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    return int(handler(args))


if __name__ == "__main__":
    sys.exit(main())
