"""Working out what kind of application a ``module:attribute`` names, and saying in one line
why it cannot be served."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from bastion import App
from bastion.cli.loader import LoadError, as_handler, detect_interface, import_target
from tests.cli.userapps import write_apps


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    return []


async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
    return None


class AsgiClass:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        return None


class WsgiClass:
    def __call__(self, environ: Any, start_response: Any) -> list[bytes]:
        return []


class Handler(BaseHTTPRequestHandler):
    pass


def make_app() -> App:
    return App()


@pytest.mark.parametrize(
    ("obj", "kind"),
    [
        (App(), "app"),
        (Handler, "http.server"),
        (wsgi_app, "wsgi"),
        (WsgiClass(), "wsgi"),
        (asgi_app, "asgi"),
        (AsgiClass(), "asgi"),
    ],
)
def test_detects_each_interface(obj: Any, kind: str) -> None:
    assert detect_interface(obj) == kind


def test_unknown_shapes_are_explained() -> None:
    with pytest.raises(LoadError, match="--interface"):
        detect_interface(lambda a, b, c, d: None)
    with pytest.raises(LoadError, match="not an application"):
        detect_interface(42)


def test_factory_call_and_errors() -> None:
    assert isinstance(import_target("tests.cli.test_loader:make_app()"), App)
    with pytest.raises(LoadError, match="expected 'module:attribute'"):
        import_target("tests.cli.test_loader")
    with pytest.raises(LoadError, match="has no attribute"):
        import_target("tests.cli.test_loader:nothing_here")


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The user's folder as the current one, its modules forgotten afterwards."""
    write_apps(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    importlib.invalidate_caches()
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


@pytest.mark.parametrize(
    ("target", "options", "reason"),
    [
        ("broken:app", {}, "broken.py:1: SyntaxError: invalid syntax"),
        ("missing:app", {}, "cannot import 'missing' (No module named 'missing'); run from the "
         "folder that holds it or use --app-dir"),
        ("inner:app", {}, "cannot import 'inner' (No module named 'inner'); run from the "
         "folder that holds it or use --app-dir"),
        ("missing:app", {"app_dir": "src"}, "cannot import 'missing' from --app-dir src (No "
         "module named 'missing')"),
        ("needs:app", {}, "needs.py:2: ModuleNotFoundError: No module named "
         "'not_installed_anywhere' (while importing it; --log-level debug shows the traceback)"),
        ("raises:app", {}, "raises.py:4: JSONDecodeError: Expecting property name enclosed in "
         "double quotes: line 1 column 2 (char 1) (while importing it; --log-level debug shows "
         "the traceback)"),
        ("quits:app", {}, "quits called sys.exit(3) while being imported"),
        ("web.py:app", {}, "'web.py:app' is a file name, not a module: bastion run web:app"),
        ("src/inner.py:app", {}, "'src/inner.py:app' is a file name, not a module: bastion run "
         "--app-dir src inner:app"),
        ("web", {}, "expected 'module:attribute' such as myapp:app, got 'web'"),
        ("web:ap", {}, "module 'web' has no attribute 'ap' (did you mean web:app?)"),
        ("web:count", {}, "web:count is an int, not an application: expected a bastion.App, a "
         "WSGI or ASGI callable, or an http.server handler class"),
        ("web:create_app", {}, "web:create_app takes no arguments, so it is not an application; "
         "if it makes one, add --factory"),
        ("web:count", {"factory": True}, "web:count is an int, not a factory to call"),
        ("web:configured", {"factory": True}, "TypeError: configured() missing 1 required "
         "positional argument: 'config' (in the factory web:configured(); --log-level debug "
         "shows the traceback)"),
        ("fast:app", {"interface": "wsgi"}, "fast:app is an ASGI application, not a WSGI "
         "application: use --interface asgi, or leave --interface out to have it worked out"),
        ("web:app", {"interface": "asgi"}, "web:app is a WSGI application, not an ASGI "
         "application: use --interface wsgi, or leave --interface out to have it worked out"),
        ("web:app", {"interface": "http.server"}, "web:app is a WSGI application, not an "
         "http.server handler class: use --interface wsgi, or leave --interface out to have it "
         "worked out"),
        ("fast:app", {"interface": "app"}, "fast:app is an ASGI application, not a bastion.App: "
         "use --interface asgi, or leave --interface out to have it worked out"),
        ("web:count", {"interface": "wsgi"}, "web:count is an int, not an application: "
         "expected a bastion.App, a WSGI or ASGI callable, or an http.server handler class"),
    ],
)  # fmt: skip
def test_why_an_application_cannot_be_loaded_in_one_line(
    folder: Path, target: str, options: dict[str, Any], reason: str
) -> None:
    interface = options.pop("interface", "auto")
    with pytest.raises(LoadError) as caught:
        as_handler(import_target(target, **options), target, interface)
    assert str(caught.value) == reason


def test_factories_and_app_dir(folder: Path) -> None:
    web = import_target("web:app")
    assert import_target("web:create_app()") is web
    assert import_target("web:create_app", factory=True) is web
    assert import_target("inner:app", app_dir="src").__module__ == "inner"
