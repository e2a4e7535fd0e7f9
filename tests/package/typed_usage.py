"""A small service written against Bastion's public API, as a user would write it.

``mypy --strict`` must accept it with the installed package: with ``py.typed`` in the wheel,
every name below has Bastion's own types, not ``Any``. (``typed_misuse.py`` beside it shows
the same types catching mistakes.)
"""

from __future__ import annotations

from collections.abc import Iterator

import bastion
from bastion import App, JSONResponse, Request, Response, StreamingResponse, SyncRequest
from bastion.compat import BaseHTTPRequestHandler, ThreadingHTTPServer

app = App()


@app.get("/users/{id:int}")
async def user(request: Request) -> JSONResponse:
    user_id: int = request.path_params["id"]
    return JSONResponse({"id": user_id, "agent": request.headers.get("user-agent")})


@app.post("/upload")
def upload(request: SyncRequest) -> Response:
    total = sum(len(chunk) for chunk in request.stream())
    return Response(f"{total} bytes\n", status=201, content_type="text/plain")


@app.get("/count")
def count(request: SyncRequest) -> StreamingResponse:
    def numbers() -> Iterator[bytes]:
        for n in range(3):
            yield b"%d\n" % n

    return StreamingResponse(numbers())


class Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "6")
        self.end_headers()
        self.wfile.write(b"Hello\n")


def make_server(port: int) -> ThreadingHTTPServer:
    return ThreadingHTTPServer(("127.0.0.1", port), Hello)


version: str = bastion.__version__
status: int = Response(b"").status
