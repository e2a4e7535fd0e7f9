"""The native App over a real socket: routing, requests, responses, errors."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import Any

import httpx
import pytest

from bastion import App, JSONResponse, Request, Response, StreamingResponse, SyncRequest
from bastion.engine.exchange import Exchange
from tests.serving import serve

app = App()


@app.get("/users/{user_id:int}")
async def user(request: Request) -> dict[str, object]:
    return {
        "id": request.path_params["user_id"],
        "type": type(request.path_params["user_id"]).__name__,
    }


@app.get("/files/{rest:path}")
async def files(request: Request) -> str:
    return request.path_params["rest"]


@app.route("/items/{name}", methods=["GET", "PUT"])
async def item(request: Request) -> Response:
    return Response(f"{request.method} {request.path_params['name']}")


@app.get("/query")
async def query(request: Request) -> JSONResponse:
    return JSONResponse({"query": request.query, "first": request.query_param("a")})


@app.get("/headers")
async def headers(request: Request) -> JSONResponse:
    return JSONResponse(
        {
            "x-custom": request.headers.get("X-CUSTOM"),
            "all": request.headers.get_all("x-multi"),
            "client": request.client[0] if request.client else None,
            "version": request.http_version,
        }
    )


@app.post("/json")
async def post_json(request: Request) -> JSONResponse:
    data = await request.json()
    return JSONResponse({"received": data}, status=201, headers={"x-seen": "yes"})


@app.post("/sync-json")
def post_sync_json(request: SyncRequest) -> dict[str, object]:
    return {"received": request.json(), "thread": True}


@app.post("/stream-count")
async def stream_count(request: Request) -> str:
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
    return str(total)


@app.get("/text")
def text(request: SyncRequest) -> str:
    return "héllo"


@app.get("/empty")
async def empty(request: Request) -> None:
    return None


@app.get("/sync-stream")
def sync_stream(request: SyncRequest) -> StreamingResponse:
    return StreamingResponse((f"line {i}\n" for i in range(3)), content_type="text/plain")


@app.get("/async-stream")
async def async_stream(request: Request) -> StreamingResponse:
    async def produce() -> object:
        for i in range(3):
            await asyncio.sleep(0.01)
            yield f"part {i}\n".encode()

    return StreamingResponse(produce(), content_length=21)  # type: ignore[arg-type]


@app.get("/raise")
async def raises(request: Request) -> Response:
    raise ValueError("handler bug")


@app.get("/raise-sync")
def raises_sync(request: SyncRequest) -> Response:
    raise ValueError("sync handler bug")


@app.get("/raise-after-await")
async def raises_later(request: Request) -> Response:
    await asyncio.sleep(0.01)
    raise ValueError("late bug")


@app.get("/raise-mid-stream")
async def raises_mid_stream(request: Request) -> StreamingResponse:
    async def produce() -> object:
        yield b"first part\n"
        raise ValueError("stream bug")

    return StreamingResponse(produce())  # type: ignore[arg-type]


@app.get("/bad-header")
async def bad_header(request: Request) -> Response:
    return Response(b"x", headers={"x-injected": "a\r\nset-cookie: evil=1"})


@app.get("/numbered")
async def numbered(request: Request) -> Response:
    return Response(b"n", headers={"x-count": 7})  # type: ignore[dict-item]


@app.get("/not-a-response")
async def wrong_type(request: Request) -> object:
    return 42


# Set by handlers, to show that each request starts from the server's context, not from the
# one the request before it left behind.
_SET_BY_A_HANDLER: ContextVar[str | None] = ContextVar("set_by_a_handler", default=None)


@app.get("/context/{value}")
async def set_context(request: Request) -> dict[str, object]:
    seen = _SET_BY_A_HANDLER.get()
    _SET_BY_A_HANDLER.set(request.path_params["value"])
    return {"seen": seen}


@app.get("/context-after-await/{value}")
async def set_context_then_wait(request: Request) -> dict[str, object]:
    seen = _SET_BY_A_HANDLER.get()
    _SET_BY_A_HANDLER.set(request.path_params["value"])
    await asyncio.sleep(0)
    return {"seen": seen, "kept": _SET_BY_A_HANDLER.get()}


@app.get("/wait/{n:int}")
async def waits(request: Request) -> dict[str, object]:
    await asyncio.sleep(0.02)
    return {"n": request.path_params["n"]}


@app.get("/current-task")
async def current_task(request: Request) -> dict[str, object]:
    first_step = asyncio.current_task() is not None
    await asyncio.sleep(0)
    return {"first_step": first_step, "after_await": asyncio.current_task() is not None}


@pytest.fixture(scope="module")
def client() -> object:
    with serve(app) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        yield http


def test_path_parameters_and_converters(client: httpx.Client) -> None:
    assert client.get("/users/42").json() == {"id": 42, "type": "int"}
    assert client.get("/users/abc").status_code == 404
    assert client.get("/files/a/b/c.txt").text == "a/b/c.txt"
    assert client.get("/items/x").text == "GET x"
    assert client.put("/items/y").text == "PUT y"


def test_405_lists_allowed_methods(client: httpx.Client) -> None:
    response = client.delete("/items/x")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD, PUT"
    assert client.post("/users/1").status_code == 405


def test_query_and_headers(client: httpx.Client) -> None:
    assert client.get("/query?a=1&a=2&b=&c=%20x").json() == {
        "query": {"a": ["1", "2"], "b": [""], "c": [" x"]},
        "first": "1",
    }
    data = client.get(
        "/headers", headers=[("X-Custom", "v"), ("X-Multi", "1"), ("X-Multi", "2")]
    ).json()
    assert data == {"x-custom": "v", "all": ["1", "2"], "client": "127.0.0.1", "version": "1.1"}


def test_json_bodies_async_and_sync(client: httpx.Client) -> None:
    response = client.post("/json", json={"a": [1, 2]})
    assert response.status_code == 201
    assert response.headers["x-seen"] == "yes"
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"received": {"a": [1, 2]}}
    assert client.post("/sync-json", json=[1]).json() == {"received": [1], "thread": True}


def test_streamed_request_body(client: httpx.Client) -> None:
    def chunks() -> object:
        for _ in range(64):
            yield b"z" * 65536

    response = client.post("/stream-count", content=chunks())  # type: ignore[arg-type]
    assert response.text == str(64 * 65536)


def test_return_value_coercions(client: httpx.Client) -> None:
    response = client.get("/text")
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.text == "héllo"
    response = client.get("/empty")
    assert response.status_code == 204
    assert "content-length" not in response.headers


def test_streaming_responses(client: httpx.Client) -> None:
    response = client.get("/sync-stream")
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.text == "line 0\nline 1\nline 2\n"
    response = client.get("/async-stream")
    assert response.headers["content-length"] == "21"
    assert response.text == "part 0\npart 1\npart 2\n"


@pytest.mark.parametrize("path", ["/raise", "/raise-sync", "/raise-after-await", "/bad-header"])
def test_handler_errors_are_500_and_logged(
    client: httpx.Client, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="bastion.error"):
        response = client.get(path)
    assert response.status_code == 500
    assert "set-cookie" not in response.headers
    assert any("handler error" in r.getMessage() for r in caplog.records)
    assert client.get("/users/1").status_code == 200  # still serving


def test_a_number_as_a_header_value_is_written_as_one(client: httpx.Client) -> None:
    response = client.get("/numbered")
    assert response.status_code == 200
    assert response.headers["x-count"] == "7"


def test_wrong_return_type_is_500(client: httpx.Client) -> None:
    assert client.get("/not-a-response").status_code == 500


def test_error_mid_stream_cuts_the_connection(client: httpx.Client) -> None:
    with serve(app) as server:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
        conn.request("GET", "/raise-mid-stream")
        response = conn.getresponse()
        assert response.status == 200
        with pytest.raises(http.client.IncompleteRead):
            response.read()


def test_head_on_get_route(client: httpx.Client) -> None:
    response = client.head("/users/7")
    assert response.status_code == 200
    assert response.content == b""
    assert int(response.headers["content-length"]) == len(
        json.dumps({"id": 7, "type": "int"}, separators=(",", ":"))
    )


def test_unknown_path_is_404(client: httpx.Client) -> None:
    assert client.get("/nowhere").status_code == 404


def test_context_variables_a_handler_sets_do_not_reach_the_next_request() -> None:
    with serve(app) as server, httpx.Client(base_url=server.url) as one_connection:
        for path in ["/context/a", "/context/b", "/context-after-await/c", "/context/d"]:
            assert one_connection.get(path).json()["seen"] is None
        assert one_connection.get("/context-after-await/e").json() == {"seen": None, "kept": "e"}
        assert server.stats.connections_opened == 1


def test_an_async_handlers_first_step_runs_as_eager_tasks_do_on_this_python(
    client: httpx.Client,
) -> None:
    # 3.12+: in an eager task, which asyncio.current_task() sees; before, inline, before any
    # task exists (bastion/engine/eager.py). After an await, in a task either way.
    assert client.get("/current-task").json() == {
        "first_step": sys.version_info >= (3, 12),
        "after_await": True,
    }


def test_handlers_that_return_raise_and_wait_answer_in_turn() -> None:
    # The first steps share one generator per server (bastion/engine/steps.py): one that
    # raised or waited must leave the next request a working one.
    expected = [
        ("/users/1", 200),
        ("/raise", 500),
        ("/users/2", 200),
        ("/raise-after-await", 500),
        ("/wait/3", 200),
        ("/context-after-await/x", 200),
        ("/not-a-response", 500),
        ("/users/4", 200),
    ]
    with serve(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        for path, status in expected:
            assert client.get(path).status_code == status, path
        assert client.get("/users/5").json() == {"id": 5, "type": "int"}


def test_handlers_waiting_at_once_each_get_their_own_answer() -> None:
    with serve(app) as server:

        def fetch(n: int) -> object:
            return httpx.get(f"{server.url}/wait/{n}", timeout=10).json()["n"]

        with ThreadPoolExecutor(16) as pool:
            assert list(pool.map(fetch, range(48))) == list(range(48))


def test_route_conflicts_are_refused() -> None:
    other = App()

    @other.get("/x")
    async def first(request: Request) -> str:
        return "1"

    with pytest.raises(ValueError, match="already routed"):

        @other.get("/x")
        async def second(request: Request) -> str:
            return "2"

    with pytest.raises(ValueError, match="must start with"):
        other.get("x")


# applications extend the public classes ------------------------------------------------------


class TextResponse(Response):
    """A subclass of the kind applications write: its own defaults, an attribute of its own."""

    def __init__(self, text: str, status: int = 200) -> None:
        super().__init__(text.upper(), status=status, headers={"content-type": "text/x-shout"})
        self.shouted = True


class TracingApp(App):
    """An App subclass that keeps state of its own, as frameworks built on it do."""

    def __init__(self) -> None:
        super().__init__()
        self.requests_seen = 0


def test_applications_can_subclass_app_and_response_and_add_attributes() -> None:
    custom = TracingApp()
    custom.database = {"greeting": "hello"}  # type: ignore[attr-defined]

    @custom.get("/")
    async def greet(request: Request) -> TextResponse:
        custom.requests_seen += 1
        response = TextResponse(custom.database["greeting"])  # type: ignore[attr-defined]
        response.note = "set by the handler"  # type: ignore[attr-defined]
        return response

    with serve(custom) as server, httpx.Client(base_url=server.url) as client:
        first = client.get("/")
        second = client.get("/")
    assert first.status_code == second.status_code == 200
    assert first.text == "HELLO"
    assert first.headers["content-type"] == "text/x-shout"
    assert custom.requests_seen == 2


class GatedApp(App):
    """An App subclass with a handle of its own, in front of the App's."""

    def __init__(self) -> None:
        super().__init__()
        self.handled: list[str] = []

    def handle(self, exchange: Exchange) -> None:
        self.handled.append(exchange.head.path)
        if exchange.head.path == "/teapot":
            exchange.respond(418, [("content-type", "text/plain")], b"short and stout\n")
            return
        super().handle(exchange)


def test_a_subclass_handle_is_called_and_can_hand_on_to_the_apps() -> None:
    gated = GatedApp()

    @gated.get("/")
    async def index(request: Request) -> str:
        return "index"

    with serve(gated) as server, httpx.Client(base_url=server.url) as client:
        assert client.get("/").text == "index"
        assert client.get("/teapot").status_code == 418
        assert client.get("/missing").status_code == 404
    assert gated.handled == ["/", "/teapot", "/missing"]


class ExclaimingApp(App):
    """An App subclass that changes what every handler returned on its way out."""

    def _finish(self, exchange: Exchange, result: Any, error: BaseException | None) -> None:
        if isinstance(result, str):
            result += "!"
        super()._finish(exchange, result, error)


def test_a_subclass_finish_sees_every_kind_of_handlers_result() -> None:
    exclaiming = ExclaimingApp()

    @exclaiming.get("/now")
    async def now(request: Request) -> str:
        return "now"

    @exclaiming.get("/later")
    async def later(request: Request) -> str:
        await asyncio.sleep(0)
        return "later"

    @exclaiming.get("/blocking")
    def blocking(request: SyncRequest) -> str:
        return "blocking"

    with serve(exclaiming) as server, httpx.Client(base_url=server.url) as client:
        assert [client.get(path).text for path in ["/now", "/later", "/blocking"]] == [
            "now!",
            "later!",
            "blocking!",
        ]
