"""Building a :class:`~openjepa.config.schema.Config` from YAML files and ``key=value`` overrides.

A config file is YAML whose nesting mirrors the schema. A file may start from another one with
``_base_: other.yaml`` (path relative to the file); its keys then override the base's. Command-line
overrides use dotted keys (``optim.lr=5e-4``, ``mask.target_scale=[0.1,0.2]``) and values parsed as
YAML. Every key is checked: an unknown key or a value of the wrong type raises :class:`ConfigError`
naming the key, where it came from, and the fix.

Why not OmegaConf: its structured configs merge the same way, but they coerce silently
(``train.compile=3`` becomes ``True``, ``"3"`` becomes ``3``), so a second, strict pass would be needed to
keep the errors this module gives; the strict pass alone is what is here.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Union

import yaml

from openjepa.config.schema import MISSING, Config
from openjepa.errors import ConfigError

# Keys that may change when a run is resumed: they change how a run is watched, stored or sped up, not
# what it computes. Every other key defines the experiment. `train.epochs` / `train.max_steps` may change
# so that a finished run can be extended (its schedules then stretch to the new length).
RESUME_MAY_CHANGE = (
    "train.epochs",
    "train.max_steps",
    "train.flops_budget",
    "train.device",
    "train.precision",
    "train.compile",
    "train.log_every",
    "train.ckpt_every",
    "train.keep_every",
    "train.rankme_every",
    "train.progress",
    "train.tensorboard",
    "data.num_workers",
    "text.cache",
    "text.prewarm",
    "text.device",
    "eval",
)


# ----------------------------------------------------------------------------- type checking


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
    if dataclasses.is_dataclass(tp):
        obj = tp()
        _apply(obj, value, key + ".", origin)
        return obj
    if org in (tuple, list):
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise fail()
        if org is list or (len(args) == 2 and args[1] is Ellipsis):
            items = [_coerce(v, args[0], f"{key}[{i}]", origin) for i, v in enumerate(value)]
            return items if org is list else tuple(items)
        if len(value) != len(args):
            raise ConfigError(
                f"config key '{key}' ({origin}): expected {len(args)} values, got {len(value)} ({value!r})."
            )
        return tuple(_coerce(v, a, key, origin) for v, a in zip(value, args))
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


def _unknown_key_error(key: str, name: str, cls: type, origin: str) -> ConfigError:
    known = list(_fields(cls))
    close = difflib.get_close_matches(name, known, n=1)
    parent = key.rsplit(".", 1)[0] + "." if "." in key else ""
    hint = f" Did you mean '{parent}{close[0]}'?" if close else ""
    return ConfigError(f"unknown config key '{key}' ({origin}).{hint} Valid keys here: {', '.join(known)}.")


def _apply(obj: Any, data: Any, prefix: str, origin: str) -> None:
    """Writes the values of ``data`` into the dataclass instance ``obj`` (recursively, checked)."""
    if not isinstance(data, dict):
        where = prefix.rstrip(".") or "<root>"
        raise ConfigError(f"config section '{where}' ({origin}) must be a mapping of keys to values, got {data!r}")
    fields = _fields(type(obj))
    hints = typing.get_type_hints(type(obj))
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


# ----------------------------------------------------------------------------- files and overrides


def _load_yaml(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[dict[str, Any], str]]:
    """Returns the layers (base first) of a YAML file that may name a ``_base_``."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"config file {path} includes itself through '_base_'")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}. Pass the path of a YAML file, e.g. configs/ijepa/demo.yaml")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from err
    if data is None or data == {}:
        # An empty file would silently train the defaults: almost always a wrong path or an unsaved editor.
        raise ConfigError(
            f"config file {path} is empty. Put at least `method: <name>` in it, or start from a preset such "
            "as configs/ijepa/demo.yaml"
        )
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of keys to values at the top level, got "
            f"{type(data).__name__} {data!r}"
        )
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


def apply_overrides(cfg: Config, overrides: Sequence[str], origin: str = "command line") -> Config:
    """Applies ``key=value`` overrides to ``cfg`` in place (checked) and returns it."""
    for text in overrides:
        key, value = parse_override(text)
        _apply(cfg, _nest(key, value), "", origin)
    return cfg


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


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Builds a :class:`Config` from defaults, an optional YAML file (with bases) and overrides.

    Raises:
        ConfigError: unknown key, wrong type, invalid choice, missing required value, empty file.
    """
    cfg = Config()
    if path is not None:
        for data, origin in _load_yaml(Path(path)):
            _apply(cfg, _fix_yaml_floats(data), "", origin)
    apply_overrides(cfg, overrides)
    check_complete(cfg)
    return cfg


def check_complete(cfg: Config) -> None:
    """Raises when a required value is unset or fields contradict each other."""
    missing = find_missing(cfg)
    if missing:
        raise ConfigError(
            "required config value(s) not set: "
            + ", ".join(missing)
            + ". Set them in the YAML file or on the command line, e.g. "
            + f"{missing[0]}=/path/to/data"
        )
    validate(cfg)


def validate(cfg: Config) -> None:
    """Cross-field checks that single-field types cannot express (method-specific ones live in the method)."""
    data, model = cfg.data, cfg.model
    if data.source not in ("scenes", "sprites") and not data.path:
        raise ConfigError(f"data.path is required when data.source={data.source!r}: pass data.path=/path/to/data")
    if data.image_size % model.patch_size:
        raise ConfigError(
            f"data.image_size={data.image_size} is not a multiple of model.patch_size={model.patch_size}: "
            "choose sizes with image_size % patch_size == 0"
        )
    if data.num_frames < 1 or data.frame_step < 1:
        raise ConfigError(f"data.num_frames={data.num_frames} and data.frame_step={data.frame_step} must be >= 1")
    if data.num_frames > 1 and data.num_frames % model.tubelet_size:
        raise ConfigError(
            f"data.num_frames={data.num_frames} is not divisible by model.tubelet_size={model.tubelet_size}: "
            "choose data.num_frames as a multiple of the tubelet size (e.g. 16 frames with tubelets of 2)"
        )
    for key in ("mask.context_scale", "mask.target_scale", "data.crop_scale"):
        lo, hi = get_key(cfg, key)
        if not 0 < lo <= hi <= 1:
            raise ConfigError(f"{key}={[lo, hi]}: need 0 < low <= high <= 1")
    for key in ("mask.context_aspect", "mask.target_aspect", "data.crop_aspect"):
        lo, hi = get_key(cfg, key)
        if not 0 < lo <= hi:
            raise ConfigError(f"{key}={[lo, hi]}: need 0 < low <= high")
    if not 0 < cfg.mask.tube_ratio < 1:
        raise ConfigError(f"mask.tube_ratio={cfg.mask.tube_ratio}: need 0 < ratio < 1")
    if cfg.optim.accum_steps < 1:
        raise ConfigError("optim.accum_steps must be >= 1")
    if data.batch_size < 1:
        raise ConfigError("data.batch_size must be >= 1")


# ----------------------------------------------------------------------------- reading and comparing


def get_key(cfg: Any, key: str) -> Any:
    """The value at a dotted key (``"optim.lr"``)."""
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


def _leaves(data: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _leaves(v, f"{prefix}{k}.")
    else:
        yield prefix.rstrip("."), data


def changed_keys(a: Config, b: Config) -> list[str]:
    """Dotted keys whose values differ between two configs (lists compared whole)."""
    la, lb = dict(_leaves(to_dict(a))), dict(_leaves(to_dict(b)))
    return sorted(k for k in la.keys() | lb.keys() if la.get(k) != lb.get(k))


def experiment_changes(cfg: Config, saved: Config) -> list[str]:
    """Keys that define the experiment (everything outside :data:`RESUME_MAY_CHANGE`) and differ."""

    def may_change(key: str) -> bool:
        return any(key == k or key.startswith(k + ".") for k in RESUME_MAY_CHANGE)

    return [k for k in changed_keys(cfg, saved) if not may_change(k)]
