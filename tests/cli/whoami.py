"""An upstream for balancer tests: answers with the process that served it and what it got."""

from __future__ import annotations

import os

from bastion import App, Request

app = App()


@app.get("/{rest:path}")
async def whoami(request: Request) -> dict[str, object]:
    return {
        "pid": os.getpid(),
        "path": request.path,
        "headers": {name.lower(): value for name, value in request.headers.items()},
    }
