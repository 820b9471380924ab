"""``openjepa data``: write built-in datasets to disk.

Heavy imports (torch, through the generators) happen inside the handlers so ``openjepa --help`` stays
fast.
"""

from __future__ import annotations

import argparse
import sys


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def run_scenes(args: argparse.Namespace) -> int:
    """Handler of ``openjepa data scenes``: exports a split and prints where it went."""
    from openjepa.data.export import export_scenes

    try:
        written = export_scenes(
            args.out,
            split=args.split,
            count=args.count,
            image_size=args.image_size,
            max_objects=args.max_objects,
            caption_noise=args.caption_noise,
            seed=args.seed,
            fmt=args.format,
            shard_size=args.shard_size,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except (FileExistsError, ValueError) as err:  # ConfigError is a ValueError: bad sizes land here too
        print(f"openjepa: error: {err}", file=sys.stderr)
        return 2
    what = f"{len(written)} shard(s)" if args.format == "wds" else "images/ + captions.jsonl + labels.jsonl"
    print(f"wrote {args.count} {args.split} scenes to {args.out}: {what}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds ``data`` (with subcommand ``scenes``) to the ``openjepa`` command's subparsers."""
    data = subparsers.add_parser(
        "data",
        help="write built-in datasets to disk (PNG + JSONL, or WebDataset shards)",
        description="Generate a built-in dataset split and write it in the formats the readers accept.",
    )
    sub = data.add_subparsers(dest="data_command", metavar="DATASET")
    scenes = sub.add_parser(
        "scenes",
        help="synthetic scenes with captions and probe labels",
        description=(
            "Write items 0..COUNT-1 of a scenes split. --format images: OUT/images/000000.png, "
            "OUT/captions.jsonl, OUT/labels.jsonl. --format wds: OUT/shard-000000.tar with 000000.png and "
            "000000.json (captions + labels). OUT/scenes.json records the generator parameters."
        ),
    )
    default = " (default: %(default)s)"
    add = scenes.add_argument
    add("--split", choices=("train", "val", "test"), default="train", help="which split" + default)
    add("--count", type=_positive_int, required=True, help="number of images")
    add("--out", required=True, help="output folder")
    add("--image-size", type=int, default=64, help="image side in pixels, 32 to 224" + default)
    add("--max-objects", type=int, default=4, help="at most this many objects, 1 to 8" + default)
    add("--caption-noise", type=_probability, default=0.0, help="P(wrong word) per caption" + default)
    add("--seed", type=_non_negative_int, default=0, help="dataset seed" + default)
    add("--format", choices=("images", "wds"), default="images", help="output layout" + default)
    add("--shard-size", type=_positive_int, default=1000, help="images per tar shard, wds only" + default)
    add("--overwrite", action="store_true", help="replace an earlier export in OUT")
    add("--no-progress", action="store_true", help="hide the progress bar")
    scenes.set_defaults(handler=run_scenes)
    return data
