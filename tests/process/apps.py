"""Applications and checks the supervised monitoring tests run."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from bastion import App, Request, Response

app = App()
_flag = Path(os.environ.get("BASTION_TEST_FLAG", "/nonexistent"))


@app.get("/")
async def hello(request: Request) -> Response:
    return Response(b"Hello, world!")


@app.get("/items/{id:int}")
async def item(request: Request) -> Response:
    return Response(b"item")


@app.get("/slow")
def slow(request: Request) -> Response:
    time.sleep(float(request.query_param("s", "1") or 1))
    return Response(b"slow done")


@app.get("/block")
async def block(request: Request) -> Response:
    time.sleep(float(request.query_param("s", "4") or 4))  # blocks the event loop on purpose
    return Response(b"unblocked")


@app.health_check
def flag_file() -> bool:
    """Ready while the flag file does not exist: the tests create it to fail readiness."""
    return not _flag.exists()


_never = threading.Event()


def hanging_check() -> None:
    _never.wait()
