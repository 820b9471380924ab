"""``openjepa convert`` and ``openjepa export``: encoders out of checkpoints, into openjepa's export format.

Both write ``FILE.safetensors`` (the weights) and ``FILE.json`` beside it (how to rebuild the encoder), which
``openjepa.load_encoder(FILE.safetensors)`` reads back. ``export`` takes openjepa's own checkpoints;
``convert`` takes checkpoints of the official I-JEPA / V-JEPA / V-JEPA 2 code and accepts the settings their
weights cannot tell (heads, grid).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

CONVERT_HELP = """\
Reads the encoder of a checkpoint written by facebookresearch/ijepa (I-JEPA), facebookresearch/jepa
(V-JEPA) or facebookresearch/vjepa2 (V-JEPA 2) (or any file openjepa.load_encoder reads) and writes it in
openjepa's format: FILE.safetensors plus FILE.json. The architecture is read from the weights (width,
depth, patch and tubelet size, MLP width, qkv bias, the grid of a stored position table); the number of
heads defaults per width (ViT-S 6, B 12, L 16, H 16, g 16 or 22 for V-JEPA 2) and can be set with
--num-heads. Rotary (V-JEPA 2) weights fit any input size: --img-size / --num-frames only set the grid the
encoder records (default 256 px, 64 frames).

examples:
  openjepa convert IN1K-vit.h.14-300e.pth.tar --out ijepa-vith14.safetensors
  openjepa convert vitl16.pth.tar --out vjepa-vitl16.safetensors --which encoder
  openjepa convert vitg.pt --out vjepa2-vitg.safetensors --num-heads 22
"""


def add_convert(sub: argparse._SubParsersAction) -> None:
    """Registers ``openjepa convert``."""
    p = sub.add_parser(
        "convert", help="convert an official I-JEPA / V-JEPA / V-JEPA 2 checkpoint's encoder to safetensors",
        description=CONVERT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", metavar="SRC", help="checkpoint file (official format, or any file load_encoder reads)")
    p.add_argument("--out", required=True, help="output file, must end in .safetensors (FILE.json is written beside)")
    p.add_argument(
        "--which", default="target", choices=["target", "encoder"],
        help="the EMA target encoder (default) or the context encoder",
    )
    p.add_argument("--num-heads", type=int, help="attention heads (default: the code base's preset for the width)")
    p.add_argument("--img-size", type=int, help="input side in pixels (rotary models; tables give their own)")
    p.add_argument("--num-frames", type=int, help="frames per clip (video; rotary models or an ambiguous table)")
    p.add_argument(
        "--format", choices=["ijepa", "jepa", "vjepa2"],
        help="read the file as this format instead of detecting it (e.g. a V-JEPA 2 file holding an unused table)",
    )
    p.set_defaults(handler=run_convert)


def convert_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The ``load_encoder`` overrides given on the command line (only those set)."""
    names = {"num_heads": args.num_heads, "img_size": args.img_size, "num_frames": args.num_frames,
             "format": args.format}
    return {k: v for k, v in names.items() if v is not None}


def run_convert(args: argparse.Namespace) -> int:
    """Handler of ``openjepa convert``: prints the written paths, the format read and the encoder's arguments."""
    from openjepa.checkpoints.encoders import read_encoder, save_encoder

    if Path(args.out).suffix != ".safetensors":
        raise ValueError(f"--out {args.out}: the file name must end in .safetensors")
    loaded = read_encoder(args.source, which=args.which, **convert_overrides(args))
    meta: dict[str, Any] = {"source": loaded.source, **loaded.meta}
    if loaded.step is not None:
        meta["step"] = loaded.step
    weights, config = save_encoder(loaded.encoder, args.out, meta)
    report = {"weights": str(weights), "config": str(config), "format": loaded.source,
              "kwargs": loaded.encoder.config()}
    print(json.dumps(report))
    return 0


def add_export(sub: argparse._SubParsersAction) -> None:
    """Registers ``openjepa export``."""
    p = sub.add_parser(
        "export", help="write a checkpoint's target encoder to safetensors (+ JSON model config)",
        description="Writes the evaluation (EMA target) encoder to FILE.safetensors and FILE.json beside it.",
    )
    p.add_argument("checkpoint", help="checkpoint file or run folder")
    p.add_argument("--out", required=True, help="output file, must end in .safetensors")
    p.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    """Handler of ``openjepa export``: prints the paths of the weights and of their description."""
    from openjepa.checkpoints.encoders import export_encoder

    weights, config = export_encoder(args.checkpoint, args.out)
    print(json.dumps({"weights": str(weights), "config": str(config)}))
    return 0
