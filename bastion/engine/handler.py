"""The contract between the engine and every way of writing a handler."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from bastion.engine.exchange import Exchange
    from bastion.engine.state import ServerState


@runtime_checkable
class Handler(Protocol):
    """Called on the loop thread once per request, when its head has arrived.

    ``handle`` must return quickly: it answers at once through the exchange, or arranges to
    answer later (a task on the loop, a job on the pool). Adapters may also define
    ``async startup(state)`` and ``async shutdown()`` (run once per server) and
    ``connection_lost(exchange)`` (the client is gone: the connection closed, or the client
    closed its sending side after a complete request; see ``Exchange.client_gone``).
    """

    def handle(self, exchange: Exchange) -> None: ...


class StartupFailed(RuntimeError):
    """An application's startup hook refused to start; its message says why, no traceback."""


async def run_startup(handler: Handler, state: ServerState) -> None:
    startup = getattr(handler, "startup", None)
    if startup is not None:
        await startup(state)


async def run_shutdown(handler: Handler) -> None:
    shutdown = getattr(handler, "shutdown", None)
    if shutdown is not None:
        await shutdown()


class HandlerWrapper:
    """A handler in front of another: runs its lifecycle hooks, and lets everything else an
    adapter exposes (a lifespan object, registered health checks, ...) show through."""

    def __init__(self, inner: Handler) -> None:
        self.inner = inner
        lost = getattr(inner, "connection_lost", None)
        if lost is not None:
            self.connection_lost = lost

    def handle(self, exchange: Exchange) -> None:
        self.inner.handle(exchange)

    async def startup(self, state: ServerState) -> None:
        await run_startup(self.inner, state)

    async def shutdown(self) -> None:
        await run_shutdown(self.inner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
