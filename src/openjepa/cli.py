"""The ``openjepa`` command line.

Subcommands are registered by the package that owns them (``add_parser`` functions), so this file only
wires them together. Heavy imports (torch) happen inside the handlers: ``openjepa --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from openjepa import __version__

EPILOG = """\
examples:
  openjepa pretrain configs/ijepa/demo.yaml --out runs/demo optim.lr=5e-4
  torchrun --nproc_per_node=4 -m openjepa pretrain configs/ijepa/vitb16-in1k.yaml data.path=/data/in1k/train
  openjepa eval runs/demo/checkpoint-latest.pt --json report.json
  openjepa export runs/demo/checkpoint-latest.pt --out encoder.safetensors
  openjepa compare runs/demo-ijepa runs/demo-tcjepa --names I-JEPA TC-JEPA
  openjepa inspect masks configs/ijepa/vith14-in1k.yaml --mode faithful --png masks.png
  openjepa data scenes --split train --count 1000 --out data/scenes
  openjepa theory critical-time --objective jepa --depth 2 --eps 1e-3 --lam 1 --rho 0.7 --json
"""


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (every subcommand)."""
    from openjepa.data.cli import add_parser as add_data
    from openjepa.eval.text_attention import add_inspect_text_attention
    from openjepa.masks.cli import add_inspect_masks
    from openjepa.theory.cli import add_parser as add_theory
    from openjepa.train.cli import add_compare, add_eval, add_export, add_pretrain

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
    add_export(sub)
    add_compare(sub)
    inspect = sub.add_parser("inspect", help="look inside: mask statistics, TC-JEPA text attention")
    inspect_sub = inspect.add_subparsers(dest="inspect_command", metavar="WHAT")
    add_inspect_masks(inspect_sub)
    add_inspect_text_attention(inspect_sub)
    add_data(sub)
    add_theory(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``openjepa`` console script. Returns the process exit code."""
    from openjepa.errors import OpenJepaError

    parser = build_parser()
    # argparse cannot take positional ``key=value`` overrides after an option (``pretrain CFG --out X
    # a=b``): collect such leftovers ourselves, for the subcommands that accept overrides.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any("=" not in e or e.startswith("-") for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
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
    except (OpenJepaError, FileNotFoundError, ValueError) as err:
        print(f"openjepa: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
