"""Working out what kind of application a ``module:attribute`` names."""

from __future__ import annotations

from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from bastion import App
from bastion.cli.loader import LoadError, detect_interface, import_target


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
