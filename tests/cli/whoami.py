"""An upstream for balancer tests: answers with the process that served it and what it got."""

from __future__ import annotations

import asyncio
import os

from bastion import App, Request, Response

app = App()


@app.get("/down-if/{port}")
async def down_if(request: Request) -> Response:
    """503 for the upstream on ``port`` (told by the Host a health check sends), else 200."""
    host = request.headers.get("host") or ""
    down = host.rpartition(":")[2] == request.path_params["port"]
    return Response(b"down" if down else b"up", status=503 if down else 200)


@app.get("/sleep/{ms:int}")
async def sleep(request: Request) -> dict[str, object]:
    """Answers after ``ms`` milliseconds: a request that is in flight for a while."""
    await asyncio.sleep(request.path_params["ms"] / 1000)
    return {"pid": os.getpid(), "path": request.path}


@app.get("/{rest:path}")
async def whoami(request: Request) -> dict[str, object]:
    return {
        "pid": os.getpid(),
        "path": request.path,
        "headers": {name.lower(): value for name, value in request.headers.items()},
    }
