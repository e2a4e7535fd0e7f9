"""The users service, a FastAPI application (ASGI). The stack runs it twice, as ``users``
and ``users-2``, with a different ``INSTANCE`` in each one's environment, so that the
balancer has two servers to choose from."""

from __future__ import annotations

import os

from fastapi import FastAPI, HTTPException, Response

INSTANCE = os.environ.get("INSTANCE", "users")
USERS = {
    1: {"id": 1, "name": "Ada"},
    2: {"id": 2, "name": "Grace"},
    3: {"id": 3, "name": "Barbara"},
}

app = FastAPI()


@app.get("/users")
async def all_users(response: Response) -> dict[str, object]:
    response.headers["X-Served-By"] = INSTANCE
    return {"served_by": INSTANCE, "users": list(USERS.values())}


@app.get("/users/{user_id}")
async def one_user(user_id: int, response: Response) -> dict[str, object]:
    response.headers["X-Served-By"] = INSTANCE
    if user_id not in USERS:
        raise HTTPException(status_code=404, detail=f"no user {user_id}")
    return {"served_by": INSTANCE, **USERS[user_id]}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok", "served_by": INSTANCE}
