"""A FastAPI WebSocket echo endpoint (the ``websocket_echo.py`` benchmark), as most
applications write one; Bastion (``--interface asgi``) and uvicorn serve this very app.

    python -m bastion run bench.apps.ws_fastapi:app --interface asgi --bind 127.0.0.1:8001
"""

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

app = FastAPI()


@app.websocket("/ws")
async def echo(websocket: WebSocket):
    await websocket.accept()
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect:
        pass
