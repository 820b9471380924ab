"""Encoders from checkpoints written by the official JEPA code bases: I-JEPA, V-JEPA and V-JEPA 2.

The three code bases (facebookresearch/ijepa, facebookresearch/jepa, facebookresearch/vjepa2) save the
same kind of file, a ``torch.save`` dict::

    {"encoder": ..., "target_encoder": ..., "predictor": ...,      # state dicts
     "opt": ..., "scaler": ..., "epoch": int, "loss": float, "batch_size": int, "world_size": int, "lr": float}

Their encoder state dicts use openjepa's own parameter names (``patch_embed.proj``, ``blocks.{i}.norm1``,
``attn.qkv`` as one ``[3D, D]`` projection split as ``(3, heads, head_dim)``, ``attn.proj``, ``norm2``,
``mlp.fc1``, ``mlp.fc2``, final ``norm``; exact GELU; LayerNorm eps 1e-6; no class token), behind wrapper
prefixes: ``module.`` (DistributedDataParallel; I-JEPA wraps the target encoder too) and, in V-JEPA and
V-JEPA 2, ``module.backbone.`` (their multi-mask wrapper). They differ in how positions enter:

- ``ijepa``: a 2-D patch grid (``Conv2d`` stem) and a fixed sin-cos ``pos_embed [1, H*W, D]`` stored with
  the weights, whose first half of channels encodes the *column* and second half the row (openjepa's own
  table is the other way round), so it is used as stored (``pos="stored"``).
- ``jepa`` (V-JEPA): ``tubelet x patch x patch`` tubelets (``Conv3d`` stem) and a stored 3-D sin-cos table in
  (time, row, column) raster order, also used as stored.
- ``vjepa2`` (V-JEPA 2): the same tubelets, no table: rotary positions in every attention layer, with the
  frequency tiling its released weights were trained with (``pos="rope_vjepa2"``, see
  :mod:`openjepa.models.rope`). Its SwiGLU MLP option (``use_silu``; not used by the released ViT-L/H/g) is
  not supported.

What the weights tell is read from them: width, patch and tubelet size, input channels (the stem's kernel),
depth (block indices), MLP width (``fc1``), qkv bias, and the token grid of a stored table (hence image size
and clip length). What they cannot tell comes from overrides: ``num_heads`` (default per width below),
``img_size`` / ``num_frames`` for rotary models (whose weights fit any grid; defaults are V-JEPA 2's
released 256 px, 64 frames), and ``format`` to force one of :data:`FORMATS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from openjepa.errors import CheckpointError

__all__ = ["DEFAULT_HEADS", "FORMATS", "Converted", "convert_official"]

FORMATS = ("ijepa", "jepa", "vjepa2")
KNOWN = (
    "facebookresearch/ijepa (I-JEPA), facebookresearch/jepa (V-JEPA), facebookresearch/vjepa2 (V-JEPA 2): a dict "
    "with 'encoder' / 'target_encoder' state dicts, or one encoder state dict"
)
CHECKPOINT_KEYS = {"target": "target_encoder", "encoder": "encoder"}
WRAPPER_PREFIXES = ("module.", "backbone.", "_orig_mod.")  # DDP, V-JEPA's multi-mask wrapper, torch.compile

# Heads per width in each code base's model presets (the weights cannot tell). V-JEPA 2's released ViT-g
# is its ``vit_giant_xformers`` (22 heads of 64 channels); I-JEPA's and V-JEPA's giants have 16 heads.
_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16, 1664: 16}
DEFAULT_HEADS: dict[str, dict[int, int]] = {
    "ijepa": _HEADS,
    "jepa": _HEADS,
    "vjepa2": {**_HEADS, 1408: 22, 1664: 26},
}
NORM_EPS = 1e-6  # every preset of the three code bases builds its LayerNorms with eps=1e-6
ROPE_DEFAULTS = {"img_size": 256, "num_frames": 64}  # V-JEPA 2's released models (hub: 256 px, 64 frames)
VJEPA_FRAMES = 16  # V-JEPA's clips: the preferred reading of an ambiguous 3-D table


@dataclass
class Converted:
    """An official checkpoint's encoder in openjepa's layout.

    Attributes:
        format: one of :data:`FORMATS`.
        kwargs: :class:`~openjepa.models.vit.VisionTransformer` arguments (overrides applied).
        weights: its state dict.
        step: the training step, when the file says (the official files record epochs, not steps).
        meta: what else is known: the checkpoint key read, the epoch, where each inferred value came from.
    """

    format: str
    kwargs: dict[str, Any]
    weights: dict[str, torch.Tensor]
    step: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def convert_official(
    state: Any, path: Path, which: str = "target", overrides: dict[str, Any] | None = None
) -> Converted:
    """Converts the encoder of an official I-JEPA / V-JEPA / V-JEPA 2 checkpoint.

    Args:
        state: what ``torch.load`` returned for ``path``.
        path: the file (for messages).
        which: ``"target"`` (the EMA target encoder) or ``"encoder"`` (the context encoder).
        overrides: VisionTransformer arguments the weights cannot tell (``num_heads``, ``img_size``,
            ``num_frames``...), plus ``format`` (one of :data:`FORMATS`) to override the detected format.

    Raises:
        CheckpointError: the file is not in a known format, lacks the requested encoder, or holds an
            architecture openjepa cannot rebuild (one line naming the file and what to do).
    """
    overrides = dict(overrides or {})
    forced = overrides.pop("format", None)
    if forced is not None and forced not in FORMATS:
        raise CheckpointError(f"{path}: format={forced!r} is not a known format; choose one of {', '.join(FORMATS)}")
    encoder_state, predictor_state, key = _encoder_state(state, path, which)
    weights = _strip_wrappers(encoder_state)
    fmt = forced or _detect_format(weights, predictor_state)
    kwargs, origin = _architecture(weights, fmt, path, overrides)
    if kwargs["pos"] == "stored":
        weights["pos_embed"] = _table(weights, path).reshape(1, -1, kwargs["embed_dim"])
    else:
        # V-JEPA 2 files may carry an unused table; rotary models have none.
        weights.pop("pos_embed", None)
    meta: dict[str, Any] = {"checkpoint_key": key, **origin}
    if isinstance(state, dict) and isinstance(state.get("epoch"), int):
        meta["epoch"] = state["epoch"]
    return Converted(fmt, kwargs, weights, None, meta)


def _keys(state: dict[str, Any]) -> str:
    names = [str(k) for k in state]
    return ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _unknown(path: Path, state: Any) -> CheckpointError:
    found = f"top-level keys: {_keys(state)}" if isinstance(state, dict) else f"a {type(state).__name__}"
    return CheckpointError(
        f"{path} is neither an openjepa checkpoint nor a known official format ({found}). openjepa reads its run "
        f"folders, checkpoint-*.pt, exported .safetensors, and checkpoints of {KNOWN}"
    )


def _encoder_state(state: Any, path: Path, which: str) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None, str]:
    """The requested encoder's state dict, the predictor's (when present), and the key read."""
    if not isinstance(state, dict):
        raise _unknown(path, state)
    if "encoder" in state or "target_encoder" in state:
        key = CHECKPOINT_KEYS[which]
        if key not in state:
            other = "encoder" if which == "target" else "target"
            raise CheckpointError(
                f"{path} has no {key!r} state dict (its keys: {_keys(state)}); pass which={other!r} "
                f"(`--which {other}`) to load the {CHECKPOINT_KEYS[other]!r} one"
            )
        if not _is_state_dict(state[key]):
            raise CheckpointError(
                f"{path}: {key!r} is not a state dict of tensors; the file is not an official checkpoint"
            )
        predictor = state.get("predictor")
        return state[key], predictor if isinstance(predictor, dict) else None, key
    if _is_state_dict(state) and "patch_embed.proj.weight" in _strip_wrappers(state):
        return state, None, "(whole file)"  # one encoder's state dict, saved on its own
    raise _unknown(path, state)


def _strip_wrappers(state: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in WRAPPER_PREFIXES:
                if name.startswith(prefix):
                    name, changed = name[len(prefix) :], True
        out[name] = value
    return out


def _detect_format(weights: dict[str, torch.Tensor], predictor: dict[str, Any] | None) -> str:
    if "pos_embed" not in weights:
        return "vjepa2"
    # V-JEPA and I-JEPA predictors always hold their sin-cos table; a rotary (V-JEPA 2) predictor has none,
    # so an encoder table beside such a predictor is a leftover the model never used.
    if predictor is not None and "predictor_pos_embed" not in _strip_wrappers(predictor):
        return "vjepa2"
    stem = weights.get("patch_embed.proj.weight")  # a missing stem is reported by _architecture
    return "jepa" if stem is not None and stem.ndim == 5 else "ijepa"


def _table(weights: dict[str, torch.Tensor], path: Path) -> torch.Tensor:
    if "pos_embed" not in weights:
        raise CheckpointError(
            f"{path}: the encoder has no stored position table (pos_embed), so it is not an I-JEPA / V-JEPA "
            "encoder; leave out format= to detect a rotary (V-JEPA 2) encoder"
        )
    table = weights["pos_embed"]
    return table.reshape(-1, table.shape[-1])


def _architecture(
    weights: dict[str, torch.Tensor], fmt: str, path: Path, overrides: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """VisionTransformer arguments read from the weights (and overrides), and where each came from."""
    stem = weights.get("patch_embed.proj.weight")
    if stem is None or stem.ndim not in (4, 5):
        raise CheckpointError(f"{path}: no patch embedding (patch_embed.proj.weight, a conv kernel) in the encoder")
    width, in_chans, *kernel = stem.shape
    if kernel[-1] != kernel[-2]:
        raise CheckpointError(f"{path}: non-square patches {tuple(kernel)} are not supported")
    video = stem.ndim == 5
    patch = int(kernel[-1])
    depth = _depth(weights, path)
    _check_names(weights, depth, path)
    if "blocks.0.mlp.fc3.weight" in weights:
        raise CheckpointError(
            f"{path}: the encoder uses V-JEPA 2's SwiGLU MLP (mlp.fc1/fc2/fc3, use_silu=True), which openjepa "
            "does not support; only the GELU MLP of the released ViT-L/H/g checkpoints is"
        )
    hidden = int(weights["blocks.0.mlp.fc1.weight"].shape[0])
    mlp_ratio = hidden / width
    if int(width * mlp_ratio) != hidden:  # the rebuilt MLP must have exactly this width
        raise CheckpointError(f"{path}: MLP width {hidden} is not reachable from width {width} ({mlp_ratio=})")
    kwargs: dict[str, Any] = {
        "patch_size": patch,
        "embed_dim": int(width),
        "depth": depth,
        "mlp_ratio": mlp_ratio,
        "qkv_bias": "blocks.0.attn.qkv.bias" in weights,
        "in_chans": int(in_chans),
        "norm_eps": NORM_EPS,
        "pos": "stored" if fmt in ("ijepa", "jepa") else "rope_vjepa2",
    }
    origin: dict[str, Any] = {}
    heads = overrides.pop("num_heads", None)
    if heads is None:
        heads = DEFAULT_HEADS[fmt].get(int(width))
        if heads is None:
            raise CheckpointError(
                f"{path}: cannot tell the number of attention heads of a width-{width} encoder from its weights; "
                "pass num_heads=N (`--num-heads N`)"
            )
        origin["num_heads_from"] = f"{fmt} default for width {width}"
    kwargs["num_heads"] = int(heads)
    tubelet = int(kernel[0]) if video else 1
    if video:
        kwargs["tubelet_size"] = tubelet
    if kwargs["pos"] == "stored" and "pos" not in overrides:
        table = _table(weights, path)
        if table.shape[-1] != width:
            raise CheckpointError(f"{path}: pos_embed has {table.shape[-1]} channels for a width-{width} encoder")
        if video:
            frames, side = _video_grid(table, tubelet, patch, overrides, path)
            kwargs.update(num_frames=frames, img_size=side * patch)
        else:
            kwargs["img_size"] = _image_grid(table, patch, overrides, path)
        origin["grid_from"] = "stored position table"
    else:
        kwargs["img_size"] = ROPE_DEFAULTS["img_size"]
        if video:
            kwargs["num_frames"] = ROPE_DEFAULTS["num_frames"]
        origin["grid_from"] = "defaults (rotary weights fit any grid; pass img_size= / num_frames= to change)"
    kwargs.update(overrides)
    return kwargs, origin


def _depth(weights: dict[str, torch.Tensor], path: Path) -> int:
    parts = [name.split(".") for name in weights if name.startswith("blocks.")]
    indices = {int(p[1]) for p in parts if p[1].isdigit()}
    if not indices or indices != set(range(max(indices) + 1)):
        raise CheckpointError(
            f"{path}: the encoder's blocks are missing or not numbered 0..depth-1 ({sorted(indices)})"
        )
    return max(indices) + 1


def _check_names(weights: dict[str, torch.Tensor], depth: int, path: Path) -> None:
    """Refuses parameters openjepa's ViT has no place for (a class token, V-JEPA 2.1's extra embeddings...)."""
    expected = {"patch_embed.proj.weight", "patch_embed.proj.bias", "pos_embed", "norm.weight", "norm.bias"}
    block = ["norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"]
    expected |= {f"blocks.{i}.{m}.{p}" for i in range(depth) for m in block for p in ("weight", "bias")}
    expected |= {f"blocks.{i}.mlp.fc3.{p}" for i in range(depth) for p in ("weight", "bias")}  # refused below
    unknown = sorted(set(weights) - expected)
    if unknown:
        shown = ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise CheckpointError(
            f"{path}: the encoder has parameters openjepa's ViT does not ({shown}); this variant of the "
            "architecture is not supported"
        )


def _image_grid(table: torch.Tensor, patch: int, overrides: dict[str, Any], path: Path) -> int | list[int]:
    rows = table.shape[0]
    if "img_size" in overrides:
        size = overrides["img_size"]
        h, w = (size, size) if isinstance(size, int) else size
        patches = (h // patch) * (w // patch)
        if patches != rows:
            raise CheckpointError(f"{path}: img_size={size} gives {patches} patches, the stored table has {rows}")
        return size
    side = math.isqrt(rows)
    if side * side != rows:
        raise CheckpointError(f"{path}: the stored table's {rows} rows are not a square grid; pass img_size=(H, W)")
    return side * patch


def _video_grid(
    table: torch.Tensor, tubelet: int, patch: int, overrides: dict[str, Any], path: Path
) -> tuple[int, int]:
    """``(num_frames, grid side)`` of a stored 3-D table ``[T*S*S, D]``.

    Row counts factor in several ways (1568 = 8 x 14 x 14 = 2 x 28 x 28 = 32 x 7 x 7); a sin-cos table
    tells the right one: in its true grid every channel varies along one axis at most (time, row or
    column), and some channels vary along rows and some along columns. A table that fits no reading, or
    several of which none has V-JEPA's 16 frames, is an error asking for ``num_frames`` / ``img_size``.
    """
    rows = table.shape[0]
    if "num_frames" in overrides or "img_size" in overrides:
        frames = overrides.get("num_frames", VJEPA_FRAMES)
        size = overrides.get("img_size")
        steps = frames // tubelet
        if size is None:
            side = math.isqrt(rows // steps) if rows % steps == 0 else 0
        else:
            side = (size if isinstance(size, int) else size[0]) // patch
        if side == 0 or steps * side * side != rows:
            raise CheckpointError(
                f"{path}: the stored table has {rows} rows, which num_frames={frames}, img_size={size} do not give "
                f"(tubelet {tubelet}, patch {patch})"
            )
        return frames, side
    candidates = []
    for steps in range(1, rows + 1):
        if rows % steps == 0 and math.isqrt(rows // steps) ** 2 == rows // steps and rows // steps > 1:
            candidates.append((steps, math.isqrt(rows // steps)))
    fits = [c for c in candidates if _separable(table, c)]
    if len(fits) == 1:
        return fits[0][0] * tubelet, fits[0][1]
    for steps, side in fits:  # several readings (tiny grids): V-JEPA's 16-frame clips, if one of them
        if steps * tubelet == VJEPA_FRAMES:
            return VJEPA_FRAMES, side
    raise CheckpointError(
        f"{path}: cannot tell the clip length and image size from the stored table's {rows} rows; pass num_frames= "
        "and img_size= (the values the model was trained with)"
    )


def _separable(table: torch.Tensor, grid: tuple[int, int], tol: float = 1e-5) -> bool:
    steps, side = grid
    volume = table.float().reshape(steps, side, side, -1)
    varies = [(volume.amax(dim=a) - volume.amin(dim=a)).amax(dim=(0, 1)) > tol for a in range(3)]
    along = torch.stack(varies).sum(dim=0)
    # Not "as many along rows as along columns": V-JEPA's uniform_power tables cut the column code short.
    return bool((along <= 1).all()) and bool(varies[1].any()) and bool(varies[2].any())
