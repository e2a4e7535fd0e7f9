"""``bastion run --ws-*``: the WebSocket limits of an ASGI application or an App."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import websockets

from tests.cli.running import bastion, bastion_out

ASGI_ECHO = """
async def app(scope, receive, send):
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": message.get("text") or ""})
"""

APP_ECHO = """
import bastion
from bastion.websocket import WebSocketConfig

def make(config):
    app = bastion.App(websocket=config)

    @app.websocket("/")
    async def echo(ws):
        async for message in ws:
            await ws.send(message)

    return app

plain = make(None)
own = make(WebSocketConfig(max_message_size=1000, max_frame_size=1000))
"""


def outcome(port: int, size: int) -> str:
    """What a message of ``size`` characters gets: its echo, or the close code."""

    async def main() -> str:
        async with websockets.connect(f"ws://127.0.0.1:{port}/") as ws:
            await ws.send("x" * size)
            try:
                return "echo" if await ws.recv() == "x" * size else "wrong"
            except websockets.ConnectionClosed as closed:
                return str(closed.rcvd.code if closed.rcvd else None)

    return asyncio.run(main())


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "asgi_echo.py").write_text(ASGI_ECHO)
    (tmp_path / "app_echo.py").write_text(APP_ECHO)
    return tmp_path


@pytest.mark.parametrize("target", ["asgi_echo:app", "app_echo:plain"])
def test_ws_max_size_closes_a_larger_message_with_1009(folder: Path, target: str) -> None:
    with bastion("run", target, "--port", "0", "--ws-max-size", "100", cwd=folder) as server:
        assert outcome(server.port, 100) == "echo"
        assert outcome(server.port, 101) == "1009"


def test_an_apps_own_limits_win_over_the_command_line(folder: Path) -> None:
    with bastion(
        "run", "app_echo:own", "--port", "0", "--ws-max-size", "100", cwd=folder
    ) as server:
        assert outcome(server.port, 500) == "echo"
        assert outcome(server.port, 1001) == "1009"


def test_bad_ws_values_are_refused(folder: Path) -> None:
    out = bastion_out("run", "asgi_echo:app", "--ws-max-queue", "0", cwd=folder)
    assert out.returncode == 2 and "--ws-max-queue" in out.stderr, out.stderr
