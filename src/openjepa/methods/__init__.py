"""Pretraining methods: one module per method, each registered once under its ``method:`` name.

Importing this package imports every method module, which fills the registry
(:func:`~openjepa.methods.registry.list_methods`). A new method is a new module here, decorated with
``@register("name")`` and added to the imports below.
"""

from openjepa.methods import clip, ijepa, salt, tcjepa, vjepa, vpixel  # noqa: F401  (registration)
from openjepa.methods.base import DataNeeds, Method
from openjepa.methods.registry import list_methods, method_class, register

__all__ = ["DataNeeds", "Method", "build_method", "list_methods", "method_class", "register"]


def build_method(cfg, total_steps: int) -> Method:  # type: ignore[no-untyped-def]
    """Instantiates ``cfg.method`` (schedules inside the method, e.g. EMA momentum, need ``total_steps``)."""
    return method_class(cfg.method)(cfg, total_steps)
