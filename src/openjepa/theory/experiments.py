"""Gradient-descent experiments compared with the theory (what ``openjepa theory simulate`` runs).

A :class:`SimulationSpec` names the features (directly as (λ, ρ), or through the static / dynamic
generative model, with population or finite-sample moments), the model (objective, depth, ε, init,
target) and the optimizer. :func:`run_spec` runs full-matrix gradient descent and sets every feature's
measured critical time beside the exact aligned-init theory.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from openjepa.theory.closed_form import critical_time_closed
from openjepa.theory.model import (
    DynamicSequence,
    InvalidParameterError,
    Moments,
    StaticViews,
    check_depth,
    check_feature,
    check_fraction,
    check_objective,
    empirical_moments,
)
from openjepa.theory.odes import solve_trajectory
from openjepa.theory.simulate import SimulationConfig, SimulationResult, simulate

# A clean feature and a noisy, higher-covariance one. At the default L = 3, ε = 0.01 the theory says JEPA
# learns A first (τ* 1783 vs 2115) and MAE learns B first (31.0 vs 21.3), and a run takes ~2 s.
DEFAULT_FEATURES = ((1.0, 1.0), (1.4, 0.4))
MAX_STEPS = 3_000_000  # ~1.5 minutes of numpy on one core; beyond, ask for a larger ε or lr


@dataclass
class SimulationSpec:
    """One experiment. ``None`` fields take automatic values.

    Attributes:
        objective: ``"jepa"`` or ``"mae"``.
        depth: encoder depth L.
        eps: initial scale (layers start at ε^{1/L}).
        lr: learning rate (default: 0.02 / the fastest linear rate among the features).
        steps: gradient steps (default: 1.5 × the slowest theoretical critical time).
        init: ``"aligned"``, ``"random"`` or ``"unbalanced"``.
        unbalance: κ of the unbalanced init.
        target: ``"stopgrad"`` or ``"ema"``.
        ema_momentum: EMA momentum.
        seed: seed of the random init and of the samples.
        data: ``"population"`` (``features``), ``"static"`` or ``"dynamic"`` (``gamma``, ``noise_var``,
            ``alpha``).
        features: (λ, ρ) pairs for ``data="population"``.
        gamma: latent variances (static / dynamic).
        noise_var: noise variances (static / dynamic).
        alpha: autocorrelations (dynamic).
        samples: sample size; ``None`` uses the population moments of the generative model.
        p: fraction of the fixed point for critical times.
        record_every: steps between recorded points.
        horizon: run length (when ``steps`` is None) in units of the slowest theoretical critical time.
    """

    objective: str = "jepa"
    depth: int = 3
    eps: float = 1e-2
    lr: float | None = None
    steps: int | None = None
    init: str = "aligned"
    unbalance: float = 4.0
    target: str = "stopgrad"
    ema_momentum: float = 0.99
    seed: int = 0
    data: str = "population"
    features: list[tuple[float, float]] | None = None
    gamma: list[float] | None = None
    noise_var: list[float] | None = None
    alpha: list[float] | None = None
    samples: int | None = None
    p: float = 0.5
    record_every: int = 10
    horizon: float = 1.5


@dataclass
class SimulationReport:
    """Measured against predicted, per feature.

    Attributes:
        spec: the experiment (with the automatic values filled in).
        lam: population λ per feature.
        rho: population ρ per feature.
        tau_theory: exact aligned-init critical time per feature.
        tau_theory_sample: the same with λ, ρ read from the diagonal of the moments actually used (NaN
            where those leave the theory's domain); equal to ``tau_theory`` for population moments. The gap
            between it and ``tau_gd`` is what the off-diagonal coupling does.
        tau_gd: measured critical time per feature (NaN: never reached p w̄* in the run).
        final_over_fixed: w̄_i at the end of the run over the theoretical w̄*_i.
        max_dev_from_ode: max over the run of |w̄_GD − w̄_ODE| / w̄* per feature (the ODE of the aligned
            init, started at ε).
        max_abs_dev_from_ode: max over the run of |w̄_GD − w̄_ODE| per feature.
        sample_lam: λ read from the diagonal of the moments used (differs from ``lam`` for finite samples).
        sample_rho: ρ likewise.
        offdiag: largest off-diagonal entry of Σxx and Σyx relative to their diagonals (0: decoupled).
        result: the raw run.
    """

    spec: SimulationSpec
    lam: list[float]
    rho: list[float]
    tau_theory: list[float]
    tau_theory_sample: list[float]
    tau_gd: list[float]
    final_over_fixed: list[float]
    max_dev_from_ode: list[float]
    max_abs_dev_from_ode: list[float]
    sample_lam: list[float]
    sample_rho: list[float]
    offdiag: float
    result: SimulationResult = field(repr=False)

    @property
    def order_theory(self) -> list[int]:
        """Feature indices by theoretical critical time."""
        return [int(i) for i in np.argsort(self.tau_theory, kind="stable")]

    @property
    def order_gd(self) -> list[int]:
        """Indices of the learned features by measured critical time (never-learned ones left out)."""
        return self.result.learning_order()

    @property
    def never_learned(self) -> list[int]:
        """Features that never reached p w̄* during the run."""
        return [int(i) for i in np.flatnonzero(np.isnan(self.result.critical_tau))]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready summary (NaN / inf are left for the caller to map to null)."""
        rel = [
            (g - t) / t if t > 0 and math.isfinite(g) else math.nan
            for g, t in zip(self.tau_gd, self.tau_theory, strict=True)
        ]
        return {
            "spec": asdict(self.spec),
            "time_convention": "tau = L * lr * steps",
            "features": [
                {
                    "lam": lam,
                    "rho": rho,
                    "fixed_point": float(fp),
                    "tau_theory": tt,
                    "tau_gd": tg,
                    "rel_error": r,
                    "final_over_fixed": ff,
                    "max_dev_from_ode": dev,
                    "max_abs_dev_from_ode": adev,
                    "sample_lam": sl,
                    "sample_rho": sr,
                    "tau_theory_sample": ts,
                }
                for lam, rho, fp, tt, tg, r, ff, dev, adev, sl, sr, ts in zip(
                    self.lam,
                    self.rho,
                    self.result.fixed_points,
                    self.tau_theory,
                    self.tau_gd,
                    rel,
                    self.final_over_fixed,
                    self.max_dev_from_ode,
                    self.max_abs_dev_from_ode,
                    self.sample_lam,
                    self.sample_rho,
                    self.tau_theory_sample,
                    strict=True,
                )
            ],
            "order_theory": self.order_theory,
            "order_gd": self.order_gd,
            "never_learned": self.never_learned,
            "same_order": self.order_theory == self.order_gd,
            "offdiag": self.offdiag,
        }

    def summary(self) -> str:
        """A short readable table."""
        s = self.spec
        head = (
            f"{s.objective.upper()} L={s.depth} ε={s.eps:g} init={s.init} target={s.target}"
            + (f" (m={s.ema_momentum:g})" if s.target == "ema" else "")
            + f" data={s.data}"
            + (f" n={s.samples}" if s.samples else "")
            + f"  lr={s.lr:g} steps={s.steps}  (τ = L·lr·steps)"
        )
        lines = [
            head,
            f"{'i':>2} {'λ':>6} {'ρ':>6} {'τ* theory':>11} {'τ* GD':>11} {'rel err':>8} "
            f"{'end w̄/w̄*':>9} {'max|Δw̄|':>8} {'max|Δ|/w̄*':>10}",
        ]
        for i, (lam, rho, tt, tg, ff, adev, dev) in enumerate(
            zip(
                self.lam,
                self.rho,
                self.tau_theory,
                self.tau_gd,
                self.final_over_fixed,
                self.max_abs_dev_from_ode,
                self.max_dev_from_ode,
                strict=True,
            )
        ):
            rel = f"{(tg - tt) / tt:+.2%}" if tt > 0 and math.isfinite(tg) else "-"
            gd = f"{tg:.5g}" if math.isfinite(tg) else "never"
            lines.append(
                f"{i:>2} {lam:>6.3g} {rho:>6.3g} {tt:>11.5g} {gd:>11} {rel:>8} {ff:>9.4f} {adev:>8.4f} {dev:>10.4f}"
            )
        never = f", never learned {self.never_learned}" if self.never_learned else ""
        lines.append(
            f"learning order: theory {self.order_theory}, gradient descent {self.order_gd}{never}"
            + ("" if self.order_theory == self.order_gd else "  (differs)")
        )
        if self.offdiag > 0:
            sample = ", ".join(f"{t:.5g}" for t in self.tau_theory_sample)
            lines.append(
                f"theory at the sample's diagonal λ, ρ: τ* = [{sample}]; largest off-diagonal moment / "
                f"diagonal: {self.offdiag:.3g} (features coupled)"
            )
        return "\n".join(lines)


def _features_and_moments(spec: SimulationSpec) -> tuple[np.ndarray, np.ndarray, Moments]:
    rng = np.random.default_rng(spec.seed + 1_000_003)  # samples independent of the init's stream
    if spec.data == "population":
        if spec.samples is not None:
            raise InvalidParameterError("--samples needs a generative model: use --data static or --data dynamic")
        feats = list(spec.features) if spec.features else list(DEFAULT_FEATURES)
        lam = np.array([f[0] for f in feats], dtype=np.float64)
        rho = np.array([f[1] for f in feats], dtype=np.float64)
        for i, (l_i, r_i) in enumerate(zip(lam, rho, strict=True)):
            if not (l_i > 0 and r_i > 0 and math.isfinite(l_i) and math.isfinite(r_i)):
                raise InvalidParameterError(f"--features: feature {i} needs λ > 0 and ρ > 0 (got {l_i:g}, {r_i:g})")
        return lam, rho, Moments.from_features(lam, rho)
    if spec.data not in ("static", "dynamic"):
        raise InvalidParameterError(f"--data must be population, static or dynamic (got {spec.data!r})")
    if spec.gamma is None:
        raise InvalidParameterError(f"--data {spec.data} needs --gamma (latent variances, e.g. --gamma 1,1)")
    gamma = np.asarray(spec.gamma, dtype=np.float64)
    noise = np.asarray(spec.noise_var if spec.noise_var is not None else [0.0] * gamma.size, dtype=np.float64)
    if noise.size != gamma.size:
        raise InvalidParameterError("--noise-var needs one value per --gamma value")
    if np.any(gamma <= 0) or np.any(noise < 0):
        raise InvalidParameterError("--gamma values must be > 0 and --noise-var values >= 0")
    model: StaticViews | DynamicSequence
    if spec.data == "static":
        model = StaticViews(gamma, noise)
    else:
        alpha = np.asarray(spec.alpha if spec.alpha is not None else [0.9] * gamma.size, dtype=np.float64)
        if alpha.size != gamma.size or np.any(alpha <= 0) or np.any(alpha > 1):
            raise InvalidParameterError("--alpha needs one value in (0, 1] per --gamma value")
        model = DynamicSequence(gamma, noise, alpha)
    lam, rho = model.lam_rho()
    if spec.samples is None:
        return lam, rho, model.moments()
    if spec.samples < 1:
        raise InvalidParameterError(f"--samples must be >= 1 (got {spec.samples})")
    x, y = model.sample(spec.samples, rng)
    return lam, rho, empirical_moments(x, y)


def _fast_rate(objective: str, depth: int, lam: float, rho: float) -> float:
    # Largest eigenvalue of the gradient's Jacobian at the fixed point (see simulate.default_gd_lr).
    if objective == "jepa":
        return lam * rho ** (2 * depth - 1)
    return lam * (depth + 1) * rho ** ((depth - 1) / (depth + 1))


def run_spec(spec: SimulationSpec) -> SimulationReport:
    """Run one experiment and compare it with the theory.

    Raises:
        InvalidParameterError: a bad input, or a run that would need more than ``MAX_STEPS`` steps.
    """
    check_objective(spec.objective, {"objective": "--objective"})
    check_depth(spec.depth, {"depth": "--depth"})
    check_fraction(spec.p, {"p": "--p"})
    if not (spec.eps > 0 and math.isfinite(spec.eps)):
        raise InvalidParameterError(f"--eps must be > 0 (got {spec.eps:g})")
    lam, rho, moments = _features_and_moments(spec)
    for i, (l_i, r_i) in enumerate(zip(lam, rho, strict=True)):
        try:
            check_feature(
                spec.objective,
                spec.depth,
                spec.eps,
                float(l_i),
                float(r_i),
                spec.p,
                names={"eps": "--eps", "rho": f"ρ of feature {i}", "depth": "--depth"},
            )
        except InvalidParameterError as err:
            raise InvalidParameterError(f"feature {i} (λ={l_i:g}, ρ={r_i:g}): {err}") from None
    tau_theory = [
        critical_time_closed(spec.objective, spec.depth, spec.eps, float(l_i), float(r_i), spec.p)
        for l_i, r_i in zip(lam, rho, strict=True)
    ]
    if spec.lr is None:
        # 0.02 / (fastest rate): GD tracks the ODE to about 1% of w̄* during the sharpest transition.
        spec.lr = 0.02 / max(
            _fast_rate(spec.objective, spec.depth, float(l_i), float(r_i)) for l_i, r_i in zip(lam, rho, strict=True)
        )
    if not (spec.lr > 0 and math.isfinite(spec.lr)):
        raise InvalidParameterError(f"--lr must be > 0 (got {spec.lr:g})")
    if spec.steps is None:
        if not (spec.horizon > 0 and math.isfinite(spec.horizon)):
            raise InvalidParameterError(f"--horizon must be > 0 (got {spec.horizon:g})")
        spec.steps = max(100, math.ceil(spec.horizon * max(tau_theory) / (spec.depth * spec.lr)))
    if spec.steps > MAX_STEPS:
        raise InvalidParameterError(
            f"this run needs {spec.steps} gradient steps (> {MAX_STEPS}); use a larger --eps (shorter "
            "plateau), a larger --lr, or set --steps explicitly"
        )
    config = SimulationConfig(
        objective=spec.objective,
        depth=spec.depth,
        eps=spec.eps,
        lr=spec.lr,
        steps=spec.steps,
        init=spec.init,
        unbalance=spec.unbalance,
        target=spec.target,
        ema_momentum=spec.ema_momentum,
        seed=spec.seed,
        record_every=spec.record_every,
        p=spec.p,
    )
    result = simulate(moments, config, rho=rho)
    w_star = result.fixed_points
    devs, abs_devs = [], []
    for i, (l_i, r_i) in enumerate(zip(lam, rho, strict=True)):
        ode = solve_trajectory(spec.objective, spec.depth, spec.eps, float(l_i), float(r_i), result.tau)
        abs_devs.append(float(np.max(np.abs(result.wbar[:, i] - ode))))
        devs.append(abs_devs[-1] / w_star[i])
    sample_lam, sample_rho = moments.feature_params()
    tau_sample = []
    for l_i, r_i in zip(sample_lam, sample_rho, strict=True):
        try:
            tau_sample.append(
                critical_time_closed(spec.objective, spec.depth, spec.eps, float(l_i), float(r_i), spec.p)
            )
        except InvalidParameterError:
            tau_sample.append(math.nan)  # a sample so noisy that ε^{1/L} >= ρ̂ (or ρ̂ <= 0)
    off = 0.0
    for mat in (moments.sxx, moments.syx):
        diag = np.abs(np.diag(mat))
        scale = np.sqrt(np.outer(diag, diag))
        off = max(off, float(np.max(np.abs(mat - np.diag(np.diag(mat))) / scale)))
    return SimulationReport(
        spec=spec,
        lam=lam.tolist(),
        rho=rho.tolist(),
        tau_theory=tau_theory,
        tau_theory_sample=tau_sample,
        tau_gd=result.critical_tau.tolist(),
        final_over_fixed=(result.wbar[-1] / w_star).tolist(),
        max_dev_from_ode=devs,
        max_abs_dev_from_ode=abs_devs,
        sample_lam=sample_lam.tolist(),
        sample_rho=sample_rho.tolist(),
        offdiag=off,
        result=result,
    )
