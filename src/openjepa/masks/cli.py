"""``openjepa inspect masks``: statistics and a picture of the masks a config produces.

``python -m openjepa.masks.cli CONFIG ...`` runs the same command on its own.

Heavy imports (torch, matplotlib) happen inside the handler so that ``openjepa --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_inspect_masks", "main", "run_inspect_masks", "samplers_from_config"]

DESCRIPTION = """\
Sample masks as training would (same seed, steps and batch) and report how large the contexts and
targets are and how often each grid row and column is covered. Always saves a PNG of example masks
and the row/column frequencies. On video configs (multiblock3d or tube masks) every mask generator of a
batch is measured: sizes before and after the cut to a common length, the effective masking ratio and
the per time step / row / column frequencies; the PNG shows example clips frame by frame.

Options may also follow CONFIG, mixed with the key=value overrides."""

EPILOG = """\
examples:
  openjepa inspect masks configs/ijepa/vith14-in1k.yaml --mode faithful --png faithful.png
  openjepa inspect masks configs/ijepa/vith14-in1k.yaml --json --batches 200 > masks.json
  openjepa inspect masks configs/ijepa/demo.yaml mask.min_keep=4 mask.num_targets=2
"""

# inspect never reads images, so a config whose data.path is still the required marker "???" is fine.
_PLACEHOLDER_PATH = "data.path=<unused-by-inspect-masks>"


def _add_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """The options of ``inspect masks``; with ``suppress`` they have no defaults (for the tail parser)."""
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument("--mode", choices=("fixed", "faithful"), default=default(None),
                        help="override mask.mode (default: the config's)")
    parser.add_argument("--batches", type=int, default=default(50), help="steps to sample (default 50)")
    parser.add_argument("--batch-size", type=int, default=default(None),
                        help="samples per step (default: data.batch_size)")
    parser.add_argument("--global-batch", type=int, default=default(None),
                        help="global batch the fixed mode's common context length is taken over "
                             "(default: the batch size)")
    parser.add_argument("--start-step", type=int, default=default(0), help="first step (default 0)")
    parser.add_argument("--seed", type=int, default=default(None), help="override train.seed")
    parser.add_argument("--json", action="store_true", default=default(False),
                        help="print exactly one JSON object on stdout (the PNG path goes to stderr)")
    parser.add_argument("--png", default=default("masks.png"),
                        help="where to save the picture (default: masks.png in the current folder)")


def add_inspect_masks(inspect_subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Registers ``masks`` under the ``openjepa inspect`` group. Returns the new parser."""
    parser = inspect_subparsers.add_parser(
        "masks",
        help="mask statistics and example masks of a config",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_options(parser, suppress=False)
    parser.add_argument("config", metavar="CONFIG", help="YAML config file")
    # argparse (before 3.12.7) cannot take positionals after options, so everything after CONFIG is
    # collected here and split into options and overrides by the handler.
    parser.add_argument("overrides", nargs=argparse.REMAINDER, metavar="KEY=VALUE",
                        help="config overrides, e.g. mask.min_keep=4 (options may be mixed in)")
    parser.set_defaults(handler=run_inspect_masks, _masks_parser=parser)
    return parser


def _split_tail(args: argparse.Namespace) -> argparse.Namespace:
    """Moves the options found after CONFIG from ``args.overrides`` onto ``args``."""
    tail = argparse.ArgumentParser(prog="openjepa inspect masks", add_help=False)
    _add_options(tail, suppress=True)
    tail.add_argument("-h", "--help", action="store_true", default=argparse.SUPPRESS)
    tail.add_argument("overrides", nargs="*")
    parsed = tail.parse_intermixed_args(args.overrides)
    for key, value in vars(parsed).items():
        setattr(args, key, value)
    return args


def _format_freqs(values: list[float]) -> str:
    return "[" + " ".join(f"{v:.2f}" for v in values) + "]"


def _print_report(stats: dict[str, Any], png: Path) -> None:
    h, w = stats["grid"]
    lines = [
        f"mask statistics: mode={stats['mode']} grid={h}x{w} seed={stats['seed']} "
        f"steps {stats['start_step']}..{stats['start_step'] + stats['batches'] - 1} "
        f"x {stats['batch_size']} samples (global batch {stats['global_batch']})",
        f"  context patches per sample   {stats['context_size_mean']:.2f} after the cut to a common length "
        f"(min {stats['context_size_min']}, max {stats['context_size_max']}); "
        f"{stats['context_size_before_trim_mean']:.2f} before (min {stats['context_size_before_trim_min']})",
        f"  target patches per block     {stats['target_size_mean']:.2f} "
        f"({stats['num_targets']} blocks, union {stats['target_union_size_mean']:.2f}); "
        f"block sizes seen {stats['target_block_hw_counts']}",
        f"  context overlapping a target {stats['context_target_overlap_fraction']:.4f} of samples; "
        f"fallback contexts {stats['context_fallback_fraction']:.4f}; "
        f"redrawn targets {stats['target_redraw_fraction']:.4f} "
        f"(stacked {stats['target_stacked_fraction']:.4f})",
        f"  target scale/aspect corr     {stats['target_scale_aspect_corr']}",
        f"  context row freq   {_format_freqs(stats['context_row_freq'])}",
        f"  context col freq   {_format_freqs(stats['context_col_freq'])}",
        f"  target row freq    {_format_freqs(stats['target_row_freq'])}",
        f"  target col freq    {_format_freqs(stats['target_col_freq'])}",
        f"  sampling time      {stats['ms_per_batch']:.2f} ms per step",
        f"  picture            {png}",
    ]
    print("\n".join(lines))


def _print_video_report(stats: dict[str, Any], png: Path) -> None:
    grid = "x".join(str(x) for x in stats["grid"])
    lines = [
        f"video mask statistics: grid={grid} ({stats['num_tokens']} tokens) "
        f"steps {stats['start_step']}..{stats['start_step'] + stats['batches'] - 1} "
        f"x {stats['batch_size']} samples (global batch {stats['global_batch']})",
        f"  effective masking ratio      {stats['effective_masking_ratio']:.4f} over the "
        f"{len(stats['generators'])} generators ({stats['effective_masking_ratio_before_trim']:.4f} before the cut)",
        f"  size draws across generators correlation {stats['size_draw_corr']}",
    ]
    for i, g in enumerate(stats["generators"]):
        blocks = f"{g['num_blocks']} blocks" if g["sampler"] != "tube" else f"{g['num_blocks']} tubes"
        lines += [
            f"  generator {i}: {g['sampler']} mode={g['mode']} stream={g['stream']}, {blocks}; "
            f"block sizes seen {g['block_thw_counts']}",
            f"    context tokens per sample  {g['context_size_mean']:.2f} after the cut "
            f"(min {g['context_size_min']}, max {g['context_size_max']}); "
            f"{g['context_size_before_trim_mean']:.2f} before (min {g['context_size_before_trim_min']})",
            f"    target tokens per sample   {g['target_size_mean']:.2f} after the cut; "
            f"{g['target_size_before_trim_mean']:.2f} before (min {g['target_size_before_trim_min']})",
            f"    masking ratio              {g['masking_ratio']:.4f} ({g['masking_ratio_before_trim']:.4f} before)",
            f"    redrawn blocks {g['redraw_fraction']:.4f} of samples; fallbacks {g['fallback_fraction']:.4f}",
            f"    context time freq  {_format_freqs(g['context_time_freq'])}",
            f"    target time freq   {_format_freqs(g['target_time_freq'])}",
            f"    context row freq   {_format_freqs(g['context_row_freq'])}",
            f"    target row freq    {_format_freqs(g['target_row_freq'])}",
            f"    target col freq    {_format_freqs(g['target_col_freq'])}",
        ]
    lines += [f"  sampling time      {stats['ms_per_batch']:.2f} ms per step", f"  picture            {png}"]
    print("\n".join(lines))


def run_inspect_masks(args: argparse.Namespace) -> int:
    """Handler of ``openjepa inspect masks``. Returns the exit code."""
    args = _split_tail(args)
    if getattr(args, "help", False):
        args._masks_parser.print_help()
        return 0
    from openjepa.config import ConfigError, load_config
    from openjepa.masks.multiblock import MultiBlockMaskSampler
    from openjepa.masks.stats import mask_statistics, save_mask_png, save_video_mask_png, video_mask_statistics

    overrides = [_PLACEHOLDER_PATH, *args.overrides]  # the user's own data.path, if any, comes later and wins
    if args.mode is not None:
        overrides.append(f"mask.mode={args.mode}")
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    cfg = load_config(args.config, overrides)
    batch_size = args.batch_size if args.batch_size is not None else cfg.data.batch_size
    if batch_size < 1 or args.batches < 1:
        raise ConfigError("--batch-size and --batches must be >= 1")
    global_batch = args.global_batch if args.global_batch is not None else batch_size
    if global_batch < batch_size:
        raise ConfigError(f"--global-batch={global_batch} must be >= the batch size {batch_size}")
    samplers = samplers_from_config(cfg)
    if len(samplers) == 1 and isinstance(samplers[0], MultiBlockMaskSampler):  # images: the 2-D report
        stats = mask_statistics(samplers[0], args.batches, batch_size, args.start_step, global_batch)
        stats["config"] = str(args.config)
        png = save_mask_png(samplers[0], args.png, n=min(batch_size, 8), step=args.start_step, stats=stats)
        report = _print_report
    else:  # video: every generator of the batch, side by side
        stats = video_mask_statistics(samplers, args.batches, batch_size, args.start_step, global_batch)
        stats["config"] = str(args.config)
        png = save_video_mask_png(samplers, args.png, n=min(batch_size, 4), step=args.start_step, stats=stats)
        report = _print_video_report
    stats["png"] = str(png)
    if args.json:
        json.dump(stats, sys.stdout)
        sys.stdout.write("\n")
        print(f"saved {png}", file=sys.stderr)
    else:
        report(stats, png)
    return 0


def samplers_from_config(cfg: Any) -> list[Any]:
    """The mask samplers one training batch uses under ``cfg``: one per mask generator, on the token grid.

    ``mask.kind=multiblock`` gives the I-JEPA sampler on ``(H, W)``; ``multiblock3d`` one sampler per entry
    of ``mask.generators`` and ``tube`` one tube sampler, on ``(num_frames // tubelet_size, H, W)``.
    """
    from openjepa.masks.build import build_mask_generators
    from openjepa.models.build import token_grid

    return build_mask_generators(cfg.mask, token_grid(cfg), seed=cfg.train.seed)


def main(argv: list[str] | None = None) -> int:
    """``python -m openjepa.masks.cli``: the same as ``openjepa inspect masks``. Returns the exit code."""
    from openjepa.config import ConfigError

    top = argparse.ArgumentParser(prog="openjepa")
    inspect = top.add_subparsers(dest="command").add_parser("inspect")
    add_inspect_masks(inspect.add_subparsers(dest="inspect_command"))
    args = top.parse_args(["inspect", "masks", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.handler(args)
    except (ConfigError, FileNotFoundError) as err:
        print(f"openjepa: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
