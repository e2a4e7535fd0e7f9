"""The ASGI ``lifespan`` protocol: startup before the first request, shutdown after the last.

The application runs in one task for the life of the server. Startup waits (without a limit:
connecting to a database may take a while) until the application answers
``lifespan.startup.complete`` or ``lifespan.startup.failed``; a failure stops the server from
starting. Shutdown waits at most the graceful timeout for ``lifespan.shutdown.complete``.

In ``"auto"`` mode an application that raises before it ever calls ``receive()`` on the
lifespan scope (``assert scope["type"] == "http"`` and the like) is taken not to support the
protocol: that is logged at INFO and the server runs without it. An application that raises
after receiving ``lifespan.startup`` does support it, and its exception is a startup failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Literal

from bastion.asgi.types import ASGI_VERSION, LIFESPAN_SPEC_VERSION, ASGIApp, Message
from bastion.engine.handler import StartupFailed

logger = logging.getLogger("bastion.error")

LifespanMode = Literal["auto", "on", "off"]

# Once the application has acknowledged shutdown it should return promptly; beyond this it is
# cancelled so the loop can close cleanly.
_EXIT_GRACE = 1.0


class LifespanError(StartupFailed):
    """The application's lifespan startup failed, so the server must not start."""


class Lifespan:
    """Drives one application through ``lifespan.startup`` and ``lifespan.shutdown``."""

    def __init__(self, app: ASGIApp, mode: LifespanMode = "auto") -> None:
        if mode not in ("auto", "on", "off"):
            raise ValueError(f"lifespan must be 'auto', 'on' or 'off', not {mode!r}")
        self.app = app
        self.mode = mode
        # Shared with the application through scope["state"]; each request gets a shallow copy.
        self.state: dict[str, Any] = {}
        self.running = False
        self._task: asyncio.Task[None] | None = None
        self._inbox: asyncio.Queue[Message] | None = None
        self._startup: asyncio.Future[str | None] | None = None
        self._shutdown: asyncio.Future[str | None] | None = None
        self._received = False
        self._shutdown_requested = False
        self._error: BaseException | None = None

    async def startup(self) -> None:
        """Run the application's startup; raise :class:`LifespanError` if it fails."""
        if self.mode == "off":
            return
        loop = asyncio.get_running_loop()
        self.state = {}
        self.running = False
        self._received = False
        self._shutdown_requested = False
        self._error = None
        self._inbox = asyncio.Queue()
        self._inbox.put_nowait({"type": "lifespan.startup"})
        startup = self._startup = loop.create_future()
        self._shutdown = loop.create_future()
        task = self._task = loop.create_task(self._main(), name="bastion-asgi-lifespan")
        await asyncio.wait((startup, task), return_when=asyncio.FIRST_COMPLETED)

        if startup.done():
            failure = startup.result()
            if failure is None:
                self.running = True
                return
            await self._stop_task()
            raise LifespanError(
                "ASGI lifespan startup failed" + (f": {failure}" if failure else "")
            )

        # The application's lifespan call ended without answering startup.
        error = self._error
        if self.mode == "auto" and (error is None or not self._received):
            what = "returned" if error is None else f"raised {type(error).__name__}: {error}"
            logger.info(
                "ASGI lifespan protocol not supported by the application (it %s); "
                "serving without it",
                what,
            )
            return
        if error is not None:
            # The worker logs the one line below; the traceback is for --log-level debug.
            logger.debug("ASGI lifespan startup raised", exc_info=error)
            raise LifespanError(
                f"ASGI lifespan startup failed: {type(error).__name__}: {error}"
            ) from error
        raise LifespanError(
            "ASGI lifespan startup failed: the application returned without "
            "sending 'lifespan.startup.complete' (lifespan='on')"
        )

    async def shutdown(self, timeout: float) -> None:
        """Ask the application to shut down and wait up to ``timeout`` seconds for it."""
        task = self._task
        if not self.running or task is None:
            return
        self.running = False
        shutdown = self._shutdown
        assert shutdown is not None and self._inbox is not None
        if task.done():
            return  # it ended while serving; that was logged then
        self._shutdown_requested = True
        self._inbox.put_nowait({"type": "lifespan.shutdown"})
        await asyncio.wait((shutdown, task), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if shutdown.done():
            failure = shutdown.result()
            if failure is not None:
                logger.error("ASGI lifespan shutdown failed: %s", failure or "(no message)")
        elif task.done():
            if self._error is not None:
                logger.error("ASGI lifespan shutdown raised", exc_info=self._error)
        else:
            logger.warning("ASGI lifespan shutdown did not complete within %.1fs", timeout)
        await self._stop_task()

    async def _stop_task(self) -> None:
        task = self._task
        if task is None:
            return
        if not task.done():
            await asyncio.wait((task,), timeout=_EXIT_GRACE)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None

    async def _main(self) -> None:
        scope = {
            "type": "lifespan",
            "asgi": {"version": ASGI_VERSION, "spec_version": LIFESPAN_SPEC_VERSION},
            "state": self.state,
        }
        try:
            await self.app(scope, self._receive, self._send)
        except Exception as exc:
            self._error = exc
            if self.running and not self._shutdown_requested:
                logger.error("ASGI lifespan task failed while serving", exc_info=exc)

    async def _receive(self) -> Message:
        self._received = True
        assert self._inbox is not None
        return await self._inbox.get()

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete" or kind == "lifespan.startup.failed":
            future = self._startup
            stage = "startup"
        elif kind == "lifespan.shutdown.complete" or kind == "lifespan.shutdown.failed":
            future = self._shutdown
            stage = "shutdown"
            if not self._shutdown_requested:
                raise RuntimeError(f"ASGI app sent {kind!r} before 'lifespan.shutdown'")
        else:
            raise RuntimeError(f"unexpected ASGI lifespan message type {kind!r}")
        if future is None or future.done():
            raise RuntimeError(f"ASGI app answered lifespan {stage} twice ({kind!r})")
        if kind.endswith(".failed"):
            future.set_result(str(message.get("message", "")))
        else:
            future.set_result(None)


__all__ = ["Lifespan", "LifespanError", "LifespanMode"]
