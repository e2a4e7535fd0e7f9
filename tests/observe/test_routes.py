"""Every kind of application names its route template for metrics, never the raw path."""

from __future__ import annotations

import http.server
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from bastion.asgi import ASGIHandler
from bastion.compat.adapter import HandlerClassAdapter, ServerInfo
from bastion.engine.handler import Handler
from bastion.observe.metrics import RequestMetrics
from bastion.static import StaticFiles, mount
from bastion.wsgi import WSGIHandler
from tests.serving import serve


def routes_seen(handler: Handler, paths: list[str]) -> set[tuple[str, int, str]]:
    metrics = RequestMetrics()
    with serve(handler) as server:
        assert server.server.state is not None
        server.call(server.server.state.stats.request_observers.append, metrics)
        with httpx.Client(base_url=server.url) as client:
            for path in paths:
                client.get(path)
    return set(metrics.requests)


def test_flask_rule() -> None:
    flask = pytest.importorskip("flask")
    app = flask.Flask(__name__)

    @app.get("/users/<int:user_id>")
    def user(user_id: int) -> str:
        return "user"

    seen = routes_seen(WSGIHandler(app), ["/users/1", "/users/2", "/nowhere"])
    assert ("GET", 200, "/users/<int:user_id>") in seen
    assert ("GET", 404, "") in seen


def test_fastapi_route() -> None:
    fastapi = pytest.importorskip("fastapi")
    app = fastapi.FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    seen = routes_seen(ASGIHandler(app, lifespan="off"), ["/items/1", "/items/2"])
    assert seen == {("GET", 200, "/items/{item_id}")}


def test_http_server_handler_class() -> None:
    class Hello(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"hi")

    seen = routes_seen(HandlerClassAdapter(Hello, ServerInfo(Hello)), ["/a", "/b/c"])
    assert {route for _, _, route in seen} == {Hello.__qualname__}


def test_static_files(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    os.mkdir(tmp_path / "sub")
    (tmp_path / "sub" / "b.txt").write_text("b")
    seen = routes_seen(StaticFiles(str(tmp_path)), ["/a.txt", "/sub/b.txt", "/missing"])
    assert {route for _, _, route in seen} == {"/{path:path}"}
    from tests.app.hello import app

    mounted = mount(app, "/static", StaticFiles(str(tmp_path)))
    seen = routes_seen(mounted, ["/static/a.txt", "/"])
    assert ("GET", 200, "/static/{path:path}") in seen
    assert ("GET", 200, "/") in seen
