"""Turn ``module:attribute`` (or ``module:factory()``) into a handler the engine can run."""

from __future__ import annotations

import http.server
import importlib
import inspect
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


INTERFACES = ("auto", "app", "wsgi", "asgi", "http.server")


def detect_interface(obj: Any) -> str:
    """What kind of application ``obj`` is: one of ``INTERFACES`` other than auto.

    A ``BaseHTTPRequestHandler`` subclass is checked first (it has a ``handle`` method, but is no
    engine handler); then anything with ``handle(exchange)``, such as a native ``App``; then
    callables by shape: ASGI 3 is a coroutine function of ``(scope, receive, send)``, WSGI a
    plain callable of ``(environ, start_response)``.
    """
    if isinstance(obj, type) and issubclass(obj, http.server.BaseHTTPRequestHandler):
        return "http.server"
    if isinstance(obj, Handler) and not isinstance(obj, type):
        return "app"
    if not callable(obj):
        raise LoadError(f"a {type(obj).__name__} is not an application")
    call = obj if inspect.isroutine(obj) or isinstance(obj, type) else obj.__call__
    if inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(obj):
        return "asgi"
    try:
        parameters = [
            p
            for p in inspect.signature(obj).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        ]
    except (TypeError, ValueError):
        parameters = []
    if len(parameters) == 3:
        return "asgi"  # an ASGI app that returns an awaitable without being ``async def``
    if len(parameters) == 2:
        return "wsgi"
    raise LoadError(
        f"cannot tell what kind of application {obj!r} is: it is not a bastion.App, an "
        "http.server handler class, an ASGI callable (async, scope/receive/send) or a WSGI "
        "callable (environ/start_response); name it with --interface"
    )


def as_handler(obj: Any, target: str, interface: str = "auto", root_path: str = "") -> Handler:
    """The engine-facing handler for ``obj``; explains what was found when it is not one."""
    kind = detect_interface(obj) if interface == "auto" else interface
    if kind == "http.server":
        if not (isinstance(obj, type) and issubclass(obj, http.server.BaseHTTPRequestHandler)):
            raise LoadError(f"{target} is not an http.server.BaseHTTPRequestHandler subclass")
        return HandlerClassAdapter(obj, ServerInfo(obj))
    if kind == "app":
        if not isinstance(obj, Handler) or isinstance(obj, type):
            raise LoadError(
                f"{target} is a {type(obj).__name__}, not a bastion.App "
                "(or an object with a handle(exchange) method)"
            )
        return obj
    if kind == "wsgi":
        from bastion.wsgi import WSGIHandler

        return WSGIHandler(obj, root_path=root_path)
    if kind == "asgi":
        from bastion.asgi import ASGIHandler

        return ASGIHandler(obj, root_path=root_path)
    raise LoadError(f"unknown interface {kind!r}: expected one of {', '.join(INTERFACES)}")
