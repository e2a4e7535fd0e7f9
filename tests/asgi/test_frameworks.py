"""Starlette and FastAPI on Bastion, over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bastion.asgi import ASGIHandler
from bastion.engine import ServerConfig
from tests.serving import RunningServer, serve

starlette = pytest.importorskip("starlette")
fastapi = pytest.importorskip("fastapi")

from fastapi import Depends, FastAPI  # noqa: E402
from pydantic import BaseModel  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.background import BackgroundTask  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402
from starlette.middleware.base import BaseHTTPMiddleware  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import (  # noqa: E402
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route  # noqa: E402

CONFIG = ServerConfig(graceful_timeout=5)


def errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


# Starlette ------------------------------------------------------------------------------------


class StarletteSite:
    def __init__(self, files: Path) -> None:
        self.files = files
        self.events: list[str] = []
        self.background_done = threading.Event()
        self.stream_closed = threading.Event()
        self.app = Starlette(
            routes=[
                Route("/json", self.json),
                Route("/users/{user_id:int}", self.user),
                Route("/stream", self.stream),
                Route("/forever", self.forever),
                Route("/upload", self.upload, methods=["POST"]),
                Route("/state", self.state),
                Route("/error", self.error),
                Route("/background", self.background),
                Route("/file", self.file),
            ],
            lifespan=self.lifespan,
            # BaseHTTPMiddleware runs the endpoint in an anyio task group and wraps receive().
            middleware=[Middleware(BaseHTTPMiddleware, dispatch=self.add_header)],
        )

    async def add_header(self, request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers["x-middleware"] = "yes"
        return response

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[dict[str, Any]]:
        self.events.append("startup")
        yield {"db": "starlette-db"}
        self.events.append("shutdown")

    async def json(self, request: Request) -> Response:
        return JSONResponse({"hello": "world", "query": dict(request.query_params)})

    async def user(self, request: Request) -> Response:
        user_id = request.path_params["user_id"]
        return JSONResponse({"id": user_id, "type": type(user_id).__name__})

    async def stream(self, request: Request) -> Response:
        async def numbers() -> AsyncIterator[bytes]:
            for i in range(5):
                yield b"%d\n" % i
                await asyncio.sleep(0)

        return StreamingResponse(numbers(), media_type="text/plain")

    async def forever(self, request: Request) -> Response:
        async def endless() -> AsyncIterator[bytes]:
            try:
                while True:
                    yield b"x" * 8192
                    await asyncio.sleep(0.001)
            finally:
                self.stream_closed.set()

        return StreamingResponse(endless())

    async def upload(self, request: Request) -> Response:
        total = 0
        largest = 0
        async for chunk in request.stream():
            total += len(chunk)
            largest = max(largest, len(chunk))
        return JSONResponse({"total": total, "largest": largest})

    async def state(self, request: Request) -> Response:
        return PlainTextResponse(request.state.db)

    async def error(self, request: Request) -> Response:
        raise ValueError("starlette endpoint failed")

    async def background(self, request: Request) -> Response:
        async def later() -> None:
            await asyncio.sleep(0.05)
            self.background_done.set()

        return PlainTextResponse("queued", background=BackgroundTask(later))

    async def file(self, request: Request) -> Response:
        return FileResponse(self.files / "big.bin")


@pytest.fixture
def starlette_site(tmp_path: Path) -> Iterator[tuple[RunningServer, StarletteSite]]:
    (tmp_path / "big.bin").write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    site = StarletteSite(tmp_path)
    with serve(ASGIHandler(site.app), CONFIG) as server:
        yield server, site
    assert site.events == ["startup", "shutdown"]


def test_starlette_json_and_path_params(
    starlette_site: tuple[RunningServer, StarletteSite],
) -> None:
    server, _ = starlette_site
    with httpx.Client(base_url=server.url) as client:
        response = client.get("/json?a=1")
        assert response.json() == {"hello": "world", "query": {"a": "1"}}
        assert response.headers["content-type"] == "application/json"
        assert response.headers["x-middleware"] == "yes"
        assert client.get("/users/42").json() == {"id": 42, "type": "int"}
        assert client.get("/users/abc").status_code == 404
        assert client.get("/nowhere").status_code == 404


def test_starlette_streaming(starlette_site: tuple[RunningServer, StarletteSite]) -> None:
    server, _ = starlette_site
    with httpx.Client(base_url=server.url) as client, client.stream("GET", "/stream") as response:
        assert response.headers["transfer-encoding"] == "chunked"
        assert response.read() == b"0\n1\n2\n3\n4\n"


def test_starlette_file_response(starlette_site: tuple[RunningServer, StarletteSite]) -> None:
    server, site = starlette_site
    with httpx.Client(base_url=server.url) as client:
        response = client.get("/file")
        assert response.status_code == 200
        assert response.headers["content-length"] == str(1024 * 1024)
        assert response.content == (site.files / "big.bin").read_bytes()
        head = client.head("/file")
        assert head.headers["content-length"] == str(1024 * 1024)
        assert head.content == b""
        ranged = client.get("/file", headers={"range": "bytes=10-19"})
        assert ranged.status_code == 206
        assert ranged.content == bytes(range(10, 20))


def test_starlette_streaming_upload(starlette_site: tuple[RunningServer, StarletteSite]) -> None:
    server, _ = starlette_site
    size = 8 * 1024 * 1024

    def body() -> Iterator[bytes]:
        for _ in range(size // 65536):
            yield b"u" * 65536

    with httpx.Client(base_url=server.url, timeout=30) as client:
        result = client.post("/upload", content=body()).json()
        assert result["total"] == size
        assert result["largest"] < size


def test_starlette_lifespan_state(starlette_site: tuple[RunningServer, StarletteSite]) -> None:
    server, _ = starlette_site
    assert httpx.get(server.url + "/state").text == "starlette-db"


def test_starlette_error_is_500_and_logged(
    starlette_site: tuple[RunningServer, StarletteSite], caplog: pytest.LogCaptureFixture
) -> None:
    server, _ = starlette_site
    with httpx.Client(base_url=server.url) as client:
        response = client.get("/error")
        assert response.status_code == 500
        assert client.get("/json").status_code == 200
    wait_for(lambda: errors(caplog))
    assert any(
        r.exc_info and "starlette endpoint failed" in str(r.exc_info[1]) for r in errors(caplog)
    )


def test_starlette_background_task(starlette_site: tuple[RunningServer, StarletteSite]) -> None:
    server, site = starlette_site
    assert httpx.get(server.url + "/background").text == "queued"
    assert site.background_done.wait(5)


def test_starlette_client_disconnect_mid_stream(
    starlette_site: tuple[RunningServer, StarletteSite], caplog: pytest.LogCaptureFixture
) -> None:
    server, site = starlette_site
    with server.connect() as sock:
        sock.sendall(b"GET /forever HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(5)
        received = 0
        while received < 100_000:
            received += len(sock.recv(65536))

    # Once nothing holds it, the generator is closed. Where the disconnect found it matters:
    # cancelled in its own await, it closes at once; left at a yield while the response
    # waited in send(), it is dropped, and if the cancellation's traceback put it in a
    # reference cycle only a garbage collection finalises it, which an idle server may not
    # run for a long while. Collecting while waiting still fails if anything live holds it.
    def closed() -> bool:
        gc.collect()
        return site.stream_closed.is_set()

    wait_for(closed, timeout=5)
    assert httpx.get(server.url + "/json").status_code == 200
    time.sleep(0.05)
    assert errors(caplog) == []


# FastAPI --------------------------------------------------------------------------------------


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


def build_fastapi() -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        yield {"greeting": "hello from lifespan"}

    app = FastAPI(lifespan=lifespan)

    def pagination(limit: int = 10, offset: int = 0) -> dict[str, int]:
        return {"limit": limit, "offset": offset}

    @app.get("/items/{item_id}")
    async def read_item(item_id: int, q: str | None = None) -> dict[str, Any]:
        return {"item_id": item_id, "q": q}

    @app.post("/items", status_code=201)
    async def create_item(item: Item) -> Item:
        return item

    @app.get("/page")
    async def page(params: dict[str, int] = Depends(pagination)) -> dict[str, int]:  # noqa: B008
        return params

    @app.get("/sync")
    def sync_endpoint() -> dict[str, str]:
        return {"thread": threading.current_thread().name}

    @app.get("/state")
    async def state(request: Request) -> dict[str, str]:
        return {"greeting": request.state.greeting}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def lines() -> AsyncIterator[str]:
            for i in range(3):
                yield f"line {i}\n"

        return StreamingResponse(lines(), media_type="text/plain")

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("fastapi endpoint failed")

    return app


@pytest.fixture
def fastapi_server() -> Iterator[RunningServer]:
    with serve(ASGIHandler(build_fastapi()), CONFIG) as server:
        yield server


def test_fastapi_json_path_params_and_validation(fastapi_server: RunningServer) -> None:
    with httpx.Client(base_url=fastapi_server.url) as client:
        assert client.get("/items/5?q=x").json() == {"item_id": 5, "q": "x"}
        invalid = client.get("/items/five")
        assert invalid.status_code == 422
        assert invalid.json()["detail"][0]["loc"] == ["path", "item_id"]
        created = client.post("/items", json={"name": "widget", "price": 2.5})
        assert created.status_code == 201
        assert created.json() == {"name": "widget", "price": 2.5, "tags": []}
        assert client.post("/items", json={"name": "widget"}).status_code == 422
        assert client.get("/page?limit=3").json() == {"limit": 3, "offset": 0}


def test_fastapi_sync_endpoint_runs_in_a_thread(fastapi_server: RunningServer) -> None:
    name = httpx.get(fastapi_server.url + "/sync").json()["thread"]
    assert name != "test-server"


def test_fastapi_lifespan_state(fastapi_server: RunningServer) -> None:
    response = httpx.get(fastapi_server.url + "/state")
    assert response.json() == {"greeting": "hello from lifespan"}


def test_fastapi_streaming(fastapi_server: RunningServer) -> None:
    with (
        httpx.Client(base_url=fastapi_server.url) as client,
        client.stream("GET", "/stream") as response,
    ):
        assert response.headers["content-type"].startswith("text/plain")
        assert list(response.iter_lines()) == ["line 0", "line 1", "line 2"]


def test_fastapi_openapi_and_errors(
    fastapi_server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    with httpx.Client(base_url=fastapi_server.url) as client:
        schema = client.get("/openapi.json").json()
        assert "/items/{item_id}" in schema["paths"]
        assert client.get("/boom").status_code == 500
        assert client.get("/items/1").status_code == 200  # still serving
    wait_for(lambda: errors(caplog))


def test_fastapi_keep_alive_many_requests(fastapi_server: RunningServer) -> None:
    with httpx.Client(base_url=fastapi_server.url) as client:
        for i in range(200):
            assert client.get(f"/items/{i}").json()["item_id"] == i
    assert fastapi_server.stats.connections_opened == 1
