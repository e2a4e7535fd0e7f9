"""Bastion's own WebSocket routes behind `bastion balance`: one engine at each end, the
balancer's tunnel in between."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bastion import App
from bastion.app import WebSocket
from bastion.balancer.config import single_route
from tests.balancer.upstreams import balancer
from tests.serving import serve

app = App()


@app.websocket("/rooms/{room}")
async def room(ws: WebSocket) -> None:
    await ws.accept(subprotocol="chat" if "chat" in ws.subprotocols else None)
    async for message in ws:
        if message == "leave":
            await ws.close(4002, "left the room")
            return
        if isinstance(message, str):
            message = f"{ws.path_params['room']}: {message}"
        await ws.send(message)


def test_messages_subprotocol_and_close_cross_the_balancer() -> None:
    with serve(app) as upstream, balancer(single_route([upstream.url])) as lb:

        async def talk() -> tuple[object, ...]:
            url = f"ws://127.0.0.1:{lb.port}/rooms/blue"
            async with connect(url, subprotocols=["chat"], compression="deflate") as ws:
                replies = []
                for message in ("hi", b"\x00\xff" * 1000, "y" * 300_000):
                    await ws.send(message)
                    replies.append(await ws.recv())
                await ws.send("leave")
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
                rcvd = closed.value.rcvd
                return ws.subprotocol, replies, rcvd.code if rcvd else None

        subprotocol, replies, code = asyncio.run(asyncio.wait_for(talk(), 15))
    assert subprotocol == "chat"
    assert replies == ["blue: hi", b"\x00\xff" * 1000, "blue: " + "y" * 300_000]
    assert code == 4002
