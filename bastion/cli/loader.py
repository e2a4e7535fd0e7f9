"""Turn ``module:attribute`` (or ``module:factory()``) into a handler the engine can run."""

from __future__ import annotations

import http.server
import importlib
import sys
from typing import Any

from bastion.compat.adapter import HandlerClassAdapter, ServerInfo
from bastion.engine.handler import Handler


class LoadError(Exception):
    """The target could not be imported or is not something Bastion can serve."""


def import_target(target: str) -> Any:
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise LoadError(f"expected 'module:attribute', got {target!r}")
    call = attribute.endswith("()")
    if call:
        attribute = attribute[:-2]
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise LoadError(f"cannot import module {module_name!r}: {exc}") from exc
        raise
    obj: Any = module
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise LoadError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if call:
        obj = obj()
    return obj


def as_handler(obj: Any, target: str) -> Handler:
    """The engine-facing handler for ``obj``; explains what was found when it is not one."""
    # Checked first: a handler class has a ``handle`` method too, but it is no engine handler.
    if isinstance(obj, type) and issubclass(obj, http.server.BaseHTTPRequestHandler):
        return HandlerClassAdapter(obj, ServerInfo(obj))
    if isinstance(obj, Handler) and not isinstance(obj, type):
        return obj
    kind = type(obj).__name__
    raise LoadError(
        f"{target} is a {kind}, which Bastion cannot serve: expected a bastion.App "
        "or an http.server.BaseHTTPRequestHandler subclass "
        "(or an object with a handle(exchange) method)"
    )
