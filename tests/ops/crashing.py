"""An application whose workers die a moment after they start serving."""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING

from bastion import App, Request, Response

if TYPE_CHECKING:
    from bastion.engine.state import ServerState


class CrashingApp(App):
    async def startup(self, state: ServerState) -> None:
        await super().startup(state)
        # A timer on the loop, not a thread: it can only fire once the worker has told the
        # supervisor it is serving, however slow the machine is.
        asyncio.get_running_loop().call_later(0.2, os._exit, 7)


app = CrashingApp()


@app.get("/")
async def hello(request: Request) -> Response:
    return Response(b"Hello, world!")
