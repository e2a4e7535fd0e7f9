"""The ASGI websocket scope: a plain ASGI application, Starlette and FastAPI, over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bastion.asgi import ASGIHandler
from bastion.engine import ServerConfig
from tests.serving import RunningServer, serve
from tests.websocket.support import (
    TEXT,
    closed_by_server,
    frame,
    handshake_request,
    wait_until,
)

pytest.importorskip("starlette")
pytest.importorskip("fastapi")

from fastapi import FastAPI, WebSocketDisconnect
from fastapi import WebSocket as FastAPIWebSocket
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

CONFIG = ServerConfig(graceful_timeout=5)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 10))


def ws_url(server: RunningServer, path: str) -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


# a plain ASGI application -------------------------------------------------------------------

events: dict[str, Any] = {}


async def raw_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["greeting"] = "from lifespan"
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    assert scope["type"] == "websocket"
    path = scope["path"]
    first = await receive()
    events["first"] = first
    if path == "/scope":
        await send({"type": "websocket.accept"})
        shown = {key: scope[key] for key in ("type", "http_version", "scheme", "path")}
        shown["asgi"] = scope["asgi"]
        shown["query_string"] = scope["query_string"].decode()
        shown["subprotocols"] = scope["subprotocols"]
        shown["state"] = scope["state"].get("greeting")
        shown["extensions"] = sorted(scope["extensions"])
        shown["header"] = dict(scope["headers"]).get(b"x-trace", b"").decode()
        shown["client"] = scope["client"][0]
        await send({"type": "websocket.send", "text": repr(shown)})
        await send({"type": "websocket.close", "code": 1000})
    elif path == "/accept":
        await send(
            {
                "type": "websocket.accept",
                "subprotocol": "b",
                "headers": [(b"x-extra", b"1")],
            }
        )
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                events["disconnect"] = message
                return
            if "text" in message:
                await send({"type": "websocket.send", "text": message["text"].upper()})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"][::-1]})
    elif path == "/close-before-accept":
        await send({"type": "websocket.close"})
    elif path == "/deny":
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 418,
                "headers": [(b"content-type", b"text/plain"), (b"x-why", b"teapot")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": b"short ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"and stout"})
    elif path == "/close-reason":
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 4000, "reason": "custom reason"})
        try:
            await send({"type": "websocket.send", "text": "too late"})
        except OSError as error:
            events["send_after_close"] = type(error).__name__
    elif path == "/raises":
        await send({"type": "websocket.accept"})
        raise RuntimeError("application bug")
    elif path == "/returns":
        await send({"type": "websocket.accept"})
    elif path == "/raises-early":
        raise RuntimeError("application bug before answering")
    elif path == "/bad-subprotocol":
        await send({"type": "websocket.accept", "subprotocol": "never-offered"})


@pytest.fixture(scope="module")
def raw() -> Iterator[RunningServer]:
    with serve(ASGIHandler(raw_app), CONFIG) as running:
        yield running


def refusal(server: RunningServer, path: str) -> tuple[int, dict[str, str], bytes]:
    async def talk() -> None:
        async with connect(ws_url(server, path)):
            raise AssertionError("the handshake was accepted")

    with pytest.raises(InvalidStatus) as refused:
        run(talk())
    response = refused.value.response
    return response.status_code, dict(response.headers), response.body or b""


def closed_with(server: RunningServer, path: str) -> tuple[int, str]:
    async def talk() -> tuple[int, str]:
        async with connect(ws_url(server, path)) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await ws.recv()
            assert closed.value.rcvd is not None
            return closed.value.rcvd.code, closed.value.rcvd.reason

    return run(talk())  # type: ignore[no-any-return]


def test_scope(raw: RunningServer) -> None:
    async def talk() -> str:
        async with connect(
            ws_url(raw, "/scope?x=1"),
            subprotocols=["a", "b"],
            additional_headers={"X-Trace": "t1"},
        ) as ws:
            return await ws.recv()  # type: ignore[return-value]

    shown = eval(run(talk()))  # the application sent a repr of plain data
    assert shown == {
        "type": "websocket",
        "http_version": "1.1",
        "scheme": "ws",
        "path": "/scope",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "query_string": "x=1",
        "subprotocols": ["a", "b"],
        "state": "from lifespan",
        "extensions": ["websocket.http.response"],
        "header": "t1",
        "client": "127.0.0.1",
    }
    assert events["first"] == {"type": "websocket.connect"}


def test_accept_with_subprotocol_and_headers_then_messages(raw: RunningServer) -> None:
    events.pop("disconnect", None)

    async def talk() -> list[Any]:
        async with connect(ws_url(raw, "/accept"), subprotocols=["a", "b"]) as ws:
            assert ws.response is not None
            got: list[Any] = [ws.subprotocol, ws.response.headers["x-extra"]]
            await ws.send("shout")
            got.append(await ws.recv())
            await ws.send(b"\x01\x02\x03")
            got.append(await ws.recv())
            await ws.close(4100, "leaving")
            return got

    assert run(talk()) == ["b", "1", "SHOUT", b"\x03\x02\x01"]
    wait_until(lambda: "disconnect" in events)
    assert events["disconnect"] == {
        "type": "websocket.disconnect",
        "code": 4100,
        "reason": "leaving",
    }


def test_close_before_accept_is_403(raw: RunningServer) -> None:
    assert refusal(raw, "/close-before-accept")[0] == 403


def test_denial_response(raw: RunningServer) -> None:
    status, headers, body = refusal(raw, "/deny")
    assert (status, headers["x-why"], body) == (418, "teapot", b"short and stout")


def test_close_code_and_reason_then_send_raises_oserror(raw: RunningServer) -> None:
    assert closed_with(raw, "/close-reason") == (4000, "custom reason")
    assert events["send_after_close"] == "WebSocketClosed"


def test_application_error_closes_1011(raw: RunningServer) -> None:
    assert closed_with(raw, "/raises")[0] == 1011


def test_application_return_closes_1000(raw: RunningServer) -> None:
    assert closed_with(raw, "/returns")[0] == 1000


@pytest.mark.parametrize("path", ["/raises-early", "/bad-subprotocol", "/unanswered"])
def test_no_valid_answer_to_the_handshake_is_500(raw: RunningServer, path: str) -> None:
    # Raising, accepting with a subprotocol the client did not offer, or returning without
    # an answer (the last path falls through every branch of the application).
    assert refusal(raw, path)[0] == 500


def test_root_path_in_the_scope() -> None:
    seen: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        seen.update(path=scope["path"], root=scope["root_path"], raw=scope["raw_path"])
        await send({"type": "websocket.close"})

    with serve(ASGIHandler(app, root_path="/api", lifespan="off"), CONFIG) as server:
        assert refusal(server, "/chat")[0] == 403
    assert seen == {"path": "/api/chat", "root": "/api", "raw": b"/api/chat"}


# Starlette ------------------------------------------------------------------------------------


async def starlette_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await websocket.send_text(message["text"])
        else:
            await websocket.send_bytes(message["bytes"])


async def starlette_json(websocket: WebSocket) -> None:
    await websocket.accept()
    data = await websocket.receive_json()
    await websocket.send_json({"got": data, "room": websocket.path_params["room"]})
    await websocket.close(code=4003, reason="done")


async def starlette_state(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text(websocket.state.pool)
    await websocket.close()


@contextlib.asynccontextmanager
async def starlette_lifespan(app: Starlette) -> AsyncIterator[dict[str, str]]:
    yield {"pool": "the pool"}


starlette_app = Starlette(
    routes=[
        WebSocketRoute("/echo", starlette_echo),
        WebSocketRoute("/json/{room}", starlette_json),
        WebSocketRoute("/state", starlette_state),
    ],
    lifespan=starlette_lifespan,
)


@pytest.fixture(scope="module")
def starlette_server() -> Iterator[RunningServer]:
    with serve(ASGIHandler(starlette_app), CONFIG) as running:
        yield running


def test_starlette_echo(starlette_server: RunningServer) -> None:
    async def talk() -> list[Any]:
        async with connect(ws_url(starlette_server, "/echo")) as ws:
            out = []
            for message in ("one", b"two", "three" * 1000):
                await ws.send(message)
                out.append(await ws.recv())
            return out

    assert run(talk()) == ["one", b"two", "three" * 1000]


def test_starlette_json_path_params_and_close(starlette_server: RunningServer) -> None:
    async def talk() -> tuple[Any, ...]:
        async with connect(ws_url(starlette_server, "/json/lobby")) as ws:
            await ws.send('{"n": 1}')
            reply = await ws.recv()
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None
            return reply, closed.value.rcvd.code, closed.value.rcvd.reason

    reply, code, reason = run(talk())
    assert reply == '{"got":{"n":1},"room":"lobby"}'
    assert (code, reason) == (4003, "done")


def test_starlette_lifespan_state(starlette_server: RunningServer) -> None:
    async def talk() -> Any:
        async with connect(ws_url(starlette_server, "/state")) as ws:
            return await ws.recv()

    assert run(talk()) == "the pool"


def test_starlette_unknown_websocket_path_is_refused(starlette_server: RunningServer) -> None:
    assert refusal(starlette_server, "/nowhere")[0] == 403


# FastAPI --------------------------------------------------------------------------------------

fastapi_app = FastAPI()
fastapi_events: dict[str, Any] = {}


@fastapi_app.websocket("/chat/{room}")
async def chat(websocket: FastAPIWebSocket, room: str, token: str | None = None) -> None:
    if token != "secret":
        await websocket.close(code=1008)
        return
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            await websocket.send_text(f"{room}: {text}")
    except WebSocketDisconnect as gone:
        fastapi_events["disconnect"] = gone.code


@fastapi_app.get("/")
async def index() -> dict[str, str]:
    return {"http": "still works"}


@pytest.fixture(scope="module")
def fastapi_server() -> Iterator[RunningServer]:
    with serve(ASGIHandler(fastapi_app), CONFIG) as running:
        yield running


def test_fastapi_websocket_with_query_dependency(fastapi_server: RunningServer) -> None:
    fastapi_events.clear()

    async def talk() -> list[Any]:
        async with connect(ws_url(fastapi_server, "/chat/kitchen?token=secret")) as ws:
            replies = []
            for text in ("hello", "bye"):
                await ws.send(text)
                replies.append(await ws.recv())
            await ws.close(1001)
            return replies

    assert run(talk()) == ["kitchen: hello", "kitchen: bye"]
    wait_until(lambda: "disconnect" in fastapi_events)
    assert fastapi_events["disconnect"] == 1001


def test_fastapi_close_before_accept_is_403(fastapi_server: RunningServer) -> None:
    assert refusal(fastapi_server, "/chat/kitchen")[0] == 403


def test_fastapi_http_beside_websocket(fastapi_server: RunningServer) -> None:
    assert httpx.get(fastapi_server.url + "/").json() == {"http": "still works"}


def test_frames_or_requests_sent_before_the_101_end_the_connection() -> None:
    # Read with the handshake, before the application accepted: parsed as HTTP, so lost to
    # the WebSocket; the connection ends rather than carrying on with a gap.
    offer = "Sec-WebSocket-Protocol: a, b"
    early = (frame(TEXT, b"too early"), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with serve(ASGIHandler(raw_app, lifespan="off", eager=True), CONFIG) as server:
        for data in early:
            with server.connect() as sock:
                sock.sendall(handshake_request("/accept", offer) + data)
                assert closed_by_server(sock)
        wait_until(lambda: server.stats.errors_by_kind.get("switched-early-data", 0) >= 2)

        async def talk() -> Any:
            async with connect(ws_url(server, "/accept"), subprotocols=["b"]) as ws:
                await ws.send("fine")
                return await ws.recv()

        assert run(talk()) == "FINE"
