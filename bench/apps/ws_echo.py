"""WebSocket echo endpoints (the ``websocket_echo.py`` benchmark): every message sent back.

``native`` is Bastion's own ``App.websocket`` route; ``asgi_app`` a plain ASGI callable, the
least any ASGI server can be asked to run (the FastAPI endpoint is in ``ws_fastapi``, so that
these two do not carry FastAPI's imports in their memory figures). Bastion and uvicorn serve
the very same objects.

    python -m bastion run bench.apps.ws_echo:native --bind 127.0.0.1:8001
    uvicorn bench.apps.ws_echo:asgi_app --ws websockets --port 8001
"""

import bastion

PATH = "/ws"

native = bastion.App()


@native.websocket(PATH)
async def native_echo(ws):
    async for message in ws:
        await ws.send(message)


async def asgi_app(scope, receive, send):
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return
        text = message.get("text")
        if text is not None:
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes")})
