"""A small service to try Bastion with: ``bastion run bastion.demo:app``."""

from __future__ import annotations

import asyncio

from bastion import App, JSONResponse, Request, Response, StreamingResponse, SyncRequest

app = App()


@app.get("/")
async def index(request: Request) -> Response:
    return Response(
        "Hello from Bastion!\n\n"
        "Try: /hello/yourname, /slow (runs on the thread pool), /stream, "
        "and POST /echo with a body.\n"
    )


@app.get("/hello/{name}")
async def hello(request: Request) -> JSONResponse:
    return JSONResponse({"hello": request.path_params["name"]})


@app.post("/echo")
async def echo(request: Request) -> Response:
    body = await request.body()
    content_type = request.headers.get("content-type") or "application/octet-stream"
    return Response(body, headers={"content-type": content_type})


@app.get("/slow")
def slow(request: SyncRequest) -> dict[str, str]:
    import time

    time.sleep(0.2)  # blocking is fine here: plain def handlers run on the thread pool
    return {"slept": "0.2s"}


@app.get("/stream")
async def stream(request: Request) -> StreamingResponse:
    async def count() -> object:
        for i in range(5):
            yield f"tick {i}\n"
            await asyncio.sleep(0.1)

    return StreamingResponse(count(), content_type="text/plain; charset=utf-8")  # type: ignore[arg-type]
