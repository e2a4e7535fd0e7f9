"""The front page, a native ``bastion.App``: one request fans out to the users and orders
services, through the balancer like any other client, so it gets the balancer's retries and
health checks for free."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

import bastion

API = os.environ.get("API", "http://127.0.0.1:8100")
INSTANCE = os.environ.get("INSTANCE", "frontend")

app = bastion.App()


def fetch(path: str) -> Any:
    """GET ``API + path`` as JSON; a failed call is shown on the page, not raised."""
    try:
        with urllib.request.urlopen(API + path, timeout=3) as response:
            return json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return {"error": f"{path}: {exc}"}


@app.get("/")
def home(request: bastion.Request) -> bastion.Response:
    # A plain def: urllib blocks, so this runs on the worker's thread pool, not the loop.
    users = fetch("/users")
    orders = fetch("/orders")
    page = {
        "served_by": INSTANCE,
        "users": users,
        "orders": orders,
    }
    return bastion.JSONResponse(page, headers={"X-Served-By": INSTANCE})


@app.get("/healthz")
async def healthz(request: bastion.Request) -> dict[str, str]:
    return {"status": "ok", "served_by": INSTANCE}
