"""The ``openjepa`` command line.

Subcommands are registered by the package that owns them (``add_*`` functions beside what they call), so
this file only wires them together, plus ``pretrain``, which chains training and evaluation (neither of
those packages imports the other). Heavy imports (torch) happen inside the handlers: ``openjepa --help``
stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from openjepa import __version__
from openjepa.errors import ConfigError

if TYPE_CHECKING:
    from openjepa.config import Config

EPILOG = """\
examples:
  openjepa pretrain configs/ijepa/demo.yaml --out runs/demo optim.lr=5e-4
  torchrun --nproc_per_node=4 -m openjepa pretrain configs/ijepa/vitb16-in1k.yaml data.path=/data/in1k/train
  openjepa eval runs/demo/checkpoint-latest.pt --json report.json
  openjepa export runs/demo/checkpoint-latest.pt --out encoder.safetensors
  openjepa convert IN1K-vit.h.14-300e.pth.tar --out ijepa-vith14.safetensors   # official I-JEPA weights
  openjepa compare runs/demo-ijepa runs/demo-tcjepa --names I-JEPA TC-JEPA
  openjepa inspect masks configs/ijepa/vith14-in1k.yaml --mode faithful --png masks.png
  openjepa data scenes --split train --count 1000 --out data/scenes
  openjepa theory critical-time --objective jepa --depth 2 --eps 1e-3 --lam 1 --rho 0.7 --json
"""


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (every subcommand)."""
    from openjepa.checkpoints.cli import add_convert, add_export
    from openjepa.data.cli import add_parser as add_data
    from openjepa.eval.cli import add_compare, add_eval, add_features
    from openjepa.eval.text_attention import add_inspect_text_attention
    from openjepa.masks.cli import add_inspect_masks
    from openjepa.methods.cli import add_flops
    from openjepa.theory.cli import add_parser as add_theory

    parser = argparse.ArgumentParser(
        prog="openjepa",
        description="Joint-embedding predictive pretraining (I-JEPA and friends) for vision encoders.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"openjepa {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_pretrain(sub)
    add_eval(sub)
    add_features(sub)
    add_export(sub)
    add_convert(sub)
    add_compare(sub)
    add_flops(sub)
    inspect = sub.add_parser("inspect", help="look inside: mask statistics, TC-JEPA text attention")
    inspect_sub = inspect.add_subparsers(dest="inspect_command", metavar="WHAT")
    add_inspect_masks(inspect_sub)
    add_inspect_text_attention(inspect_sub)
    add_data(sub)
    add_theory(sub)
    return parser


PRETRAIN_HELP = """\
Pretrain an encoder with the method of CONFIG (YAML). Settings can be overridden as key=value
(dotted keys, YAML values), e.g. optim.lr=5e-4 data.batch_size=32 mask.mode=faithful.

Runs as one process, or under torchrun as one rank of a DDP job:
  torchrun --nproc_per_node=8 -m openjepa pretrain configs/ijepa/vith14-in1k.yaml data.path=/data/in1k/train

The run folder (--out) receives config.yaml, metrics.jsonl, tensorboard/ (when installed),
checkpoint-latest.pt (+ periodic ones), training_curves.png and, after evaluation, eval.json / eval.txt.

Stopping and resuming: Ctrl-C, SIGTERM or SIGUSR1 (SLURM's --signal) finish the current step, write
checkpoint-latest.pt and exit with code 75. `openjepa pretrain --resume --out DIR` continues from that exact
step with the config stored in the checkpoint (CONFIG is then optional); overrides may change logging,
checkpointing, speed and length (train.epochs, train.max_steps) keys only.
"""


def add_pretrain(sub: argparse._SubParsersAction) -> None:
    """Registers ``openjepa pretrain``."""
    from openjepa.config.loading import RESUME_MAY_CHANGE

    p = sub.add_parser(
        "pretrain", help="pretrain an encoder (I-JEPA, TC-JEPA, V-JEPA, SALT, ...) from a YAML config",
        description=PRETRAIN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="keys that --resume may change: " + ", ".join(RESUME_MAY_CHANGE),
    )
    p.add_argument("config", nargs="?", help="YAML config, e.g. configs/ijepa/demo.yaml (optional with --resume)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument("--out", help="run folder (default: runs/<config folder>-<config name>, e.g. runs/ijepa-demo)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from checkpoint-latest.pt")
    p.add_argument("--overwrite", action="store_true", help="start again in an --out folder that holds a run")
    p.add_argument("--no-eval", action="store_true", help="skip the probe evaluation after training")
    p.set_defaults(handler=run_pretrain)


def pretrain_config(args: argparse.Namespace) -> tuple[Config, Path]:
    """The config and run folder of ``openjepa pretrain``.

    A fresh run reads CONFIG + overrides. ``--resume`` starts from the config stored in the run's checkpoint
    and applies the overrides; a CONFIG given with ``--resume`` is read only for its name (the stored
    config is what the run was).
    """
    from openjepa import checkpoints
    from openjepa.config import apply_overrides, check_complete, load_config

    # argparse puts a leading key=value into `config` when no CONFIG is given.
    if args.config and "=" in args.config and not args.config.endswith((".yaml", ".yml")):
        args.overrides, args.config = [args.config, *args.overrides], None
    if args.resume:
        if not args.out and not args.config:
            raise ConfigError("--resume needs --out RUN_FOLDER (the folder of the run to continue)")
        out = Path(args.out) if args.out else default_run_folder(args.config)
        path = checkpoints.resolve_checkpoint_path(out)
        cfg = checkpoints.checkpoint_config(checkpoints.load_checkpoint(path), path)
        apply_overrides(cfg, args.overrides)
        check_complete(cfg)
        return cfg, out
    if not args.config:
        raise ConfigError("pretrain needs a CONFIG file (e.g. configs/ijepa/demo.yaml), or --resume --out RUN")
    out = Path(args.out) if args.out else default_run_folder(args.config)
    return load_config(args.config, args.overrides), out


def default_run_folder(config: str) -> Path:
    """``runs/<config folder>-<config name>``: ``configs/ijepa/demo.yaml`` -> ``runs/ijepa-demo`` (so the demo
    configs of different methods never share a folder)."""
    path = Path(config)
    return Path("runs") / (f"{path.parent.name}-{path.stem}" if path.parent.name else path.stem)


def run_pretrain(args: argparse.Namespace) -> int:
    """Handler of ``openjepa pretrain``: trains, then (rank 0) evaluates the final encoder."""
    import os

    from openjepa.eval.cli import evaluate_checkpoint
    from openjepa.train.loop import train

    cfg, out = pretrain_config(args)
    result = train(cfg, out, resume=args.resume, overwrite=args.overwrite)
    is_main = int(os.environ.get("RANK", "0")) == 0
    if is_main and cfg.eval.after_pretrain and not args.no_eval and result.checkpoint is not None:
        report = evaluate_checkpoint(result.checkpoint, json_path=out / "eval.json")
        (out / "eval.txt").write_text(report + "\n")
    return 0


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args`` that also takes ``key=value`` overrides where argparse alone would lose them.

    argparse cannot take positional overrides after an option (``pretrain CFG --out X a=b``): such leftovers
    are collected into ``overrides`` for the subcommands that accept them. And an option with several values
    (``eval RUN --tasks count a=b``) swallows the overrides that follow it; a task name never holds ``=``, so
    those are moved back too.
    """
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any("=" not in e or e.startswith("-") for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    tasks = getattr(args, "tasks", None)
    if tasks and hasattr(args, "overrides"):
        args.overrides = [*args.overrides, *(t for t in tasks if "=" in t)]
        args.tasks = [t for t in tasks if "=" not in t]
    if getattr(args, "overrides", None):
        # The last override of a key wins, so keep them in the order they were typed.
        positions: dict[str, list[int]] = {}
        for i, a in enumerate(sys.argv[1:] if argv is None else argv):
            positions.setdefault(a, []).append(i)

        def typed_at(override: str) -> int:
            # The k-th copy of a repeated override takes the k-th place it was typed at (copies are identical).
            slots = positions.get(override)
            return slots.pop(0) if slots else sys.maxsize

        args.overrides = sorted(args.overrides, key=typed_at)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``openjepa`` console script. Returns the process exit code."""
    from openjepa.errors import OpenJepaError
    from openjepa.train.signals import RunInterrupted

    parser = build_parser()
    args = parse_args(parser, argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        # A group (``openjepa inspect``) without its subcommand: show that group's help.
        target = parser
        if args.command is not None:
            target = parser._subparsers._group_actions[0].choices[args.command]  # type: ignore[union-attr]
        target.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except RunInterrupted as err:
        print(f"openjepa: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("openjepa: interrupted (the last checkpoint written is intact: checkpoints are atomic)", file=sys.stderr)
        return 130
    except (OpenJepaError, FileNotFoundError, ValueError) as err:
        print(f"openjepa: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
