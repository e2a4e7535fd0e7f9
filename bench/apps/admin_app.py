"""A small app for the admin listener benchmark: fast routes, and one that blocks the loop."""

from __future__ import annotations

import time

from bastion import App, Request, Response

app = App()


@app.get("/")
async def hello(request: Request) -> Response:
    return Response(b"Hello, world!")


@app.get("/block")
async def block(request: Request) -> Response:
    time.sleep(float(request.query_param("s", "0.5") or 0.5))  # holds the event loop
    return Response(b"unblocked")


@app.health_check
def always() -> None:
    return None
