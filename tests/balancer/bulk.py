"""An upstream for streaming tests: counts what it is sent, sends as much as it is asked."""

from __future__ import annotations

from collections.abc import AsyncIterator

from bastion import App, Request, StreamingResponse

app = App()
_BLOCK = b"\0" * (1 << 20)


@app.route("/sink", methods=["PUT", "POST"])
async def sink(request: Request) -> str:
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
    return str(size)


@app.get("/source/{size:int}")
async def source(request: Request) -> StreamingResponse:
    size = request.path_params["size"]

    async def blocks() -> AsyncIterator[bytes]:
        left = size
        while left > 0:
            block = _BLOCK if left >= len(_BLOCK) else _BLOCK[:left]
            left -= len(block)
            yield block

    return StreamingResponse(blocks(), content_length=size)
