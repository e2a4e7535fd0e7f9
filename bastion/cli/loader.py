"""Turn ``module:attribute`` (or ``module:factory()``) into a handler the engine can run.

Whatever goes wrong on the way is a :class:`LoadError` whose message is one line the person
starting the server can act on: the file and line of a syntax error or of the exception the
module raised while being imported, the folder to run from, the flag that was probably meant.
A traceback through importlib and Bastion's frames tells them none of that; it is logged at
debug level for when it does help.
"""

from __future__ import annotations

import difflib
import http.server
import importlib
import inspect
import logging
import os
import sys
import sysconfig
import traceback
from typing import Any

from bastion.compat.adapter import HandlerClassAdapter, ServerInfo
from bastion.engine.handler import Handler
from bastion.websocket.config import WebSocketConfig

logger = logging.getLogger("bastion.server")

INTERFACES = ("auto", "app", "wsgi", "asgi", "http.server")
_KINDS = {
    "app": "a bastion.App",
    "http.server": "an http.server handler class",
    "wsgi": "a WSGI application",
    "asgi": "an ASGI application",
}
_LIBRARIES = tuple(
    {
        os.path.dirname(os.path.dirname(__file__)) + os.sep,
        *(sysconfig.get_path(name) + os.sep for name in ("stdlib", "platstdlib", "purelib")),
    }
)
_EXPECTED = "expected a bastion.App, a WSGI or ASGI callable, or an http.server handler class"


class LoadError(Exception):
    """The target could not be imported or is not something Bastion can serve."""


def import_target(target: str, *, app_dir: str = "", factory: bool = False) -> Any:
    """The object ``target`` names, imported with ``app_dir`` first on ``sys.path``; called
    when ``factory`` is set or the target ends in ``()``."""
    module_name, _, attribute = _split(target)
    call = factory or attribute.endswith("()")
    attribute = attribute.removesuffix("()")
    add_app_dir(app_dir)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name + ".").startswith(exc.name + "."):
            if app_dir:
                raise LoadError(
                    f"cannot import {module_name!r} from --app-dir {app_dir} ({exc})"
                ) from None
            raise LoadError(
                f"cannot import {module_name!r} ({exc}); run from the folder that holds it "
                "or use --app-dir"
            ) from None
        raise LoadError(_raised(exc, "while importing it")) from exc
    except Exception as exc:
        raise LoadError(_raised(exc, "while importing it")) from exc
    except SystemExit as exc:
        raise LoadError(
            f"{module_name} called sys.exit({exc.code!r}) while being imported"
        ) from None
    obj: Any = module
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            names = [name for name in dir(obj) if not name.startswith("_")]
            close = difflib.get_close_matches(part, names, n=1)
            hint = f" (did you mean {module_name}:{close[0]}?)" if close else ""
            raise LoadError(
                f"module {module_name!r} has no attribute {attribute!r}{hint}"
            ) from None
    if call:
        if not callable(obj):
            raise LoadError(f"{module_name}:{attribute} is {_a(obj)}, not a factory to call")
        try:
            obj = obj()
        except Exception as exc:
            raise LoadError(_raised(exc, f"in the factory {module_name}:{attribute}()")) from exc
    return obj


def add_app_dir(app_dir: str) -> None:
    """Put ``app_dir`` (or the current folder, as ``python -m`` does) first on the import path."""
    path = os.path.abspath(app_dir) if app_dir else ""
    if path not in sys.path and (path or "." not in sys.path):
        sys.path.insert(0, path)


def check_target(target: str) -> None:
    """Refuse a target that cannot name a module's attribute, before a worker tries."""
    _split(target)


def _split(target: str) -> tuple[str, str, str]:
    module_name, sep, attribute = target.partition(":")
    stem = module_name.removesuffix(".py")
    folder, _, stem = stem.rpartition("/")
    if stem != module_name:
        # A path, as a shell completes it: say how to name the module instead.
        named = f"{stem}:{attribute or 'app'}"
        where = f" --app-dir {folder}" if folder else ""
        raise LoadError(f"{target!r} is a file name, not a module: bastion run{where} {named}")
    if not sep or not module_name or not attribute:
        raise LoadError(f"expected 'module:attribute' such as myapp:app, got {target!r}")
    return module_name, sep, attribute


def _raised(exc: BaseException, when: str) -> str:
    """``file:line: Type: message`` for an exception raised by the application's code."""
    logger.debug("the application raised %s", when, exc_info=exc)
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{_shown(exc.filename)}:{exc.lineno}: SyntaxError: {exc.msg}"
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith("<frozen ")
    ]
    # The line to fix is in the application, not in the library it called.
    own = [frame for frame in frames if not frame.filename.startswith(_LIBRARIES)]
    where = f"{_shown(own[-1].filename)}:{own[-1].lineno}: " if own else ""
    message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return f"{where}{message} ({when}; --log-level debug shows the traceback)"


def _shown(filename: str) -> str:
    relative = os.path.relpath(filename)
    return filename if relative.startswith("..") else relative


def _a(obj: Any) -> str:
    if obj is None:
        return "None"
    name = type(obj).__name__
    return f"{'an' if name[0].lower() in 'aeiou' else 'a'} {name}"


def _not_an_application(obj: Any, name: str) -> LoadError:
    if name:
        return LoadError(f"{name} is {_a(obj)}, not an application: {_EXPECTED}")
    return LoadError(f"{_a(obj)} is not an application: {_EXPECTED}")


def detect_interface(obj: Any, name: str = "") -> str:
    """What kind of application ``obj`` is: one of ``INTERFACES`` other than auto.

    A ``BaseHTTPRequestHandler`` subclass is checked first (it has a ``handle`` method, but is no
    engine handler); then anything with ``handle(exchange)``, such as a native ``App``; then
    callables by shape: ASGI 3 is a coroutine function of ``(scope, receive, send)``, WSGI a
    plain callable of ``(environ, start_response)``. ``name`` is how messages call ``obj``.
    """
    if isinstance(obj, type) and issubclass(obj, http.server.BaseHTTPRequestHandler):
        return "http.server"
    if isinstance(obj, Handler) and not isinstance(obj, type):
        return "app"
    if not callable(obj):
        raise _not_an_application(obj, name)
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
        parameters = None
    if parameters is not None and len(parameters) == 3:
        return "asgi"  # an ASGI app that returns an awaitable without being ``async def``
    if parameters is not None and len(parameters) == 2:
        return "wsgi"
    if parameters == []:
        raise LoadError(
            f"{name or repr(obj)} takes no arguments, so it is not an application; if it "
            "makes one, add --factory"
        )
    raise LoadError(
        f"cannot tell what kind of application {name or repr(obj)} is: it is not a bastion.App, an "
        "http.server handler class, an ASGI callable (async, scope/receive/send) or a WSGI "
        "callable (environ/start_response); name it with --interface"
    )


def _shape(obj: Any) -> str | None:
    """What ``obj`` clearly is, or None when its shape does not say."""
    try:
        return detect_interface(obj)
    except LoadError:
        return None


def as_handler(
    obj: Any,
    target: str,
    interface: str = "auto",
    root_path: str = "",
    websocket: WebSocketConfig | None = None,
) -> Handler:
    """The engine-facing handler for ``obj``; explains what was found when it is not one.

    An ``interface`` that contradicts what ``obj`` clearly is is refused here, at startup:
    served anyway, every request would fail with a 500. ``websocket`` (the command line's
    limits) goes to an ASGI application, and to an ``App`` that did not set its own.
    """
    kind = detect_interface(obj, target) if interface == "auto" else interface
    if kind not in _KINDS:
        raise LoadError(f"unknown interface {kind!r}: expected one of {', '.join(INTERFACES)}")
    if interface != "auto":
        if not callable(obj) and not isinstance(obj, Handler):
            raise _not_an_application(obj, target)
        found = _shape(obj)
        if found is not None and found != kind:
            raise LoadError(
                f"{target} is {_KINDS[found]}, not {_KINDS[kind]}: use --interface {found}, "
                "or leave --interface out to have it worked out"
            )
    if kind == "http.server":
        if not (isinstance(obj, type) and issubclass(obj, http.server.BaseHTTPRequestHandler)):
            raise LoadError(f"{target} is not an http.server.BaseHTTPRequestHandler subclass")
        return HandlerClassAdapter(obj, ServerInfo(obj))
    if kind == "app":
        if not isinstance(obj, Handler) or isinstance(obj, type):
            raise LoadError(
                f"{target} is {_a(obj)}, not a bastion.App "
                "(or an object with a handle(exchange) method)"
            )
        from bastion.app import App

        handler: Handler = obj
        if websocket is not None and isinstance(obj, App) and not obj.websocket_configured:
            obj.websocket_config = websocket
        return handler
    if kind == "wsgi":
        from bastion.wsgi import WSGIHandler

        return WSGIHandler(obj, root_path=root_path)
    from bastion.asgi import ASGIHandler

    return ASGIHandler(obj, root_path=root_path, websocket=websocket)
