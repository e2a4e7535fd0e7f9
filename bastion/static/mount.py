"""A static tree mounted beside another handler: ``mount(app, "/static", StaticFiles(...))``.

Apart from :mod:`bastion.static.handler` because it takes on, per instance, the
``connection_lost`` hook of the handler it wraps, which a compiled class could not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from bastion.engine.handler import Handler, run_shutdown, run_startup
from bastion.static.handler import StaticFiles, prefix_segments, segments_url

if TYPE_CHECKING:
    from bastion.engine.exchange import Exchange
    from bastion.engine.state import ServerState


class Mount:
    """Serves ``static`` for paths under ``prefix`` and hands every other request to ``app``."""

    def __init__(self, app: Handler, prefix: str, static: StaticFiles) -> None:
        segments = prefix_segments(prefix)
        if not segments:
            raise ValueError("mount needs a prefix such as '/static'")
        self.app = app
        self.static = static
        self.prefix = segments_url(segments, False)
        self._segments = segments
        self._raw = self.prefix.encode("ascii")
        self.route = f"{self.prefix}/{{path:path}}"
        lost: Callable[[Exchange], None] | None = getattr(app, "connection_lost", None)
        if lost is not None:
            self.connection_lost = lost

    async def startup(self, state: ServerState) -> None:
        await run_startup(self.static, state)
        await run_startup(self.app, state)

    async def shutdown(self) -> None:
        await run_shutdown(self.app)

    def handle(self, exchange: Exchange) -> None:
        target = exchange.head.target
        raw = self._raw
        if target.startswith(raw) and (len(target) == len(raw) or target[len(raw)] in b"/?"):
            exchange.route = self.route
            self.static.serve(exchange, self._segments)
        else:
            self.app.handle(exchange)


def mount(app: Handler, prefix: str, static: StaticFiles) -> Mount:
    """One handler that serves ``static`` under ``prefix`` and everything else from ``app``.

    ``app`` is any engine handler: a ``bastion.App``, a WSGI or ASGI handler, another mount.
    ``static``'s own ``prefix`` is not used; ``prefix`` here decides. Pass the result to
    ``bastion.engine.run`` or name it in ``bastion run module:handler``.
    """
    return Mount(app, prefix, static)
