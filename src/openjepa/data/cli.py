"""``openjepa data``: write built-in datasets to disk (``scenes`` images, ``sprites`` videos).

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


def _crf(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to 51, got {text!r}") from None
    if not 0 <= value <= 51:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 (lossless) to 51, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
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
    print(f"wrote {args.count} {args.split} scenes to {args.out}: {what} + manifest.json")
    return 0


def run_sprites(args: argparse.Namespace) -> int:
    """Handler of ``openjepa data sprites``: exports a split as MP4 videos + lists and prints where it went."""
    from openjepa.data.export import export_sprites
    from openjepa.data.video import VideoBackendMissingError

    try:
        export_sprites(
            args.out,
            split=args.split,
            count=args.count,
            image_size=args.image_size,
            length=args.length,
            max_sprites=args.max_sprites,
            seed=args.seed,
            rotation=args.rotation,
            motion=args.motion,
            label_task=args.label_task,
            fps=args.fps,
            crf=args.crf,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except (FileExistsError, ValueError, VideoBackendMissingError) as err:
        print(f"openjepa: error: {err}", file=sys.stderr)
        return 2
    print(
        f"wrote {args.count} {args.split} sprites videos to {args.out}: videos/ + list.txt ({args.label_task} "
        "labels) + labels.jsonl (all labels, captions) + manifest.json"
    )
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds ``data`` (with subcommand ``scenes``) to the ``openjepa`` command's subparsers."""
    data = subparsers.add_parser(
        "data",
        help="write built-in datasets to disk (PNG + JSONL, WebDataset shards, or MP4 + list files)",
        description=(
            "Generate a built-in dataset split and write it in the formats the readers accept. Each export writes "
            "OUT/manifest.json (every file it wrote); --overwrite deletes exactly those files first and refuses "
            "a folder holding anything else, and readers refuse an export whose files do not match it."
        ),
    )
    sub = data.add_subparsers(dest="data_command", metavar="DATASET")
    scenes = sub.add_parser(
        "scenes",
        help="synthetic scenes with captions and probe labels",
        description=(
            "Write items 0..COUNT-1 of a scenes split. --format images: OUT/images/000000.png, "
            "OUT/captions.jsonl, OUT/labels.jsonl. --format wds: OUT/shard-000000.tar with 000000.png and "
            "000000.json (captions + labels). OUT/scenes.json records the generator parameters, "
            "OUT/manifest.json the files written."
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
    add("--overwrite", action="store_true", help="replace an earlier export in OUT (its files are deleted first)")
    add("--no-progress", action="store_true", help="hide the progress bar")
    scenes.set_defaults(handler=run_scenes)
    _add_sprites_parser(sub)
    return data


# Copies of names in openjepa.data.sprites, which imports torch: building the parser must stay light.
# tests/data/test_cli.py checks they agree.
SPRITES_TASKS = ("direction", "speed", "digit", "count")
SPRITES_MOTIONS = ("bounce", "wrap")


def _add_sprites_parser(sub: argparse._SubParsersAction) -> None:
    sprites = sub.add_parser(
        "sprites",
        help="synthetic videos of moving digits with motion labels (MP4 + list files)",
        description=(
            "Write items 0..COUNT-1 of a sprites split: OUT/videos/000000.mp4 (H.264, yuv420p, all LENGTH frames), "
            "OUT/list.txt (`videos/000000.mp4 <label>` per line, the --label-task label), OUT/labels.jsonl "
            '({"video", "labels": every task, "captions"}), OUT/sprites.json (generator parameters) and '
            "OUT/manifest.json. Labels describe the motion at frame LENGTH // 2; direction k is 45k degrees "
            "counter-clockwise from right (0 right, 2 up, 4 left, 6 down), speed 0 slow / 1 fast."
        ),
    )
    default = " (default: %(default)s)"
    add = sprites.add_argument
    add("--split", choices=("train", "val", "test"), default="train", help="which split" + default)
    add("--count", type=_positive_int, required=True, help="number of videos")
    add("--out", required=True, help="output folder")
    add("--image-size", type=int, default=64, help="frame side in pixels, even, 32 to 224" + default)
    add("--length", "--num-frames", dest="length", type=_positive_int, default=32, help="frames per video" + default)
    add("--max-sprites", type=int, default=2, help="at most this many digits, 1 to 4" + default)
    add("--rotation", type=_non_negative_float, default=0.0, help="max spin, degrees per frame" + default)
    add("--motion", choices=SPRITES_MOTIONS, default="bounce", help="at the edges: bounce, or wrap around" + default)
    add("--seed", type=_non_negative_int, default=0, help="dataset seed" + default)
    add("--label-task", choices=SPRITES_TASKS, default="direction", help="the label written to list.txt" + default)
    add("--fps", type=_positive_int, default=8, help="frame rate stored in the files" + default)
    add("--crf", type=_crf, default=12, help="x264 quality, 0 (lossless) to 51" + default)
    add("--overwrite", action="store_true", help="replace an earlier export in OUT (its files are deleted first)")
    add("--no-progress", action="store_true", help="hide the progress bar")
    sprites.set_defaults(handler=run_sprites)
