"""Typed configuration: the schema (dataclasses), YAML files with ``key=value`` overrides, clear errors.

- :mod:`openjepa.config.schema`: what a run is made of, one dataclass per section.
- :mod:`openjepa.config.loading`: files, overrides, type checks, comparison of two configs.
"""

from openjepa.config.loading import (
    RESUME_MAY_CHANGE,
    apply_overrides,
    changed_keys,
    check_complete,
    dump_yaml,
    experiment_changes,
    from_dict,
    get_key,
    load_config,
    parse_override,
    to_dict,
)
from openjepa.config.schema import (
    MISSING,
    BlockGeneratorConfig,
    ClipConfig,
    Config,
    DataConfig,
    DecoderConfig,
    EvalConfig,
    MaskConfig,
    ModelConfig,
    OptimConfig,
    ScenesConfig,
    SpritesConfig,
    TCJEPAConfig,
    TeacherConfig,
    TextConfig,
    TrainConfig,
)
from openjepa.errors import ConfigError

__all__ = [
    "MISSING",
    "RESUME_MAY_CHANGE",
    "BlockGeneratorConfig",
    "ClipConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "DecoderConfig",
    "EvalConfig",
    "MaskConfig",
    "ModelConfig",
    "OptimConfig",
    "ScenesConfig",
    "SpritesConfig",
    "TCJEPAConfig",
    "TeacherConfig",
    "TextConfig",
    "TrainConfig",
    "apply_overrides",
    "changed_keys",
    "check_complete",
    "dump_yaml",
    "experiment_changes",
    "from_dict",
    "get_key",
    "load_config",
    "parse_override",
    "to_dict",
]
