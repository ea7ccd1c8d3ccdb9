"""Method registry: name → class. Each method lives in its own module and registers itself."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from clrepro.config import ConfigError, check_types
from clrepro.methods.base import Batch, Method

_REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    if cls.name in _REGISTRY:
        raise ValueError(f"method {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def method_class(name: str) -> type[Method]:
    if name not in _REGISTRY:
        raise ConfigError(f"method: unknown {name!r}; one of {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def available_methods() -> list[str]:
    return sorted(_REGISTRY)


def validate_params(name: str, params: dict[str, Any]):
    """The method's Params from a dict: unknown names, wrong types and non-finite numbers are
    ConfigErrors naming the parameter, checked before the Params' own range checks run."""
    cls = method_class(name)
    known = {f.name for f in fields(cls.Params)}
    for key in params:
        if key not in known:
            raise ConfigError(
                f"method_params.{key}: not a parameter of {name} (parameters: {sorted(known)})"
            )
    check_types(cls.Params, params, "method_params.")
    return cls.Params(**params)


def build_method(name: str, params: dict[str, Any], model, stream) -> Method:
    return method_class(name)(model, stream, validate_params(name, params))


# Importing the modules registers the methods.
from clrepro.methods import agem, der, er, ewc, finetune, joint, l2, lwf, ogd, pnn, sharpening  # noqa: E402, F401

__all__ = ["Batch", "Method", "available_methods", "build_method", "method_class", "register"]
