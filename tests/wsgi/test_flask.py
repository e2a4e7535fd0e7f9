"""A small Flask application on Bastion: routes, JSON, forms and files, streaming, errors."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests

flask = pytest.importorskip("flask")

from bastion.wsgi import WSGIHandler  # noqa: E402
from tests.serving import RunningServer, serve  # noqa: E402


class Teapot(Exception):
    pass


def make_app() -> Any:
    app = flask.Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024 * 1024

    @app.get("/")
    def index() -> str:
        return "Hello from Flask"

    @app.get("/users/<int:user_id>")
    def user(user_id: int) -> dict[str, Any]:
        return {"id": user_id, "url": flask.url_for("user", user_id=user_id)}

    @app.post("/json")
    def echo_json() -> tuple[dict[str, Any], int]:
        data = flask.request.get_json()
        return {"received": data, "method": flask.request.method}, 201

    @app.post("/form")
    def form() -> dict[str, Any]:
        upload = flask.request.files["upload"]
        content = upload.read()
        return {
            "name": flask.request.form["name"],
            "tags": flask.request.form.getlist("tag"),
            "filename": upload.filename,
            "size": len(content),
            "sha256": hashlib.sha256(content).hexdigest(),
        }

    @app.get("/stream")
    def stream() -> Any:
        count = flask.request.args.get("n", default=3, type=int)

        @flask.stream_with_context
        def generate() -> Iterator[str]:
            for i in range(count):
                yield f"line {i} of {flask.request.path}\n"

        return flask.Response(generate(), mimetype="text/plain")

    @app.get("/teapot")
    def teapot() -> str:
        raise Teapot()

    @app.get("/crash")
    def crash() -> str:
        raise RuntimeError("unhandled in a view")

    @app.errorhandler(Teapot)
    def handle_teapot(error: Teapot) -> tuple[dict[str, str], int]:
        return {"error": "short and stout"}, 418

    @app.errorhandler(404)
    def not_found(error: Exception) -> tuple[dict[str, str], int]:
        return {"error": "no such page", "path": flask.request.path}, 404

    @app.get("/redirect")
    def redirect() -> Any:
        return flask.redirect(flask.url_for("index"))

    @app.get("/cookie")
    def cookie() -> Any:
        response = flask.make_response({"seen": flask.request.cookies.get("visit")})
        response.set_cookie("visit", "yes")
        return response

    @app.get("/info")
    def info() -> dict[str, Any]:
        return {
            "host": flask.request.host,
            "url": flask.request.url,
            "remote": flask.request.remote_addr,
            "script_root": flask.request.script_root,
        }

    return app


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with serve(WSGIHandler(make_app())) as running:
        yield running


@pytest.fixture
def client(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def test_routes_and_json(client: httpx.Client) -> None:
    response = client.get("/")
    assert (response.status_code, response.text) == (200, "Hello from Flask")
    assert response.headers["content-type"].startswith("text/html")
    assert client.get("/users/42").json() == {"id": 42, "url": "/users/42"}
    response = client.post("/json", json={"a": [1, 2], "b": "é"})
    assert response.status_code == 201
    assert response.json() == {"received": {"a": [1, 2], "b": "é"}, "method": "POST"}


def test_form_and_file_upload(server: RunningServer) -> None:
    content = bytes(range(256)) * 4096  # 1 MiB
    response = requests.post(
        server.url + "/form",
        data={"name": "Ada", "tag": ["x", "y"]},
        files={"upload": ("data.bin", io.BytesIO(content), "application/octet-stream")},
        timeout=10,
    )
    assert response.status_code == 200
    assert response.json() == {
        "name": "Ada",
        "tags": ["x", "y"],
        "filename": "data.bin",
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
    }


def test_chunked_json_body(client: httpx.Client) -> None:
    response = client.post(
        "/json",
        content=iter([b'{"chunked"', b": true}"]),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 201
    assert response.json()["received"] == {"chunked": True}


def test_streaming_response(client: httpx.Client) -> None:
    with client.stream("GET", "/stream?n=50") as response:
        assert response.headers["transfer-encoding"] == "chunked"
        lines = list(response.iter_lines())
    assert lines == [f"line {i} of /stream" for i in range(50)]


def test_error_handlers(client: httpx.Client) -> None:
    response = client.get("/teapot")
    assert (response.status_code, response.json()) == (418, {"error": "short and stout"})
    response = client.get("/missing")
    assert response.status_code == 404
    assert response.json() == {"error": "no such page", "path": "/missing"}
    response = client.get("/crash")
    assert response.status_code == 500  # Flask's own 500 page; the server keeps going
    assert client.get("/").status_code == 200


def test_redirects_cookies_and_request_info(server: RunningServer, client: httpx.Client) -> None:
    response = client.get("/redirect")
    assert response.status_code == 302
    assert response.headers["location"] == "/"
    response = client.get("/cookie", headers={"Cookie": "visit=before"})
    assert response.json() == {"seen": "before"}
    assert "visit=yes" in response.headers["set-cookie"]
    assert client.get("/info").json() == {
        "host": f"127.0.0.1:{server.port}",
        "url": f"http://127.0.0.1:{server.port}/info",
        "remote": "127.0.0.1",
        "script_root": "",
    }


def test_head_request(client: httpx.Client) -> None:
    get = client.get("/users/7")
    head = client.head("/users/7")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"]


def test_mounted_under_a_root_path() -> None:
    with serve(WSGIHandler(make_app(), root_path="/api")) as server:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            assert client.get("/api/users/5").json() == {"id": 5, "url": "/api/users/5"}
            info = client.get("/api/info").json()
            assert info["script_root"] == "/api"
            assert info["url"] == f"http://127.0.0.1:{server.port}/api/info"
            response = client.get("/api/redirect")
            assert response.headers["location"] == "/api/"
