"""The ASGI lifespan protocol: startup, shutdown, shared state, and failures."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from bastion.asgi import ASGIHandler, LifespanError
from bastion.asgi.types import Receive, Scope, Send
from tests.serving import serve


class LifespanApp:
    """Records lifespan events; answers each request with what its scope's state holds."""

    def __init__(self, startup: str = "complete", shutdown: str = "complete") -> None:
        self.startup = startup
        self.shutdown = shutdown
        self.events: list[str] = []
        self.http_states: list[dict[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(scope, receive, send)
            return
        state = scope["state"]
        self.http_states.append(dict(state))
        body = repr(sorted(state)).encode()
        state["touched"] = True  # must not leak into the next request
        state["counter"].append(1)  # ...but the objects in it are shared
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    async def lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["asgi"]["version"] == "3.0"
        while True:
            message = await receive()
            self.events.append(message["type"])
            if message["type"] == "lifespan.startup":
                if self.startup == "raise":
                    raise RuntimeError("database unreachable")
                scope["state"]["db"] = "connected"
                scope["state"]["counter"] = []
                reply: dict[str, Any] = {"type": f"lifespan.startup.{self.startup}"}
                if self.startup == "failed":
                    reply["message"] = "no database"
                await send(reply)
                if self.startup == "failed":
                    return
            elif message["type"] == "lifespan.shutdown":
                reply = {"type": f"lifespan.shutdown.{self.shutdown}"}
                if self.shutdown == "failed":
                    reply["message"] = "could not flush"
                await send(reply)
                return


def test_startup_state_and_shutdown() -> None:
    app = LifespanApp()
    with serve(ASGIHandler(app)) as server, httpx.Client(base_url=server.url) as client:
        assert app.events == ["lifespan.startup"]
        assert client.get("/").text == "['counter', 'db']"
        assert client.get("/").text == "['counter', 'db']"
    assert app.events == ["lifespan.startup", "lifespan.shutdown"]
    assert app.http_states[0]["db"] == "connected"
    assert "touched" not in app.http_states[1]
    assert app.http_states[1]["counter"] == [1, 1]


def test_startup_failed_stops_the_server_from_starting() -> None:
    app = LifespanApp(startup="failed")
    with pytest.raises(LifespanError, match="startup failed: no database"), serve(ASGIHandler(app)):
        pytest.fail("the server must not start")
    assert app.events == ["lifespan.startup"]


def test_startup_exception_after_receive_stops_the_server() -> None:
    """Even in auto mode: an app that took the startup message does speak lifespan."""
    app = LifespanApp(startup="raise")
    with (
        pytest.raises(LifespanError, match="database unreachable"),
        serve(ASGIHandler(app, lifespan="auto")),
    ):
        pytest.fail("the server must not start")


def test_shutdown_failed_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    app = LifespanApp(shutdown="failed")
    with serve(ASGIHandler(app)) as server:
        assert httpx.get(server.url).status_code == 200
    assert app.events == ["lifespan.startup", "lifespan.shutdown"]
    assert any(
        "lifespan shutdown failed: could not flush" in r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR
    )


async def http_only(scope: Scope, receive: Receive, send: Send) -> None:
    """A common shape of app that knows nothing of lifespan."""
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"http only"})


async def ignores_lifespan(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    await http_only(scope, receive, send)


@pytest.mark.parametrize("app", [http_only, ignores_lifespan], ids=["raises", "returns"])
def test_auto_tolerates_apps_without_lifespan(app: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bastion.error")
    with serve(ASGIHandler(app, lifespan="auto")) as server:
        assert httpx.get(server.url).text == "http only"
    assert any("lifespan protocol not supported" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("app", [http_only, ignores_lifespan], ids=["raises", "returns"])
def test_on_requires_lifespan(app: Any) -> None:
    with pytest.raises(LifespanError), serve(ASGIHandler(app, lifespan="on")):
        pytest.fail("the server must not start")


def test_off_never_sends_lifespan() -> None:
    app = LifespanApp()
    scopes: list[str] = []

    async def wrapper(scope: Scope, receive: Receive, send: Send) -> None:
        scopes.append(scope["type"])
        if scope["type"] == "http":
            scope["state"]["counter"] = []
        await app(scope, receive, send)

    with serve(ASGIHandler(wrapper, lifespan="off")) as server:
        assert httpx.get(server.url).text == "['counter']"
    assert scopes == ["http"]
    assert app.events == []


def test_lifespan_app_that_never_returns_is_stopped() -> None:
    """After shutdown.complete the app keeps waiting; it is cancelled, not leaked."""
    cancelled: list[bool] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            try:
                await receive()  # nothing more will ever come
            except BaseException:
                cancelled.append(True)
                raise
            return
        await http_only(scope, receive, send)

    with serve(ASGIHandler(app)) as server:
        assert httpx.get(server.url).text == "http only"
    assert cancelled == [True]
