"""The method registry: every pretraining method registers itself once, under the name ``method:`` takes.

``@register("ijepa")`` on a :class:`~openjepa.methods.base.Method` subclass adds it. Importing
:mod:`openjepa.methods` imports every method module, so the registry is complete whenever this module is
reachable. The valid values of the config key ``method`` are the registry's names; the contract tests
parametrize over :func:`list_methods`, so a newly registered method is tested without editing a test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from openjepa.errors import ConfigError

if TYPE_CHECKING:
    from openjepa.methods.base import Method

M = TypeVar("M", bound="type[Method]")

_METHODS: dict[str, type[Method]] = {}


def register(name: str) -> Callable[[M], M]:
    """Class decorator registering a method under ``name`` (its ``method:`` value)."""

    def add(cls: M) -> M:
        if name in _METHODS and _METHODS[name] is not cls:
            raise ValueError(f"method name {name!r} is registered twice ({_METHODS[name].__name__}, {cls.__name__})")
        cls.name = name
        _METHODS[name] = cls
        return cls

    return add


def list_methods() -> list[str]:
    """The registered method names, in registration order."""
    return list(_METHODS)


def method_class(name: str) -> type[Method]:
    """The class registered under ``name``.

    Raises:
        ConfigError: no such method (the message lists the registered ones).
    """
    if name not in _METHODS:
        raise ConfigError(f"unknown method {name!r} (config key 'method'); choose one of {', '.join(_METHODS)}")
    return _METHODS[name]
