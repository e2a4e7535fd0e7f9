"""Applications the operations tests serve."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from bastion import App, Request, Response

app = App()


@app.get("/")
async def hello(request: Request) -> Response:
    return Response(b"Hello, world!", headers={"content-type": "text/plain"})


@app.get("/pid")
async def pid(request: Request) -> Response:
    return Response(str(os.getpid()).encode())


@app.get("/gc")
async def collector(request: Request) -> Response:
    """What the garbage collector walks: frozen objects are left out of every collection."""
    counts = {"frozen": gc.get_freeze_count(), "tracked": len(gc.get_objects())}
    return Response(json.dumps(counts).encode(), headers={"content-type": "application/json"})


@app.get("/sleep")
async def sleep(request: Request) -> Response:
    await asyncio.sleep(float(request.query_param("s", "0.5") or 0.5))
    return Response(f"slept {os.getpid()}".encode())


@app.get("/hang")
async def hang(request: Request) -> Response:
    time.sleep(float(request.query_param("s", "5") or 5))  # blocks the event loop on purpose
    return Response(b"woke")


@app.get("/whoami")
async def whoami(request: Request) -> Response:
    client = request.client
    return Response(
        json.dumps(
            {
                "client": list(client) if client else None,
                "scheme": request.scheme,
                "host": request.headers.get("host"),
            }
        ).encode(),
        headers={"content-type": "application/json"},
    )


def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = json.dumps(
        {
            "REMOTE_ADDR": environ["REMOTE_ADDR"],
            "url_scheme": environ["wsgi.url_scheme"],
            "HTTP_HOST": environ.get("HTTP_HOST"),
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = json.dumps(
        {"client": scope["client"][0] if scope["client"] else None, "scheme": scope["scheme"]}
    ).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})
