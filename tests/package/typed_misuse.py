"""Mistakes that Bastion's types catch: ``mypy`` must report an error on each line marked
``# error``, which it can only do if it sees the installed package's types (not ``Any``)."""

from __future__ import annotations

import bastion
from bastion import App, Request, Response

app = App()
Response(body=42)  # error
Response(b"", status="200")  # error
app.get(path=7)  # error
bastion.App(websocket="yes")  # error
version: int = bastion.__version__  # error


async def handler(request: Request) -> int:
    await request.not_a_method()  # error
    return request.method  # error
