"""App.websocket routes over real sockets, with the websockets client."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bastion import App
from bastion.app import Request, WebSocket
from tests.serving import RunningServer, read_response, serve
from tests.websocket.support import TEXT, frame, handshake_request, read_frame, read_head

app = App()
seen: dict[str, Any] = {}


@app.websocket("/echo")
async def echo(ws: WebSocket) -> None:
    async for message in ws:
        await ws.send(message)


@app.websocket("/rooms/{room}")
async def room(ws: WebSocket) -> None:
    await ws.accept()
    await ws.send(f"room {ws.path_params['room']} q={ws.query_param('q')}")
    await ws.send(ws.headers.get("x-user") or "")


@app.get("/rooms/{room}")
async def room_page(request: Request) -> str:
    return "a page, not a socket"


@app.websocket("/proto")
async def proto(ws: WebSocket) -> None:
    chosen = "chat.v2" if "chat.v2" in ws.subprotocols else None
    await ws.accept(subprotocol=chosen, headers=[("x-accepted", "yes")])
    await ws.send(f"{ws.subprotocol}")


@app.websocket("/close")
async def close(ws: WebSocket) -> None:
    await ws.receive()
    await ws.close(4001, "bye now")


@app.websocket("/count-close")
async def count_close(ws: WebSocket) -> None:
    async for _ in ws:
        pass
    seen["client_close"] = (ws.close_code, ws.close_reason)


@app.websocket("/refuse")
async def refuse(ws: WebSocket) -> None:
    await ws.reject(401, b"who are you\n")


@app.websocket("/return-early")
async def return_early(ws: WebSocket) -> None:
    return None


@app.websocket("/fails")
async def fails(ws: WebSocket) -> None:
    await ws.receive()
    raise ValueError("handler bug")


@app.websocket("/fails-early")
async def fails_early(ws: WebSocket) -> None:
    raise ValueError("handler bug before accepting")


@pytest.fixture(scope="module")
def server() -> Any:
    with serve(app) as running:
        yield running


def url(server: RunningServer, path: str) -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_echo_text_and_binary(server: RunningServer) -> None:
    async def talk() -> list[Any]:
        async with connect(url(server, "/echo")) as ws:
            await ws.send("héllo")
            first = await ws.recv()
            await ws.send(b"\x00\x01\xff")
            second = await ws.recv()
            await ws.send(["frag", "mented"])  # one message in two frames
            third = await ws.recv()
            return [first, second, third]

    assert run(talk()) == ["héllo", b"\x00\x01\xff", "fragmented"]


def test_large_message_within_the_limit(server: RunningServer) -> None:
    payload = bytes(range(256)) * 3000  # 768 KB, under the 1 MiB default

    async def talk() -> bytes:
        async with connect(url(server, "/echo"), max_size=None) as ws:
            await ws.send(payload)
            return await ws.recv()  # type: ignore[return-value]

    assert run(talk()) == payload


def test_path_params_query_and_headers(server: RunningServer) -> None:
    async def talk() -> list[Any]:
        async with connect(
            url(server, "/rooms/blue?q=1"), additional_headers={"X-User": "ann"}
        ) as ws:
            return [await ws.recv(), await ws.recv()]

    assert run(talk()) == ["room blue q=1", "ann"]


def test_plain_get_on_a_path_with_both_routes_is_http(server: RunningServer) -> None:
    assert httpx.get(f"{server.url}/rooms/blue").text == "a page, not a socket"


def test_plain_get_on_a_websocket_only_path_is_426(server: RunningServer) -> None:
    response = httpx.get(f"{server.url}/echo")
    assert response.status_code == 426
    assert response.headers["upgrade"] == "websocket"


def test_subprotocol_and_accept_headers(server: RunningServer) -> None:
    async def talk() -> tuple[Any, ...]:
        async with connect(url(server, "/proto"), subprotocols=["chat.v1", "chat.v2"]) as ws:
            assert ws.response is not None
            return ws.subprotocol, ws.response.headers["x-accepted"], await ws.recv()

    assert run(talk()) == ("chat.v2", "yes", "chat.v2")


def test_no_subprotocol_offered(server: RunningServer) -> None:
    async def talk() -> Any:
        async with connect(url(server, "/proto")) as ws:
            return ws.subprotocol, await ws.recv()

    assert run(talk()) == (None, "None")


def test_server_close_code_and_reason(server: RunningServer) -> None:
    async def talk() -> tuple[Any, ...]:
        async with connect(url(server, "/close")) as ws:
            await ws.send("go")
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None
            return closed.value.rcvd.code, closed.value.rcvd.reason

    assert run(talk()) == (4001, "bye now")


def test_client_close_code_reaches_the_handler(server: RunningServer) -> None:
    seen.pop("client_close", None)

    async def talk() -> None:
        async with connect(url(server, "/count-close")) as ws:
            await ws.send("x")
            await ws.close(4321, "done here")

    run(talk())
    assert asyncio.run(_wait_for(lambda: "client_close" in seen))
    assert seen["client_close"] == (4321, "done here")


async def _wait_for(predicate: Any, timeout: float = 5.0) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            return False
        await asyncio.sleep(0.01)
    return True


def refusal(server: RunningServer, path: str) -> tuple[int, bytes]:
    """The HTTP answer to a handshake the server does not accept."""

    async def talk() -> None:
        async with connect(url(server, path)):
            raise AssertionError("the handshake was accepted")

    with pytest.raises(InvalidStatus) as refused:
        run(talk())
    return refused.value.response.status_code, refused.value.response.body or b""


def test_reject_sends_an_http_response(server: RunningServer) -> None:
    assert refusal(server, "/refuse") == (401, b"who are you\n")


def test_returning_without_accepting_is_403(server: RunningServer) -> None:
    assert refusal(server, "/return-early")[0] == 403


def test_handler_error_after_accept_closes_1011(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    async def talk() -> int | None:
        async with connect(url(server, "/fails")) as ws:
            await ws.send("boom")
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            return closed.value.rcvd.code if closed.value.rcvd else None

    with caplog.at_level(logging.ERROR, "bastion.error"):
        assert run(talk()) == 1011
    assert any("handler bug" in str(r.exc_info) for r in caplog.records if r.exc_info)


def test_handler_error_before_accept_is_500(server: RunningServer) -> None:
    assert refusal(server, "/fails-early")[0] == 500


def test_websocket_route_must_be_async() -> None:
    with pytest.raises(TypeError):

        @App().websocket("/x")
        def blocking(ws: WebSocket) -> None:
            pass


def test_http_still_served_beside_websockets(server: RunningServer) -> None:
    with httpx.Client(base_url=server.url) as client:
        for _ in range(3):
            assert client.get("/rooms/x").status_code == 200


def test_upgrade_on_a_kept_alive_connection(server: RunningServer) -> None:
    # An HTTP request first, then the handshake on the same connection (both in one write).
    with server.connect() as sock:
        sock.sendall(b"GET /rooms/x HTTP/1.1\r\nHost: t\r\n\r\n" + handshake_request("/echo"))
        status, _, body = read_response(sock)
        assert (status, body) == (200, b"a page, not a socket")
        assert read_head(sock).startswith(b"HTTP/1.1 101 ")
        sock.sendall(frame(TEXT, b"after http"))
        assert read_frame(sock) == (TEXT, b"after http")
