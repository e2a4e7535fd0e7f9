"""Apps shared by several tests."""

from __future__ import annotations

import asyncio
import threading

from bastion import App, Request, Response, SyncRequest

app = App()
release = threading.Event()


@app.get("/")
async def hello(request: Request) -> Response:
    return Response(b"Hello, world!", headers={"content-type": "text/plain"})


@app.post("/echo")
async def echo(request: Request) -> Response:
    return Response(await request.body(), headers={"content-type": "application/octet-stream"})


@app.post("/sync-echo")
def sync_echo(request: SyncRequest) -> Response:
    return Response(request.body(), headers={"content-type": "application/octet-stream"})


@app.get("/sleep")
async def sleep(request: Request) -> Response:
    await asyncio.sleep(float(request.query_param("s", "0.2") or 0.2))
    return Response(b"slept")


@app.get("/block")
def block(request: SyncRequest) -> Response:
    release.wait(10)
    return Response(b"released")


@app.get("/fast-sync")
def fast_sync(request: SyncRequest) -> Response:
    return Response(b"fast")


@app.get("/boom")
async def boom(request: Request) -> Response:
    raise RuntimeError("boom")
