"""WebSocket over TLS (wss): the switched connection is the TLS transport's, as for HTTP."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from bastion.asgi import ASGIHandler
from bastion.engine import Server, new_event_loop
from tests.ops.certs import make_certificates
from tests.websocket.support import echo_app


async def scheme_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": scope["scheme"]})
    await send({"type": "websocket.close"})


def test_wss_native_echo_and_asgi_scheme(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(certs.server_cert, certs.server_key)
    client_context = ssl.create_default_context(cafile=str(certs.ca))

    async def main() -> tuple[Any, ...]:
        native = Server(echo_app(), binds=["127.0.0.1:0"], ssl_context=server_context)
        asgi = Server(
            ASGIHandler(scheme_app, lifespan="off"),
            binds=["127.0.0.1:0"],
            ssl_context=server_context,
        )
        await native.start()
        await asgi.start()
        try:
            async with connect(f"wss://127.0.0.1:{native.port}/ws", ssl=client_context) as ws:
                await ws.send("secret")
                echoed = await ws.recv()
                await ws.send(b"x" * 200_000)
                large = await ws.recv()
            async with connect(f"wss://127.0.0.1:{asgi.port}/", ssl=client_context) as ws:
                scheme = await ws.recv()
            return echoed, len(large), scheme
        finally:
            await native.shutdown(timeout=2)
            await asgi.shutdown(timeout=2)

    loop = new_event_loop()
    try:
        result = loop.run_until_complete(asyncio.wait_for(main(), 20))
    finally:
        loop.close()
    assert result == ("secret", 200_000, "wss")
