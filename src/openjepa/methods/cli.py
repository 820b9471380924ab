"""``openjepa flops``: the training compute of a config, per optimizer step and for the whole run.

The count follows :mod:`openjepa.methods.flops` (trained networks ``6·N·D``, teacher forwards ``2·N·D``) on
real batches of the config's pipeline: mask sizes are random, so the per-step numbers are averaged over
steps (32 by default), with the standard error of that mean: one step's cost varies by tens of percent with
its masks (the 4-step mean on the conv-stem `scenes` I-JEPA recipe was 20 % below what the run logged). It
is what a run of that config logs as ``flops`` in ``metrics.jsonl`` and what ``train.flops_budget``
compares against.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from openjepa.methods.flops import PARTS, total

__all__ = ["FlopsReport", "add_flops", "count_flops", "format_flops"]


@dataclass
class FlopsReport:
    """The compute of one config.

    Attributes:
        method: ``cfg.method``.
        per_step: mean FLOPs per optimizer step (global batch, every process) by part.
        steps_measured: how many steps of the pipeline were averaged.
        global_batch: samples per optimizer step.
        world_size: processes assumed.
        steps_per_epoch, total_steps, run_steps: the schedule's length and the steps the run takes
            (``train.max_steps`` may stop it earlier).
        prior: FLOPs of the earlier stage the run starts from (SALT: its teacher's run; None: unknown).
        budget: ``train.flops_budget`` (0: none).
        params: parameters (trainable or not) of the method's top-level modules.
        step_sem: standard error of the mean per-step total over the measured steps (0 with one step).
    """

    method: str
    per_step: dict[str, float]
    steps_measured: int
    global_batch: int
    world_size: int
    steps_per_epoch: int
    total_steps: int
    run_steps: int
    prior: float | None
    budget: float
    params: dict[str, int] = field(default_factory=dict)
    step_sem: float = 0.0

    @property
    def step_total(self) -> float:
        """FLOPs of one optimizer step."""
        return total(self.per_step)

    @property
    def run_total(self) -> float:
        """FLOPs of the run (``run_steps`` steps at the mean per-step cost)."""
        return self.step_total * self.run_steps

    def budget_steps(self) -> int | None:
        """About how many steps the budget allows (after the earlier stage's share), or None without one."""
        if self.budget <= 0:
            return None
        left = self.budget - (self.prior or 0.0)
        return max(0, -int(-left // self.step_total))  # the first step at which the budget is reached


def count_flops(cfg: Any, steps: int = 32, world_size: int = 1) -> FlopsReport:
    """Builds the method and pipeline of ``cfg`` and averages the FLOPs of its first ``steps`` steps.

    Args:
        cfg: a loaded :class:`~openjepa.config.Config` (a SALT config needs its teacher checkpoint: the
            teacher's size is part of the count).
        steps: optimizer steps of the pipeline to average over.
        world_size: processes of the planned run (each sees ``data.batch_size`` samples per micro-batch).
    """
    import torch

    from openjepa.data.pipeline import PretrainPipeline
    from openjepa.methods.registry import method_class

    if steps < 1 or world_size < 1:
        raise ValueError(f"--batches={steps} and --world-size={world_size} must be >= 1")
    method_cls = method_class(cfg.method)
    method_cls.check_config(cfg)
    cfg.data.num_workers = 0  # a few batches: loader worker processes would cost more than they save
    pipe = PretrainPipeline(cfg, method_cls.data_needs(cfg), rank=0, world_size=world_size)
    spe = pipe.steps_per_epoch
    # The run length as the training loop computes it (train/loop.py).
    total_steps = max(1, round(cfg.train.epochs * spe))
    run_steps = min(total_steps, cfg.train.max_steps) if cfg.train.max_steps > 0 else total_steps
    torch.manual_seed(cfg.train.seed)
    method = method_cls(cfg, total_steps)
    sums: dict[str, float] = {}
    step_totals: list[float] = []
    micro_batches = iter(pipe.loader(0, steps))
    for _ in range(steps):
        step_totals.append(0.0)
        for _ in range(cfg.optim.accum_steps):
            for part, value in method.flops(next(micro_batches)).items():
                # Every process runs batches of these sizes (exactly so when masks are cut over the global
                # batch, mask.mode=fixed; about so in faithful mode, where each process cuts its own).
                sums[part] = sums.get(part, 0.0) + value * world_size
                step_totals[-1] += value * world_size
    per_step = {part: sums[part] / steps for part in sorted(sums, key=_part_order)}
    params = {name: sum(p.numel() for p in module.parameters()) for name, module in method.named_children()}
    return FlopsReport(
        method=cfg.method,
        per_step=per_step,
        steps_measured=steps,
        global_batch=pipe.plan.global_batch,
        world_size=world_size,
        steps_per_epoch=spe,
        total_steps=total_steps,
        run_steps=run_steps,
        prior=method.prior_flops(),
        budget=cfg.train.flops_budget,
        params=params,
        step_sem=statistics.stdev(step_totals) / math.sqrt(steps) if steps > 1 else 0.0,
    )


def _part_order(part: str) -> tuple[int, str]:
    return (PARTS.index(part) if part in PARTS else len(PARTS), part)


def format_flops(report: FlopsReport, name: str = "") -> str:
    """The human-readable table of ``openjepa flops``."""
    r = report
    per_process = r.global_batch // max(r.world_size, 1)
    lines = [
        f"{name or r.method} (method {r.method}): training FLOPs, mean of {r.steps_measured} step(s) of the pipeline",
        f"global batch {r.global_batch} ({per_process} per process x {r.world_size} process(es)); "
        "trained networks 6*N*D, teacher forwards 2*N*D",
        "",
        f"{'part':<11}{'per step':>12}{'share':>8}",
    ]
    for part in sorted({*PARTS[:4], *r.per_step}, key=_part_order):
        value = r.per_step.get(part)
        share = f"{100 * value / r.step_total:.1f}%" if value else "-"
        lines.append(f"{part:<11}{f'{value:.4g}' if value else '-':>12}{share:>8}")
    sem = f"  ± {r.step_sem:.2g} (standard error over the steps measured)" if r.step_sem > 0 else ""
    lines.append(f"{'total':<11}{r.step_total:>12.4g}{sem}")
    lines += [
        "",
        f"run: {r.run_steps} steps ({r.total_steps} in the schedule, {r.steps_per_epoch} per epoch): "
        f"{r.run_total:.4g} FLOPs",
    ]
    if r.prior is None:
        lines.append("earlier stage (teacher run): its file does not record its FLOPs; not counted")
    elif r.prior > 0:
        lines.append(f"earlier stage (teacher run): {r.prior:.4g} FLOPs; every stage: {r.prior + r.run_total:.4g}")
    steps = r.budget_steps()
    if steps is not None:
        verdict = "before the schedule ends" if steps < r.run_steps else "not within the run"
        lines.append(f"train.flops_budget={r.budget:.4g} (every stage): reached after about {steps} steps, {verdict}")
    return "\n".join(lines)


FLOPS_HELP = """\
Training compute of CONFIG: FLOPs per optimizer step split into teacher / student / predictor / decoder,
and for the whole run, with the convention of the SALT paper (trained networks 6*N*D, teacher forwards
2*N*D; N parameters, D tokens processed, from the actual masks of 32 real batches, with the standard error
of that mean). This is what a run logs as `flops` in metrics.jsonl and what train.flops_budget compares
against.

  openjepa flops configs/vjepa/demo.yaml
  openjepa flops configs/salt/vitl16-student.yaml data.path=/data/k400/train.txt --world-size 128
"""


def add_flops(sub: argparse._SubParsersAction) -> None:
    """Registers ``openjepa flops``."""
    p = sub.add_parser(
        "flops", help="training FLOPs per step and per run of a config (teacher / student / predictor / decoder)",
        description=FLOPS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="YAML config, e.g. configs/salt/demo-student.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument("--batches", type=int, default=32, help="steps of the pipeline to average over (default 32)")
    p.add_argument(
        "--world-size", type=int, default=1,
        help="processes of the planned run: global batch = data.batch_size x this x optim.accum_steps (default 1)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.set_defaults(handler=run_flops)


def run_flops(args: argparse.Namespace) -> int:
    """Handler of ``openjepa flops``."""
    from openjepa.config import load_config

    cfg = load_config(args.config, args.overrides)
    report = count_flops(cfg, steps=args.batches, world_size=args.world_size)
    if args.json:
        out = {**asdict(report), "step_total": report.step_total, "run_total": report.run_total}
        json.dump(out, sys.stdout, indent=2)
        print()
    else:
        print(format_flops(report, args.config))
    return 0
